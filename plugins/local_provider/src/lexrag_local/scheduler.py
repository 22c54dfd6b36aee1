"""Continuous batching: one thread owns the engine and its running batch.

Each cycle of the thread
1. ends the sequences whose client went away (cancelled), freeing their rows;
2. admits the oldest waiting request when the KV cache has a free seat, and runs one part
   of its prefill, ahead of the next decode step. A prompt of at most ``whole_prompt``
   tokens (or any prompt when nothing else is running) is prefilled in one step: its
   first token comes as soon as on an idle engine, and the running streams wait for it
   once. A longer prompt goes in chunks between decode steps, so running streams wait for
   one chunk at a time, not for the whole prompt: ``prefill_chunk`` tokens, or (None)
   as many as take about ``chunk_steps`` decode steps of the batch, from the measured
   time of a decode step and of a prefilled token (0: every prompt whole). When its
   prompt is done it samples its first token and joins the batch;
3. runs one decode step for every running sequence and hands each its next token.

Every sequence keeps its own sampler (temperature, top_p, top_k, seed), stop strings,
``max_tokens`` and eos ids, and its own detokenizer; it leaves the batch the moment it
ends, without touching the others' cache. A failed prefill fails only its sequence; a
failed decode step is retried row by row by the engine, so only the sequences whose row
fails end with the error; the thread keeps serving either way. Requests beyond the free
seats wait in a queue of ``queue_size``; one more is refused with a retryable 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lexrag import ProviderError

from .engine import Engine, Seat
from .sampling import Sampler, SamplingParams
from .tokens import Detokenizer, StopText

log = logging.getLogger("lexrag.local")

#: Seconds of history behind the tokens-per-second figure.
RATE_WINDOW_S = 10.0
#: Prompts of at most this many tokens are prefilled in one step even while others decode
#: (their first token then comes as on an idle engine); longer ones are chunked. Chosen by
#: bench/bench_batching.py (1B shape, int8, 2 cores): a 256-token prompt arriving while 7
#: decode gets its first token 1.1x later than on an idle engine prefilled whole, 1.6x when
#: chunked to keep the running streams' inter-token latency within 3x; 512 tokens stall
#: the running streams about 1.2 s once.
WHOLE_PROMPT = 512
#: Automatic prefill chunks take about this many decode steps' time. Where prefill and
#: decode share saturated cores (a CPU), a chunk of k steps makes the running streams'
#: tokens come (1 + k)x slower while a long prompt is admitted, and that prompt's first
#: token (1 + 1/k)x later than on an idle engine: short prompts, prefilled whole, keep
#: their first token early, so the chunk favours the running streams.
CHUNK_STEPS = 1.5
#: The automatic chunk before anything is measured, and its bounds.
FIRST_CHUNK, MIN_CHUNK, MAX_CHUNK = 32, 8, 8192
#: Weight of a new measurement in the running averages (decode step, prefilled token).
_EMA = 0.3


@dataclass(frozen=True)
class Finished:
    """The end of one generation: why it ended and how many tokens it sampled."""

    reason: str  # "stop" | "length" | "cancelled"
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    """A generation that ended with an error (its own, or the engine stopping)."""

    error: ProviderError


Event = str | Finished | Failed


@dataclass(eq=False)
class Request:
    """One generation as the scheduler sees it. ``emit`` is called on the scheduler thread
    with each text delta, then one ``Finished`` or ``Failed``."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    emit: Callable[[Event], None]
    stop: Sequence[str] = ()
    eos: frozenset[int] = frozenset()
    #: Set by the consumer when it goes away; the sequence ends at the next cycle.
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: Set once the request has ended, whichever way.
    done: threading.Event = field(default_factory=threading.Event)
    #: The ids sampled so far (an eos id included).
    tokens: list[int] = field(default_factory=list)


