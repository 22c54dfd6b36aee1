"""Per-key rate limits ([server.keys.NAME] rpm, tpm, tokens_per_day): the real server, the
openai SDK as client, the openai provider on the fake upstream, a fake clock in the limiter."""

from __future__ import annotations

import httpx
import openai
import pytest

from lexrag.limitstore import Increment, MemoryLimitStore
from lexrag.server.ratelimit import reset_text

from .fakes import FakeUpstream, Reply
from .fixtures_resilience import call_line, metric

ALICE, BOB, CAROL, PLAIN = "sk-alice-SECRET-1", "sk-bob-SECRET-2", "sk-carol-SECRET-3", "sk-plain-SECRET-4"
ANSWER = "Không quá 08 giờ trong 01 ngày [1]."
CHAT = [{"role": "user", "content": "Một ngày làm việc tối đa bao nhiêu giờ?"}]


class Clock:
    def __init__(self, now: float = 1_799_971_200 + 40 * 60 + 40) -> None:  # 00:40:40 UTC, a day's start
        self.now = now

    def __call__(self) -> float:
        return self.now


def _config(upstream: FakeUpstream, alice: str = "rpm = 2", bob: str = "tpm = 40") -> str:
    return (
        '[llm]\nprovider = "openai"\ndeadline_s = 10\nmax_retries = 0\n'
        "[retrieval]\nenabled = false\n"
        f'[server]\napi_keys = ["{PLAIN}"]\n'
        f'[server.keys.alice]\nkey = "{ALICE}"\n{alice}\n'
        f'[server.keys.bob]\nkey = "{BOB}"\n{bob}\n'
        f'[server.keys.carol]\nkey = "{CAROL}"\ntokens_per_day = 15\n'
        f'[providers.openai]\nbase_url = "{upstream.base_url}"\nmodel = "fake-model"\napi_key = "sk-up"\n'
    )


def _client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)


def _ask(base: str, key: str, **kw: object) -> openai.APIResponse:  # type: ignore[type-arg]
    return _client(base, key).chat.completions.with_raw_response.create(model="openai", messages=CHAT, **kw)


def test_reset_text_and_the_memory_store_all_or_nothing():
    assert [reset_text(s) for s in (0.02, 1, 17.2, 360, 3723)] == ["20ms", "1s", "18s", "6m0s", "1h2m3s"]
    store = MemoryLimitStore()
    within = [Increment("a:requests", 0, 1, 60, ceiling=1), Increment("a:tokens", 0, 0, 60, ceiling=9)]
    assert store.increment(within) == (True, [1, 0])
    assert store.increment([Increment("a:tokens", 0, 10, 60)]) == (True, [10])
    # The token read is over its ceiling: the request is not counted either.
    assert store.increment([Increment("a:requests", 0, 1, 60, ceiling=5), within[1]]) == (False, [1, 10])
    assert store.increment([Increment("a:requests", 60, 1, 120, ceiling=1)]) == (True, [1])


def test_requests_per_minute_429_headers_body_and_keys_independent(served_app, fake_upstream: FakeUpstream):
    fake_upstream.default = Reply(ANSWER)
    clock = Clock()
    served = served_app(_config(fake_upstream))
    served.state.limiter.clock = clock
    base = served.url

    first = _ask(base, ALICE)
    assert first.parse().choices[0].message.content == ANSWER
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "20s"  # 40 s into the minute
    assert "x-ratelimit-limit-tokens" not in first.headers  # alice has no token limit
    assert _ask(base, ALICE).headers["x-ratelimit-remaining-requests"] == "0"

    with pytest.raises(openai.RateLimitError) as refused:
        _ask(base, ALICE)
    response = refused.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "20"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"] == "20s"
    error = response.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert "'alice'" in error["message"] and "2 requests per minute" in error["message"]
    assert "[server.keys.alice] rpm" in error["message"] and ALICE not in error["message"]
    assert len(fake_upstream.requests) == 2  # the refused request never reached the provider

    # Other keys have budgets of their own; a plain key has no limits and no headers.
    assert _ask(base, BOB).http_response.status_code == 200
    plain = _ask(base, PLAIN)
    assert plain.http_response.status_code == 200 and "x-ratelimit-limit-requests" not in plain.headers

    clock.now += 20  # the next minute
    assert _ask(base, ALICE).headers["x-ratelimit-remaining-requests"] == "1"


