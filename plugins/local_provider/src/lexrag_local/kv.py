"""The KV cache of a running batch, for the two kinds of graph the engine runs.

Both keep every cache tensor (``past_key_values.{i}.{key,value}``) in buffers allocated
once, on the device that runs the model, and sized by a plan (:class:`KvPlan`: slots ×
context window); ONNX Runtime reads and writes them through IO binding, so the cache never
travels to the host.

- :class:`SlotCache`, for a ``GroupQueryAttention`` graph (onnxruntime-genai's builder):
  one buffer ``[slots, kv_heads, capacity, head_dim]`` per tensor, past and present bound
  to the same memory. Each sequence owns a slot (a row) and its own valid length, which the
  attention mask gives the graph (``seqlens_k``); a step appends every row's new key in
  place. Rows ``0..n-1`` are the running batch; a sequence is prefilled in the slot after
  them, and a retired row is filled by moving the last row into it.
- :class:`PaddedCache`, for optimum's graph, which concatenates past and new keys into a
  new tensor: two buffers per tensor (read one, write the other, swap each step) holding
  ``[n, kv_heads, P, head_dim]``. Rows are right-aligned (left padding): row ``i``'s cache
  is its last ``len_i`` columns, the attention mask hides the rest and ``position_ids`` give
  each row its own positions. A sequence is prefilled alone into two staging buffers, then
  copied into the batch; rows leave by the last row moving into their place, and the
  columns no row needs any more are dropped.

Copies between rows and layouts (a sequence joining or leaving) go through a
:class:`Copier`: numpy on the CPU, a small ONNX graph on the model's device otherwise, so
a CUDA cache is copied device to device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: Dead columns a padded batch may carry before they are dropped: at least this many...
_TRIM_SLACK = 32
#: ...and at least this fraction of the columns in use.
_TRIM_FRACTION = 0.25


@dataclass(frozen=True)
class KvSpec:
    """The shape of one sequence's cache: its tensors and their per-token size."""

    names: tuple[str, ...]
    kv_heads: int
    head_dim: int
    dtype: Any
    device: str

    @property
    def token_bytes(self) -> int:
        """Bytes one token of one sequence takes, all layers' keys and values together."""
        return int(len(self.names) * self.kv_heads * self.head_dim * np.dtype(self.dtype).itemsize)

    def elements(self, rows: int, cols: int) -> int:
        return rows * self.kv_heads * cols * self.head_dim


