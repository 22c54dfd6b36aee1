"""The parity check after export: the exported model against the PyTorch model it came from.

On a handful of prompts (Vietnamese and English), the exported model continues each prompt
greedily for a few tokens through lexrag's own decode loop (KV cache included); PyTorch
(fp32, CPU) scores the same tokens, and both models' logits are compared at every position.
An export fails the check when

- its top-1 token (the greedy choice) changed at more than ``max_top1_changes`` of the
  positions (default :data:`DEFAULT_MAX_TOP1_CHANGES`). A change counts when PyTorch scores
  the export's choice at least :data:`TIE_MARGIN` logits below its own: where PyTorch's two
  best tokens are closer than that (a near-tie; either is as good a greedy choice), a
  switch between them is not counted (all switches are recorded, as ``top1_switched``);
- or, unquantised (fp32, fp16), its logits are further from PyTorch's than
  :data:`TOLERANCE` allows (max |Δlogit| / max |logit|: a broken graph, not rounding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Prompts the check continues; mixed Vietnamese / English, prose / numbers / code.
PARITY_PROMPTS = (
    "Người lao động có quyền nghỉ hằng năm bao nhiêu ngày theo Bộ luật Lao động?",
    "Điều 20. Người thành niên là người từ đủ mười tám tuổi trở lên.",
    "Thời giờ làm việc bình thường không quá 08 giờ trong 01 ngày và",
    "Hợp đồng lao động phải được giao kết bằng văn bản và",
    "The capital of France is",
    "Question: What is 12 plus 30? Answer:",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n",
)
#: Positions compared per prompt: the prompt's last one and the next greedy tokens'.
PARITY_STEPS = 16

#: Largest share of compared positions whose top-1 token may change.
DEFAULT_MAX_TOP1_CHANGES = 0.10

#: A switch of the top-1 token counts as a change when PyTorch scores the new token this
#: many logits (log-probability) below its own top-1, i.e. finds it 1.65× less likely.
TIE_MARGIN = 0.5

#: Largest max|Δlogit| / max|logit| accepted for unquantised exports; quantised ones are
#: judged by their top-1 tokens (their relative error is recorded, not enforced).
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


@dataclass
class Parity:
    precision: str
    max_abs_diff: float
    relative_diff: float
    #: None: not enforced (quantised weights).
    tolerance: float | None
    #: Compared positions (prompts × steps); those whose top-1 token changed (by more than
    #: TIE_MARGIN in PyTorch's logits) and those whose top-1 differs at all.
    positions: int
    top1_changed: int
    top1_switched: int
    max_top1_changes: float
    prompts: int

    @property
    def top1_changed_share(self) -> float:
        return self.top1_changed / max(self.positions, 1)

    @property
    def top1_ok(self) -> bool:
        return self.top1_changed_share <= self.max_top1_changes

    @property
    def logits_ok(self) -> bool:
        return self.tolerance is None or self.relative_diff <= self.tolerance

    @property
    def ok(self) -> bool:
        return self.top1_ok and self.logits_ok

    def summary(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        tolerance = "not enforced" if self.tolerance is None else f"tolerance {self.tolerance:g}"
        return (
            f"parity vs PyTorch ({self.precision}, {self.prompts} prompts × "
            f"{self.positions // max(self.prompts, 1)} tokens): top-1 changed at "
            f"{self.top1_changed}/{self.positions} positions ({self.top1_changed_share:.1%}, "
            f"limit {self.max_top1_changes:.0%}; {self.top1_switched} switched counting near-ties), "
            f"max|Δlogit| {self.max_abs_diff:.3g}, relative {self.relative_diff:.3g} ({tolerance}): {verdict}"
        )

    def failure(self) -> str:
        """Why the check failed, in one sentence (empty when it passed)."""
        reasons = []
        if not self.top1_ok:
            reasons.append(
                f"the {self.precision} weights change the top-1 token at {self.top1_changed} of "
                f"{self.positions} positions ({self.top1_changed_share:.1%}; at most "
                f"{self.max_top1_changes:.0%} allowed, --max-top1-changes)"
            )
        if not self.logits_ok:
            reasons.append(
                f"its logits differ by {self.relative_diff:.3g} of their range (tolerance "
                f"{self.tolerance} for {self.precision})"
            )
        return " and ".join(reasons)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top1_changed_share": self.top1_changed_share, "ok": self.ok}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def torch_logits(source: str, sequences: list[tuple[list[int], list[int]]], **load: Any) -> list[np.ndarray]:
    """PyTorch's fp32 logits for each (prompt, continuation): one forward pass over both, the
    rows from the prompt's last position on, an array [len(continuation), vocab]."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **load)
    model.eval()
    found = []
    with torch.no_grad():
        for prompt, continuation in sequences:
            ids = torch.tensor([prompt + continuation[:-1]])
            found.append(model(ids).logits[0, len(prompt) - 1 :].float().numpy())
    del model
    return found


class _Recorder:
    """A greedy sampler that keeps the logits it is shown and the tokens it picks."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []
        self.tokens: list[int] = []

    def __call__(self, logits: np.ndarray) -> int:
        self.seen.append(logits.astype(np.float32))
        self.tokens.append(int(np.argmax(logits)))
        return self.tokens[-1]


def check(
    source: str,
    out_dir: Path,
    precision: str,
    device: str,
    *,
    max_top1_changes: float = DEFAULT_MAX_TOP1_CHANGES,
    prompts: tuple[str, ...] = PARITY_PROMPTS,
    steps: int = PARITY_STEPS,
    **load: Any,
) -> Parity:
    """Compare the export in ``out_dir`` with the PyTorch model ``source`` (fp32 on CPU):
    the export continues each prompt greedily through lexrag's decode loop (KV cache
    included); PyTorch scores the same tokens in one forward pass."""
    from .engine import Engine
    from .model_files import load_tokenizer

    tokenizer = load_tokenizer(out_dir)
    ids = [list(tokenizer(p)["input_ids"]) for p in prompts]
    # A KV cache for these prompts only, not the model's whole context window.
    engine = Engine(out_dir, device=device, max_context=max(map(len, ids)) + steps)
    got, sequences = [], []
    for prompt in ids:
        recorder = _Recorder()
        for _ in engine.decode(prompt, steps, recorder):
            pass
        got.append(np.stack(recorder.seen))
        sequences.append((prompt, recorder.tokens))
    del engine
    expected = torch_logits(source, sequences, **load)
    want, have = np.concatenate(expected), np.concatenate(got)
    diff = np.abs(have - want)
    scale = np.maximum(np.max(np.abs(want), axis=-1), 1e-12)
    rows = np.arange(want.shape[0])
    theirs, ours = np.argmax(want, axis=-1), np.argmax(have, axis=-1)
    # How much less PyTorch likes the export's choice than its own (0 where they agree).
    loss = want[rows, theirs] - want[rows, ours]
    return Parity(
        precision=precision,
        max_abs_diff=float(np.max(diff)),
        relative_diff=float(np.max(np.max(diff, axis=-1) / scale)),
        tolerance=TOLERANCE.get(precision),
        positions=int(want.shape[0]),
        top1_changed=int(np.sum(loss >= TIE_MARGIN)),
        top1_switched=int(np.sum(ours != theirs)),
        max_top1_changes=max_top1_changes,
        prompts=len(prompts),
    )


__all__ = [
    "DEFAULT_MAX_TOP1_CHANGES",
    "PARITY_PROMPTS",
    "PARITY_STEPS",
    "TIE_MARGIN",
    "TOLERANCE",
    "Parity",
    "check",
]
