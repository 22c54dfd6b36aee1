"""Bad input is refused at the edge, and the served schema and the server agree: what the
schema allows is answered, what it forbids is a 400 naming the field (real server on
loopback; schemathesis with every check it has, positive and negative)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.specs.openapi.checks  # registers the OpenAPI checks
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS

from lexrag.types import TEXT_CHAR

from .conftest import run_cli
from .fakes import FakeUpstream, Reply

KEY = "strict-schema-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = "Thời giờ làm việc bình thường một ngày là bao nhiêu giờ?"
#: A lone surrogate as JSON writes it: json.dumps keeps the escape, the server's parser
#: turns it into a Python str no encoder can take.
SURROGATE = "\ud800"


def config(upstream: FakeUpstream, *, max_tokens: int = 512) -> str:
    return f"""
[llm]
provider = "openai"
[retrieval]
retriever = "static"
embedder = "hash"
[server]
api_keys = ["{KEY}"]
max_tokens = {max_tokens}
[providers.openai]
base_url = "{upstream.base_url}"
model = "fake-model"
timeout = 5
"""


@pytest.fixture
def server(running_server, fake_pm, fake_upstream) -> str:
    fake_upstream.default = Reply("Không quá 08 giờ [1].")
    return running_server(config(fake_upstream))


def post(base: str, path: str, body: Any) -> httpx.Response:
    """POST ``body`` as JSON, non-ASCII escaped (``\\ud800`` stays an escape on the wire)."""
    headers = {**AUTH, "content-type": "application/json"}
    return httpx.post(f"{base}{path}", content=json.dumps(body).encode(), headers=headers, timeout=20)


def assert_400(response: httpx.Response, param: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert "Traceback" not in response.text
    message: str = error["message"]
    return message


def schemas(base: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{base}/openapi.json", headers=AUTH).json()["components"]["schemas"]
    return found


def upstream_posts(upstream: FakeUpstream) -> int:
    return len([r for r in upstream.requests if r.method == "POST"])


# --- lone surrogates --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": SURROGATE}]},
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": f"a{SURROGATE}"}], "stream": True},
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]},
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "stop": [SURROGATE]},
            "stop",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "user": SURROGATE},
            "user",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "x": SURROGATE}]},
            "tools[0].x",
        ),
        ("/v1/embeddings", {"input": SURROGATE}, "input"),
        ("/v1/embeddings", {"input": ["ok", f"b{SURROGATE}"]}, "input"),
        ("/v1/generate", {"prompt": SURROGATE}, "prompt"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field(server, fake_upstream, caplog, path, body, param):
    with caplog.at_level(logging.WARNING):
        message = assert_400(post(server, path, body), param)
    assert "surrogate" in message and "U+D800" in message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback logged
    assert upstream_posts(fake_upstream) == 0


def test_lexrag_ask_with_bytes_that_are_not_utf8_is_one_clear_line(tmp_path):
    # "\udcff" is how Python hands over the byte 0xff of argv; subprocess writes it back as b"\xff".
    result = run_cli("ask", "\udcff", cwd=tmp_path, env={"LEXRAG_CONFIG": str(tmp_path / "none.toml")})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: QUESTION is not valid Unicode text")
    assert "unexpected" not in result.stderr and "TypeError" not in result.stderr


# --- /v1/generate limits --------------------------------------------------------------


def test_generate_applies_the_server_token_limit(running_server, fake_pm, fake_upstream):
    fake_upstream.default = Reply("Một câu.")
    base = running_server(config(fake_upstream, max_tokens=100))
    message = assert_400(
        post(base, "/v1/generate", {"prompt": "Viết một câu.", "max_tokens": 99999999}), "max_tokens"
    )
    assert "limit of 100" in message
    assert upstream_posts(fake_upstream) == 0
    assert post(base, "/v1/generate", {"prompt": "Viết một câu.", "max_tokens": 100}).status_code == 200
    assert fake_upstream.requests[-1].json["max_tokens"] == 100
    # no max_tokens: the default (256) is lowered to the limit, not refused
    assert post(base, "/v1/generate", {"prompt": "Viết một câu."}).status_code == 200
    assert fake_upstream.requests[-1].json["max_tokens"] == 100
    generate = schemas(base)["GenerateRequest"]["properties"]["max_tokens"]
    assert generate["maximum"] == 100 and generate["default"] == 100
    chat = schemas(base)["ChatCompletionRequest"]["properties"]
    for name in ("max_tokens", "max_completion_tokens"):
        assert {"type": "integer", "minimum": 1, "maximum": 100} in chat[name]["anyOf"]


# --- strict booleans, and the schema and the server agreeing -------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "rag": 0}, "rag"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logprobs": 1}, "logprobs"),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
                "stream_options": {"include_usage": 1},
            },
            "stream_options.include_usage",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "temperature": "0.5"},
            "temperature",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"},
            "max_tokens",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_k": True}, "top_k"),
        ("/v1/generate", {"prompt": "x", "do_sample": 0}, "do_sample"),
        ("/v1/generate", {"prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ],
)
def test_booleans_and_numbers_are_strict(server, path, body, param):
    assert_400(post(server, path, body), param)


def test_an_integral_float_is_an_integer_as_json_schema_says(server, fake_upstream):
    response = post(
        server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5.0}
    )
    assert response.status_code == 200, response.text
    assert fake_upstream.requests[-1].json["max_tokens"] == 5


def test_embeddings_input_needs_at_least_one_text_in_schema_and_server(server):
    branches = schemas(server)["EmbeddingRequest"]["properties"]["input"]["anyOf"]
    assert {"type": "array", "items": {"type": "string"}, "minItems": 1} in branches
    assert {"type": "string", "minLength": 1} in branches
    assert_400(post(server, "/v1/embeddings", {"input": []}), "input")
    assert_400(post(server, "/v1/embeddings", {"input": ""}), "input")
    assert post(server, "/v1/embeddings", {"input": ["x"]}).status_code == 200


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "tool", "tool_call_id": "c1", "content": "42"}],
        [{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "   \n\t"}],
        [{"role": "user", "content": [{"type": "text", "text": "  "}]}],
        [{"role": "user"}],
    ],
    ids=["only-tool", "no-user", "empty", "white-space", "white-space-parts", "no-content"],
)
@pytest.mark.parametrize("rag", [None, False], ids=["rag-default", "rag-off"])
def test_a_request_without_a_question_is_a_400_whatever_the_rag_setting(server, fake_upstream, messages, rag):
    body: dict[str, Any] = {"messages": messages}
    if rag is not None:
        body["rag"] = rag
    for stream in (False, True):
        assert_400(post(server, "/v1/chat/completions", {**body, "stream": stream}), "messages")
    assert upstream_posts(fake_upstream) == 0


#: ECMAScript's ``\\s`` (WhiteSpace and LineTerminator, ECMA-262 §12.2-12.3): what a JSON
#: Schema ``pattern`` of ``\\S`` treats as white space.
ECMA_SPACE = set("\t\n\v\f\r \xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | {
    chr(c) for c in range(0x2000, 0x200B)
}


def test_a_text_character_is_one_neither_python_nor_json_schema_counts_as_white_space():
    for code in range(0x10000):
        char = chr(code)
        space = char.isspace() or char in ECMA_SPACE
        assert (re.fullmatch(TEXT_CHAR, char) is None) == space, hex(code)


@pytest.mark.parametrize("space", ["\x85", "\x1c", "\ufeff", "\u3000", "\xa0", "\u2028"])
def test_schema_and_server_agree_on_white_space_either_side_counts(server, fake_upstream, space):
    """Found by schemathesis: "\\x85\\x85" matched the schema's ``\\S`` (not white space to
    ECMAScript) and was refused by the server (white space to Python's ``str.strip``)."""
    for content in (space * 2, [{"type": "text", "text": space}]):
        assert_400(
            post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": content}]}),
            "messages",
        )
    assert upstream_posts(fake_upstream) == 0
    asked = post(
        server, "/v1/chat/completions", {"messages": [{"role": "user", "content": space + "x" + space}]}
    )
    assert asked.status_code == 200, asked.text


def test_one_filter_value_for_a_list_is_allowed_by_schema_and_server(server):
    """Found by schemathesis: the server took ``"kind": "Luật"`` as a list of one, the
    schema allowed only a list (or null)."""
    filters = schemas(server)["RetrievalFilters"]["properties"]
    for name in ("kind", "doc", "status"):
        assert "string" in [branch.get("type") for branch in filters[name]["anyOf"]], name
    one = {"kind": "Bộ luật", "doc": "bo-luat-lao-dong-2019", "status": "con-hieu-luc"}
    body = {"messages": [{"role": "user", "content": QUESTION}], "filters": one}
    assert post(server, "/v1/chat/completions", body).status_code == 200
    assert_400(post(server, "/v1/chat/completions", {**body, "filters": {"kind": 3}}), "filters.kind")


def test_the_schema_says_a_question_is_needed_and_n_is_one(server):
    request = schemas(server)["ChatCompletionRequest"]["properties"]
    contains = request["messages"]["contains"]
    assert contains["properties"]["role"] == {"const": "user"}
    assert {"type": "string", "pattern": TEXT_CHAR} in contains["properties"]["content"]["anyOf"]
    assert request["n"]["maximum"] == 1
    for stop in request["stop"]["anyOf"]:
        if stop.get("type") == "array":
            assert stop["maxItems"] == 4
    # one user message with text among others is enough
    messages = [
        {"role": "system", "content": "Trả lời ngắn."},
        {"role": "user", "content": "  " + QUESTION + "  "},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert post(server, "/v1/chat/completions", {"messages": messages}).status_code == 200


# --- schemathesis, every check ------------------------------------------------------


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_with_every_check_finds_nothing(server, mode):
    """Every check schemathesis has, positive_data_acceptance included: a request the schema
    allows is answered (the upstream can honour every OpenAI parameter), one it forbids is
    refused. (tests/test_schema.py runs its subset against the local-style provider.)"""
    loaded = schemathesis.openapi.from_url(f"{server}/openapi.json", headers=AUTH)
    checks = CHECKS.get_all()
    tested = []
    for result in loaded.get_all_operations():
        operation = result.ok()
        tested.append(operation.label)
        if (
            mode is GenerationMode.NEGATIVE
            and operation.method.upper() == "GET"
            and "{" not in operation.path
        ):
            continue  # no parameters or body: nothing that could be invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            case.call_and_validate(headers=AUTH, checks=checks, timeout=20)

        run()
    assert {"POST /v1/chat/completions", "POST /v1/embeddings", "POST /v1/generate"} <= set(tested)
    assert "GET /v1/models/{model_id}" in tested
