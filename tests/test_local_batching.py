"""Continuous batching on the tiny exported Llama, for both graph kinds (optimum's export;
the genai builder's GroupQueryAttention graph, skipped with the reason when the genai
interpreter is missing): a sequence inside a batch is generated exactly as alone, whatever
joins and leaves around it; cancellation and failures stay with their sequence; a full
queue is a 503 with Retry-After; stopping the server mid-batch hangs nothing."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from lexrag import ProviderError
from lexrag_local.engine import Engine
from lexrag_local.kv import GraphCopier, KvPlan, NumpyCopier
from lexrag_local.model_files import load_tokenizer
from lexrag_local.sampling import Sampler, SamplingParams
from lexrag_local.scheduler import Failed, Finished, Request, Scheduler
from lexrag_local.tokens import fast_backend

from .conftest import free_port, wait_healthy

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def tiny_gqa_dir(tiny_genai_export) -> Path:
    return tiny_genai_export.out_dir


@pytest.fixture(scope="module", params=["optimum", "gqa"])
def model_dir(request, tiny_onnx_dir) -> Path:
    return tiny_onnx_dir if request.param == "optimum" else request.getfixturevalue("tiny_gqa_dir")


@pytest.fixture(scope="module")
def solo_engine(model_dir) -> Engine:
    return Engine(model_dir)


@pytest.fixture(scope="module")
def backend(tiny_onnx_dir):
    return fast_backend(load_tokenizer(tiny_onnx_dir))


def prompts(vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[0, *rng.integers(10, vocab, size=n - 1).tolist()] for n in lengths]


def solo(
    engine: Engine, prompt: list[int], n: int, sampling: SamplingParams, eos: frozenset[int]
) -> list[int]:
    out: list[int] = []
    for token in engine.decode(prompt, n, Sampler(sampling)):
        out.append(token)
        if token in eos:
            break
    return out


class Recorder:
    """A scheduler request whose events are kept (emit runs on the scheduler thread)."""

    def __init__(self, prompt: list[int], n: int, sampling: SamplingParams = GREEDY, **kw) -> None:
        self.events: list[object] = []
        self.request = Request(prompt, n, sampling, self.events.append, **kw)

    @property
    def tokens(self) -> list[int]:
        return self.request.tokens

    @property
    def end(self) -> object:
        assert self.request.done.wait(60), "the request did not end"
        return self.events[-1]

    def wait_tokens(self, n: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.tokens) < n and not self.request.done.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.001)


@pytest.fixture
def batch_engine(model_dir):
    """An engine for 3 sequences whose every step's batch size is recorded."""
    engine = Engine(model_dir, max_batch=3)
    sizes: list[int] = []
    step = engine.step

    def recording(tokens):
        sizes.append(len(tokens))
        return step(tokens)

    engine.step = recording  # type: ignore[method-assign]
    engine.batch_sizes = sizes  # type: ignore[attr-defined]
    return engine


def staggered(scheduler: Scheduler, recorders: list[Recorder]) -> None:
    """Submit every request at once and wait for all: with one prefill at a time (prompts
    over 16 tokens in chunks of 8 while others decode), and 3 seats for 6 requests of different lengths, they join one by one and
    the later ones take the seats of those that end."""
    for rec in recorders:
        scheduler.submit(rec.request)
    for rec in recorders:
        rec.end  # noqa: B018


LENGTHS = [9, 31, 4, 57, 18, 40]
MAX_NEW = [40, 12, 33, 8, 26, 19]


def test_greedy_batch_equals_solo_token_for_token(batch_engine, solo_engine, backend):
    vocab = batch_engine.shape.vocab_size
    eos = frozenset(solo_engine.generation.eos_token_ids)
    texts = prompts(vocab, LENGTHS)
    expected = [solo(solo_engine, p, n, GREEDY, eos) for p, n in zip(texts, MAX_NEW, strict=True)]
    scheduler = Scheduler(batch_engine, backend, prefill_chunk=8, whole_prompt=16)
    try:
        recorders = [Recorder(p, n, eos=eos) for p, n in zip(texts, MAX_NEW, strict=True)]
        staggered(scheduler, recorders)
    finally:
        scheduler.close()
    for rec, want in zip(recorders, expected, strict=True):
        assert rec.tokens == want
        assert isinstance(rec.end, Finished) and rec.end.completion_tokens == len(want)
    sizes = batch_engine.batch_sizes
    assert max(sizes) == 3, "the batch should fill its 3 seats"
    changes = sum(1 for a, b in itertools.pairwise(sizes) if a != b)
    assert changes >= 5, f"sequences should join and leave at different steps: {sizes}"


