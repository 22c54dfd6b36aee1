"""One response format, really: every OpenAI parameter and message field reaches an
OpenAI-compatible upstream and every answer field comes back (real server on loopback, the
real openai SDK, the fake upstream); providers that cannot honour a parameter say so; the
models, embeddings and stream-error corners of the OpenAI API."""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from lexrag import Embedder, FloatArray, hookimpl
from lexrag.prompt import estimate_tokens

from .fakes import Drop, FakeUpstream, Reply
from .fixtures_server import sdk

QUESTION = "Thời giờ làm việc bình thường một ngày là bao nhiêu giờ?"
ANSWER = "Không quá 08 giờ trong 01 ngày và 48 giờ trong 01 tuần [1]."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "tra_cuu_dieu_luat",
            "description": "Tra cứu một điều luật theo số",
            "parameters": {
                "type": "object",
                "properties": {"dieu": {"type": "integer"}},
                "required": ["dieu"],
            },
        },
    }
]
TOOL_CALL = {
    "id": "call_abc123",
    "type": "function",
    "function": {"name": "tra_cuu_dieu_luat", "arguments": '{"dieu": 105}'},
}
#: A conversation in the middle of a tool call: the assistant's call, then the tool's answer.
TOOL_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
    {"role": "tool", "tool_call_id": "call_abc123", "content": "Điều 105: không quá 08 giờ/ngày"},
]
#: Every OpenAI chat parameter lexrag used to drop, as a client sends them.
PARAMETERS: dict[str, Any] = {
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "tra_cuu_dieu_luat"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "tra_loi", "schema": {"type": "object"}, "strict": True},
    },
    "logprobs": True,
    "top_logprobs": 2,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.25,
    "logit_bias": {"1234": -100},
    "user": "nguoi-dung-42",
    "stop": ["###", "END"],
    "seed": 7,
    "max_completion_tokens": 64,
    "service_tier": "flex",
    "metadata": {"phien": "thu-nghiem"},
    "store": False,
}
LOGPROBS = {
    "content": [
        {
            "token": "Không",
            "logprob": -0.01,
            "bytes": list("Không".encode()),
            "top_logprobs": [{"token": "Không", "logprob": -0.01, "bytes": None}],
        }
    ],
    "refusal": None,
}


def config(upstream: FakeUpstream, *, provider: str = "openai", llm: str = "", extra: str = "") -> str:
    return (
        f'[llm]\nprovider = "{provider}"\n{llm}'
        '[retrieval]\nretriever = "static"\nembedder = "hash"\n'
        f'{extra}\n[providers.openai]\nbase_url = "{upstream.base_url}"\nmodel = "fake-model"\n'
        'models = ["fake-model", "org/fake-model-2"]\ntimeout = 5\n'
    )


@pytest.fixture
def server(running_server, fake_pm, fake_upstream) -> str:
    fake_upstream.default = Reply(ANSWER)
    return running_server(config(fake_upstream))


def sent(upstream: FakeUpstream) -> dict[str, Any]:
    """The body of the last chat request the upstream received."""
    posts = [r for r in upstream.requests if r.method == "POST"]
    body: dict[str, Any] = posts[-1].json
    return body


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# --- parameters and message fields reach the upstream -----------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("rag", [True, False], ids=["rag", "no-rag"])
def test_every_openai_parameter_and_message_field_reaches_the_upstream(server, fake_upstream, stream, rag):
    client = sdk(server)
    unknown = {"x_lexrag_test": {"nested": ["giá trị", 1]}, "reasoning": {"effort": "low"}}
    response = client.chat.completions.create(
        model="openai",
        messages=TOOL_TURNS,
        stream=stream,
        extra_body={"rag": rag, **unknown},
        **PARAMETERS,
    )
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in response if c.choices) == ANSWER
    else:
        assert response.choices[0].message.content == ANSWER
    body = sent(fake_upstream)
    for name, value in {**PARAMETERS, **unknown}.items():
        assert body[name] == value, name
    assert "max_tokens" not in body  # the client named max_completion_tokens
    for lexrag_only in ("rag", "top_k", "fallback"):
        assert lexrag_only not in body
    turns = body["messages"][1:] if rag else body["messages"]
    if rag:  # the passages ride in a system message put in front, as ever
        assert (
            body["messages"][0]["role"] == "system"
            and "[1] Bộ luật Lao động" in body["messages"][0]["content"]
        )
    assert turns == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "Điều 105: không quá 08 giờ/ngày"},
    ]


