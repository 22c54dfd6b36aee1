"""The ``local`` provider in-process on the tiny exported Llama: the common types, streaming,
context limits, cancellation and concurrency."""

from __future__ import annotations

import asyncio
import re

import pytest

from lexrag.config import load_config
from lexrag.errors import ConfigError, InvalidRequestError, ModelExportError
from lexrag.providers import GenerationParams, ProviderRequest
from lexrag.registry import build_provider, check_config
from lexrag.types import ChatCompletion, ChatMessage

pytest.importorskip("onnxruntime")

from lexrag_local.provider import LocalProvider
from lexrag_local.settings import LocalSettings

QUESTION = "Người lao động có quyền nghỉ hằng năm bao nhiêu ngày?"


def request(content: str = QUESTION, system: str | None = "Trả lời ngắn gọn.", **params) -> ProviderRequest:
    messages = [ChatMessage(role="system", content=system)] if system else []
    return ProviderRequest(
        messages=[*messages, ChatMessage(role="user", content=content)],
        params=GenerationParams(**{"temperature": 0.0, **params}),
    )


@pytest.fixture
def provider(tiny_onnx_dir):
    p = LocalProvider("local", LocalSettings(model_dir=tiny_onnx_dir))
    yield p
    asyncio.run(p.aclose())


async def collect(stream):
    return [chunk async for chunk in stream]


def test_registered_through_the_hook_with_validated_settings(registry, tiny_onnx_dir, tmp_path):
    assert registry.providers.owners["local"] == "local"
    config_file = tmp_path / "lexrag.toml"
    config_file.write_text(f'[llm]\nprovider = "local"\n[providers.local]\nmodel_dir = "{tiny_onnx_dir}"\n')
    provider = build_provider(check_config(load_config(config_file, env={}), registry), registry)
    assert isinstance(provider, LocalProvider)
    assert provider.context_window == 384
    config_file.write_text('[providers.local]\nmodel_dri = "x"\n')
    with pytest.raises(ConfigError, match=r"\[providers.local\] model_dri: unknown key"):
        check_config(load_config(config_file, env={}), registry)


def test_missing_model_dir_says_how_to_export(tmp_path):
    with pytest.raises(ConfigError, match="model_dir"):
        LocalProvider("local", LocalSettings())
    with pytest.raises(ModelExportError, match="lexrag model export"):
        LocalProvider("local", LocalSettings(model_dir=tmp_path))


def test_streamed_text_equals_complete_text_with_vietnamese(provider):
    async def go():
        whole = await provider.complete(request(max_tokens=60))
        chunks = await collect(provider.stream(request(max_tokens=60)))
        return whole, chunks

    whole, chunks = asyncio.run(go())
    assert isinstance(whole, ChatCompletion)
    text = whole.text
    assert any(ord(c) > 127 for c in text), "the tiny model's answer should contain multi-byte characters"
    assert "\ufffd" not in text
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == text
    assert len([d for d in deltas if d]) > 5
    assert len({c.id for c in chunks}) == 1
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    prompt_tokens = len(provider.backend.prompt_ids(request().messages))
    assert whole.usage.prompt_tokens == prompt_tokens
    assert whole.usage.completion_tokens == 60
    assert whole.model == provider.default_model == "tiny-llama0"


def test_prompt_longer_than_the_context_window_is_a_400_before_any_work(provider):
    long_question = "quyền và nghĩa vụ " * 200
    assert provider.count_tokens(long_question) > provider.context_window
    with pytest.raises(InvalidRequestError) as info:
        asyncio.run(provider.complete(request(long_question)))
    assert info.value.status == 400
    assert "context window is 384" in info.value.message
    assert provider.backend._worker is None, "no model work should start for an impossible prompt"


def test_max_tokens_is_clamped_to_the_room_left(provider):
    prompt_tokens = len(provider.backend.prompt_ids(request().messages))
    answer = asyncio.run(provider.complete(request(max_tokens=1000)))
    assert answer.usage.completion_tokens + prompt_tokens <= 384
    assert answer.choices[0].finish_reason in ("length", "stop")


def test_client_disconnect_cancels_generation(provider, caplog):
    long = request(system=None, max_tokens=300)

    def ended() -> list[tuple[str, int]]:
        """(reason, tokens) of every generation the worker logged as ended, oldest first: the
        only record of a generation whose client went away."""
        found = (
            re.match(r"local generation ended: (\w+) after (\d+) tokens", r.getMessage())
            for r in caplog.records
            if r.name == "lexrag.local"
        )
        return [(m[1], int(m[2])) for m in found if m]

    async def go():
        full = await provider.complete(long)
        assert full.choices[0].finish_reason == "length", "precondition: 300 tokens without eos"
        assert ended()[-1] == ("length", 300)
        stream = provider.stream(long)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.aclose()
        worker = await provider.backend.worker()
        await worker.drain()
        closed = ended()[-1]

        started = asyncio.Event()

        async def consume():
            async for chunk in provider.stream(long):
                if chunk.choices and chunk.choices[0].delta.content:
                    started.set()

        runs = len(ended())
        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await worker.drain()
        assert len(ended()) == runs + 1
        return closed, ended()[-1]

    with caplog.at_level("DEBUG", logger="lexrag.local"):
        closed, cancelled = asyncio.run(go())
    assert closed[0] == "cancelled" and closed[1] < 300
    assert cancelled[0] == "cancelled" and cancelled[1] < 300


def test_concurrent_requests_are_queued_and_both_correct(provider):
    first, second = request(max_tokens=40), request("Điều 20 quy định gì?", max_tokens=40)

    async def go():
        alone = [await provider.complete(first), await provider.complete(second)]
        together = await asyncio.gather(provider.complete(first), provider.complete(second))
        streamed = await asyncio.gather(collect(provider.stream(first)), collect(provider.stream(second)))
        return alone, together, streamed

    alone, together, streamed = asyncio.run(go())
    assert alone[0].text != alone[1].text
    assert [c.text for c in together] == [c.text for c in alone]
    for chunks, expected in zip(streamed, alone, strict=True):
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text


def test_seeded_sampling_through_the_provider(provider):
    hot = {"temperature": 1.2, "top_p": 0.9, "seed": 7, "max_tokens": 30}

    async def go():
        return [(await provider.complete(request(**hot))).text for _ in range(2)]

    a, b = asyncio.run(go())
    assert a == b


def test_health_names_the_execution_provider(provider):
    health = asyncio.run(provider.health())
    assert health["status"] == "ok"
    assert health["execution_providers"] == ["CPUExecutionProvider"]
    assert health["mode"] == "in-process"


def test_cuda_asked_for_without_a_gpu_falls_back_to_cpu(tiny_onnx_dir, caplog):
    from lexrag import cuda_usable

    if cuda_usable()[0]:
        pytest.skip("a GPU is present: the fallback does not happen here")
    p = LocalProvider("local", LocalSettings(model_dir=tiny_onnx_dir, device="cuda"))
    with caplog.at_level("WARNING", logger="lexrag"):
        health = asyncio.run(p.health())
    assert health["execution_providers"] == ["CPUExecutionProvider"]
    assert "running on CPU instead" in caplog.text
    asyncio.run(p.aclose())
