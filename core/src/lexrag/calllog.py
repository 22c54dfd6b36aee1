"""The call log: what happened to one request, written as one JSON line when it ends.

The server opens a :class:`CallRecord` per request and makes it current (a context
variable, so the router and the pipeline fill it in without passing it around); code
outside a request (``lexrag ask``) writes into a detached record nobody reads. The line
goes to the ``lexrag.calls`` logger through the standard :mod:`logging` module. It holds
ids, names, counts and timings; message bodies only when ``[logging] log_bodies`` is on;
never a key.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .types import ChatMessage, Source, Usage

logger = logging.getLogger("lexrag.calls")


@dataclass
class Attempt:
    """One call of one provider: how it ended (``ok``, or the error's code)."""

    provider: str
    outcome: str
    status: int | None = None
    seconds: float = 0.0


@dataclass
class CallRecord:
    """The facts of one request, filled in as it goes."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    method: str = ""
    path: str = ""
    started: float = field(default_factory=time.perf_counter)
    stream: bool | None = None
    requested_model: str | None = None
    key: str | None = None
    """The name of the API key (``api_keys[0]``, or ``[server.keys.NAME]``'s NAME); never the key."""
    cache: str | None = None
    """``hit`` or ``miss`` when the response cache was asked."""
    provider: str | None = None
    """The provider that answered (or the last one tried)."""
    model: str | None = None
    """The model id that answered, as the response's ``model`` names it."""
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Providers passed over because their breaker was open."""
    fallback: bool = False
    status: int | None = None
    error: str | None = None
    """The error's code when the request failed (or a stream was cut), else None."""
    error_status: int | None = None
    """For a stream cut after it started (HTTP status 200): the status of the error."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    latency_s: float | None = None
    retrieval_s: float | None = None
    sources: list[str] = field(default_factory=list)
    """Retrieved passages as ``doc:article`` (``doc`` alone when it has no article)."""
    messages: list[dict[str, Any]] | None = None
    answer: list[str] | None = None
    """Answer text pieces, kept only when bodies are logged."""
    rewrite: dict[str, Any] | None = None
    """The rewriting of a follow-up turn before retrieval, when one was asked for: the
    provider, how it ended (``ok``, ``timeout`` or the error's code) and its seconds."""

    # --- filled in by the router and the pipeline ---------------------------------

    @property
    def retries(self) -> int:
        """Attempts beyond the first at each provider tried."""
        tried = {a.provider for a in self.attempts}
        return len(self.attempts) - len(tried)

    @property
    def tried(self) -> list[str]:
        return list(dict.fromkeys(a.provider for a in self.attempts))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def first_token(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = self.elapsed()

    def answered(self, provider: str, model: str, *, fallback: bool) -> None:
        self.provider, self.model, self.fallback = provider, model, fallback

    def usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.prompt_tokens, self.completion_tokens = usage.prompt_tokens, usage.completion_tokens

    def retrieved(self, sources: Sequence[Source], seconds: float) -> None:
        self.retrieval_s = seconds
        self.sources = [f"{s.doc}:{s.article}" if s.article is not None else s.doc for s in sources]

    def rewrote(self, provider: str, outcome: str, seconds: float) -> None:
        self.rewrite = {"provider": provider, "outcome": outcome, "s": round(seconds, 4)}

    def keep_messages(self, messages: Sequence[ChatMessage]) -> None:
        self.messages = [m.model_dump(exclude_none=True) for m in messages]

    def keep_answer(self, text: str | None) -> None:
        if self.answer is not None and text:
            self.answer.append(text)

    # --- the line -----------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "error": self.error,
            "error_status": self.error_status,
            "stream": self.stream,
            "requested_model": self.requested_model,
            "key": self.key,
            "cache": self.cache,
            "provider": self.provider,
            "model": self.model,
            "retries": self.retries,
            "fallback": self.fallback,
            "tried": self.tried,
            "skipped": self.skipped,
            "attempts": [
                {"provider": a.provider, "outcome": a.outcome, "status": a.status, "s": round(a.seconds, 4)}
                for a in self.attempts
            ],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
            "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
            "retrieval_s": None if self.retrieval_s is None else round(self.retrieval_s, 4),
            "sources": self.sources,
        }
        if self.rewrite is not None:
            out["rewrite"] = self.rewrite
        if self.messages is not None:
            out["messages"] = self.messages
        if self.answer is not None:
            out["answer"] = "".join(self.answer)
        return out

    def write(self) -> None:
        """Log the record as one JSON line on ``lexrag.calls`` (level INFO, or WARNING
        for a failure the server answered with a 5xx)."""
        if self.latency_s is None:
            self.latency_s = self.elapsed()
        level = logging.WARNING if (self.status or 0) >= 500 else logging.INFO
        if logger.isEnabledFor(level):
            line = self.as_dict()
            logger.log(level, json.dumps(line, ensure_ascii=False), extra={"call": line})


_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("lexrag_call", default=None)


def current() -> CallRecord:
    """The record of the request being served, or a detached one outside a request."""
    record = _current.get()
    return CallRecord() if record is None else record


@contextmanager
def recording(record: CallRecord) -> Iterator[CallRecord]:
    """Make ``record`` current for the code inside (and the tasks it starts)."""
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


__all__ = ["Attempt", "CallRecord", "current", "logger", "recording"]
