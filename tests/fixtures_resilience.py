"""Fixtures and helpers for the fault, security, metrics, call-log and load tests.

- ``two_upstreams``: two :class:`FakeUpstream` s, ``primary`` (model ``primary-model``) and
  ``backup`` (``backup-model``), on loopback.
- ``resilient_pm``: ``fake_pm`` plus the provider ``openai-backup`` (the real openai provider
  under a second name, so a chain can hold two OpenAI-compatible upstreams).
- ``start_server(config_text, env=None)``: the real server (uvicorn, background thread) on a
  free port; returns a :class:`Served` (base URL and the app's state).

And plain helpers the bench script shares: :func:`chain_config`, :func:`ask`, :func:`call_line`,
:func:`metric`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pluggy
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lexrag import hookimpl
from lexrag.config import load_config
from lexrag.registry import Registry, check_config

from .fakes import FakeUpstream
from .fixtures_server import sdk

QUESTION = "Thời giờ làm việc bình thường một ngày là bao nhiêu giờ?"
PRIMARY_ANSWER = "Không quá 08 giờ trong 01 ngày và 48 giờ trong 01 tuần [1]."
BACKUP_ANSWER = "Theo Điều 105, không quá 08 giờ một ngày [1]."


class BackupPlugins:
    """Registers the openai provider a second time, as ``openai-backup``."""

    @hookimpl
    def register_llm_providers(self, register: Callable[[str, type[Any]], None]) -> None:
        from lexrag_openai import OpenAIProvider

        register("openai-backup", OpenAIProvider)


def chain_config(
    primary: FakeUpstream,
    backup: FakeUpstream | None = None,
    *,
    llm: str = "",
    extra: str = "",
    timeout: float = 0.5,
    deadline: float = 4.0,
    max_retries: int = 1,
    primary_extra: str = "",
) -> str:
    """A config with ``openai`` → ``primary`` and (when given) the fallback ``openai-backup``
    → ``backup``; small timeouts and backoffs so that failures resolve fast. ``llm`` goes
    into ``[llm]``, ``primary_extra`` into ``[providers.openai]``, ``extra`` at the end."""
    fallback = '["openai-backup"]' if backup is not None else "[]"
    text = (
        "[llm]\n"
        'provider = "openai"\n'
        f"fallback = {fallback}\n"
        f"deadline_s = {deadline}\n"
        f"max_retries = {max_retries}\n"
        "retry_backoff_s = 0.05\n"
        "retry_backoff_max_s = 0.2\n"
        f"{llm}"
        '[retrieval]\nretriever = "static"\nembedder = "hash"\n'
        "[providers.openai]\n"
        f'base_url = "{primary.base_url}"\n'
        'model = "primary-model"\n'
        f"timeout = {timeout}\nconnect_timeout = {timeout}\n{primary_extra}"
    )
    if backup is not None:
        text += (
            "[providers.openai-backup]\n"
            f'base_url = "{backup.base_url}"\n'
            'model = "backup-model"\n'
            f"timeout = {timeout}\nconnect_timeout = {timeout}\n"
        )
    return text + extra


@pytest.fixture
def two_upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    from .fakes import Reply

    with FakeUpstream(model="primary-model") as primary, FakeUpstream(model="backup-model") as backup:
        primary.default = Reply(PRIMARY_ANSWER)
        backup.default = Reply(BACKUP_ANSWER)
        yield primary, backup


@pytest.fixture
def resilient_pm(fake_pm: pluggy.PluginManager) -> pluggy.PluginManager:
    fake_pm.register(BackupPlugins(), name="lexrag-test-backup")
    return fake_pm


@dataclass
class Served:
    base: str
    app: Any

    @property
    def state(self) -> Any:
        return self.app.state.lexrag


@pytest.fixture
def start_server(resilient_pm: pluggy.PluginManager, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    from lexrag.server import create_app

    from .fixtures_server import _ServerThread

    threads: list[_ServerThread] = []

    def start(config_text: str, env: Mapping[str, str] | None = None) -> Served:
        path = tmp_path / f"lexrag-resilience-{len(threads)}.toml"
        path.write_text(config_text, encoding="utf-8")
        registry = Registry(resilient_pm)
        config = check_config(load_config(path, env=dict(env or {})), registry)
        app = create_app(config, registry)
        thread = _ServerThread(app)
        threads.append(thread)
        return Served(thread.start(), app)

    yield start
    for thread in threads:
        thread.stop()


# --- the client's view --------------------------------------------------------------


@dataclass
class Outcome:
    """What the real openai SDK client got."""

    kind: str
    """``answer`` (complete), ``error`` (an HTTP error with an OpenAI body), ``cut`` (a
    stream ended by an error event after it started), ``broken`` (no clean answer: a
    transport error, a hang, a stream ending without finish)."""
    status: int = 200
    text: str = ""
    model: str | None = None
    provider: str | None = None
    request_id: str | None = None
    retry_after: str | None = None
    error: dict[str, Any] = field(default_factory=dict)
    finish: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def label(self) -> str:
        if self.kind == "answer":
            return f"answer by {self.provider}"
        if self.kind == "error":
            extra = f", Retry-After {self.retry_after}" if self.retry_after else ""
            return f"{self.status} {self.error.get('code')}{extra}"
        if self.kind == "cut":
            return f"cut: error event ({self.error.get('code')})"
        return f"BROKEN ({self.error.get('message', '')[:60]})"


def ask(
    base: str,
    *,
    stream: bool,
    key: str = "unused",
    request_id: str | None = None,
    extra_body: dict[str, Any] | None = None,
    model: str = "openai",
    timeout: float = 20,
) -> Outcome:
    """One chat request through the real openai SDK, classified."""
    client = sdk(base, key, timeout)
    headers = {"x-request-id": request_id} if request_id else None
    started = time.monotonic()
    outcome = Outcome("broken")
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": QUESTION}],
            stream=stream,
            extra_headers=headers,
            extra_body=extra_body,
        )
        outcome.provider = raw.headers.get("x-lexrag-provider")
        outcome.request_id = raw.headers.get("x-request-id")
        parsed = raw.parse()
        if stream:
            pieces = []
            try:
                for chunk in parsed:
                    outcome.model = chunk.model
                    for choice in chunk.choices:
                        pieces.append(choice.delta.content or "")
                        if choice.finish_reason:
                            outcome.finish.append(choice.finish_reason)
            except openai.APIError as exc:
                outcome.kind, outcome.text = "cut", "".join(pieces)
                outcome.error = exc.body if isinstance(exc.body, dict) else {"message": exc.message}
                return outcome
            outcome.text = "".join(pieces)
            outcome.kind = "answer" if outcome.finish == ["stop"] else "broken"
        else:
            outcome.model = parsed.model
            outcome.text = parsed.choices[0].message.content or ""
            outcome.finish = [parsed.choices[0].finish_reason]
            outcome.kind = "answer"
    except openai.APIStatusError as exc:
        outcome.kind, outcome.status = "error", exc.status_code
        outcome.request_id = exc.response.headers.get("x-request-id")
        outcome.retry_after = exc.response.headers.get("retry-after")
        body = exc.body if isinstance(exc.body, dict) else {}
        outcome.error = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        if set(outcome.error) != {"message", "type", "param", "code"}:
            outcome.kind = "broken"
    except openai.APIError as exc:  # connection errors, timeouts: the client did not get an answer
        outcome.error = {"message": f"{type(exc).__name__}: {exc}"}
    finally:
        outcome.seconds = time.monotonic() - started
        client.close()
    return outcome


# --- what the server recorded -------------------------------------------------------


def call_line(caplog: pytest.LogCaptureFixture, request_id: str, wait: float = 5.0) -> dict[str, Any]:
    """The call log line of ``request_id`` (written once the response has been sent)."""
    deadline = time.monotonic() + wait
    while True:
        for record in list(caplog.records):
            if record.name == "lexrag.calls":
                line = json.loads(record.getMessage())
                if line["request_id"] == request_id:
                    return dict(line)
        assert time.monotonic() < deadline, f"no call log line for request {request_id}"
        time.sleep(0.02)


def calls_logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lexrag.calls"]


@pytest.fixture
def call_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="lexrag.calls")
    return caplog


def metric(base: str, name: str, labels: Mapping[str, str] | None = None, key: str | None = None) -> float:
    """The value of sample ``name`` with ``labels`` on ``/metrics`` (0 when absent)."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    text = httpx.get(f"{base}/metrics", headers=headers, timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


