"""HTTP mode of the ``local`` provider against fake llm-services on loopback: the request it
sends, how it maps answers, and every way the service can fail."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lexrag.config import load_config
from lexrag.errors import ProviderError, ProviderTimeoutError
from lexrag.providers import GenerationParams, ProviderRequest
from lexrag.registry import build_provider, check_config
from lexrag.types import ChatMessage
from lexrag_local.http_client import HttpBackend
from lexrag_local.provider import LocalProvider
from lexrag_local.settings import LocalSettings

from .fakes import Fail, Hang, Malformed, Reply, Reset

MESSAGES = [
    ChatMessage(role="system", content="Bạn là trợ lý pháp lý."),
    ChatMessage(role="user", content="  Điều 20 quy định gì?  "),
]
LLAMA3_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBạn là trợ lý pháp lý.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nĐiều 20 quy định gì?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def http_provider(url: str, **settings) -> LocalProvider:
    return LocalProvider("local", LocalSettings(url=url, **settings))


def ask(provider: LocalProvider, **params):
    request = ProviderRequest(messages=MESSAGES, params=GenerationParams(**params))

    async def go():
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_posts_the_seed_request_with_a_llama3_prompt(fake_upstream):
    fake_upstream.script(
        Reply("Người thành niên là người từ đủ mười tám tuổi trở lên.", finish_reason="length")
    )
    answer = ask(http_provider(fake_upstream.url + "/"), max_tokens=64, temperature=0.2)
    sent = fake_upstream.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/generate")
    assert sent.json == {
        "prompt": LLAMA3_PROMPT,
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "do_sample": True,
    }
    assert answer.text == "Người thành niên là người từ đủ mười tám tuổi trở lên."
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_frog_card_defaults_and_greedy(fake_upstream):
    ask(http_provider(fake_upstream.url))
    assert fake_upstream.requests[-1].json["temperature"] == 0.6
    assert fake_upstream.requests[-1].json["max_tokens"] == 512
    ask(http_provider(fake_upstream.url), temperature=0.0)
    assert fake_upstream.requests[-1].json["do_sample"] is False


def test_tokenizer_dir_renders_with_the_model_template_and_counts_tokens(fake_upstream, tiny_llama_dir):
    from transformers import AutoTokenizer

    provider = http_provider(fake_upstream.url, tokenizer_dir=tiny_llama_dir)
    fake_upstream.script(Reply("Xin chào"))
    ask(provider)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    dicts = [{"role": m.role, "content": m.content} for m in MESSAGES]
    assert fake_upstream.requests[-1].json["prompt"] == tokenizer.apply_chat_template(
        dicts, tokenize=False, add_generation_prompt=True
    )
    assert provider.count_tokens("Xin chào") == len(
        tokenizer("Xin chào", add_special_tokens=False)["input_ids"]
    )
    assert http_provider(fake_upstream.url).count_tokens("Xin chào") is None


def test_stream_in_http_mode(fake_upstream):
    fake_upstream.script(Reply("Câu trả lời [1]."))
    provider = http_provider(fake_upstream.url)

    async def go():
        request = ProviderRequest(messages=MESSAGES)
        return [c async for c in provider.stream(request)]

    chunks = asyncio.run(go())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Câu trả lời [1]."
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None


def test_stop_strings_apply_to_the_answer(fake_upstream):
    fake_upstream.script(Reply("Trả lời: có. ### hết"))
    answer = ask(http_provider(fake_upstream.url), stop=["###"])
    assert answer.text == "Trả lời: có. "
    assert answer.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("behaviour", "retryable", "status", "match"),
    [
        (Fail(503), True, 503, "answered 503"),
        (Fail(500), True, 503, "answered 500"),
        (Fail(429, retry_after=2), True, 503, "answered 429"),
        (Fail(400, message="prompt too long"), False, 400, "refused the request \\(400\\).*prompt too long"),
        (Fail(401), False, 502, "refused the request \\(401\\)"),
        (Malformed(), False, 502, "malformed JSON"),
        (Reset(), True, 503, "cannot be reached"),
    ],
)
def test_failures_map_to_provider_errors(fake_upstream, behaviour, retryable, status, match):
    fake_upstream.script(behaviour)
    with pytest.raises(ProviderError, match=match) as info:
        ask(http_provider(fake_upstream.url))
    assert info.value.retryable is retryable
    assert info.value.status == status
    if isinstance(behaviour, Fail) and behaviour.retry_after:
        assert info.value.retry_after == 2


def test_a_hanging_service_times_out_retryably(fake_upstream):
    fake_upstream.script(Hang(seconds=30))
    with pytest.raises(ProviderTimeoutError, match="did not answer /v1/generate in time") as info:
        ask(http_provider(fake_upstream.url, read_timeout_s=0.5))
    assert info.value.retryable and info.value.status == 504


def test_nothing_listening_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProviderError, match=r"cannot be reached.*is it running") as info:
        ask(http_provider(f"http://127.0.0.1:{port}"))
    assert info.value.retryable


class _OtherService(BaseHTTPRequestHandler):
    """An llm-service of another make: answers with whatever ``body`` the test set."""

    body: bytes = b"{}"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def other_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def answer(body):
        _OtherService.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield answer
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("key", ["text", "response", "generated_text"])
def test_other_services_text_keys(other_service, key):
    answer = ask(http_provider(other_service({key: "Được nghỉ 12 ngày."})))
    assert answer.text == "Được nghỉ 12 ngày."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is None  # neither the service nor a tokenizer counted tokens


@pytest.mark.parametrize(
    ("body", "match"),
    [({"output": "x"}, "without any of generated_text, text, response"), ([1, 2], "malformed JSON")],
)
def test_answers_without_text_are_permanent_errors(other_service, body, match):
    with pytest.raises(ProviderError, match=match) as info:
        ask(http_provider(other_service(body)))
    assert not info.value.retryable and info.value.status == 502


def test_health_reports_the_service(fake_upstream):
    provider = http_provider(fake_upstream.url)
    assert asyncio.run(provider.health())["status"] == "ok"
    fake_upstream.healthy = False
    health = asyncio.run(provider.health())
    assert health["status"] == "down" and "503" in health["error"]


def test_local_llm_api_url_selects_http_mode(registry, fake_upstream):
    env = {"LLM_PROVIDER": "local", "LOCAL_LLM_API_URL": fake_upstream.url}
    provider = build_provider(check_config(load_config(env=env), registry), registry)
    assert isinstance(provider.backend, HttpBackend)
    assert provider.backend.url == fake_upstream.url