def test_tokens_are_counted_after_the_answer_streamed_too(served_app, fake_upstream: FakeUpstream):
    fake_upstream.default = Reply(ANSWER)
    clock = Clock()
    served = served_app(_config(fake_upstream, bob="tpm = 40"))
    served.state.limiter.clock = clock
    base = served.url

    # A stream without stream_options: lexrag counts the usage all the same.
    stream = _client(base, BOB).chat.completions.with_raw_response.create(
        model="openai", messages=CHAT, stream=True
    )
    assert stream.headers["x-ratelimit-limit-tokens"] == "40"
    assert stream.headers["x-ratelimit-remaining-tokens"] == "40"
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices) == ANSWER
    whole = _ask(base, BOB)
    used = whole.parse().usage
    assert used is not None
    per_answer = used.prompt_tokens + used.completion_tokens
    assert whole.headers["x-ratelimit-remaining-tokens"] == str(40 - per_answer)
    assert 2 * per_answer < 40 < 3 * per_answer  # the third answer passes the limit

    assert _ask(base, BOB).http_response.status_code == 200
    with pytest.raises(openai.RateLimitError) as refused:
        _ask(base, BOB)
    error = refused.value.response.json()["error"]
    assert error["type"] == "tokens" and "40 tokens per minute" in error["message"]
    assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "0"

    # The day's budget outlives the minute; the next UTC day renews it.
    assert _ask(base, CAROL).headers["x-ratelimit-remaining-tokens-day"] == "15"
    with pytest.raises(openai.RateLimitError) as spent:
        _ask(base, CAROL)
    assert "tokens per day" in spent.value.response.json()["error"]["message"]
    assert int(spent.value.response.headers["retry-after"]) == 86_400 - (40 * 60 + 40)
    clock.now += 60
    assert _ask(base, BOB).http_response.status_code == 200
    with pytest.raises(openai.RateLimitError):
        _ask(base, CAROL)
    clock.now += 86_400
    assert _ask(base, CAROL).http_response.status_code == 200


def test_a_reload_changes_a_limit_and_keeps_the_counts(served_app, fake_upstream: FakeUpstream):
    fake_upstream.default = Reply(ANSWER)
    clock = Clock()
    served = served_app(_config(fake_upstream, alice="rpm = 1"))
    served.state.limiter.clock = clock
    assert _ask(served.url, ALICE).http_response.status_code == 200
    with pytest.raises(openai.RateLimitError):
        _ask(served.url, ALICE)
    served.reload(_config(fake_upstream, alice="rpm = 3"))
    again = _ask(served.url, ALICE)
    assert again.headers["x-ratelimit-limit-requests"] == "3"
    assert again.headers["x-ratelimit-remaining-requests"] == "1"  # the first request still counts


def test_the_key_name_in_the_call_log_and_metrics_never_the_key(served_app, fake_upstream, call_log):
    fake_upstream.default = Reply(ANSWER)
    served = served_app(_config(fake_upstream, alice="rpm = 1"))
    served.state.limiter.clock = Clock()
    _ask(served.url, ALICE, extra_headers={"x-request-id": "rl-1"})
    with pytest.raises(openai.RateLimitError):
        _ask(served.url, ALICE, extra_headers={"x-request-id": "rl-2"})
    _ask(served.url, PLAIN, extra_headers={"x-request-id": "rl-3"})
    assert call_line(call_log, "rl-1")["key"] == "alice"
    refused = call_line(call_log, "rl-2")
    assert (
        refused["key"] == "alice" and refused["status"] == 429 and refused["error"] == "rate_limit_exceeded"
    )
    assert call_line(call_log, "rl-3")["key"] == "api_keys[0]"

    assert metric(served.url, "lexrag_key_requests_total", {"key": "alice", "status": "200"}, key=PLAIN) == 1
    assert metric(served.url, "lexrag_key_requests_total", {"key": "alice", "status": "429"}, key=PLAIN) == 1
    assert metric(served.url, "lexrag_key_tokens_total", {"key": "alice"}, key=PLAIN) > 0
    scrape = httpx.get(f"{served.url}/metrics", headers={"Authorization": f"Bearer {PLAIN}"}).text
    for secret in (ALICE, BOB, CAROL, PLAIN):
        assert secret not in scrape and secret not in call_log.text


def test_bad_key_tables_are_one_line_errors_without_the_key(tmp_path):
    from lexrag.config import load_config
    from lexrag.errors import ConfigError

    path = tmp_path / "lexrag.toml"
    cases = {
        f'[server]\napi_keys = ["{ALICE}"]\n[server.keys.alice]\nkey = "{ALICE}"\n': (
            "[server.keys.alice] key is the same key as api_keys[0]"
        ),
        f'[server.keys.alice]\nkey = "{ALICE}"\nrpm = 0\n': "greater than or equal to 1",
        f'[server.keys.alice]\nkey = "{ALICE}"\nrpn = 5\n': "[server.keys.alice] rpn: unknown key (valid: key, rpm",
        f'[server.keys."a b"]\nkey = "{ALICE}"\n': "should match pattern",
        "[server.keys.alice]\nrpm = 5\n": "[server.keys.alice] key: missing",
    }
    for text, expected in cases.items():
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as bad:
            load_config(path, env={})
        message = bad.value.message
        assert expected in message and "\n" not in message and ALICE not in message, message
