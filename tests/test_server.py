"""The real server on 127.0.0.1, spoken to by the real openai SDK and by raw httpx."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .conftest import free_port, wait_healthy
from .fakes import Drop, Fail, FakeUpstream, Hang, Reply
from .fixtures_server import sdk

QUESTION = "Thời giờ làm việc bình thường một ngày là bao nhiêu giờ?"
ANSWER = "Không quá 08 giờ trong 01 ngày và 48 giờ trong 01 tuần [1]."
OPENAI_TABLE = """
[providers.openai]
base_url = "{url}"
model = "fake-model"
timeout = {timeout}
"""


def config(
    upstream: FakeUpstream, extra: str = "", *, timeout: float = 5, provider: str = "openai", llm: str = ""
) -> str:
    return (
        f'[llm]\nprovider = "{provider}"\n{llm}'
        '[retrieval]\nretriever = "static"\nembedder = "hash"\n'
        f"{extra}\n" + OPENAI_TABLE.format(url=upstream.base_url, timeout=timeout)
    )


@pytest.fixture
def server(running_server, fake_pm, fake_upstream) -> str:
    fake_upstream.default = Reply(ANSWER)
    return running_server(config(fake_upstream))


def ask(text: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_error_body(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in response.text
    if param is not None:
        assert error["param"] == param
    return error


# --- answers ----------------------------------------------------------------------


def test_sdk_gets_a_cited_answer_with_sources(server, fake_upstream):
    completion = sdk(server).chat.completions.create(model="fake-model", messages=ask())
    assert completion.choices[0].message.content == ANSWER
    assert completion.model == "fake-model"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    sources = completion.to_dict()["sources"]
    assert sources[0]["citation"].startswith("Bộ luật Lao động, Chương VII, Điều 105")
    assert sources[0]["index"] == 1
    system = fake_upstream.requests[-1].json["messages"][0]
    assert system["role"] == "system"
    assert "[1] Bộ luật Lao động, Chương VII, Điều 105" in system["content"]


def test_sdk_stream_with_usage_and_sources_on_the_last_chunk(server):
    stream = sdk(server).chat.completions.create(
        model="openai", messages=ask(), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].to_dict()["sources"][0]["article"] == 105
    assert all("sources" not in c.to_dict() for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_vietnamese_round_trips_byte_exact_through_the_stream(server, fake_upstream):
    text = unicodedata.normalize("NFD", "Người lao động được nghỉ; Điều 105. Thời giờ ổn định ữ ỹ")
    deltas = [text[i : i + 2] for i in range(0, len(text), 2)]
    fake_upstream.script(Reply(text, deltas=deltas, wire_bytes=11))
    body = {"messages": ask(), "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes())
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events[:-1])
    chunks = [json.loads(e[6:]) for e in events[:-2]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    got = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert got.encode("utf-8") == text.encode("utf-8")
    assert "sources" in chunks[-1] and all("sources" not in c for c in chunks[:-1])


def test_rag_false_passes_the_request_through(server, fake_upstream):
    completion = sdk(server).chat.completions.create(
        model="openai",
        messages=[{"role": "system", "content": "Ngắn gọn."}, *ask("Xin chào")],
        extra_body={"rag": False},
    )
    assert completion.to_dict().get("sources") is None
    assert fake_upstream.requests[-1].json["messages"] == [
        {"role": "system", "content": "Ngắn gọn."},
        {"role": "user", "content": "Xin chào"},
    ]


def test_many_concurrent_requests_are_served_together(server, fake_upstream):
    fake_upstream.default = Reply(ANSWER, chunk_delay=0.02)
    client = sdk(server)

    def one(i: int) -> str:
        stream = client.chat.completions.create(model="openai", messages=ask(f"thử việc {i}"), stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(32)))
    assert answers == [ANSWER] * 32
    assert fake_upstream.max_in_flight > 1


def test_fallback_answers_when_the_provider_fails(running_server, fake_pm, fake_upstream):
    base = running_server(
        config(fake_upstream, "[providers.extractive]\n", llm='fallback = ["extractive"]\nmax_retries = 0\n')
    )
    fake_upstream.script(Fail(503))
    completion = sdk(base).chat.completions.create(model="openai", messages=ask())
    assert completion.model == "extractive"
    assert "[1] Bộ luật Lao động" in (completion.choices[0].message.content or "")


# --- one response format --------------------------------------------------------


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def test_providers_answer_in_one_format(running_server, fake_pm, fake_upstream):
    fake_upstream.default = Reply("Theo quy định, không quá 08 giờ trong 01 ngày [1].")
    base = running_server(config(fake_upstream, "[providers.local-style]\n"))
    bodies = {}
    streams: dict[str, list[dict[str, Any]]] = {}
    for model in ("openai", "local-style"):
        body = {"model": model, "messages": ask()}
        response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=20)
        assert response.status_code == 200, response.text
        bodies[model] = response.json()
        stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        raw = httpx.post(f"{base}/v1/chat/completions", json=stream_body, timeout=20).content
        streams[model] = [json.loads(e[6:]) for e in raw.split(b"\n\n")[:-2]]
    assert bodies["openai"]["model"] == "fake-model" and bodies["local-style"]["model"] == "frog-test"
    assert shape(bodies["openai"]) == shape(bodies["local-style"])
    assert list(bodies["openai"]) == list(bodies["local-style"])  # same keys, same order
    assert bodies["openai"]["sources"] == bodies["local-style"]["sources"]
    for position in (0, 1, -2, -1):  # role, text, finish, usage+sources
        assert shape(streams["openai"][position]) == shape(streams["local-style"][position]), position
    assert {json.dumps(shape(c)) for c in streams["openai"]} == {
        json.dumps(shape(c)) for c in streams["local-style"]
    }


# --- errors -----------------------------------------------------------------------


def test_bad_json_is_400(server):
    response = httpx.post(
        f"{server}/v1/chat/completions",
        content=b'{"messages": [',
        headers={"content-type": "application/json"},
    )
    assert "JSON" in assert_error_body(response, 400)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": ask(), "temperature": "hot"}, "temperature"),
        ({"messages": ask(), "max_tokens": 0}, "max_tokens"),
        ({"messages": ask(), "n": 2}, "n"),
        ({"messages": ask(), "max_tokens": 100_000}, "max_tokens"),
        ({"messages": ask(), "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_invalid_requests_are_400_naming_the_field(server, body, param):
    response = httpx.post(f"{server}/v1/chat/completions", json=body)
    error = assert_error_body(response, 400, param)
    assert error["type"] == "invalid_request_error"
    assert param.split("[")[0] in error["message"]


def test_unknown_model_is_404_listing_valid_names(server):
    response = httpx.post(f"{server}/v1/chat/completions", json={"model": "gpt-9", "messages": ask()})
    error = assert_error_body(response, 404, "model")
    assert "openai" in error["message"] and "fake-model" in error["message"]
    with pytest.raises(openai.NotFoundError):
        sdk(server).chat.completions.create(model="gpt-9", messages=ask())


def test_oversize_body_is_413(running_server, fake_pm, fake_upstream):
    base = running_server(config(fake_upstream, "[server]\nmax_body_bytes = 2048\n"))
    big = {"messages": ask("x" * 4000)}
    assert_error_body(httpx.post(f"{base}/v1/chat/completions", json=big), 413)

    def chunked() -> Any:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 500):
            yield data[i : i + 500]

    assert_error_body(httpx.post(f"{base}/v1/chat/completions", content=chunked()), 413)
    small = httpx.post(
        f"{base}/v1/chat/completions",
        content=iter([json.dumps({"messages": ask()}).encode()]),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 200, small.text


def test_unknown_route_and_wrong_method_are_openai_errors(server):
    assert_error_body(httpx.get(f"{server}/v1/nothing"), 404)
    assert_error_body(httpx.get(f"{server}/v1/chat/completions"), 405)


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [(Fail(429, retry_after=7), 503), (Fail(500), 502), (Fail(401), 502), (Hang(30), 504)],
    ids=["429", "500", "401", "hang"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_provider_failures_are_gateway_errors(
    running_server, fake_pm, fake_upstream, behaviour, status, stream
):
    # No retries and a short deadline: each failure reaches the client as it is (a
    # Retry-After longer than the deadline is passed on rather than slept through).
    base = running_server(config(fake_upstream, timeout=0.5, llm="max_retries = 0\ndeadline_s = 5\n"))
    fake_upstream.script(behaviour)
    response = httpx.post(
        f"{base}/v1/chat/completions", json={"messages": ask(), "stream": stream}, timeout=20
    )
    error = assert_error_body(response, status)
    assert error["type"] == "provider_error"
    if status == 503:
        assert response.headers["retry-after"] == "7"


def test_failure_mid_stream_is_an_error_event_then_done(server, fake_upstream):
    fake_upstream.script(Drop("một hai ba bốn năm sáu bảy", after=3))
    raw = httpx.post(f"{server}/v1/chat/completions", json={"messages": ask(), "stream": True}, timeout=20)
    assert raw.status_code == 200
    events = raw.content.split(b"\n\n")
    assert events[-2] == b"data: [DONE]"
    error = json.loads(events[-3][6:])["error"]
    assert error["type"] == "provider_error" and "mid-answer" in error["message"]
    assert json.loads(events[1][6:])["choices"][0]["delta"]["content"] == "một "

    fake_upstream.script(Drop("một hai ba bốn năm sáu bảy", after=3))
    stream = sdk(server).chat.completions.create(model="openai", messages=ask(), stream=True)
    with pytest.raises(openai.APIError, match="mid-answer"):
        for _ in stream:
            pass


def test_an_unexpected_bug_is_500_without_a_traceback(running_server, fake_pm, fake_upstream):
    base = running_server(config(fake_upstream).replace('retriever = "static"', 'retriever = "broken"'))
    for stream in (False, True):
        response = httpx.post(f"{base}/v1/chat/completions", json={"messages": ask(), "stream": stream})
        error = assert_error_body(response, 500)
        assert "boom" not in response.text and "secret" not in response.text
        assert error["type"] == "server_error"


# --- the other endpoints ----------------------------------------------------------


def test_models_health_generate_metrics(server, fake_upstream):
    models = sdk(server).models.list()
    assert {m.id for m in models.data} >= {"openai", "fake-model"}

    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["provider"] == "openai"
    assert health["providers"]["openai"]["status"] == "ok" and health["index"]["status"] == "ok"

    fake_upstream.script(Reply("Đây là văn bản sinh ra."))
    body = {"prompt": "Viết một câu.", "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "do_sample": True}
    generated = httpx.post(f"{server}/v1/generate", json=body).json()
    assert generated["generated_text"] == "Đây là văn bản sinh ra."
    sent = fake_upstream.requests[-1].json
    assert sent["messages"] == [{"role": "user", "content": "Viết một câu."}] and sent["max_tokens"] == 16
    assert_error_body(httpx.post(f"{server}/v1/generate", json={"prompt": ""}), 400, "prompt")

    metrics = httpx.get(f"{server}/metrics").text
    assert 'lexrag_http_requests_total{method="POST",route="/v1/generate",status="200"} 1.0' in metrics
    assert "lexrag_http_request_duration_seconds_bucket" in metrics


def test_embeddings_in_openai_shape(server):
    client = sdk(server)
    result = client.embeddings.create(input=["thời giờ làm việc", "thử việc"], model="hash")
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 16
    assert abs(sum(x * x for x in result.data[0].embedding) - 1) < 1e-5
    raw = httpx.post(
        f"{server}/v1/embeddings", json={"input": "thử việc", "encoding_format": "base64"}
    ).json()
    decoded = base64.b64decode(raw["data"][0]["embedding"])
    assert len(decoded) == 16 * 4
    response = httpx.post(f"{server}/v1/embeddings", json={"input": "x", "model": "text-embedding-3-large"})
    assert_error_body(response, 404, "model")


# --- the command ------------------------------------------------------------------


def test_lexrag_serve_command(fake_upstream, tmp_path: Path):
    fake_upstream.default = Reply(ANSWER)
    path = tmp_path / "lexrag.toml"
    path.write_text(
        '[llm]\nprovider = "openai"\n[retrieval]\nenabled = false\n'
        + OPENAI_TABLE.format(url=fake_upstream.base_url, timeout=5),
        encoding="utf-8",
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LEXRAG_", "LLM_"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lexrag",
            "--config",
            str(path),
            "serve",
            "--port",
            str(port),
            "--index",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base, timeout=60, output=lambda: _output(proc))
        completion = sdk(base).chat.completions.create(model="openai", messages=ask())
        assert completion.choices[0].message.content == ANSWER
    finally:
        proc.terminate()
        proc.wait(20)


def _output(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None or proc.stdout is None:
        return "(still running)"
    return proc.stdout.read().decode(errors="replace")
