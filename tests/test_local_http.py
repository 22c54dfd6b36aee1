"""HTTP mode of the ``local`` provider against fake llm-services on loopback: the request it
sends with each ``api`` (OpenAI chat or completions streaming, the seed's ``/v1/generate``),
how it maps answers, and every way the service can fail."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
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

from .fakes import Drop, Fail, Hang, Malformed, Reply, Reset

MESSAGES = [
    ChatMessage(role="system", content="Bạn là trợ lý pháp lý."),
    ChatMessage(role="user", content="  Điều 20 quy định gì?  "),
]
#: MESSAGES through the built-in Llama-3 template, without its BOS: the completions prompt.
LLAMA3_PROMPT = (
    "<|start_header_id|>system<|end_header_id|>\n\nBạn là trợ lý pháp lý.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nĐiều 20 quy định gì?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
BOS = "<|begin_of_text|>"
STREAMING = ["chat", "completions"]
APIS = [*STREAMING, "generate"]
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "generate": "/v1/generate"}


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def http_provider(url: str, **settings) -> LocalProvider:
    return LocalProvider("local", LocalSettings(url=url, **settings))


def ask(provider: LocalProvider, request: ProviderRequest | None = None, **params):
    request = request or ProviderRequest(messages=MESSAGES, params=GenerationParams(**params))

    async def go():
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def stream(provider: LocalProvider, **params):
    async def go():
        try:
            request = ProviderRequest(messages=MESSAGES, params=GenerationParams(**params))
            return [c async for c in provider.stream(request)]
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_chat_api_streams_the_messages(fake_upstream):
    fake_upstream.script(
        Reply("Người thành niên là người từ đủ mười tám tuổi trở lên.", finish_reason="length")
    )
    answer = ask(http_provider(fake_upstream.url + "/"), max_tokens=64, temperature=0.2, seed=7)
    sent = fake_upstream.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.json == {
        "messages": [
            {"role": "system", "content": "Bạn là trợ lý pháp lý."},
            {"role": "user", "content": "  Điều 20 quy định gì?  "},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert answer.text == "Người thành niên là người từ đủ mười tám tuổi trở lên."
    assert answer.choices[0].finish_reason == "length"
    # The service's own counts (the fake counts words).
    assert answer.usage is not None and answer.usage.completion_tokens == len(answer.text.split())


def test_completions_api_streams_the_rendered_prompt_without_its_bos(fake_upstream):
    fake_upstream.script(Reply("Đủ mười tám tuổi."))
    provider = http_provider(fake_upstream.url, api="completions", upstream_model="frog")
    answer = ask(provider, max_tokens=32, temperature=0.0, stop=["\n\n"])
    sent = fake_upstream.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/completions")
    assert sent.json == {
        "model": "frog",
        "prompt": LLAMA3_PROMPT,
        "max_tokens": 32,
        "temperature": 0.0,
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["\n\n"],
    }
    assert answer.text == "Đủ mười tám tuổi."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 4


def test_generate_api_posts_the_seed_request_marked_raw(fake_upstream):
    fake_upstream.script(
        Reply("Người thành niên là người từ đủ mười tám tuổi trở lên.", finish_reason="length")
    )
    answer = ask(http_provider(fake_upstream.url, api="generate"), max_tokens=64, temperature=0.2)
    sent = fake_upstream.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/generate")
    assert sent.json == {
        "prompt": BOS + LLAMA3_PROMPT,
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "do_sample": True,
        "raw": True,
    }
    assert answer.text == "Người thành niên là người từ đủ mười tám tuổi trở lên."
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens > 0


@pytest.mark.parametrize("api", APIS)
def test_a_raw_prompt_is_sent_as_it_is_never_through_a_template(fake_upstream, api):
    """A raw prompt is marked by the request (``ProviderRequest.prompt``), not guessed from
    its text: it goes to /v1/completions (or /v1/generate with raw) untouched."""
    raw = BOS + "<|start_header_id|>user<|end_header_id|>\n\nXin chào<|eot_id|>"
    request = ProviderRequest(messages=[ChatMessage(role="user", content=raw)], prompt=raw)
    ask(http_provider(fake_upstream.url, api=api), request)
    sent = fake_upstream.requests[-1]
    if api == "generate":
        assert (sent.path, sent.json["prompt"], sent.json["raw"]) == ("/v1/generate", raw, True)
    else:
        assert (sent.path, sent.json["prompt"]) == ("/v1/completions", raw.removeprefix(BOS))
    # The same text as a chat message is a message: rendered, never passed through.
    ask(http_provider(fake_upstream.url, api="completions"), ProviderRequest(messages=request.messages))
    assert (
        fake_upstream.requests[-1].json["prompt"].startswith("<|start_header_id|>user<|end_header_id|>\n\n")
    )
    assert fake_upstream.requests[-1].json["prompt"].count("<|start_header_id|>user") == 2


@pytest.mark.parametrize("api", APIS)
def test_frog_card_defaults_and_greedy(fake_upstream, api):
    ask(http_provider(fake_upstream.url, api=api))
    assert fake_upstream.requests[-1].json["temperature"] == 0.6
    assert fake_upstream.requests[-1].json["max_tokens"] == 512
    ask(http_provider(fake_upstream.url, api=api), temperature=0.0)
    assert fake_upstream.requests[-1].json["temperature"] == 0.0
    if api == "generate":
        assert fake_upstream.requests[-1].json["do_sample"] is False


@pytest.mark.parametrize("api", ["completions", "generate"])
def test_tokenizer_dir_renders_with_the_model_template_and_counts_tokens(fake_upstream, tiny_llama_dir, api):
    from transformers import AutoTokenizer

    provider = http_provider(fake_upstream.url, tokenizer_dir=tiny_llama_dir, api=api)
    fake_upstream.script(Reply("Xin chào"))
    ask(provider)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    dicts = [{"role": m.role, "content": m.content} for m in MESSAGES]
    rendered = tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
    expected = rendered if api == "generate" else rendered.removeprefix(tokenizer.bos_token)
    assert fake_upstream.requests[-1].json["prompt"] == expected
    assert provider.count_tokens("Xin chào") == len(
        tokenizer("Xin chào", add_special_tokens=False)["input_ids"]
    )
    assert http_provider(fake_upstream.url).count_tokens("Xin chào") is None


@pytest.mark.parametrize("api", APIS)
def test_stream_in_http_mode(fake_upstream, api):
    fake_upstream.script(Reply("Câu trả lời [1] rõ ràng."))
    chunks = stream(http_provider(fake_upstream.url, api=api))
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "Câu trả lời [1] rõ ràng."
    # Streamed word by word by the fake: as many pieces here (the seed's API: one).
    assert len(texts) == (1 if api == "generate" else 6)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None


@pytest.mark.parametrize("api", APIS)
def test_stop_strings_apply_to_the_answer(fake_upstream, api):
    """The fake ignores ``stop`` (as a service that does not honour it): the text is cut
    here, as it arrives, and a streamed answer's connection is closed at the cut."""
    fake_upstream.script(Reply("Trả lời: có. ### hết " + "thêm " * 20, chunk_delay=0.01))
    answer = ask(http_provider(fake_upstream.url, api=api), stop=["###"])
    assert answer.text == "Trả lời: có. "
    assert answer.choices[0].finish_reason == "stop"
    if api != "generate":
        assert fake_upstream.requests[-1].json["stop"] == ["###"]
        assert wait_for(lambda: fake_upstream.abandoned == 1)  # the rest was never read


