"""The event loop's side of local generation: a request goes to the scheduler's thread
(:mod:`lexrag_local.scheduler`, which batches it with the others) and its text comes back
as an async stream. ONNX Runtime never runs on the event loop.

A request whose consumer goes away (async generator closed, task cancelled) sets its
cancel flag; the scheduler ends it at its next cycle, or skips it if it has not started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .engine import Engine
from .sampling import SamplingParams
from .scheduler import WHOLE_PROMPT, Event, Failed, Finished, Request, Scheduler
from .tokens import fast_backend


@dataclass(frozen=True)
class Job:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    stop: list[str] = field(default_factory=list)
    #: Token ids that end the generation (default: the model's eos ids).
    eos: frozenset[int] | None = None


class Worker:
    """Runs generations on the scheduler's thread, batched, and streams them back."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        *,
        queue_size: int = 32,
        prefill_chunk: int | None = None,
        prefill_whole_tokens: int = WHOLE_PROMPT,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.scheduler = Scheduler(
            engine,
            fast_backend(tokenizer),
            queue_size=queue_size,
            prefill_chunk=prefill_chunk,
            whole_prompt=prefill_whole_tokens,
        )
        self._open: set[Request] = set()

    @property
    def queue_size(self) -> int:
        return self.scheduler.queue_size

    @property
    def in_flight(self) -> int:
        return self.scheduler.in_flight

    def stats(self) -> dict[str, Any]:
        return self.scheduler.stats()

    async def generate(self, job: Job) -> AsyncIterator[str | Finished]:
        """Text deltas, then one ``Finished``."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Event] = asyncio.Queue()

        def emit(item: Event) -> None:
            # The loop may be gone (server shutting down) while the thread finishes a token.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(items.put_nowait, item)

        eos = job.eos if job.eos is not None else frozenset(self.engine.generation.eos_token_ids)
        request = Request(job.prompt_ids, job.max_new_tokens, job.sampling, emit, job.stop, eos)
        self.scheduler.submit(request)
        self._open = {r for r in self._open if not r.done.is_set()}
        self._open.add(request)
        try:
            while True:
                item = await items.get()
                if isinstance(item, Failed):
                    raise item.error
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            request.cancelled.set()

    async def drain(self) -> None:
        """Wait until every generation submitted so far has ended (cancelled ones included)."""
        pending = [r.done for r in self._open]
        await asyncio.to_thread(lambda: [done.wait() for done in pending])

    def close(self) -> None:
        """Stop the scheduler; open requests end with a retryable 503."""
        self.scheduler.close()


__all__ = ["Finished", "Job", "Worker"]
