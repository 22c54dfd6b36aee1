"""Work for a request that stops when its client goes away.

Starlette does not cancel a handler whose client disconnects; for a streamed answer the
stream's send fails and ends it, but a non-streamed one would run to the end, the provider
still generating (and billing) for nobody, and be logged as a 200.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from ..errors import ClientDisconnected

T = TypeVar("T")

#: Seconds between two looks at the connection while the work runs.
POLL_S = 0.1


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """The result of ``work``; if the client disconnects first, ``work`` is cancelled (the
    upstream call with it) and :class:`ClientDisconnected` is raised (logged as 499)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise ClientDisconnected("the client closed the connection before the answer was ready")
    finally:
        if not task.done():
            task.cancel()


__all__ = ["POLL_S", "unless_disconnected"]