@pytest.mark.parametrize("api", STREAMING)
def test_a_stop_string_split_across_tokens_is_never_half_shown(fake_upstream, api):
    fake_upstream.script(Reply(deltas=["Có", " #", "#", "# không"]))
    chunks = stream(http_provider(fake_upstream.url, api=api), stop=["###"])
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["Có", " "]  # "#" held back until it is known not to start "###"


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("behaviour", "retryable", "status", "match"),
    [
        (Fail(503), True, 503, "answered 503"),
        (Fail(500), True, 503, "answered 500"),
        (Fail(429, retry_after=2), True, 503, "answered 429"),
        (Fail(400, message="prompt too long"), False, 400, "refused the request \\(400\\).*prompt too long"),
        (Fail(401), False, 502, "refused the request \\(401\\)"),
        (Malformed(), False, 502, "malformed"),
        (Reset(), True, 503, "cannot be reached"),
    ],
)
def test_failures_map_to_provider_errors(fake_upstream, api, behaviour, retryable, status, match):
    fake_upstream.script(behaviour)
    with pytest.raises(ProviderError, match=match) as info:
        ask(http_provider(fake_upstream.url, api=api))
    assert info.value.retryable is retryable
    assert info.value.status == status
    if isinstance(behaviour, Fail) and behaviour.retry_after:
        assert info.value.retry_after == 2


