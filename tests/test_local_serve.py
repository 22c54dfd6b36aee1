"""``lexrag serve`` with provider "local": as the llm-service of HTTP mode, and end to end
from ``lexrag model export`` to the real ``openai`` SDK."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from lexrag.providers import GenerationParams, ProviderRequest
from lexrag.types import ChatMessage

pytest.importorskip("onnxruntime")

from lexrag_local.provider import LocalProvider
from lexrag_local.settings import LocalSettings

from .conftest import run_cli
from .fixtures_local import serving

QUESTION = "Người lao động có quyền nghỉ hằng năm bao nhiêu ngày?"


def server_config(model_dir) -> str:
    return (
        '[llm]\nprovider = "local"\n[retrieval]\nenabled = false\n'
        f'[providers.local]\nmodel_dir = "{model_dir}"\n'
    )


@pytest.mark.parametrize("api", ["chat", "completions", "generate"])
def test_http_mode_against_lexrag_serve_equals_in_process(running_server, tiny_onnx_dir, api):
    """Each ``api`` of HTTP mode, against ``lexrag serve`` as the llm-service, gives what
    the model gives in-process: the same prompt tokens, whoever renders the template."""
    url = running_server(server_config(tiny_onnx_dir))
    request = ProviderRequest(
        messages=[
            ChatMessage(role="system", content="Trả lời ngắn gọn."),
            ChatMessage(role="user", content=QUESTION),
        ],
        params=GenerationParams(temperature=0.0, max_tokens=40),
    )
    remote = LocalProvider("local", LocalSettings(url=url, tokenizer_dir=tiny_onnx_dir, api=api))
    direct = LocalProvider("local", LocalSettings(model_dir=tiny_onnx_dir))

    async def go():
        try:
            return await remote.complete(request), await direct.complete(request), await remote.health()
        finally:
            await remote.aclose()
            await direct.aclose()

    over_http, in_process, health = asyncio.run(go())
    assert over_http.text == in_process.text
    assert over_http.text
    assert over_http.choices[0].finish_reason == in_process.choices[0].finish_reason == "length"
    assert over_http.usage == in_process.usage
    assert health["status"] == "ok"
    assert health["upstream"]["providers"]["local"]["execution_providers"] == ["CPUExecutionProvider"]


@pytest.mark.slow
def test_export_then_serve_answers_the_openai_sdk(tiny_llama_dir, tmp_path):
    import openai

    model_dir = tmp_path / "frog-tiny"
    from lexrag_local.quantize import DEFAULT_CPU_QUANTIZE

    exported = run_cli("model", "export", str(tiny_llama_dir), str(model_dir))  # CPU defaults
    assert exported.returncode == 0, exported.stderr
    assert f"parity vs PyTorch ({DEFAULT_CPU_QUANTIZE}" in exported.stdout
    with serving(server_config(model_dir), tmp_path, timeout=90) as served:
        client = openai.OpenAI(base_url=served.base + "/v1", api_key="unused", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": QUESTION}]
        whole = client.chat.completions.create(model="local", messages=messages, temperature=0, max_tokens=48)
        stream = client.chat.completions.create(
            model="local",
            messages=messages,
            temperature=0,
            max_tokens=48,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        health = httpx.get(served.base + "/health", timeout=10).json()
    output = served.output
    text = whole.choices[0].message.content
    assert text and any(ord(c) > 127 for c in text), output
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 48
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 48
    assert health["providers"]["local"]["execution_providers"] == ["CPUExecutionProvider"]