def test_max_tokens_still_follows_token_param_and_the_server_limit(server, fake_upstream):
    sdk(server).chat.completions.create(
        model="openai", messages=[{"role": "user", "content": QUESTION}], max_tokens=9
    )
    assert sent(fake_upstream)["max_tokens"] == 9
    response = httpx.post(
        f"{server}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "max_completion_tokens": 10**6},
    )
    assert error_of(response, 400)["param"] == "max_completion_tokens"


# --- answer fields come back as the upstream sent them -----------------------------


def test_tool_calls_come_back_with_finish_reason_tool_calls(server, fake_upstream):
    fake_upstream.script(Reply("", tool_calls=[TOOL_CALL], finish_reason="tool_calls"))
    completion = sdk(server).chat.completions.create(
        model="openai", messages=[{"role": "user", "content": QUESTION}], tools=TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [c.model_dump() for c in choice.message.tool_calls or []] == [TOOL_CALL]
    # the raw body too: no null tool_calls on plain answers, the call as sent on this one
    raw = httpx.post(
        f"{server}/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}
    ).json()
    assert "tool_calls" not in raw["choices"][0]["message"]


def test_tool_call_deltas_stream_through(server, fake_upstream):
    fake_upstream.script(Reply("", tool_calls=[TOOL_CALL], finish_reason="tool_calls"))
    chunks = list(
        sdk(server).chat.completions.create(
            model="openai",
            messages=[{"role": "user", "content": QUESTION}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    calls: dict[int, dict[str, Any]] = {}
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert calls == {0: {"id": "call_abc123", "name": "tra_cuu_dieu_luat", "arguments": '{"dieu": 105}'}}
    assert finish == ["tool_calls"]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.tool_calls]) == 2  # as sent
    assert chunks[-1].usage is not None and not chunks[-1].choices


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_logprobs_and_refusal_come_back(server, fake_upstream, stream):
    fake_upstream.script(Reply(ANSWER, logprobs=LOGPROBS))
    client = sdk(server)
    ask = {"model": "openai", "messages": [{"role": "user", "content": QUESTION}], "logprobs": True}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **ask))
        with_logprobs = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
        assert [lp.model_dump(exclude_none=True) for lp in with_logprobs] == [
            {"content": [{**LOGPROBS["content"][0], "top_logprobs": [{"token": "Không", "logprob": -0.01}]}]}
        ]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    else:
        choice = client.chat.completions.create(**ask).choices[0]
        assert choice.logprobs is not None
        assert choice.logprobs.content[0].token == "Không" and choice.logprobs.content[0].logprob == -0.01
        assert choice.logprobs.content[0].bytes == list("Không".encode())

    refusal = "Tôi không thể giúp việc này."
    fake_upstream.script(Reply("", refusal=refusal))
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **ask))
        assert "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices) == refusal
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "stop"
        ]
    else:
        message = client.chat.completions.create(**ask).choices[0].message
        assert message.refusal == refusal and message.content is None


# --- providers that cannot honour a parameter ----------------------------------------


CANNOT = [
    ("tools", {"tools": TOOLS}),
    ("tools", {"tool_choice": "required", "tools": TOOLS}),
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("response_format", {"response_format": PARAMETERS["response_format"]}),
    ("logprobs", {"logprobs": True}),
    ("logprobs", {"top_logprobs": 3}),
]