def test_seeded_sampling_in_a_batch_equals_the_same_seed_alone(batch_engine, solo_engine, backend):
    vocab = batch_engine.shape.vocab_size
    texts = prompts(vocab, LENGTHS[:5], seed=1)
    params = [
        SamplingParams(temperature=1.3, top_p=0.9, top_k=k, seed=s)
        for k, s in zip([0, 40, 0, 5, 0], range(5), strict=True)
    ]
    expected = [solo(solo_engine, p, 25, sp, frozenset()) for p, sp in zip(texts, params, strict=True)]
    assert len({tuple(e) for e in expected}) == 5
    scheduler = Scheduler(batch_engine, backend, prefill_chunk=8, whole_prompt=16)
    try:
        recorders = [Recorder(p, 25, sp) for p, sp in zip(texts, params, strict=True)]
        staggered(scheduler, recorders)
    finally:
        scheduler.close()
    assert [r.tokens for r in recorders] == expected


def test_a_short_prompt_is_prefilled_whole_and_a_long_one_in_chunks_while_others_decode(
    batch_engine, backend
):
    runs: list[int] = []
    prefill = batch_engine.prefill

    def recording(seat, ids):
        runs.append(len(ids))
        return prefill(seat, ids)

    batch_engine.prefill = recording
    texts = prompts(batch_engine.shape.vocab_size, [30, 14, 30], seed=6)
    scheduler = Scheduler(batch_engine, backend, prefill_chunk=8, whole_prompt=16)
    try:
        running = Recorder(texts[0], 200)
        scheduler.submit(running.request)  # alone: its 30 tokens in one run
        running.wait_tokens(2)
        for text in texts[1:]:
            rec = Recorder(text, 2)
            scheduler.submit(rec.request)
            assert isinstance(rec.end, Finished)
        running.request.cancelled.set()
        running.end  # noqa: B018
    finally:
        scheduler.close()
    assert runs == [30, 14, 8, 8, 8, 6]
    assert scheduler.chunk() == 8


def test_cancelling_one_sequence_leaves_the_others_unchanged(batch_engine, solo_engine, backend):
    vocab = batch_engine.shape.vocab_size
    texts = prompts(vocab, [12, 25, 7], seed=2)
    expected = [solo(solo_engine, p, 60, GREEDY, frozenset()) for p in texts]
    scheduler = Scheduler(batch_engine, backend)
    try:
        recorders = [Recorder(p, 60) for p in texts]
        for rec in recorders:
            scheduler.submit(rec.request)
        recorders[1].wait_tokens(10)
        recorders[1].request.cancelled.set()
        ends = [rec.end for rec in recorders]
    finally:
        scheduler.close()
    assert ends[1].reason == "cancelled"
    assert 10 <= len(recorders[1].tokens) < 60
    assert recorders[1].tokens == expected[1][: len(recorders[1].tokens)]
    assert [recorders[0].tokens, recorders[2].tokens] == [expected[0], expected[2]]


def test_a_failure_ends_only_the_sequences_it_concerns_and_serving_goes_on(
    batch_engine, solo_engine, backend
):
    vocab = batch_engine.shape.vocab_size
    texts = prompts(vocab, [10, 22, 15, 9], seed=3)
    expected = [solo(solo_engine, p, 30, GREEDY, frozenset()) for p in texts]
    scheduler = Scheduler(batch_engine, backend)
    step = batch_engine.step
    # A prompt with an id out of the vocabulary fails in its prefill, alone.
    broken = Recorder([0, vocab + 5, 3], 10)
    a, b, c = (Recorder(p, 30) for p in texts[:3])
    poisoned_in: list[int] = []

    def poisoning(tokens):
        # Once b has 5 tokens, a decode step whose row of b is fed an id out of the
        # vocabulary: the batched run fails in ONNX Runtime, the engine runs the rows
        # alone, only b's fails.
        tokens = list(tokens)
        for i, seat in enumerate(batch_engine.running):
            if scheduler._by_seat[seat].request is b.request and len(b.tokens) >= 5:
                tokens[i] = vocab + 100
                poisoned_in.append(len(tokens))
        return step(tokens)

    batch_engine.step = poisoning  # type: ignore[method-assign]
    try:
        for rec in (a, broken, b, c):
            scheduler.submit(rec.request)
        ends = [rec.end for rec in (a, broken, b, c)]
        # A step that fails as a whole fails its sequences; the next request is served.
        batch_engine.step = _fail_once(step)  # type: ignore[method-assign]
        whole = Recorder(texts[0], 30)
        scheduler.submit(whole.request)
        failed_whole = whole.end
        after = Recorder(texts[3], 30)
        scheduler.submit(after.request)
        after_end = after.end
    finally:
        scheduler.close()
    assert isinstance(ends[1], Failed) and ends[1].error.status == 502
    assert isinstance(ends[2], Failed) and "local generation failed" in ends[2].error.message
    assert poisoned_in[0] >= 2, "b should fail inside a batch"
    assert b.tokens == expected[1][: len(b.tokens)]
    assert [a.tokens, c.tokens] == [expected[0], expected[2]]
    assert isinstance(ends[0], Finished) and isinstance(ends[3], Finished)
    assert isinstance(failed_whole, Failed)
    assert isinstance(after_end, Finished) and after.tokens == expected[3]
    assert scheduler.stats()["running"] == 0


