"""The openai provider through the real SDK against the fake upstream on loopback."""

from __future__ import annotations

import asyncio
import email.utils
import time
from pathlib import Path
from typing import Any

import pytest

from lexrag import parse_retry_after as retry_after
from lexrag.config import load_config
from lexrag.errors import ConfigError, ProviderError, ProviderTimeoutError
from lexrag.providers import GenerationParams, ProviderRequest
from lexrag.registry import Registry, build_provider, check_config
from lexrag.types import ChatMessage
from lexrag_openai import OpenAIProvider

from .fakes import Drop, Fail, FakeUpstream, Hang, Malformed, Reply, Reset

VIETNAMESE = (
    "Người lao động được nghỉ phép năm 12 ngày; thời giờ làm việc không quá 08 giờ/ngày. Đường ổn định."
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def make_provider(registry: Registry, tmp_path: Path, fake_upstream: FakeUpstream):
    def make(extra: str = "", env: dict[str, str] | None = None) -> OpenAIProvider:
        path = tmp_path / "lexrag.toml"
        path.write_text(
            f'[providers.openai]\nbase_url = "{fake_upstream.base_url}"\nmodel = "fake-model"\n{extra}',
            encoding="utf-8",
        )
        config = check_config(load_config(path, env=env or {}), registry)
        provider = build_provider(config, registry, "openai")
        assert isinstance(provider, OpenAIProvider)
        return provider

    return make


def request(text: str = "Xin chào", **params: Any) -> ProviderRequest:
    return ProviderRequest(
        messages=[ChatMessage(role="user", content=text)], params=GenerationParams(**params)
    )


async def _complete(provider: OpenAIProvider, req: ProviderRequest) -> Any:
    try:
        return await provider.complete(req)
    finally:
        await provider.aclose()


async def _stream(provider: OpenAIProvider, req: ProviderRequest, into: list[Any] | None = None) -> list[Any]:
    chunks = [] if into is None else into
    try:
        async for chunk in provider.stream(req):
            chunks.append(chunk)
    finally:
        await provider.aclose()
    return chunks


def test_complete_sends_the_parameters_and_maps_the_answer(make_provider, fake_upstream):
    fake_upstream.script(Reply(VIETNAMESE, finish_reason="length"))
    provider = make_provider()
    req = request("câu hỏi", max_tokens=32, temperature=0.2, top_p=0.9, seed=7, stop=["###"])
    completion = run(_complete(provider, req))
    assert completion.text == VIETNAMESE
    assert completion.model == "fake-model"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == len(VIETNAMESE.split())
    sent = fake_upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "câu hỏi"}],
        "max_tokens": 32,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["###"],
    }
    assert sent.headers["authorization"] == "Bearer no-key"


def test_key_from_the_environment_is_sent_and_never_shown(make_provider, fake_upstream):
    provider = make_provider(env={"OPENAI_API_KEY": "sk-test-secret-123"})
    run(_complete(provider, request()))
    assert fake_upstream.requests[-1].headers["authorization"] == "Bearer sk-test-secret-123"
    assert "sk-test-secret-123" not in repr(provider.settings)
    assert "sk-test-secret-123" not in str(run(provider.health()))


def test_token_param_for_newer_openai_models(make_provider, fake_upstream):
    run(_complete(make_provider('token_param = "max_completion_tokens"\n'), request(max_tokens=5)))
    body = fake_upstream.requests[-1].json
    assert body["max_completion_tokens"] == 5 and "max_tokens" not in body


def test_stream_yields_role_text_finish_then_usage(make_provider, fake_upstream):
    fake_upstream.script(Reply(VIETNAMESE))
    chunks = run(_stream(make_provider(), request()))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == VIETNAMESE
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(VIETNAMESE.split())
    assert len({c.id for c in chunks}) == 1
    assert fake_upstream.requests[-1].json["stream_options"] == {"include_usage": True}


def test_vietnamese_split_mid_character_on_the_wire_arrives_intact(make_provider, fake_upstream):
    # Decomposed (NFD) marks in their own deltas, and the body written 7 bytes at a time,
    # so multi-byte characters straddle TCP writes.
    import unicodedata

    nfd = unicodedata.normalize("NFD", "Điều 105. Thời giờ")
    deltas = [nfd[i : i + 1] for i in range(len(nfd))]
    fake_upstream.script(Reply("".join(deltas), deltas=deltas, wire_bytes=7))
    chunks = run(_stream(make_provider(), request()))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.encode() == nfd.encode()
    fake_upstream.script(Reply(VIETNAMESE, wire_bytes=3))
    assert run(_complete(make_provider(), request())).text.encode() == VIETNAMESE.encode()


