"""Runs generations on one background thread, one at a time, and streams their text back
to the event loop.

One thread means requests queue instead of interleaving their KV state on the single
session; ONNX Runtime never runs on the event loop. A request whose consumer goes away
(async generator closed, task cancelled) sets its cancel flag and the thread stops at
the next token, or skips the request if it has not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lexrag import ProviderError

from .engine import Engine
from .sampling import Sampler, SamplingParams
from .tokens import Detokenizer, StopText, fast_backend

log = logging.getLogger("lexrag.local")


@dataclass(frozen=True)
class Job:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Finished:
    """The end of one generation: why it ended and how many tokens it sampled."""

    reason: str  # "stop" | "length" | "cancelled"
    completion_tokens: int


@dataclass
class _Failed:
    error: BaseException


class Worker:
    def __init__(self, engine: Engine, tokenizer: Any, *, queue_size: int = 32) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self._backend = fast_backend(tokenizer)
        self.queue_size = queue_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lexrag-local")
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def generate(self, job: Job) -> AsyncIterator[str | Finished]:
        """Text deltas, then one ``Finished``."""
        if self._in_flight >= self.queue_size:
            raise ProviderError(
                f"the local model has {self._in_flight} requests queued (queue_size {self.queue_size}); retry later",
                retryable=True,
                status=503,
                retry_after=1.0,
            )
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[str | Finished | _Failed] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: str | Finished | _Failed) -> None:
            # The loop may be gone (server shutting down) while the thread finishes a token.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(items.put_nowait, item)

        self._in_flight += 1
        future = loop.run_in_executor(self._executor, self._run, job, emit, cancel)
        future.add_done_callback(lambda _: self._done())
        try:
            while True:
                item = await items.get()
                if isinstance(item, _Failed):
                    raise item.error
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            cancel.set()

    async def drain(self) -> None:
        """Wait until every generation submitted so far has ended (cancelled ones included)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, lambda: None)

    def _done(self) -> None:
        self._in_flight -= 1

    def _run(
        self, job: Job, emit: Callable[[str | Finished | _Failed], None], cancel: threading.Event
    ) -> None:
        started = time.perf_counter()
        try:
            finished = self._decode(job, emit, cancel)
        except Exception as exc:  # reported to the waiting request, never lost in the thread
            emit(_Failed(ProviderError(f"local generation failed: {exc}", retryable=False)))
            return
        # The one record of how a generation whose client went away ended (the caller
        # never sees its ``Finished``).
        log.debug(
            "local generation ended: %s after %d tokens (prompt %d) in %.2f s",
            finished.reason,
            finished.completion_tokens,
            len(job.prompt_ids),
            time.perf_counter() - started,
        )
        emit(finished)

    def _decode(
        self, job: Job, emit: Callable[[str | Finished | _Failed], None], cancel: threading.Event
    ) -> Finished:
        if cancel.is_set():
            return Finished("cancelled", 0)
        eos = set(self.engine.generation.eos_token_ids)
        detok = Detokenizer(self._backend)
        stops = StopText(job.stop)
        sampled = 0
        reason = "length"
        steps = self.engine.decode(job.prompt_ids, job.max_new_tokens, Sampler(job.sampling))
        try:
            for token in steps:
                sampled += 1
                if cancel.is_set():
                    return Finished("cancelled", sampled)
                if token in eos:
                    reason = "stop"
                    break
                text = stops.feed(detok.feed(token))
                if text:
                    emit(text)
                if stops.stopped:
                    reason = "stop"
                    break
        finally:
            steps.close()
        tail = stops.feed(detok.flush()) + stops.flush()
        if tail:
            emit(tail)
        return Finished(reason, sampled)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["Finished", "Job", "Worker"]