def test_a_sequence_that_fills_the_context_window_ends_alone(batch_engine, solo_engine, backend):
    window = batch_engine.cache.capacity
    vocab = batch_engine.shape.vocab_size
    long, short = prompts(vocab, [window - 14, 12], seed=5)
    expected = solo(solo_engine, short, 40, GREEDY, frozenset())
    scheduler = Scheduler(batch_engine, backend)
    try:
        full, other = Recorder(long, 100), Recorder(short, 40)
        scheduler.submit(full.request)
        scheduler.submit(other.request)
        ends = [full.end, other.end]
    finally:
        scheduler.close()
    assert ends[0] == Finished("length", 15)  # the first token, then one per free position
    assert ends[1] == Finished("length", 40) and other.tokens == expected


def _fail_once(step):
    calls = []

    def failing(tokens):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault of the whole step")
        return step(tokens)

    return failing


def test_kv_copies_on_the_device_path_equal_numpy(model_dir, solo_engine):
    """The device copier (an ONNX graph, what CUDA uses) run on the CPU: a staggered batch
    whose rows move and realign gives the same tokens as alone."""
    engine = Engine(model_dir, max_batch=3, copy_graph=True)
    assert isinstance(engine.cache.copier, GraphCopier)
    assert isinstance(Engine(model_dir, max_batch=2).cache.copier, NumpyCopier)
    vocab = engine.shape.vocab_size
    texts = prompts(vocab, [5, 33, 12, 20], seed=4)
    limits = [30, 6, 20, 12]
    expected = [solo(solo_engine, p, n, GREEDY, frozenset()) for p, n in zip(texts, limits, strict=True)]
    out: dict[int, list[int]] = {}
    seats = {}
    order = list(range(4))
    while order or seats:
        while order and engine.cache.seats_free:
            i = order.pop(0)
            seat = engine.open()
            out[i] = [int(np.argmax(engine.prefill(seat, texts[i])))]
            engine.join(seat)
            seats[i] = seat
        logits = engine.step([out[i][-1] for i in (_owner(seats, s) for s in engine.running)])
        for seat, row in zip(list(engine.running), logits, strict=True):
            out[_owner(seats, seat)].append(int(np.argmax(row)))
        for i in [i for i, s in seats.items() if len(out[i]) >= limits[i]]:
            engine.release(seats.pop(i))
    assert [out[i] for i in range(4)] == expected


def _owner(seats, seat) -> int:
    return next(i for i, s in seats.items() if s is seat)


@pytest.fixture(scope="module")
def gqa_quantized(tiny_gqa_dir, tmp_path_factory):
    """The tiny GroupQueryAttention graph quantized each way, beside its companion files."""
    from lexrag_local.quantize import QUANTIZERS

    out: dict[str, Path] = {}
    for kind in ("int8", "int8-block"):
        target = tmp_path_factory.mktemp(kind)
        for file in tiny_gqa_dir.iterdir():
            if not file.name.startswith("model.onnx") and file.is_file():
                (target / file.name).write_bytes(file.read_bytes())
        QUANTIZERS[kind](tiny_gqa_dir / "model.onnx", target / "model.onnx")
        out[kind] = target
    return out


