"""The response cache ([cache]): the real server, the openai SDK as client, the openai provider
on the fake upstream (its request count says whether the provider was reached)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from lexrag.ingest import ingest
from lexrag.store import Store

from .fakes import Drop, FakeUpstream, Reply

ALICE, BOB = "sk-alice-SECRET-cache", "sk-bob-SECRET-cache"
ANSWER = "Không quá 08 giờ trong 01 ngày [1]."
QUESTION = [{"role": "user", "content": "Một ngày làm việc tối đa bao nhiêu giờ?"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _config(upstream: FakeUpstream, *, cache: str = "", retrieval: str = "enabled = false") -> str:
    return (
        '[llm]\nprovider = "openai"\ndeadline_s = 10\nmax_retries = 0\n'
        f"[retrieval]\n{retrieval}\n"
        f'[server.keys.alice]\nkey = "{ALICE}"\n[server.keys.bob]\nkey = "{BOB}"\n'
        f"[cache]\nenabled = true\nttl_s = 60\n{cache}\n"
        f'[providers.openai]\nbase_url = "{upstream.base_url}"\nmodel = "fake-model"\napi_key = "sk-up"\n'
    )


def _ask(base: str, key: str = ALICE, **kw: object) -> openai.APIResponse:  # type: ignore[type-arg]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
    kw.setdefault("temperature", 0)
    return client.chat.completions.with_raw_response.create(model="openai", messages=QUESTION, **kw)


def _streamed(response: openai.APIResponse) -> tuple[str, list[object]]:  # type: ignore[type-arg]
    chunks = list(response.parse())
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_a_repeated_question_at_temperature_0_reaches_the_provider_once(served_app, fake_upstream):
    fake_upstream.default = Reply(ANSWER)
    base = served_app(_config(fake_upstream)).url

    first = _ask(base, stream=True)  # a streamed answer is kept too
    assert first.headers["x-lexrag-cache"] == "miss"
    assert _streamed(first)[0] == ANSWER
    hit = _ask(base)
    assert hit.headers["x-lexrag-cache"] == "hit" and hit.headers["x-lexrag-provider"] == "cache"
    completion = hit.parse()
    assert completion.choices[0].message.content == ANSWER and completion.choices[0].finish_reason == "stop"
    assert completion.model == "fake-model" and completion.usage is not None
    replay = _ask(base, stream=True, stream_options={"include_usage": True})
    assert replay.headers["x-lexrag-cache"] == "hit"
    text, chunks = _streamed(replay)
    assert text == ANSWER and chunks[-1].usage is not None  # type: ignore[attr-defined]
    assert len(fake_upstream.requests) == 1

    # Not deterministic, another question, other sampling: the provider answers.
    sampled = _ask(base, temperature=0.7)
    assert "x-lexrag-cache" not in sampled.headers
    assert _ask(base, max_tokens=50).headers["x-lexrag-cache"] == "miss"
    assert len(fake_upstream.requests) == 3


def test_another_key_misses_unless_the_cache_is_shared(served_app, fake_upstream):
    fake_upstream.default = Reply(ANSWER)
    served = served_app(_config(fake_upstream))
    assert _ask(served.url, ALICE).headers["x-lexrag-cache"] == "miss"
    assert _ask(served.url, BOB).headers["x-lexrag-cache"] == "miss"
    assert _ask(served.url, BOB).headers["x-lexrag-cache"] == "hit"
    assert len(fake_upstream.requests) == 2

    served.reload(_config(fake_upstream, cache="shared = true"))
    assert _ask(served.url, ALICE).headers["x-lexrag-cache"] == "miss"
    assert _ask(served.url, BOB).headers["x-lexrag-cache"] == "hit"
    assert len(fake_upstream.requests) == 3


def test_an_ingest_invalidates(served_app, fake_pm, fake_upstream, tmp_path: Path):
    fake_upstream.default = Reply(ANSWER)
    index, docs = tmp_path / "index", tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Điều 1. Phạm vi\nLuật này quy định về thời giờ làm việc.", encoding="utf-8")
    store = Store.open(index, create=True)
    ingest(store, None, [docs])
    retrieval = f'retriever = "static"\n[index]\ndir = "{index}"'
    base = served_app(_config(fake_upstream, retrieval=retrieval)).url

    assert _ask(base).headers["x-lexrag-cache"] == "miss"
    assert _ask(base).headers["x-lexrag-cache"] == "hit"
    (docs / "b.txt").write_text("Điều 2. Giờ làm việc\nKhông quá 08 giờ trong 01 ngày.", encoding="utf-8")
    assert ingest(store, None, [docs]).added == ["b"]
    store.close()
    assert _ask(base).headers["x-lexrag-cache"] == "miss"
    assert _ask(base).headers["x-lexrag-cache"] == "hit"
    assert len(fake_upstream.requests) == 2


def test_entries_expire_after_the_ttl(served_app, fake_upstream):
    fake_upstream.default = Reply(ANSWER)
    served = served_app(_config(fake_upstream))
    clock = Clock()
    served.state.cache.clock = clock
    assert _ask(served.url).headers["x-lexrag-cache"] == "miss"
    clock.now += 59
    assert _ask(served.url).headers["x-lexrag-cache"] == "hit"
    clock.now += 2  # 61 s after it was kept (ttl_s = 60)
    assert _ask(served.url).headers["x-lexrag-cache"] == "miss"
    assert len(fake_upstream.requests) == 2


def test_a_cut_stream_and_a_tool_call_are_not_kept(served_app, fake_upstream):
    served = served_app(_config(fake_upstream))
    fake_upstream.script(Drop(after=3), Reply(ANSWER))
    cut = _ask(served.url, stream=True)
    assert cut.headers["x-lexrag-cache"] == "miss"
    with pytest.raises(openai.APIError):
        _streamed(cut)
    again = _ask(served.url)  # the cut answer was not kept: the provider answers
    assert again.headers["x-lexrag-cache"] == "miss" and again.parse().choices[0].message.content == ANSWER
    assert len(fake_upstream.requests) == 2

    call = {"id": "call_1", "type": "function", "function": {"name": "tra_cuu", "arguments": '{"dieu": 105}'}}
    fake_upstream.script(Reply("", tool_calls=[call]), Reply("", tool_calls=[call]))
    tools = [{"type": "function", "function": {"name": "tra_cuu", "parameters": {"type": "object"}}}]
    for _ in range(2):
        asked = _ask(served.url, tools=tools)
        assert asked.headers["x-lexrag-cache"] == "miss"
        assert asked.parse().choices[0].message.tool_calls[0].function.name == "tra_cuu"
    assert len(fake_upstream.requests) == 4
