"""Per-key rate limits: requests and tokens per minute, tokens per UTC day
(``[server.keys.NAME]`` rpm, tpm, tokens_per_day).

Counted in fixed windows (the minute, the UTC day) in a :class:`~lexrag.LimitStore`: the
index database when the index backend's store is one (lexrag-postgres: every server on that
database shares the counts), else this process's memory. A request is let in while its key
has requests left this minute and tokens left this minute and today; its tokens (prompt +
completion, from the answer's usage, streams included) are charged when the response has
been sent. Refused requests get 429, ``Retry-After`` and OpenAI's error body; every
response to a limited key carries OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import calllog
from ..errors import LexragError, RateLimitError
from ..limitstore import Increment, LimitStore, MemoryLimitStore
from ..registry import backend, index_location
from .auth import KEY_NAME
from .errors import send_error

if TYPE_CHECKING:
    from ..config import Config, KeySettings
    from ..registry import Registry

log = logging.getLogger("lexrag.server")

MINUTE = 60
DAY = 86_400
#: The headers a limited key's responses carry (``-tokens-day``: lexrag's, for tokens_per_day).
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{what}-{kind}"
    for kind in ("requests", "tokens", "tokens-day")
    for what in ("limit", "remaining", "reset")
)


def reset_text(seconds: float) -> str:
    """A wait as OpenAI's ``x-ratelimit-reset-*`` headers write it: ``20ms``, ``17s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass
class Verdict:
    """Whether a request may go on, and the ``x-ratelimit-*`` headers of its response."""

    headers: dict[str, str] = field(default_factory=dict)
    error: RateLimitError | None = None


@dataclass(frozen=True)
class _Limit:
    kind: str  # requests | tokens | tokens-day
    limit: int
    item: Increment
    reset_s: float


class RateLimiter:
    """The counters of every key, kept across config reloads; ``clock`` is wall time in
    seconds (a test passes a fake one)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.memory = MemoryLimitStore()
        self._shared: tuple[str, LimitStore | None, object] | None = None
        self._lock = threading.Lock()

    # --- where the counters are ------------------------------------------------------

    def store(self, config: Config, registry: Registry) -> LimitStore:
        """The index's store when it keeps counters (opened once per location), else memory.
        Blocking: call in a thread."""
        cls = backend(config, registry)
        if not issubclass(cls, LimitStore):
            return self.memory
        location = str(index_location(config, registry))
        with self._lock:
            if self._shared is not None and self._shared[0] == location:
                return self._shared[1] or self.memory
            try:
                opened = cls.open(location)
            except LexragError as exc:
                log.warning("rate limits are counted per process: %s", exc.message)
                shared: LimitStore | None = None
                handle: object = None
            else:
                shared, handle = opened if isinstance(opened, LimitStore) else None, opened
            old, self._shared = self._shared, (location, shared, handle)
        if old is not None:
            _close(old[2])
        return shared or self.memory

    def close(self) -> None:
        with self._lock:
            old, self._shared = self._shared, None
        if old is not None:
            _close(old[2])

    async def _increment(
        self, config: Config, registry: Registry, items: list[Increment]
    ) -> tuple[bool, list[int]]:
        def run() -> tuple[bool, list[int]]:
            return self.store(config, registry).increment(items)

        if not issubclass(backend(config, registry), LimitStore):
            return self.memory.increment(items)
        return await asyncio.to_thread(run)

    # --- a request ----------------------------------------------------------------------

    def _limits(self, name: str, limits: KeySettings, now: float) -> list[_Limit]:
        minute = int(now // MINUTE) * MINUTE
        day = int(now // DAY) * DAY
        out = []
        if limits.rpm is not None:
            item = Increment(f"{name}:requests", minute, 1, minute + MINUTE, ceiling=limits.rpm)
            out.append(_Limit("requests", limits.rpm, item, minute + MINUTE - now))
        if limits.tpm is not None:
            # A read: the request goes on while fewer than tpm tokens were used this minute.
            item = Increment(f"{name}:tokens", minute, 0, minute + MINUTE, ceiling=limits.tpm - 1)
            out.append(_Limit("tokens", limits.tpm, item, minute + MINUTE - now))
        if limits.tokens_per_day is not None:
            item = Increment(f"{name}:tokens-day", day, 0, day + DAY, ceiling=limits.tokens_per_day - 1)
            out.append(_Limit("tokens-day", limits.tokens_per_day, item, day + DAY - now))
        return out

    async def admit(self, name: str, limits: KeySettings, config: Config, registry: Registry) -> Verdict:
        """Count the request against key ``name``'s limits, or refuse it (nothing counted)."""
        checks = self._limits(name, limits, self.clock())
        if not checks:
            return Verdict()
        try:
            ok, counts = await self._increment(config, registry, [c.item for c in checks])
        except LexragError as exc:
            # The shared store is down: serving beats refusing every request.
            log.warning("rate limits of key %r not checked: %s", name, exc.message)
            return Verdict()
        headers: dict[str, str] = {}
        for check, count in zip(checks, counts, strict=True):
            suffix = check.kind
            headers[f"x-ratelimit-limit-{suffix}"] = str(check.limit)
            headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, check.limit - count))
            headers[f"x-ratelimit-reset-{suffix}"] = reset_text(check.reset_s)
        if ok:
            return Verdict(headers)
        over = [
            c
            for c, n in zip(checks, counts, strict=True)
            if c.item.ceiling is not None and n + c.item.amount > c.item.ceiling
        ]
        wait = max(c.reset_s for c in over)
        return Verdict(headers, _refusal(name, over[0], wait))

    async def charge(
        self, name: str, limits: KeySettings, tokens: int, config: Config, registry: Registry
    ) -> None:
        """Add ``tokens`` (an answer's usage) to key ``name``'s counts of this minute and day."""
        checks = [c for c in self._limits(name, limits, self.clock()) if c.kind != "requests"]
        if not checks or tokens <= 0:
            return
        items = [Increment(c.item.counter, c.item.window, tokens, c.item.expires) for c in checks]
        try:
            await self._increment(config, registry, items)
        except LexragError as exc:
            log.warning("%d token(s) of key %r not counted: %s", tokens, name, exc.message)