__all__ = [
    "BACKUP_ANSWER",
    "PRIMARY_ANSWER",
    "QUESTION",
    "BackupPlugins",
    "LoadResult",
    "Outcome",
    "Served",
    "ask",
    "call_line",
    "calls_logged",
    "chain_config",
    "chaos",
    "metric",
    "run_load",
    "sdk",
]


# --- load -----------------------------------------------------------------------------


def chaos(n: int, rate: float, seed: int = 7) -> list[Any]:
    """``n`` behaviours for an upstream's script, ``rate`` of them faults of every kind."""
    import random

    from .fakes import Drop, Fail, Hang, Malformed, Reply, Reset

    faults: list[Any] = [
        Fail(500),
        Fail(502),
        Fail(503),
        Fail(429, retry_after=0.05),
        Reset(),
        Drop(PRIMARY_ANSWER, after=1),
        Drop(PRIMARY_ANSWER, after=3),
        Malformed(),
        Hang(5),
    ]
    count = round(n * rate)
    script = [faults[i % len(faults)] for i in range(count)] + [Reply(PRIMARY_ANSWER)] * (n - count)
    random.Random(seed).shuffle(script)
    return script


@dataclass
class LoadResult:
    """What the clients of a load run got."""

    requests: int = 0
    answers: int = 0
    fallbacks: int = 0
    errors: int = 0
    """Clean errors: an HTTP error with an OpenAI body, or a stream ended by an error event."""
    cut: int = 0
    """Of the errors: streams cut after their first token (error event, no finish_reason)."""
    hung: int = 0
    bad: list[str] = field(default_factory=list)
    """Anything else: a 5xx without an error body, an incomplete "success", a broken connection."""
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def summary(self) -> str:
        return (
            f"requests {self.requests}, successes {self.answers} (fallbacks {self.fallbacks}), "
            f"errors {self.errors} (streams cut mid-answer {self.cut}), hung {self.hung}, bad {len(self.bad)}; "
            f"latency p50 {self.percentile(0.5) * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms; "
            f"{self.requests / self.seconds:.1f} req/s"
        )