@dataclass(frozen=True)
class KvPlan:
    """How much cache there is: ``slots`` sequences of up to ``capacity`` tokens each."""

    slots: int
    capacity: int
    bytes: int

    @staticmethod
    def make(
        spec: KvSpec, *, max_batch: int, capacity: int, shared: bool, budget_bytes: int | None = None
    ) -> KvPlan:
        """``max_batch`` slots of the context window, fewer when ``budget_bytes`` cannot hold
        them (a padded cache needs two copies of the batch and two staging rows)."""
        per_slot = capacity * spec.token_bytes * (1 if shared else 2)
        fixed = 0 if shared else 2 * capacity * spec.token_bytes
        slots = max_batch
        if budget_bytes is not None:
            slots = min(max_batch, (budget_bytes - fixed) // per_slot)
            if slots < 1:
                raise ValueError(
                    f"a KV cache budget of {budget_bytes / 2**20:.0f} MiB cannot hold one sequence of "
                    f"{capacity} tokens ({(per_slot + fixed) / 2**20:.0f} MiB): raise kv_cache_mb or "
                    "lower max_context"
                )
        return KvPlan(slots, capacity, slots * per_slot + fixed)


class Buffers:
    """One flat buffer per cache tensor, on the spec's device (zeroed on the CPU, so a
    masked column never holds NaN; pages are only touched when written)."""

    def __init__(self, spec: KvSpec, elements: int) -> None:
        self.spec = spec
        self.elements = elements
        self.itemsize = np.dtype(spec.dtype).itemsize
        self._refs: dict[str, Any] = {}
        self._ptrs: dict[str, int] = {}
        for name in spec.names:
            if spec.device == "cpu":
                array = np.zeros(elements, dtype=spec.dtype)
                self._refs[name], self._ptrs[name] = array, array.ctypes.data
            else:
                import onnxruntime as ort

                value = ort.OrtValue.ortvalue_from_shape_and_type([elements], spec.dtype, spec.device, 0)
                self._refs[name], self._ptrs[name] = value, value.data_ptr()

    @property
    def nbytes(self) -> int:
        return int(len(self._ptrs) * self.elements * self.itemsize)

    def ptr(self, name: str, offset: int = 0) -> int:
        """Address of element ``offset`` of ``name``'s buffer."""
        return int(self._ptrs[name] + offset * self.itemsize)

    def array(self, name: str) -> np.ndarray:
        """The CPU buffer of ``name`` (numpy copies only)."""
        ref = self._refs[name]
        assert isinstance(ref, np.ndarray), "device buffers have no numpy view"
        return ref

    def ref(self, name: str) -> Any:
        """The numpy array or OrtValue that owns ``name``'s memory."""
        return self._refs[name]


@dataclass(frozen=True)
class Region:
    """``rows`` rows of ``cols`` columns, as a ``[rows, kv_heads, cols, head_dim]`` tensor
    that starts at element ``offset`` of each of ``buffers``' tensors."""

    buffers: Buffers
    offset: int
    rows: int
    cols: int

    def view(self, name: str) -> np.ndarray:
        spec = self.buffers.spec
        size = spec.elements(self.rows, self.cols)
        flat = self.buffers.array(name)[self.offset : self.offset + size]
        return flat.reshape(self.rows, spec.kv_heads, self.cols, spec.head_dim)


class Copier(Protocol):
    def copy(self, src: Region, dst: Region, src_start: int, dst_start: int, n: int) -> None:
        """For every cache tensor, ``dst[:, :, dst_start:dst_start+n] = src[:, :,
        src_start:src_start+n]`` (the same rows). ``dst``'s other columns are left as they
        are or zeroed; ``src`` and ``dst`` do not overlap."""
        ...


class NumpyCopier:
    """Copies CPU buffers with numpy (only the window's columns are touched)."""

    def copy(self, src: Region, dst: Region, src_start: int, dst_start: int, n: int) -> None:
        assert src.rows == dst.rows
        for name in src.buffers.spec.names:
            dst.view(name)[:, :, dst_start : dst_start + n] = src.view(name)[:, :, src_start : src_start + n]


class GraphCopier:
    """Copies buffers on the model's device with a small ONNX graph run through IO binding
    (``Slice`` then ``Pad`` per tensor): device-to-device, never through the host. ``dst``
    columns outside the window are zeroed."""

    def __init__(self, spec: KvSpec, providers: list[Any]) -> None:
        import onnxruntime as ort

        self.spec = spec
        self._device = spec.device
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(_copy_graph(spec), options, providers=providers)

    def copy(self, src: Region, dst: Region, src_start: int, dst_start: int, n: int) -> None:
        assert src.rows == dst.rows
        spec = self.spec
        binding = self.session.io_binding()
        binding.bind_cpu_input("starts", np.array([src_start], dtype=np.int64))
        binding.bind_cpu_input("ends", np.array([src_start + n], dtype=np.int64))
        pads = [0, 0, dst_start, 0, 0, 0, dst.cols - dst_start - n, 0]
        binding.bind_cpu_input("pads", np.array(pads, dtype=np.int64))
        for i, name in enumerate(spec.names):
            binding.bind_input(
                f"x{i}",
                self._device,
                0,
                spec.dtype,
                [src.rows, spec.kv_heads, src.cols, spec.head_dim],
                src.buffers.ptr(name, src.offset),
            )
            binding.bind_output(
                f"y{i}",
                self._device,
                0,
                spec.dtype,
                [dst.rows, spec.kv_heads, dst.cols, spec.head_dim],
                dst.buffers.ptr(name, dst.offset),
            )
        self.session.run_with_iobinding(binding)


def _copy_graph(spec: KvSpec) -> bytes:
    """``y_i = Pad(Slice(x_i, starts, ends, axes=[2]), pads)`` for each cache tensor."""
    from onnx import TensorProto, helper, numpy_helper

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    shape: list[str | int] = ["rows", spec.kv_heads, "src", spec.head_dim]
    out_shape: list[str | int] = ["rows", spec.kv_heads, "dst", spec.head_dim]
    nodes, inputs, outputs = [], [], []
    for i in range(len(spec.names)):
        inputs.append(helper.make_tensor_value_info(f"x{i}", elem, shape))
        outputs.append(helper.make_tensor_value_info(f"y{i}", elem, out_shape))
        nodes.append(helper.make_node("Slice", [f"x{i}", "starts", "ends", "axes"], [f"s{i}"]))
        nodes.append(helper.make_node("Pad", [f"s{i}", "pads"], [f"y{i}"], mode="constant"))
    for name, size in (("starts", 1), ("ends", 1), ("pads", 8)):
        inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, [size]))
    graph = helper.make_graph(
        nodes,
        "lexrag_kv_copy",
        inputs,
        outputs,
        [numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return bytes(model.SerializeToString())


def make_copier(spec: KvSpec, providers: list[Any], *, graph: bool | None = None) -> Copier:
    """numpy on the CPU, the copy graph on a device (``graph`` forces either)."""
    if graph if graph is not None else spec.device != "cpu":
        return GraphCopier(spec, providers)
    return NumpyCopier()


@dataclass(eq=False)
class Seat:
    """One sequence's place in the cache: its row (slot) and how many tokens it holds."""

    row: int = -1
    length: int = 0
    running: bool = False


@dataclass(frozen=True)
class Bind:
    """Where one run reads and writes the cache: a pointer and a shape for the past and
    the present of every tensor, and the attention mask / position ids it needs."""

    past: dict[str, tuple[int, list[int]]]
    present: dict[str, tuple[int, list[int]]]
    attention_mask: np.ndarray
    position_ids: np.ndarray


class Cache:
    """The common part of the two layouts: seats, the running rows, counts."""

    shared: bool

    def __init__(self, spec: KvSpec, plan: KvPlan, copier: Copier) -> None:
        self.spec = spec
        self.plan = plan
        self.copier = copier
        self.rows: list[Seat] = []  # the running batch, in row order
        self.pending: Seat | None = None  # the one sequence being prefilled

    @property
    def capacity(self) -> int:
        """Tokens one sequence may hold (the context window)."""
        return self.plan.capacity

    @property
    def used_tokens(self) -> int:
        return sum(s.length for s in self.rows) + (self.pending.length if self.pending else 0)

    @property
    def seats_free(self) -> int:
        return self.plan.slots - len(self.rows) - (1 if self.pending else 0)

    def open(self) -> Seat:
        """A seat for a new sequence, to prefill into (one at a time)."""
        if self.pending is not None or self.seats_free < 1:
            raise RuntimeError("no free seat in the KV cache")
        self.pending = Seat(row=len(self.rows))
        self._opened(self.pending)
        return self.pending

    def _opened(self, seat: Seat) -> None:
        pass

    def join(self, seat: Seat) -> None:
        """The prefilled ``seat`` becomes the last row of the running batch."""
        assert seat is self.pending
        self._join(seat)
        self.pending = None
        seat.running = True
        seat.row = len(self.rows)
        self.rows.append(seat)

    def _join(self, seat: Seat) -> None:
        raise NotImplementedError

    def release(self, seat: Seat) -> None:
        """Free ``seat``'s place; the last row moves into a hole so rows stay ``0..n-1``."""
        if seat is self.pending:
            self.pending = None
            return
        if not seat.running:
            return
        seat.running = False
        index = self.rows.index(seat)
        last = self.rows.pop()
        if last is not seat:
            self._move_row(last, index)
            last.row = index
            self.rows[index] = last
        self._released()

    def _move_row(self, seat: Seat, to: int) -> None:
        raise NotImplementedError

    def _released(self) -> None:
        pass

    def reset(self) -> None:
        """Forget every sequence (the buffers stay)."""
        for seat in self.rows:
            seat.running = False
        self.rows = []
        self.pending = None

    # --- runs --------------------------------------------------------------------------

    def bind_prefill(self, seat: Seat, n: int) -> Bind:
        raise NotImplementedError

    def prefilled(self, seat: Seat, n: int) -> None:
        seat.length += n

    def bind_decode(self) -> Bind:
        raise NotImplementedError

    def decoded(self) -> None:
        for seat in self.rows:
            seat.length += 1

    def bind_row(self, index: int) -> Bind:
        """Row ``index`` of a decode step alone, writing where the batch run would (the
        fallback that finds which sequence a failed step concerns)."""
        raise NotImplementedError


class SlotCache(Cache):
    """Slots in one buffer per tensor, past and present shared (``GroupQueryAttention``)."""

    shared = True

    def __init__(self, spec: KvSpec, plan: KvPlan, copier: Copier) -> None:
        super().__init__(spec, plan, copier)
        self.row_elements = spec.elements(1, plan.capacity)
        self.buffers = Buffers(spec, plan.slots * self.row_elements)
        self._slots: dict[tuple[int, int], dict[str, tuple[int, list[int]]]] = {}

    @property
    def nbytes(self) -> int:
        return self.buffers.nbytes

    def _slot(self, row: int, rows: int) -> tuple[dict[str, tuple[int, list[int]]], ...]:
        where = self._slots.get((row, rows))
        if where is None:
            # The same object each time: the engine then keeps its binding of the cache.
            shape = [rows, self.spec.kv_heads, self.plan.capacity, self.spec.head_dim]
            where = {n: (self.buffers.ptr(n, row * self.row_elements), shape) for n in self.spec.names}
            self._slots[(row, rows)] = where
        return where, where

    def _region(self, row: int) -> Region:
        return Region(self.buffers, row * self.row_elements, 1, self.plan.capacity)

    def _move_row(self, seat: Seat, to: int) -> None:
        self.copier.copy(self._region(seat.row), self._region(to), 0, 0, seat.length)

    def _join(self, seat: Seat) -> None:
        # A row retired while this one was prefilled: its slot is past the batch's end.
        if seat.row != len(self.rows):
            self._move_row(seat, len(self.rows))

    def bind_prefill(self, seat: Seat, n: int) -> Bind:
        past, present = self._slot(seat.row, 1)
        total = seat.length + n
        return Bind(
            past,
            present,
            np.ones((1, total), dtype=np.int64),
            np.arange(seat.length, total, dtype=np.int64)[None, :],
        )

    def bind_decode(self) -> Bind:
        past, present = self._slot(0, len(self.rows))
        return Bind(past, present, *self._mask([s.length for s in self.rows]))

    def bind_row(self, index: int) -> Bind:
        past, present = self._slot(index, 1)
        return Bind(past, present, *self._mask([self.rows[index].length]))

    @staticmethod
    def _mask(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
        # Right padding: the graph takes each row's valid length from its mask's sum.
        valid = np.asarray(lengths, dtype=np.int64) + 1
        mask = (np.arange(int(valid.max()))[None, :] < valid[:, None]).astype(np.int64)
        return mask, (valid - 1)[:, None]


class PaddedCache(Cache):
    """Left-padded rows in ping-pong buffers (optimum's concatenating graph)."""

    shared = False

    def __init__(self, spec: KvSpec, plan: KvPlan, copier: Copier) -> None:
        super().__init__(spec, plan, copier)
        batch = spec.elements(plan.slots, plan.capacity)
        row = spec.elements(1, plan.capacity)
        self.batch = [Buffers(spec, batch), Buffers(spec, batch)]
        self.staging = [Buffers(spec, row), Buffers(spec, row)]
        self.current = 0  # the batch buffer that holds the cache now
        self.columns = 0  # P: columns of every row
        self._stage = 0  # the staging buffer that holds the pending sequence's cache

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in (*self.batch, *self.staging))

    def _opened(self, seat: Seat) -> None:
        self._stage = 0

    def _batch_region(self, which: int, row: int, rows: int, cols: int) -> Region:
        return Region(self.batch[which], self.spec.elements(row, cols), rows, cols)

    def _where(self, buffers: Buffers, offset: int, shape: list[int]) -> dict[str, tuple[int, list[int]]]:
        return {n: (buffers.ptr(n, offset), shape) for n in self.spec.names}

    def _shape(self, rows: int, cols: int) -> list[int]:
        return [rows, self.spec.kv_heads, cols, self.spec.head_dim]

    def bind_prefill(self, seat: Seat, n: int) -> Bind:
        done = seat.length
        total = done + n
        return Bind(
            self._where(self.staging[self._stage], 0, self._shape(1, done)),
            self._where(self.staging[1 - self._stage], 0, self._shape(1, total)),
            np.ones((1, total), dtype=np.int64),
            np.arange(done, total, dtype=np.int64)[None, :],
        )

    def prefilled(self, seat: Seat, n: int) -> None:
        super().prefilled(seat, n)
        self._stage = 1 - self._stage

    def _join(self, seat: Seat) -> None:
        n, length = len(self.rows), seat.length
        if n == 0:
            self.columns = length
        elif length > self.columns:
            self._realign(length)
        staged = Region(self.staging[self._stage], 0, 1, length)
        row = self._batch_region(self.current, n, 1, self.columns)
        self.copier.copy(staged, row, 0, self.columns - length, length)

    def _realign(self, columns: int) -> None:
        """Re-lay the batch into the other buffer with ``columns`` columns (right-aligned:
        padding added or dead columns dropped on the left)."""
        n, old = len(self.rows), self.columns
        src = self._batch_region(self.current, 0, n, old)
        dst = self._batch_region(1 - self.current, 0, n, columns)
        keep = min(old, columns)
        self.copier.copy(src, dst, old - keep, columns - keep, keep)
        self.current = 1 - self.current
        self.columns = columns

    def _move_row(self, seat: Seat, to: int) -> None:
        p = self.columns
        src = self._batch_region(self.current, seat.row, 1, p)
        self.copier.copy(src, self._batch_region(self.current, to, 1, p), 0, 0, p)

    def _released(self) -> None:
        if not self.rows:
            self.columns = 0
            return
        need = max(s.length for s in self.rows)
        if self.columns - need > max(_TRIM_SLACK, _TRIM_FRACTION * need):
            self._realign(need)

    def bind_decode(self) -> Bind:
        n, p = len(self.rows), self.columns
        if p + 1 > self.plan.capacity:
            self._realign(max(s.length for s in self.rows))
            p = self.columns
        lengths = np.asarray([s.length for s in self.rows], dtype=np.int64)
        return Bind(
            self._where(self.batch[self.current], 0, self._shape(n, p)),
            self._where(self.batch[1 - self.current], 0, self._shape(n, p + 1)),
            *self._mask(lengths, p),
        )

    def bind_row(self, index: int) -> Bind:
        p = self.columns
        length = np.asarray([self.rows[index].length], dtype=np.int64)
        return Bind(
            self._where(self.batch[self.current], self.spec.elements(index, p), self._shape(1, p)),
            self._where(
                self.batch[1 - self.current], self.spec.elements(index, p + 1), self._shape(1, p + 1)
            ),
            *self._mask(length, p),
        )

    @staticmethod
    def _mask(lengths: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
        # Left padding: row i's cache is its last lengths[i] columns, then the new token.
        start = columns - lengths
        mask = (np.arange(columns + 1)[None, :] >= start[:, None]).astype(np.int64)
        return mask, lengths[:, None]

    def decoded(self) -> None:
        super().decoded()
        self.current = 1 - self.current
        self.columns += 1

    def reset(self) -> None:
        super().reset()
        self.columns = 0


def make_cache(spec: KvSpec, plan: KvPlan, copier: Copier, *, shared: bool) -> Cache:
    return SlotCache(spec, plan, copier) if shared else PaddedCache(spec, plan, copier)


__all__ = [
    "Bind",
    "Buffers",
    "Cache",
    "Copier",
    "GraphCopier",
    "KvPlan",
    "KvSpec",
    "NumpyCopier",
    "PaddedCache",
    "Region",
    "Seat",
    "SlotCache",
    "make_cache",
]
