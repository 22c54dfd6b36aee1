"""The decode loop over a ``text-generation-with-past`` graph (optimum's export, or
onnxruntime-genai's builder's fused one), for a batch of sequences.

Each run feeds the graph new tokens with the KV cache of the steps before
(``past_key_values.*``) and gets the cache back (``present.*``). A sequence is prefilled
alone (its whole prompt, or in chunks), then joins the running batch, whose decode steps
give every row its next token in one run; sequences join and leave between steps. The
cache lives in buffers planned once (``max_batch`` × context window, or a byte budget) on
the device that runs the model and bound through IO binding, so no cache tensor is
allocated or copied to the host while decoding (:mod:`lexrag_local.kv`):

- optimum's graph concatenates past and new keys into a new tensor: two buffers per
  tensor, the graph reads one and writes the other, and they swap each step; rows are
  left-padded, with per-row attention masks and position ids;
- a graph whose attention is ``GroupQueryAttention`` (the genai builder's) appends the new
  keys in place when past and present are the same buffer of the full capacity: one
  buffer per tensor, each row keeps its own valid length, and no per-step copy of the
  cache at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .kv import Bind, Cache, KvPlan, KvSpec, Seat, make_cache, make_copier
from .model_files import MODEL_FILE, GenerationDefaults, ModelShape, check_model_dir, read_json
from .sampling import Sampler
from .session import CUDA, open_session

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)")


class Engine:
    """One exported model on one ONNX Runtime session, with a KV cache for up to
    ``max_batch`` sequences. Not thread-safe: one thread drives it (the provider's
    scheduler, or a caller of :meth:`decode`)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        threads: int = 0,
        spin: bool = False,
        max_context: int | None = None,
        model_file: str = MODEL_FILE,
        max_batch: int = 1,
        kv_budget_bytes: int | None = None,
        copy_graph: bool | None = None,
    ) -> None:
        self.model_dir = model_dir
        path = check_model_dir(model_dir, model_file)
        config = read_json(model_dir / "config.json")
        self.shape = ModelShape.of(config)
        self.generation = GenerationDefaults.read(model_dir, config)
        self.context_window = min(self.shape.context_window, max_context or self.shape.context_window)
        self.session = open_session(path, device=device, threads=threads, spin=spin)
        self.providers: list[str] = list(self.session.get_providers())
        self.device = "cuda" if self.providers[0] == CUDA else "cpu"
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._past_names = sorted(
            (n for n in inputs if _PAST.fullmatch(n)),
            key=lambda n: (int(_PAST.fullmatch(n).group(1)), n),  # type: ignore[union-attr]
        )
        if not self._past_names or "input_ids" not in inputs:
            raise ValueError(f"{path} is not a text-generation-with-past export (no past_key_values inputs)")
        self._present_names = {n: n.replace("past_key_values", "present") for n in self._past_names}
        self.dtype = _ORT_TYPES[inputs[self._past_names[0]].type]
        self._has_positions = "position_ids" in inputs
        #: Past and present share one buffer (GroupQueryAttention appends in place).
        self.shared_kv = _attention_in_place(path)
        self.spec = KvSpec(
            tuple(self._past_names), self.shape.num_kv_heads, self.shape.head_dim, self.dtype, self.device
        )
        self.plan = KvPlan.make(
            self.spec,
            max_batch=max_batch,
            capacity=self.context_window,
            shared=self.shared_kv,
            budget_bytes=kv_budget_bytes,
        )
        copier = make_copier(self.spec, self.providers, graph=copy_graph)
        self.cache: Cache = make_cache(self.spec, self.plan, copier, shared=self.shared_kv)
        self._run_options = _run_options()
        self._binding: Any = None
        self._bound: tuple[Any, ...] | None = None
        #: On CPU, a decode step's logits land in this buffer (rows × 1 × vocabulary), bound
        #: as the output instead of a new 4 MB array allocated, filled and copied each step.
        logits_type = {o.name: o.type for o in self.session.get_outputs()}["logits"]
        self._logits: np.ndarray | None = (
            np.empty((self.plan.slots, 1, self.shape.vocab_size), dtype=_ORT_TYPES[logits_type])
            if self.device == "cpu"
            else None
        )

    # --- the batch -------------------------------------------------------------------------

    @property
    def running(self) -> list[Seat]:
        """The running batch's seats, in row order (:meth:`step` takes one token each)."""
        return self.cache.rows

    def open(self) -> Seat:
        """A seat for a new sequence (one prefill at a time; ``cache.seats_free`` says if
        there is room)."""
        return self.cache.open()

    def prefill(self, seat: Seat, ids: Sequence[int]) -> np.ndarray:
        """Run ``ids``, the next part of ``seat``'s prompt (all of it, or a chunk), and return
        the logits after its last token (valid until the engine's next run, as :meth:`step`'s)."""
        if seat.length + len(ids) > self.cache.capacity:
            raise ValueError(
                f"{seat.length + len(ids)} tokens do not fit the context window ({self.cache.capacity})"
            )
        bind = self.cache.bind_prefill(seat, len(ids))
        logits = self._run(bind, np.asarray([ids], dtype=np.int64))
        self.cache.prefilled(seat, len(ids))
        row: np.ndarray = logits[0]
        return row

    def join(self, seat: Seat) -> None:
        """The prefilled ``seat`` joins the running batch (its next token goes to :meth:`step`)."""
        self.cache.join(seat)

    def release(self, seat: Seat) -> None:
        """``seat``'s sequence has ended (or was cancelled): free its place in the cache."""
        self.cache.release(seat)

    def step(self, tokens: Sequence[int]) -> list[np.ndarray | Exception]:
        """One decode step of the running batch: ``tokens[i]`` is row ``i``'s last token.
        Returns each row's next-token logits, or the error of a row whose run failed. On CPU
        the rows are views of the engine's logits buffer, valid until its next run: copy a
        row to keep it.

        When the batched run fails, each row runs alone (writing where the batch would
        have), so an error fails only the sequences it concerns."""
        rows = self.cache.rows
        if len(tokens) != len(rows):
            raise ValueError(f"{len(tokens)} tokens for a batch of {len(rows)}")
        if max(s.length for s in rows) >= self.cache.capacity:
            raise ValueError(f"a sequence would pass the context window ({self.cache.capacity})")
        ids = np.asarray(tokens, dtype=np.int64)[:, None]
        results: list[np.ndarray | Exception]
        try:
            results = list(self._run(self.cache.bind_decode(), ids))
        except Exception:
            if self._run_options.terminate or len(rows) == 1:
                raise
            results = []
            errors: list[Exception] = []
            for i in range(len(rows)):
                try:
                    # A copy: the next row's run writes the same logits buffer.
                    results.append(self._run(self.cache.bind_row(i), ids[i : i + 1])[0].copy())
                except Exception as exc:  # this row's own failure
                    results.append(exc)
                    errors.append(exc)
            if len(errors) == len(rows):
                raise errors[0] from None
        self.cache.decoded()
        return results

    def interrupt(self) -> None:
        """Stop the run in progress (from another thread) and refuse later runs, until
        :meth:`resume`."""
        self._run_options.terminate = True

    def resume(self) -> None:
        self._run_options = _run_options()

    def reset(self) -> None:
        """Forget every sequence."""
        self.cache.reset()

    # --- one sequence (the parity check, tests, benchmarks) --------------------------------

    def decode(self, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler) -> Iterator[int]:
        """Yield up to ``max_new_tokens`` sampled ids for one prompt, alone on the engine; the
        caller stops early by closing the iterator. The prompt must fit:
        ``len(prompt_ids) + max_new_tokens <= context_window``."""
        if self.cache.rows or self.cache.pending is not None:
            raise RuntimeError("the engine is running a batch")
        if len(prompt_ids) + max_new_tokens > self.cache.capacity:
            raise ValueError(
                f"{len(prompt_ids)} + {max_new_tokens} tokens do not fit the context window "
                f"({self.cache.capacity})"
            )
        seat = self.open()
        try:
            token = sampler(self.prefill(seat, prompt_ids))
            yield token
            if max_new_tokens > 1:
                self.join(seat)
            for _ in range(max_new_tokens - 1):
                (logits,) = self.step([token])
                if isinstance(logits, Exception):
                    raise logits
                token = sampler(logits)
                yield token
        finally:
            self.release(seat)

    def prefill_logits(self, prompt_ids: list[int]) -> np.ndarray:
        """Last-position logits of ``prompt_ids`` (the parity check compares them to PyTorch)."""
        seat = self.open()
        try:
            return self.prefill(seat, prompt_ids).astype(np.float32)
        finally:
            self.release(seat)

    # --- a run -----------------------------------------------------------------------------

    def _run(self, bind: Bind, ids: np.ndarray) -> np.ndarray:
        """Run the graph on ``ids`` [rows, new] with the cache where ``bind`` says; the
        last position's logits of each row."""
        key = (bind.past, bind.present)
        if self._bound != key:
            # Decode steps of an unchanged in-place batch reuse the binding of the cache.
            binding = self.session.io_binding()
            binding.bind_output("logits", "cpu")  # first: output 0
            for name in self._past_names:
                ptr, shape = bind.past[name]
                binding.bind_input(name, self.device, 0, self.dtype, shape, ptr)
                ptr, shape = bind.present[name]
                binding.bind_output(self._present_names[name], self.device, 0, self.dtype, shape, ptr)
            self._binding, self._bound = binding, None
        binding = self._binding
        rows, new = ids.shape
        buffer = self._logits[:rows] if self._logits is not None and new == 1 else None
        if buffer is not None:  # rebound (same index): the logits buffer's first rows
            binding.bind_ortvalue_output("logits", _ortvalue(buffer))
        else:  # a new host array of the run's shape (a prompt's logits, on the GPU)
            binding.bind_output("logits", "cpu")
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", bind.attention_mask)
        if self._has_positions:
            binding.bind_cpu_input("position_ids", bind.position_ids)
        self.session.run_with_iobinding(binding, self._run_options)
        self._bound = key
        logits: np.ndarray = buffer if buffer is not None else binding.get_outputs()[0].numpy()
        # An export without the last-position rewrite has logits for every position.
        return logits[:, -1]


def _ortvalue(array: np.ndarray) -> Any:
    """An OrtValue over ``array``'s memory (no copy): onnxruntime writes into the array."""
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy(array)


def _run_options() -> Any:
    """Run options that can interrupt a run. The graph id is the default, set: asked for
    and missing, onnxruntime's wrapper raises and catches an error each run (38 µs)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("gpu_graph_id", "0")
    return options


def _attention_in_place(path: Path) -> bool:
    """Whether ``path``'s attention is ``GroupQueryAttention`` (which can append to its
    cache in place); the graph is read without its weights."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "GroupQueryAttention" for node in graph.node)


__all__ = ["Engine", "Seat"]