@pytest.mark.parametrize(
    ("behaviour", "retryable", "status"),
    [
        (Fail(429, retry_after=2), True, 503),
        (Fail(500), True, 502),
        (Fail(502), True, 502),
        (Fail(503), True, 503),
        (Fail(400, "context too long"), False, 400),
        (Fail(401), False, 502),
        (Fail(403), False, 502),
        (Fail(404, "no such model"), False, 502),
        (Reset(), True, 502),
        (Drop(), True, 502),
        (Malformed(), True, 502),
    ],
    ids=lambda v: (
        type(v).__name__ + str(getattr(v, "status", "")) if not isinstance(v, bool | int) else str(v)
    ),
)
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_failures_map_to_provider_errors(make_provider, fake_upstream, behaviour, retryable, status, stream):
    fake_upstream.script(behaviour)
    provider = make_provider()
    with pytest.raises(ProviderError) as err:
        run(_stream(provider, request()) if stream else _complete(provider, request()))
    assert err.value.retryable is retryable
    assert err.value.status == status
    assert err.value.provider == "openai"
    assert "127.0.0.1" in err.value.message  # says which upstream failed
    assert len(fake_upstream.requests) == 1  # the SDK's own retries are off
    if isinstance(behaviour, Fail) and behaviour.status == 429:
        assert err.value.retry_after == 2
    if isinstance(behaviour, Fail) and behaviour.status == 400:
        assert "context too long" in err.value.message


def test_drop_mid_stream_raises_after_the_first_chunks(make_provider, fake_upstream):
    fake_upstream.script(Drop("một hai ba bốn năm sáu", after=3))
    got: list[Any] = []
    with pytest.raises(ProviderError, match=r"broke mid-answer|ended before") as err:
        run(_stream(make_provider(), request(), got))
    assert err.value.retryable
    assert [c.choices[0].delta.content for c in got] == ["", "một ", "hai "]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_hung_upstream_times_out(make_provider, fake_upstream, stream):
    fake_upstream.script(Hang(30))
    provider = make_provider("timeout = 0.5\n")
    start = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as err:
        run(_stream(provider, request()) if stream else _complete(provider, request()))
    assert time.monotonic() - start < 10
    assert err.value.retryable and err.value.status == 504
    assert "timeout" in err.value.message


def test_unreachable_upstream_is_retryable(registry, tmp_path):
    with FakeUpstream() as gone:
        url = gone.base_url
    path = tmp_path / "lexrag.toml"
    path.write_text(f'[providers.openai]\nbase_url = "{url}"\n', encoding="utf-8")
    provider = build_provider(check_config(load_config(path, env={}), registry), registry, "openai")
    with pytest.raises(ProviderError, match="cannot reach") as err:
        run(provider.complete(request()))
    assert err.value.retryable


def test_no_key_and_no_base_url_is_a_permanent_error(registry, tmp_path):
    provider = build_provider(check_config(load_config(None, env={}), registry), registry, "openai")
    with pytest.raises(ProviderError, match="OPENAI_API_KEY") as err:
        run(provider.complete(request()))
    assert not err.value.retryable


def test_settings_typos_name_the_table_and_key(registry, tmp_path):
    path = tmp_path / "lexrag.toml"
    path.write_text('[providers.openai]\nmodle = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[providers.openai\] modle: unknown key.*model"):
        check_config(load_config(path, env={}), registry)


def test_base_url_from_the_environment(registry, fake_upstream):
    config = check_config(load_config(None, env={"OPENAI_BASE_URL": fake_upstream.base_url}), registry)
    provider = build_provider(config, registry, "openai")
    assert run(_complete(provider, request())).text
    assert fake_upstream.requests[-1].path == "/v1/chat/completions"


def test_models_lists_the_default_and_extra_ids(make_provider):
    provider = make_provider('models = ["other-model", "fake-model"]\n')
    assert run(provider.models()) == ["fake-model", "other-model"]


def test_retry_after_parsing():
    assert retry_after({"retry-after": "3"}) == 3
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after({"retry-after": later}) or 0) <= 31
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