@pytest.mark.parametrize(("param", "extra"), CANNOT, ids=[f"{p}-{i}" for i, (p, _) in enumerate(CANNOT)])
@pytest.mark.parametrize("provider", ["extractive", "local"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_provider_that_cannot_honour_a_parameter_answers_400_naming_both(
    running_server, fake_pm, fake_upstream, provider, param, extra, stream
):
    base = running_server(
        config(fake_upstream, provider=provider, extra=f'[providers.local]\nurl = "{fake_upstream.url}"\n')
    )
    body = {"messages": [{"role": "user", "content": QUESTION}], "stream": stream, **extra}
    error = error_of(httpx.post(f"{base}/v1/chat/completions", json=body, timeout=20), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"] and repr(provider) in error["message"]
    assert not [r for r in fake_upstream.requests if r.method == "POST"]  # nothing generated
    with pytest.raises(openai.BadRequestError, match=param):
        sdk(base).chat.completions.create(
            model=provider, messages=[{"role": "user", "content": QUESTION}], stream=stream, **extra
        )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_chain_skips_to_a_provider_that_can(running_server, fake_pm, fake_upstream, stream):
    fake_upstream.default = Reply("", tool_calls=[TOOL_CALL], finish_reason="tool_calls")
    extra = f'[providers.local]\nurl = "{fake_upstream.url}"\n'
    # the request's own fallback, and the configured one
    for llm, fallback in (("", ["extractive", "openai"]), ('fallback = ["extractive", "openai"]\n', None)):
        base = running_server(config(fake_upstream, provider="local", llm=llm, extra=extra))
        body: dict[str, Any] = {"messages": [{"role": "user", "content": QUESTION}], "tools": TOOLS}
        if fallback is not None:
            body["fallback"] = fallback
        if stream:
            body["stream"] = True
        response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=20)
        assert response.status_code == 200, response.text
        assert response.headers["x-lexrag-provider"] == "openai"
        assert sent(fake_upstream)["tools"] == TOOLS
        assert "tool_calls" in response.text
        # local (the first) and extractive were skipped, not tried: the upstream got only chat posts
        assert {r.path for r in fake_upstream.requests if r.method == "POST"} == {"/v1/chat/completions"}


def test_parameters_that_change_nothing_essential_do_not_stop_extractive(
    running_server, fake_pm, fake_upstream
):
    base = running_server(config(fake_upstream, provider="extractive"))
    body = {
        "messages": [{"role": "user", "content": "thử việc"}],
        "user": "u1",
        "presence_penalty": 1.0,
        "metadata": {"a": "b"},
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "logprobs": False,
    }
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200, response.text
    assert response.headers["x-lexrag-provider"] == "extractive"


# --- extractive: max_tokens, stop, estimated usage ----------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_extractive_honours_max_tokens_and_stop_and_marks_usage_estimated(
    running_server, fake_pm, fake_upstream, stream
):
    base = running_server(config(fake_upstream, provider="extractive"))
    client = sdk(base)

    def ask(**params: Any) -> tuple[str, str | None, dict[str, Any]]:
        messages = [{"role": "user", "content": QUESTION}]
        if not stream:
            completion = client.chat.completions.create(model="extractive", messages=messages, **params)
            usage = completion.to_dict()["usage"]
            return completion.choices[0].message.content or "", completion.choices[0].finish_reason, usage
        chunks = list(
            client.chat.completions.create(
                model="extractive",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **params,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finish) == 1
        return text, finish[0], chunks[-1].to_dict()["usage"]

    full, finish, usage = ask()
    assert finish == "stop" and full.startswith("Theo [1] ") and len(full) > 40
    assert usage["estimated"] is True
    assert usage["completion_tokens"] == estimate_tokens(full)

    cut, finish, usage = ask(max_tokens=5)
    assert finish == "length" and full.startswith(cut) and cut != full
    assert usage["completion_tokens"] <= 5 and usage["completion_tokens"] == estimate_tokens(cut)
    assert usage["estimated"] is True

    stopped, finish, usage = ask(stop=["[1]", "Điều"])
    assert (stopped, finish) == ("Theo ", "stop")
    assert usage["completion_tokens"] == estimate_tokens("Theo ")


def test_real_token_counts_are_not_marked_estimated(server, fake_upstream):
    usage = (
        sdk(server)
        .chat.completions.create(model="openai", messages=[{"role": "user", "content": QUESTION}])
        .to_dict()["usage"]
    )
    assert "estimated" not in usage and usage["completion_tokens"] == len(ANSWER.split())


# --- GET /v1/models/{id} --------------------------------------------------------------


def test_models_retrieve(server):
    client = sdk(server)
    for model_id, owner in (("fake-model", "openai"), ("openai", "openai"), ("org/fake-model-2", "openai")):
        model = client.models.retrieve(model_id)
        assert (model.id, model.object, model.owned_by) == (model_id, "model", owner)
    assert {"fake-model", "openai", "org/fake-model-2"} <= {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    error = error_of(httpx.get(f"{server}/v1/models/gpt-9"), 404)
    assert error["code"] == "model_not_found" and "gpt-9" in error["message"]


# --- /v1/embeddings with dimensions ---------------------------------------------------


class MatryoshkaEmbedder(Embedder):
    """32-d vectors whose leading dimensions are meant to be read on their own."""

    matryoshka = True

    @property
    def model_id(self) -> str:
        return "matryoshka-32"

    @property
    def dim(self) -> int:
        return 32

    def embed(self, texts: Sequence[str]) -> FloatArray:
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "big") for t in texts]
        rows = [np.random.default_rng(seed).normal(size=32) for seed in seeds]
        out = np.asarray(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class MatryoshkaPlugin:
    @hookimpl
    def register_embedders(self, register: Callable[[str, type[Any]], None]) -> None:
        register("matryoshka", MatryoshkaEmbedder)


def test_embeddings_dimensions_only_where_the_embedder_supports_it(running_server, fake_pm, fake_upstream):
    base = running_server(config(fake_upstream))
    client = sdk(base)
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(input="thử việc", model="hash", dimensions=8)
    error = error_of(httpx.post(f"{base}/v1/embeddings", json={"input": "x", "dimensions": 16}), 400)
    assert error["param"] == "dimensions" and "'hash'" in error["message"]
    schema = httpx.get(f"{base}/openapi.json").json()["components"]["schemas"]["EmbeddingRequest"]
    assert schema["properties"]["dimensions"]["not"] == {}  # the schema does not offer it here

    fake_pm.register(MatryoshkaPlugin(), name="matryoshka-test")
    base = running_server(config(fake_upstream).replace('embedder = "hash"', 'embedder = "matryoshka"'))
    client = sdk(base)
    full = np.asarray(
        client.embeddings.create(input=["thử việc", "kết hôn"], model="matryoshka").data[1].embedding
    )
    short = client.embeddings.create(input=["thử việc", "kết hôn"], model="matryoshka", dimensions=8).data
    assert [len(d.embedding) for d in short] == [8, 8]
    vector = np.asarray(short[1].embedding)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    assert np.allclose(vector, full[:8] / np.linalg.norm(full[:8]), atol=1e-5)
    error = error_of(httpx.post(f"{base}/v1/embeddings", json={"input": "x", "dimensions": 33}), 400)
    assert error["param"] == "dimensions"
    schema = httpx.get(f"{base}/openapi.json").json()["components"]["schemas"]["EmbeddingRequest"]
    assert {"type": "integer", "minimum": 1, "maximum": 32} in schema["properties"]["dimensions"]["anyOf"]


# --- a stream cut mid-answer --------------------------------------------------------


def test_a_stream_cut_mid_answer_ends_with_an_error_event_and_no_invalid_finish_reason(server, fake_upstream):
    from openai.types.chat.chat_completion_chunk import Choice as SdkChoice

    known = set(typing.get_args(typing.get_args(SdkChoice.model_fields["finish_reason"].annotation)[0]))
    fake_upstream.script(Drop("một hai ba bốn năm sáu bảy", after=3))
    raw = httpx.post(
        f"{server}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "stream": True},
        timeout=20,
    )
    events = [e[len(b"data: ") :] for e in raw.content.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "provider_error"
    chunks = [json.loads(e) for e in events[:-2]]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    reasons = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"] is not None]
    assert reasons == [] and all(r in known for r in reasons)
    assert "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]) == "một hai "

    fake_upstream.script(Drop("một hai ba bốn năm sáu bảy", after=3))
    seen: list[str | None] = []
    with pytest.raises(openai.APIError, match="mid-answer"):
        for chunk in sdk(server).chat.completions.create(
            model="openai", messages=[{"role": "user", "content": QUESTION}], stream=True
        ):
            seen += [c.finish_reason for c in chunk.choices]
    assert all(r is None or r in known for r in seen)
    # the error event is documented in the schema
    chat = httpx.get(f"{server}/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]
    event = chat["responses"]["200"]["content"]["text/event-stream"]["schema"]["properties"]["data"]
    assert "error event" in event["description"]
