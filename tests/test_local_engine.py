"""The decode loop on the tiny exported Llama: parity with PyTorch and optimum, sampling,
eos ids, incremental UTF-8 and stop strings."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from lexrag_local.engine import Engine
from lexrag_local.model_files import load_tokenizer
from lexrag_local.sampling import Sampler, SamplingParams
from lexrag_local.tokens import Detokenizer, StopText, fast_backend
from lexrag_local.worker import Finished, Job, Worker

QUESTION = "Người lao động có quyền nghỉ hằng năm bao nhiêu ngày?"
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_onnx_dir):
    return Engine(tiny_onnx_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_onnx_dir):
    return load_tokenizer(tiny_onnx_dir)


@pytest.fixture(scope="module")
def prompt(tokenizer) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)


def engine_tokens(engine: Engine, prompt: list[int], n: int, sampling: SamplingParams = GREEDY) -> list[int]:
    out = []
    for token in engine.decode(prompt, n, Sampler(sampling)):
        out.append(token)
        if token in engine.generation.eos_token_ids:
            break
    return out


def run_worker(worker: Worker, job: Job) -> tuple[str, Finished]:
    async def go():
        parts, finished = [], None
        async for item in worker.generate(job):
            if isinstance(item, Finished):
                finished = item
            else:
                parts.append(item)
        return "".join(parts), finished

    return asyncio.run(go())


def test_engine_reads_the_export(engine, tiny_llama):
    assert engine.providers == ["CPUExecutionProvider"]
    assert engine.generation.eos_token_ids == tiny_llama.eos_token_ids
    assert engine.generation.temperature == pytest.approx(0.6)
    assert engine.context_window == tiny_llama.context_window


def test_greedy_equals_transformers_and_optimum_token_for_token(
    engine, prompt, tiny_llama_dir, tiny_onnx_dir
):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM

    n = 40
    ours = engine_tokens(engine, prompt, n)
    ids = torch.tensor([prompt])
    kwargs = {
        "attention_mask": torch.ones_like(ids),
        "do_sample": False,
        "max_new_tokens": n,
        "eos_token_id": engine.generation.eos_token_ids,
        "pad_token_id": engine.generation.eos_token_ids[0],
    }
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).generate(ids, **kwargs)[0, len(prompt) :]
    ort_model = ORTModelForCausalLM.from_pretrained(tiny_onnx_dir, provider="CPUExecutionProvider")
    optimum = ort_model.generate(ids, **kwargs)[0, len(prompt) :]
    assert len(ours) == n
    assert ours == reference.tolist()
    assert ours == optimum.tolist()


def test_prefill_logits_match_pytorch(engine, prompt, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        expected = (
            AutoModelForCausalLM.from_pretrained(tiny_llama_dir)(torch.tensor([prompt])).logits[0, -1].numpy()
        )
    np.testing.assert_allclose(engine.prefill_logits(prompt), expected, atol=1e-4)


def test_seeded_sampling_is_reproducible(engine, prompt):
    hot = SamplingParams(temperature=1.5, top_p=0.95, top_k=50, seed=1234)
    first = engine_tokens(engine, prompt, 30, hot)
    assert engine_tokens(engine, prompt, 30, hot) == first
    others = {
        tuple(engine_tokens(engine, prompt, 30, SamplingParams(temperature=1.5, seed=s))) for s in range(3)
    }
    assert len(others) > 1, "different seeds should sample different continuations"


def test_sampler_filters():
    logits = np.array([5.0, 4.0, 1.0, 0.5, -3.0], dtype=np.float32)
    assert Sampler(GREEDY)(logits) == 0
    top1 = Sampler(SamplingParams(temperature=2.0, top_k=1, seed=0))
    assert {top1(logits) for _ in range(50)} == {0}
    nucleus = Sampler(SamplingParams(temperature=1.0, top_p=0.8, seed=0))
    assert {nucleus(logits) for _ in range(200)} == {0, 1}  # p(0)=0.72 < 0.8, so token 1 joins
    wide = Sampler(SamplingParams(temperature=1.0, seed=0))
    assert len({wide(logits) for _ in range(500)}) >= 3


def _prompt_predicting(engine: Engine, tokenizer, eos_id: int) -> list[int]:
    """A prompt after which the tiny model's greedy next token is ``eos_id`` (found by search)."""
    rng = np.random.default_rng(eos_id)
    header = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True
    )
    for _ in range(20000):
        candidate = header + rng.integers(10, len(tokenizer), size=int(rng.integers(1, 6))).tolist()
        if int(np.argmax(engine.prefill_logits(candidate))) == eos_id:
            return candidate
    pytest.fail(f"no prompt found whose greedy next token is eos id {eos_id}")