@pytest.mark.parametrize("api", STREAMING)
def test_a_stream_cut_mid_answer_is_a_retryable_failure(fake_upstream, api):
    fake_upstream.script(Drop("Câu trả lời bị cắt giữa chừng", after=3))
    with pytest.raises(ProviderError, match=r"broke off the answer|without finishing") as info:
        ask(http_provider(fake_upstream.url, api=api))
    assert info.value.retryable


@pytest.mark.parametrize("api", APIS)
def test_a_hanging_service_times_out_retryably(fake_upstream, api):
    fake_upstream.script(Hang(seconds=30))
    with pytest.raises(ProviderTimeoutError, match=f"did not answer {PATHS[api]} in time") as info:
        ask(http_provider(fake_upstream.url, read_timeout_s=0.5, api=api))
    assert info.value.retryable and info.value.status == 504


def test_nothing_listening_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for api in APIS:
        with pytest.raises(ProviderError, match=r"cannot be reached.*is it running") as info:
            ask(http_provider(f"http://127.0.0.1:{port}", api=api))
        assert info.value.retryable


class _OtherService(BaseHTTPRequestHandler):
    """An llm-service of another make: answers every POST with whatever ``body`` the test
    set, as JSON; ``GET /health`` with a 200 and no body (as vLLM does)."""

    body: bytes = b"{}"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

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
    answer = ask(http_provider(other_service({key: "Được nghỉ 12 ngày."}), api="generate"))
    assert answer.text == "Được nghỉ 12 ngày."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is None  # neither the service nor a tokenizer counted tokens


@pytest.mark.parametrize(
    ("body", "match"),
    [({"output": "x"}, "without any of generated_text, text, response"), ([1, 2], "malformed JSON")],
)
def test_answers_without_text_are_permanent_errors(other_service, body, match):
    with pytest.raises(ProviderError, match=match) as info:
        ask(http_provider(other_service(body), api="generate"))
    assert not info.value.retryable and info.value.status == 502


@pytest.mark.parametrize(
    ("api", "body"),
    [
        ("chat", {"choices": [{"message": {"content": "Được nghỉ 12 ngày."}, "finish_reason": "length"}]}),
        ("completions", {"choices": [{"text": "Được nghỉ 12 ngày.", "finish_reason": "length"}]}),
    ],
)
def test_a_service_that_does_not_stream_answers_whole(other_service, api, body):
    answer = ask(http_provider(other_service(body), api=api))
    assert (answer.text, answer.choices[0].finish_reason) == ("Được nghỉ 12 ngày.", "length")


def test_health_reports_the_service(fake_upstream, other_service):
    provider = http_provider(fake_upstream.url)
    assert asyncio.run(provider.health())["status"] == "ok"
    fake_upstream.healthy = False
    health = asyncio.run(provider.health())
    assert health["status"] == "down" and "503" in health["error"]
    # vLLM's /health: 200 with no body.
    assert asyncio.run(http_provider(other_service({})).health())["status"] == "ok"


def test_local_llm_api_url_selects_http_mode(registry, fake_upstream):
    env = {"LLM_PROVIDER": "local", "LOCAL_LLM_API_URL": fake_upstream.url}
    provider = build_provider(check_config(load_config(env=env), registry), registry)
    assert isinstance(provider.backend, HttpBackend)
    assert provider.backend.url == fake_upstream.url
    assert provider.backend.settings.api == "chat"


def test_a_raw_prompt_gets_the_tokenizers_bos_once(tiny_llama_dir):
    from transformers import AutoTokenizer

    from lexrag_local.chat_template import RawPrompt, render

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert render(RawPrompt("Xin chào"), tokenizer) == BOS + "Xin chào"
    assert render(RawPrompt(BOS + "Xin chào"), tokenizer) == BOS + "Xin chào"
    assert render(RawPrompt("Xin chào"), None) == BOS + "Xin chào"  # no tokenizer: Llama-3's

    class NoBos:
        """A tokenizer that puts nothing in front (GPT-2 style, as ChatML models have)."""

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": []}

    assert render(RawPrompt("<|im_start|>user\nXin chào"), NoBos()) == "<|im_start|>user\nXin chào"
