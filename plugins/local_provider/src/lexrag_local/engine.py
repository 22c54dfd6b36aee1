"""The decode loop over a ``text-generation-with-past`` graph (optimum's export, or
onnxruntime-genai's builder's fused one).

Each step runs the graph on the new token(s) with the KV cache of the steps before
(``past_key_values.*``) and gets the next cache back (``present.*``). The cache lives in
preallocated buffers on the device that runs the model, bound through IO binding, so no
cache tensor is allocated or copied to the host while decoding:

- optimum's graph concatenates past and new keys into a new tensor: two buffers per
  tensor, the graph reads one and writes the other, and they swap each step;
- a graph whose attention is ``GroupQueryAttention`` (the genai builder's) appends the new
  keys in place when past and present are the same buffer of the full capacity: one
  buffer per tensor and no per-step copy of the cache at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .model_files import MODEL_FILE, GenerationDefaults, ModelShape, check_model_dir, read_json
from .sampling import Sampler
from .session import CUDA, open_session

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)")


@dataclass
class _Buffer:
    """One flat preallocated tensor; ``ref`` keeps the numpy array or OrtValue alive."""

    ref: Any
    ptr: int


class KVCache:
    """Buffers for every ``past_key_values.{i}.{key,value}`` tensor: a ping-pong pair, or one
    buffer read and written in place when ``shared``."""

    def __init__(self, names: list[str], shape: ModelShape, dtype: Any, device: str, shared: bool) -> None:
        self.names = names
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.shared = shared
        self.capacity = 0
        self._buffers: dict[str, tuple[_Buffer, _Buffer]] = {}

    def reserve(self, tokens: int) -> None:
        """Make room for ``tokens`` positions (grows in steps of 256, never shrinks)."""
        if tokens <= self.capacity:
            return
        self.capacity = -(-tokens // 256) * 256
        size = self.shape.num_kv_heads * self.capacity * self.shape.head_dim
        self._buffers = {}
        for name in self.names:
            first = self._alloc(size)
            self._buffers[name] = (first, first if self.shared else self._alloc(size))

    def _alloc(self, size: int) -> _Buffer:
        if self.device == "cuda":
            import onnxruntime as ort

            value = ort.OrtValue.ortvalue_from_shape_and_type([size], self.dtype, "cuda", 0)
            return _Buffer(value, value.data_ptr())
        array = np.empty(size, dtype=self.dtype)
        return _Buffer(array, array.ctypes.data)

    def pair(self, name: str, step: int) -> tuple[int, int]:
        """(read pointer, write pointer) of ``name`` at decode step ``step``."""
        a, b = self._buffers[name]
        return (a.ptr, b.ptr) if step % 2 == 0 else (b.ptr, a.ptr)


class Engine:
    """One exported model on one ONNX Runtime session. Not thread-safe: one decode at a time
    (the provider's worker thread serialises requests)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        threads: int = 0,
        max_context: int | None = None,
        model_file: str = MODEL_FILE,
    ) -> None:
        self.model_dir = model_dir
        path = check_model_dir(model_dir, model_file)
        config = read_json(model_dir / "config.json")
        self.shape = ModelShape.of(config)
        self.generation = GenerationDefaults.read(model_dir, config)
        self.context_window = min(self.shape.context_window, max_context or self.shape.context_window)
        self.session = open_session(path, device=device, threads=threads)
        self.providers: list[str] = list(self.session.get_providers())
        self.device = "cuda" if self.providers[0] == CUDA else "cpu"
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._past_names = sorted(
            (n for n in inputs if _PAST.fullmatch(n)),
            key=lambda n: (int(_PAST.fullmatch(n).group(1)), n),  # type: ignore[union-attr]
        )
        if not self._past_names or "input_ids" not in inputs:
            raise ValueError(f"{path} is not a text-generation-with-past export (no past_key_values inputs)")
        self.dtype = _ORT_TYPES[inputs[self._past_names[0]].type]
        self._has_positions = "position_ids" in inputs
        #: Past and present share one buffer (GroupQueryAttention appends in place).
        self.shared_kv = _attention_in_place(path)
        self.cache = KVCache(self._past_names, self.shape, self.dtype, self.device, self.shared_kv)

    def decode(self, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler) -> Iterator[int]:
        """Yield up to ``max_new_tokens`` sampled ids; the caller stops early by closing the
        iterator. The prompt must fit: ``len(prompt_ids) + max_new_tokens <= context_window``."""
        self.cache.reserve(len(prompt_ids) + max_new_tokens)
        binding = self.session.io_binding()
        new = prompt_ids
        past = 0
        for step in range(max_new_tokens):
            logits = self._run(binding, new, past, step)
            token = sampler(logits)
            yield token
            past += len(new)
            new = [token]

    def prefill_logits(self, prompt_ids: list[int]) -> np.ndarray:
        """Last-position logits of ``prompt_ids`` (the parity check compares them to PyTorch)."""
        self.cache.reserve(len(prompt_ids))
        return self._run(self.session.io_binding(), prompt_ids, 0, 0).astype(np.float32)

    def _run(self, binding: Any, new: list[int], past: int, step: int) -> np.ndarray:
        total = past + len(new)
        binding.bind_output("logits", "cpu")
        binding.bind_cpu_input("input_ids", np.asarray([new], dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ones((1, total), dtype=np.int64))
        if self._has_positions:
            binding.bind_cpu_input("position_ids", np.arange(past, total, dtype=np.int64)[None, :])
        kv, hd = self.shape.num_kv_heads, self.shape.head_dim
        # In place, both views span the whole buffer: GroupQueryAttention takes the valid
        # length from the attention mask and writes the new keys after it.
        past_len, present_len = (self.cache.capacity,) * 2 if self.shared_kv else (past, total)
        for name in self._past_names:
            read, write = self.cache.pair(name, step)
            binding.bind_input(name, self.device, 0, self.dtype, [1, kv, past_len, hd], read)
            binding.bind_output(
                name.replace("past_key_values", "present"),
                self.device,
                0,
                self.dtype,
                [1, kv, present_len, hd],
                write,
            )
        self.session.run_with_iobinding(binding)
        logits: np.ndarray = binding.get_outputs()[0].numpy()
        # An export without the last-position rewrite has logits for every position.
        return logits[0, -1]


def _attention_in_place(path: Path) -> bool:
    """Whether ``path``'s attention is ``GroupQueryAttention`` (which can append to its
    cache in place); the graph is read without its weights."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "GroupQueryAttention" for node in graph.node)


__all__ = ["Engine", "KVCache"]