async def _one(client: Any, i: int, result: LoadResult, limit: float) -> None:
    import asyncio

    stream = i % 2 == 1
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            raw = await client.chat.completions.with_raw_response.create(
                model="openai", messages=[{"role": "user", "content": f"{QUESTION} ({i})"}], stream=stream
            )
            provider = raw.headers.get("x-lexrag-provider")
            parsed = raw.parse()
            finish: list[str] = []
            if stream:
                pieces: list[str] = []
                try:
                    async for chunk in parsed:
                        for choice in chunk.choices:
                            pieces.append(choice.delta.content or "")
                            if choice.finish_reason:
                                finish.append(choice.finish_reason)
                except openai.APIError as exc:
                    if finish == [] and isinstance(exc.body, dict) and exc.body.get("message"):
                        result.errors += 1
                        result.cut += 1
                    else:
                        result.bad.append(f"{i}: stream error without a clean end: {exc}")
                    return
                text = "".join(pieces)
            else:
                text = parsed.choices[0].message.content or ""
                finish = [parsed.choices[0].finish_reason]
        expected = BACKUP_ANSWER if provider == "openai-backup" else PRIMARY_ANSWER
        if text == expected and finish == ["stop"]:
            result.answers += 1
            result.fallbacks += provider == "openai-backup"
            result.latencies.append(time.monotonic() - started)
        else:
            result.bad.append(f"{i}: incomplete answer {text!r} {finish} from {provider}")
    except TimeoutError:
        result.hung += 1
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", body)
        if isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}:
            result.errors += 1
        else:
            result.bad.append(f"{i}: {exc.status_code} without an OpenAI error body")
    except openai.APIError as exc:
        result.bad.append(f"{i}: {type(exc).__name__}: {exc}")


async def run_load(
    base: str, *, requests: int = 200, concurrency: int = 32, limit: float = 30.0
) -> LoadResult:
    """``requests`` chat requests (half streamed) from ``concurrency`` clients (real async
    openai SDK) at once; a request taking longer than ``limit`` counts as hung."""
    import asyncio

    result = LoadResult(requests=requests)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=limit + 5)

    async def worker() -> None:
        while not queue.empty():
            await _one(client, queue.get_nowait(), result, limit)

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    result.seconds = time.monotonic() - started
    return result