def _rows_alone_and_batched(model_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three prompts of different lengths: each one's logits after its prefill and one
    decode step alone, and the same step's logits as rows of one batch."""
    solo_engine, engine = Engine(model_dir), Engine(model_dir, max_batch=3)
    texts = prompts(engine.shape.vocab_size, [6, 23, 14], seed=5)
    alone = []
    for text in texts:
        seat = solo_engine.open()
        first = int(np.argmax(solo_engine.prefill(seat, text)))
        solo_engine.join(seat)
        alone.append(solo_engine.step([first])[0].copy())  # the engine's next run reuses its buffer
        solo_engine.release(seat)
    firsts = []
    for text in texts:
        seat = engine.open()
        firsts.append(int(np.argmax(engine.prefill(seat, text))))
        engine.join(seat)
    return alone, engine.step(firsts)


def test_int8_block_quantization_is_batch_invariant_and_dynamic_int8_is_not(gqa_quantized):
    """int8-block (MatMulNBits) quantizes activations per row and block: a row's logits in a
    batch are those it gets alone. Dynamic int8 takes one scale over the batch: they move."""
    alone, batched = _rows_alone_and_batched(gqa_quantized["int8-block"])
    for a, b in zip(alone, batched, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    alone, batched = _rows_alone_and_batched(gqa_quantized["int8"])
    assert max(float(np.abs(a - b).max()) for a, b in zip(alone, batched, strict=True)) > 1e-3


def test_kv_plan_from_max_batch_or_a_byte_budget(model_dir):
    engine = Engine(model_dir, max_batch=4)
    token = engine.spec.token_bytes
    assert token == 2 * 2 * 2 * 16 * 4  # layers × (k, v) × kv heads × head dim × fp32
    window = engine.context_window
    factor = 1 if engine.shared_kv else 2
    staging = 0 if engine.shared_kv else 2 * window * token
    assert engine.plan == KvPlan(4, window, 4 * window * token * factor + staging)
    small = Engine(model_dir, max_batch=8, kv_budget_bytes=engine.plan.bytes)
    assert small.plan.slots == 4
    with pytest.raises(ValueError, match="cannot hold one sequence"):
        Engine(model_dir, kv_budget_bytes=1000)


# --- through the provider and the server ----------------------------------------------------


def _config(model_dir: Path, **local: object) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in local.items())
    return (
        '[llm]\nprovider = "local"\nmax_retries = 0\n[retrieval]\nenabled = false\n'
        f'[providers.local]\nmodel_dir = "{model_dir}"\ntemperature = 0.0\n{extra}'
    )


def _stream(base: str, content: str, max_tokens: int, first: threading.Event | None = None) -> dict:
    """One streamed chat; returns its status, text and how its stream ended."""
    body = {
        "model": "local",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    out: dict = {"text": "", "events": []}
    try:
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as response:
            out["status"] = response.status_code
            out["headers"] = dict(response.headers)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    out["events"].append(line[6:])
                    if first is not None and '"content"' in line:
                        first.set()
    except httpx.HTTPError as exc:
        out["error"] = repr(exc)
    if first is not None:
        first.set()
    return out


@pytest.fixture
def local_server(pm, tmp_path):
    """The lexrag server in a thread with provider "local"; yields (base URL, the provider)."""
    from lexrag.config import load_config
    from lexrag.registry import Registry, check_config
    from lexrag.server import create_app

    from .fixtures_server import _ServerThread

    servers: list[_ServerThread] = []

    def start(config_text: str):
        path = tmp_path / "lexrag.toml"
        path.write_text(config_text, encoding="utf-8")
        registry = Registry(pm)
        app = create_app(check_config(load_config(path, env={}), registry), registry)
        servers.append(_ServerThread(app))
        return servers[-1].start(), app.state.lexrag.pipeline.router.provider("local")

    yield start
    for server in servers:
        server.stop()


def test_queue_full_is_a_503_with_retry_after_and_load_is_visible(local_server, tiny_onnx_dir):
    base, provider = local_server(_config(tiny_onnx_dir, max_batch=1, queue_size=1))
    assert httpx.get(base + "/health", timeout=60).json()["providers"]["local"]["batch"]["running"] == 0
    engine = provider.backend._worker.engine
    gate = threading.Event()
    step = engine.step

    def gated(tokens):
        gate.wait(60)  # the model holds its batch until the test has looked
        return step(tokens)

    engine.step = gated
    results: dict[str, dict] = {}

    def batch_has(key: str) -> None:
        deadline = time.monotonic() + 30
        while httpx.get(base + "/health", timeout=10).json()["providers"]["local"]["batch"][key] < 1:
            assert time.monotonic() < deadline, f"no sequence {key}"
            time.sleep(0.01)

    runner = threading.Thread(target=lambda: results.update(a=_stream(base, "Điều 20", 40)))
    runner.start()
    try:
        batch_has("running")
        waiting = threading.Thread(target=lambda: results.update(b=_stream(base, "Điều 21", 20)))
        waiting.start()
        batch_has("waiting")
        health = httpx.get(base + "/health", timeout=10).json()["providers"]["local"]
        metrics = httpx.get(base + "/metrics", timeout=10).text
        refused = httpx.post(
            base + "/v1/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5},
            timeout=30,
        )
    finally:
        gate.set()
        runner.join(60)
    waiting.join(60)
    batch = health["batch"]
    assert batch["running"] == 1 and batch["waiting"] == 1 and batch["max_batch"] == 1, batch
    assert batch["kv_used_tokens"] > 0 and batch["kv_capacity_tokens"] == 384 and batch["kv_bytes"] > 0
    assert health["queued"] == 2
    assert 'lexrag_llm_sequences{provider="local",state="running"} 1.0' in metrics
    assert 'lexrag_llm_sequences{provider="local",state="waiting"} 1.0' in metrics
    assert 'lexrag_llm_kv_cache_tokens{kind="capacity",provider="local"} 384.0' in metrics
    assert 'lexrag_llm_tokens_per_second{provider="local"}' in metrics
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["error"]["message"]
    assert results["a"]["status"] == results["b"]["status"] == 200
    assert results["a"]["events"][-1] == results["b"]["events"][-1] == "[DONE]"
    assert (
        httpx.get(base + "/health", timeout=10).json()["providers"]["local"]["batch"]["tokens_per_second"] > 0
    )


def test_provider_close_mid_batch_ends_every_stream(tiny_onnx_dir):
    from lexrag.providers import GenerationParams, ProviderRequest
    from lexrag.types import ChatMessage
    from lexrag_local.provider import LocalProvider
    from lexrag_local.settings import LocalSettings

    provider = LocalProvider("local", LocalSettings(model_dir=tiny_onnx_dir, max_batch=3, temperature=0.0))

    async def go():
        started = [asyncio.Event() for _ in range(4)]

        async def consume(i: int) -> str:
            request = ProviderRequest(
                messages=[ChatMessage(role="user", content=f"Điều {i}")],
                params=GenerationParams(max_tokens=330),
            )
            try:
                async for chunk in provider.stream(request):
                    if chunk.choices and chunk.choices[0].delta.content:
                        started[i].set()
                        await asyncio.sleep(0.01)  # a slow client keeps the batch busy
            except ProviderError as exc:
                started[i].set()
                return f"error {exc.status}"
            return "finished"

        tasks = [asyncio.create_task(consume(i)) for i in range(4)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started[:3])), 30)
        worker = provider.backend._worker
        await asyncio.wait_for(provider.aclose(), 15)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 15)
        return outcomes, worker

    outcomes, worker = asyncio.run(go())
    assert not worker.scheduler.alive
    assert "error 503" in outcomes, outcomes