def test_each_eos_id_stops_generation(engine, tokenizer, tiny_llama):
    worker = Worker(engine, tokenizer)
    for eos_id in tiny_llama.eos_token_ids:
        prompt = _prompt_predicting(engine, tokenizer, eos_id)
        text, finished = run_worker(worker, Job(prompt, 20, GREEDY))
        assert finished == Finished("stop", 1), f"eos id {eos_id} did not stop generation"
        assert text == ""
    worker.close()


def test_length_and_stop_strings(engine, tokenizer, prompt):
    worker = Worker(engine, tokenizer)
    full, finished = run_worker(worker, Job(prompt, 40, GREEDY))
    assert finished == Finished("length", 40)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut, finished = run_worker(worker, Job(prompt, 40, GREEDY, stop=[stop]))
    assert finished.reason == "stop"
    assert cut == full[: full.index(stop)]
    worker.close()


def stream(backend, ids: list[int]) -> list[str]:
    detok = Detokenizer(backend)
    return [detok.feed(i) for i in ids] + [detok.flush()]


def test_detokenizer_never_breaks_vietnamese(tokenizer):
    text = "Quyền lợi ữ ỹ ợ ẵ — người lao động được nghỉ 12 ngày."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    split = [i for i in ids if "\ufffd" in tokenizer.decode([i])]
    assert split, "the test text should contain a character split across byte-level tokens"
    deltas = stream(fast_backend(tokenizer), ids)
    assert "".join(deltas) == text == tokenizer.decode(ids)
    assert not any("\ufffd" in d for d in deltas)


def test_detokenizer_skips_special_tokens_and_drops_broken_bytes(tokenizer):
    """Any id sequence a model may sample (special tokens, orphan continuation bytes, a
    character cut off at the end) streams as its whole decode without U+FFFD."""
    backend = fast_backend(tokenizer)
    rng = np.random.default_rng(0)
    for _ in range(300):
        ids = rng.integers(0, len(tokenizer), size=int(rng.integers(1, 40))).tolist()
        deltas = stream(backend, ids)
        assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True).replace("\ufffd", "")
        assert not any("\ufffd" in d for d in deltas)
    cut = tokenizer("Điều ữ", add_special_tokens=False)["input_ids"][:-1]  # "ữ" loses its last byte
    assert "".join(stream(backend, cut)) == "Điều "


def _sentencepiece_like_tokenizer():
    """A Llama-2 style tokenizer: "▁" for spaces, the leading one stripped when decoding,
    and characters outside the vocabulary as byte-fallback tokens ``<0xE1>`` ..."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = {"<unk>": 0, "▁": 1}
    for piece in [f"<0x{b:02X}>" for b in range(256)] + list("abcdefghijklmnopqrstuvwxyzĐ0123456789.,"):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tok


def test_detokenizer_for_non_byte_level_tokenizers():
    backend = _sentencepiece_like_tokenizer()
    text = "Điều 20. Người thành niên là người từ đủ mười tám tuổi."
    ids = backend.encode(text).ids
    assert any(backend.id_to_token(i).startswith("<0x") for i in ids), "precondition: byte-fallback pieces"
    deltas = stream(backend, ids)
    assert backend.decode(ids) == text
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_stop_text_holds_back_partial_matches():
    stops = StopText(["###", "Kết thúc"])
    assert stops.feed("Xin chào #") == "Xin chào "
    assert stops.feed("#") == ""
    assert stops.feed(" tiếp") == "## tiếp"
    assert stops.feed(" Kết") == " "
    assert stops.feed(" thúc rồi") == ""
    assert stops.stopped
    assert stops.flush() == ""
