"""API keys, the concurrency limit, CORS, and secrets kept out of the logs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from lexrag.server.auth import digest, key_matches

from .fakes import Fail, Reply
from .fixtures_resilience import PRIMARY_ANSWER, QUESTION, ask, calls_logged, chain_config

SERVER_KEY = "srv-key-SECRET-4f2a9c"
OTHER_KEY = "srv-key-SECRET-second"
UPSTREAM_KEY = "sk-upstream-SECRET-77d1"
CHAT = {"messages": [{"role": "user", "content": QUESTION}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert response.headers["x-request-id"]
    return error


@pytest.fixture
def keyed(start_server, two_upstreams):
    primary, _ = two_upstreams
    keys = f'[server]\napi_keys = ["{SERVER_KEY}", "{OTHER_KEY}"]\n'
    return start_server(chain_config(primary, extra=keys)).base


def test_every_endpoint_but_health_needs_a_key(keyed):
    for method, path in [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/generate"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/v1/nothing"),
    ]:
        response = httpx.request(method, f"{keyed}{path}", json=CHAT if method == "POST" else None)
        error = assert_openai_error(response, 401)
        assert error["type"] == "authentication_error" and error["code"] == "missing_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
        wrong = httpx.request(method, f"{keyed}{path}", headers=bearer("nope"), json=None)
        assert assert_openai_error(wrong, 401)["code"] == "invalid_api_key"
        assert "nope" not in wrong.text
    assert httpx.get(f"{keyed}/health").status_code == 200
    assert httpx.get(f"{keyed}/").status_code == 200  # the page; it sends the key the user types
    for key in (SERVER_KEY, OTHER_KEY):
        assert httpx.get(f"{keyed}/v1/models", headers=bearer(key)).status_code == 200
        assert httpx.get(f"{keyed}/metrics", headers=bearer(key)).status_code == 200
    assert (
        httpx.get(f"{keyed}/v1/models", headers={"Authorization": f"Basic {SERVER_KEY}"}).status_code == 401
    )
    assert httpx.get(f"{keyed}/v1/models", headers=bearer(SERVER_KEY + "x")).status_code == 401
    assert httpx.get(f"{keyed}/v1/models", headers=bearer(SERVER_KEY[:-1])).status_code == 401


def test_the_sdk_with_and_without_the_key(keyed):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed}/v1", api_key="wrong", max_retries=0).models.list()
    got = ask(keyed, stream=True, key=SERVER_KEY)
    assert got.kind == "answer" and got.text == PRIMARY_ANSWER
    assert ask(keyed, stream=False, key="wrong").status == 401


def test_keys_from_the_environment(start_server, two_upstreams):
    primary, _ = two_upstreams
    served = start_server(chain_config(primary), env={"LEXRAG_API_KEYS": f"{SERVER_KEY}, {OTHER_KEY}"})
    assert httpx.get(f"{served.base}/v1/models").status_code == 401
    assert httpx.get(f"{served.base}/v1/models", headers=bearer(OTHER_KEY)).status_code == 200


def test_without_keys_everything_is_open(start_server, two_upstreams):
    primary, _ = two_upstreams
    served = start_server(chain_config(primary))
    assert httpx.get(f"{served.base}/v1/models").status_code == 200
    assert httpx.post(f"{served.base}/v1/chat/completions", json=CHAT).status_code == 200


def test_key_matching():
    digests = [digest("alpha"), digest("beta-longer-key")]
    assert key_matches("alpha", digests) and key_matches("beta-longer-key", digests)
    assert not key_matches("alph", digests) and not key_matches("alphaa", digests)
    assert not key_matches("", digests) and not key_matches("gamma", [])


def test_the_concurrency_limit_answers_429_rather_than_queueing(start_server, two_upstreams):
    primary, _ = two_upstreams
    primary.default = Reply(PRIMARY_ANSWER, delay=1.0)
    served = start_server(chain_config(primary, timeout=5, extra="[server]\nmax_concurrency = 2\n"))
    barrier = threading.Barrier(6)

    def one(_: int) -> httpx.Response:
        barrier.wait()
        return httpx.post(f"{served.base}/v1/chat/completions", json=CHAT, timeout=20)

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(6)]
        # While two are being answered, the probe and the metrics still answer.
        assert httpx.get(f"{served.base}/health", timeout=5).status_code == 200
        responses = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2 and statuses.count(429) == 4, statuses
    for response in responses:
        if response.status_code == 429:
            error = assert_openai_error(response, 429)
            assert error["type"] == "rate_limit_error" and "max_concurrency" in error["message"]
            assert response.headers["retry-after"] == "1"
    assert httpx.post(f"{served.base}/v1/chat/completions", json=CHAT, timeout=20).status_code == 200


def test_cors_is_off_unless_configured(start_server, two_upstreams):
    primary, _ = two_upstreams
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    off = start_server(chain_config(primary)).base
    response = httpx.options(f"{off}/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    plain = httpx.post(f"{off}/v1/chat/completions", json=CHAT, headers={"Origin": "https://app.example"})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers

    extra = f'[server]\ncors_origins = ["https://app.example"]\napi_keys = ["{SERVER_KEY}"]\n'
    on = start_server(chain_config(primary, extra=extra)).base
    response = httpx.options(f"{on}/v1/chat/completions", headers=preflight)
    assert response.status_code == 200  # a preflight carries no key, and needs none
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    denied = httpx.post(f"{on}/v1/chat/completions", json=CHAT, headers={"Origin": "https://app.example"})
    assert (
        denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "https://app.example"
    )
    other = httpx.options(
        f"{on}/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_no_secret_reaches_the_logs(start_server, two_upstreams, caplog, capfd):
    caplog.set_level("DEBUG")
    primary, backup = two_upstreams
    served = start_server(
        chain_config(
            primary,
            backup,
            primary_extra=f'api_key = "{UPSTREAM_KEY}"\n',
            extra=f'[server]\napi_keys = ["{SERVER_KEY}"]\n[logging]\nlog_bodies = true\n',
        )
    )
    primary.script(Fail(401, message="bad key"), Fail(503), Fail(500))
    for stream in (False, True):
        ask(served.base, stream=stream, key=SERVER_KEY)
    ask(served.base, stream=False, key="wrong-SECRET-client-key")
    httpx.get(f"{served.base}/metrics", headers=bearer(SERVER_KEY))
    httpx.get(f"{served.base}/health")
    # The key was in use: the upstream saw it.
    assert primary.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert calls_logged(caplog) and "messages" in calls_logged(caplog)[0]  # bodies are logged here
    for secret in (UPSTREAM_KEY, SERVER_KEY, "wrong-SECRET-client-key", "SECRET"):
        assert secret not in logged