@pytest.mark.slow
def test_sigterm_mid_batch_stops_the_server_without_hanging(tiny_onnx_dir, tmp_path):
    config = tmp_path / "lexrag.toml"
    config.write_text(_config(tiny_onnx_dir, max_batch=4) + "[server]\nshutdown_grace_s = 2\n")
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LEXRAG_", "LLM_", "LOCAL_LLM", "OPENAI_"))
    }
    server = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SERVE, "--config", str(config), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(server, base, timeout=90, output=lambda: "(starting)")
        results: list[dict] = []
        firsts = [threading.Event() for _ in range(6)]
        clients = [
            threading.Thread(target=lambda i=i: results.append(_stream(base, f"Điều {i}", 330, firsts[i])))
            for i in range(6)
        ]
        for client in clients:
            client.start()
        assert all(f.wait(60) for f in firsts[:4])
        batch = httpx.get(base + "/health", timeout=10).json()["providers"]["local"]["batch"]
        server.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        server.wait(timeout=30)
        took = time.monotonic() - stopped
        for client in clients:
            client.join(30)
            assert not client.is_alive(), "a client's stream hung"
    finally:
        if server.poll() is None:
            server.kill()
        output = server.communicate(timeout=30)[0]
    # uvicorn re-raises the SIGTERM it handled once it has shut down.
    assert server.returncode in (0, -signal.SIGTERM), output
    assert took < 15, output
    assert batch["running"] == 4, batch
    assert "Application shutdown complete" in output
    assert len(results) == 6
    for result in results:
        assert "error" not in result, result
        assert result["events"][-1] == "[DONE]", result
    # Streams still generating when the grace period ran out end with an error event.
    assert any('"error"' in r["events"][-2] for r in results), results


#: ``lexrag`` with a model slowed to about 20 ms a step, so the batch is still running
#: when the signal comes.
_SLOW_SERVE = """
import sys, time
import lexrag_local.engine as engine
step = engine.Engine.step
def slow(self, tokens):
    time.sleep(0.02)
    return step(self, tokens)
engine.Engine.step = slow
sys.argv[0] = "lexrag"
from lexrag.cli import main
main()
"""
