"""The parity check after export: logits of the exported model vs PyTorch on a fixed prompt."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

PARITY_PROMPT = "Người lao động có quyền nghỉ hằng năm bao nhiêu ngày theo Bộ luật Lao động?"

#: Largest max|Δlogit| / max|logit| accepted, by the precision of the exported weights.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.25, "int4": 0.35}


@dataclass
class Parity:
    precision: str
    max_abs_diff: float
    relative_diff: float
    tolerance: float
    top1_match: bool
    prompt_tokens: int

    @property
    def ok(self) -> bool:
        return self.relative_diff <= self.tolerance

    def summary(self) -> str:
        verdict = "ok" if self.ok else "OVER TOLERANCE"
        return (
            f"parity vs PyTorch ({self.precision}, {self.prompt_tokens}-token prompt): "
            f"max|Δlogit| {self.max_abs_diff:.3g}, relative {self.relative_diff:.3g} "
            f"(tolerance {self.tolerance:g}), top-1 {'same' if self.top1_match else 'differs'}: {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def torch_last_logits(source: str, input_ids: list[int], **load: Any) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **load)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([input_ids]))
    logits: np.ndarray = out.logits[0, -1].float().numpy()
    del model
    return logits


def check(source: str, out_dir: Path, precision: str, device: str, **load: Any) -> Parity:
    """Compare the export in ``out_dir`` with the PyTorch model ``source`` (fp32 on CPU)."""
    from .engine import Engine
    from .model_files import load_tokenizer

    tokenizer = load_tokenizer(out_dir)
    ids: list[int] = tokenizer(PARITY_PROMPT)["input_ids"]
    expected = torch_last_logits(source, ids, **load)
    engine = Engine(out_dir, device=device)
    got = engine.prefill_logits(ids)
    del engine
    diff = float(np.max(np.abs(got - expected)))
    return Parity(
        precision=precision,
        max_abs_diff=diff,
        relative_diff=diff / max(float(np.max(np.abs(expected))), 1e-12),
        tolerance=TOLERANCE[precision],
        top1_match=int(np.argmax(got)) == int(np.argmax(expected)),
        prompt_tokens=len(ids),
    )


__all__ = ["PARITY_PROMPT", "TOLERANCE", "Parity", "check"]