class _Sequence:
    """A request's generation state."""

    def __init__(self, request: Request, backend: Any) -> None:
        self.request = request
        self.sampler = Sampler(request.sampling)
        self.detok = Detokenizer(backend)
        self.stops = StopText(request.stop)
        self.seat: Seat | None = None
        self.prefilled = 0
        self.sampled = 0
        self.last = -1
        self.started = time.perf_counter()


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        backend: Any,
        *,
        queue_size: int = 32,
        prefill_chunk: int | None = None,
        whole_prompt: int = WHOLE_PROMPT,
        chunk_steps: float = CHUNK_STEPS,
        name: str = "lexrag-local",
    ) -> None:
        self.engine = engine
        self._backend = backend
        self.queue_size = queue_size
        self.prefill_chunk = prefill_chunk
        self.whole_prompt = whole_prompt
        self.chunk_steps = chunk_steps
        self._cv = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._pending: _Sequence | None = None
        self._by_seat: dict[Seat, _Sequence] = {}
        self._closing = False
        self._step_s: float | None = None  # a decode step of the batch, seconds
        self._token_s: float | None = None  # a prefilled token (of a chunk), seconds
        self._rate_lock = threading.Lock()
        self._sampled: deque[tuple[float, int]] = deque()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # --- the event loop's side --------------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue ``request``; a full queue (or a stopping engine) is a retryable 503."""
        with self._cv:
            if self._closing:
                raise ProviderError("the local model is stopping; retry later", retryable=True, status=503)
            waiting = len(self._waiting)
            # queue_size requests may wait beyond the seats that are free now.
            if waiting >= self.queue_size + max(0, self.engine.cache.seats_free):
                raise ProviderError(
                    f"the local model is busy: {len(self.engine.running)} sequences running and {waiting} "
                    f"waiting (max_batch {self.engine.plan.slots}, queue_size {self.queue_size}); retry later",
                    retryable=True,
                    status=503,
                    retry_after=1.0,
                )
            self._waiting.append(_Sequence(request, self._backend))
            self._cv.notify()

    def stats(self) -> dict[str, Any]:
        """The batch's state now (read from another thread: each number is current, not all
        of them of one instant), and tokens per second over the last ``RATE_WINDOW_S``
        seconds."""
        now = time.perf_counter()
        with self._rate_lock:
            while self._sampled and self._sampled[0][0] < now - RATE_WINDOW_S:
                self._sampled.popleft()
            tokens = sum(n for _, n in self._sampled)
            span = now - self._sampled[0][0] if self._sampled else 0.0
        return {**self._snapshot(), "tokens_per_second": round(tokens / max(span, 1.0), 2)}

    @property
    def in_flight(self) -> int:
        """Requests running or waiting."""
        cache = self.engine.cache
        return len(cache.rows) + (cache.pending is not None) + len(self._waiting)

    def close(self, timeout: float = 10.0) -> None:
        """Stop: the run in progress is interrupted, every request still open fails with a
        retryable 503, and the thread ends (waited for up to ``timeout`` seconds)."""
        with self._cv:
            self._closing = True
            self.engine.interrupt()
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the scheduler thread -------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closing and not (self._waiting or self._pending or self._by_seat):
                    self._cv.wait()
                if self._closing:
                    break
            try:
                self._cycle()
            except Exception as exc:  # a fault of the batch as a whole: its sequences fail, serving goes on
                if self.closing:
                    break
                log.exception("local batch step failed; its sequences end with the error")
                for seq in [*self._by_seat.values(), *([self._pending] if self._pending else [])]:
                    self._fail(seq, exc)
        self._shutdown()

    def _cycle(self) -> None:
        for seq in [*self._by_seat.values(), *([self._pending] if self._pending else [])]:
            if seq.request.cancelled.is_set():
                self._end(seq, "cancelled")
        if self._pending is None:
            self._admit()
        if self._pending is not None:
            self._prefill(self._pending)
        if self._by_seat:
            self._decode()

    def _admit(self) -> None:
        with self._cv:
            while self._waiting and self._waiting[0].request.cancelled.is_set():
                self._end(self._waiting.popleft(), "cancelled")
            if not self._waiting or self.engine.cache.seats_free < 1:
                return
            seq = self._waiting.popleft()
        seq.seat = self.engine.open()
        self._pending = seq

    def _prefill(self, seq: _Sequence) -> None:
        assert seq.seat is not None
        prompt = seq.request.prompt_ids
        rest = len(prompt) - seq.prefilled
        whole = not self._by_seat or (seq.prefilled == 0 and rest <= self.whole_prompt)
        n = rest if whole else min(rest, self.chunk())
        started = time.perf_counter()
        try:
            logits = self.engine.prefill(seq.seat, prompt[seq.prefilled : seq.prefilled + n])
        except Exception as exc:
            if self.closing:  # interrupted: the shutdown answers it
                raise
            self._fail(seq, exc)
            return
        if n >= MIN_CHUNK and (self._token_s is None or not whole):
            # A whole prompt shares a run's fixed cost among more tokens: it only seeds the
            # estimate, which the chunks' own times then correct.
            self._token_s = _average(self._token_s, (time.perf_counter() - started) / n)
        seq.prefilled += n
        if seq.prefilled < len(prompt):
            return
        self._pending = None
        self._by_seat[seq.seat] = seq
        if self._advance(seq, logits):
            self.engine.join(seq.seat)

    def chunk(self) -> int:
        """Prompt tokens to prefill in a step while others decode (prompts longer than
        ``whole_prompt``)."""
        if self.prefill_chunk is not None:
            return self.prefill_chunk or self.engine.cache.capacity
        if self._step_s is None or self._token_s is None:
            return FIRST_CHUNK
        return int(min(MAX_CHUNK, max(MIN_CHUNK, self.chunk_steps * self._step_s / self._token_s)))

    def _decode(self) -> None:
        seats = list(self.engine.running)
        sequences = [self._by_seat[s] for s in seats]
        started = time.perf_counter()
        try:
            results = self.engine.step([s.last for s in sequences])
            self._step_s = _average(self._step_s, time.perf_counter() - started)
        except Exception as exc:
            if self.closing:
                raise
            for seq in sequences:
                self._fail(seq, exc)
            return
        for seq, result in zip(sequences, results, strict=True):
            if isinstance(result, Exception):
                self._fail(seq, result)
            else:
                self._advance(seq, result)

    def _advance(self, seq: _Sequence, logits: np.ndarray) -> bool:
        """Sample ``seq``'s next token from ``logits`` and emit its text; False once it ended."""
        request = seq.request
        try:
            token = seq.sampler(logits)
            seq.sampled += 1
            seq.last = token
            request.tokens.append(token)
            self._count(1)
            if request.cancelled.is_set():
                self._end(seq, "cancelled")
                return False
            if token in request.eos:
                self._end(seq, "stop")
                return False
            text = seq.stops.feed(seq.detok.feed(token))
            if text:
                request.emit(text)
            if seq.stops.stopped:
                self._end(seq, "stop")
                return False
            if seq.sampled >= request.max_new_tokens or (
                seq.seat is not None and seq.seat.length >= self.engine.cache.capacity
            ):
                # max_tokens reached, or the context window is full.
                self._end(seq, "length")
                return False
        except Exception as exc:  # this sequence's sampler or detokenizer
            self._fail(seq, exc)
            return False
        return True

    def _release(self, seq: _Sequence) -> None:
        if seq.seat is not None:
            self._by_seat.pop(seq.seat, None)
            if self._pending is seq:
                self._pending = None
            self.engine.release(seq.seat)
            seq.seat = None

    def _end(self, seq: _Sequence, reason: str) -> None:
        self._release(seq)
        request = seq.request
        if reason != "cancelled":
            tail = seq.stops.feed(seq.detok.flush()) + seq.stops.flush()
            if tail:
                request.emit(tail)
        # The one record of how a generation whose client went away ended (the caller
        # never sees its ``Finished``).
        log.debug(
            "local generation ended: %s after %d tokens (prompt %d) in %.2f s",
            reason,
            seq.sampled,
            len(request.prompt_ids),
            time.perf_counter() - seq.started,
        )
        request.emit(Finished(reason, seq.sampled))
        request.done.set()

    def _fail(self, seq: _Sequence, exc: BaseException) -> None:
        self._release(seq)
        log.warning("local generation failed after %d tokens: %s", seq.sampled, exc)
        error = (
            exc
            if isinstance(exc, ProviderError)
            else ProviderError(f"local generation failed: {exc}", retryable=False)
        )
        seq.request.emit(Failed(error))
        seq.request.done.set()

    def _shutdown(self) -> None:
        with self._cv:
            left = [*self._waiting, *([self._pending] if self._pending else []), *self._by_seat.values()]
            self._waiting.clear()
        for seq in left:
            seq.request.emit(
                Failed(
                    ProviderError(
                        "the local model stopped before the answer ended", retryable=True, status=503
                    )
                )
            )
            seq.request.done.set()
        self._by_seat.clear()
        self._pending = None
        with self._cv:  # after close() interrupted the engine: it can serve another scheduler
            self.engine.reset()
            self.engine.resume()

    def _count(self, tokens: int) -> None:
        now = time.perf_counter()
        with self._rate_lock:
            if self._sampled and self._sampled[-1][0] > now - 0.1:
                # One entry per tenth of a second bounds the history, sampled or not.
                self._sampled[-1] = (self._sampled[-1][0], self._sampled[-1][1] + tokens)
            else:
                self._sampled.append((now, tokens))
            while self._sampled[0][0] < now - RATE_WINDOW_S:
                self._sampled.popleft()

    def _snapshot(self) -> dict[str, Any]:
        cache = self.engine.cache
        plan = self.engine.plan
        pending = cache.pending
        return {
            "running": len(cache.rows),
            "prefilling": 1 if pending is not None else 0,
            "waiting": len(self._waiting),
            "max_batch": plan.slots,
            "queue_size": self.queue_size,
            "prefill_chunk": self.chunk(),
            "kv_used_tokens": sum(s.length for s in list(cache.rows)) + (pending.length if pending else 0),
            "kv_capacity_tokens": plan.slots * plan.capacity,
            "kv_bytes": plan.bytes,
        }


def _average(old: float | None, new: float) -> float:
    return new if old is None else (1 - _EMA) * old + _EMA * new


__all__ = ["CHUNK_STEPS", "WHOLE_PROMPT", "Event", "Failed", "Finished", "Request", "Scheduler"]