def _close(handle: object) -> None:
    close = getattr(handle, "close", None)
    if close is not None:
        close()


def _refusal(name: str, limit: _Limit, wait: float) -> RateLimitError:
    where = f"[server.keys.{name}]"
    retry = reset_text(wait)
    if limit.kind == "requests":
        text = f"{limit.limit} requests per minute ({where} rpm)"
    elif limit.kind == "tokens":
        text = f"{limit.limit} tokens per minute ({where} tpm)"
    else:
        text = f"{limit.limit} tokens per day, UTC ({where} tokens_per_day)"
    exc = RateLimitError(
        f"rate limit reached for API key {name!r}: {text}; try again in {retry}",
        retry_after=math.ceil(wait),
    )
    exc.type = "requests" if limit.kind == "requests" else "tokens"  # as OpenAI's body says
    return exc


class RateLimitMiddleware:
    """Applies the limits of the request's key (named by :class:`AuthMiddleware`) to the API
    (``/v1/…``); ``settings(scope)`` gives the config and registry serving the request."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        settings: Callable[[Scope], tuple[Config, Registry]],
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope.get("state", {}).get(KEY_NAME) if scope["type"] == "http" else None
        if name is None or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        config, registry = self.settings(scope)
        limits = config.settings.server.keys.get(name)
        if limits is None or (limits.rpm, limits.tpm, limits.tokens_per_day) == (None, None, None):
            await self.app(scope, receive, send)
            return
        verdict = await self.limiter.admit(name, limits, config, registry)
        if verdict.error is not None:
            await send_error(send, verdict.error, verdict.headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in verdict.headers.items():
                    headers[key] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            call = calllog.current()
            tokens = (call.prompt_tokens or 0) + (call.completion_tokens or 0)
            if tokens and call.cache != "hit":  # an answer from the cache costs nothing
                await self.limiter.charge(name, limits, tokens, config, registry)


__all__ = [
    "DAY",
    "MINUTE",
    "RATE_LIMIT_HEADERS",
    "RateLimitMiddleware",
    "RateLimiter",
    "Verdict",
    "reset_text",
]
