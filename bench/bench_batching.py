"""Continuous batching benchmark of the local provider's engine (CPU), every figure a ratio
to a baseline measured in the same run:

- aggregate decode tokens/s with 4 and 8 concurrent streams vs 1 (goals ≥ 1.8× / ≥ 2.5×);
- single-stream decode of the new engine vs today's (the engine of ``--baseline-rev``,
  loaded from git; goal ≥ 0.95×), alone on the engine and through the scheduler;
- time to first token (p50) of a request arriving while 7 others decode vs on an idle
  engine (goal ≤ 1.5×), and the inter-token latency (p99) of the 7 while a 1,000-token
  prompt is admitted vs their idle inter-token latency (goal ≤ 3×), for each admission
  policy (the whole prompt in one step, fixed chunks, the automatic chunk of 1.5 or 2
  decode steps for every prompt, and the default: short prompts whole, long ones in
  automatic chunks), in rounds that interleave the policies, each against idle figures
  measured just before it; medians of the rounds' ratios;
- aggregate tokens/s at 8 vs onnxruntime-genai's own batched generation (batch 8) of the
  same int8 weights (goal ≥ 1.0×; its graph keeps the logits of every position, which
  the genai runtime needs), lexrag's default (no intra-op spinning) against genai with
  onnxruntime's spinning on as many threads, and against genai out of the box (its own
  thread count: one on 2 cores), and at equal settings (both off, both on; ``--genai-spin``),
  every side in a process of its own, once per round in rotating order: the median of the
  rounds' ratios; and the
  same pairs with lexrag's engine run in the genai interpreter, on the onnxruntime build genai
  runs on (its CPU wheel, while lexrag's interpreter has the pinned onnxruntime-gpu), so that
  engine meets engine on one runtime;
- ``--quantize int8-block`` (batch-invariant) vs dynamic int8: decode at 1 and 8 streams,
  prefill of the long prompt;
- through ``lexrag serve``: 8 and 16 concurrent streamed chats, total tokens/s, time to first
  token p50/p99, errors;
- the memory-bandwidth limit of a decode step (weight bytes per step / copy bandwidth) and
  how close batch 1 and batch 8 come to it.

The model: a random-weight Llama-3.2-1B shape, exported by onnxruntime-genai's builder
(``GroupQueryAttention``, fp32) and quantized to int8 by lexrag (as ``lexrag model export
--builder genai`` does on CPU), with bench_local.py's work files (built if missing: about
3 minutes and 16 GB of RAM). Its tokenizer is widened to the model's vocabulary so that
every sampled id has text.

    nice -n -10 .venv/bin/python bench/bench_batching.py   # 1B shape: about 15 minutes on 2 quiet cores (+3 for the exports, once)
    .venv/bin/python bench/bench_batching.py --figures latency,genai   # a subset
    .venv/bin/python bench/bench_batching.py --quick    # a small shape, about a minute
    .venv/bin/python bench/bench_batching.py --cuda DIR # on a GPU: fp16 export of --make-3b DIR

Needs the genai interpreter (``bash scripts/setup-genai.sh``; ``--genai-python``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import bench_local  # noqa: E402
import bench_server  # noqa: E402

#: What a run measures (``--figures``).
FIGURES = ("single", "aggregate", "genai", "latency", "server", "int8-block")
#: Today's engine (before continuous batching), the single-stream baseline.
BASELINE_REV = "6c69bc9"
#: Single-stream comparison: rounds (engines loaded again each round, in the other order)
#: and runs of each engine per round, in alternating order.
SINGLE_ROUNDS, SINGLE_TURNS = 4, 2


@dataclass(frozen=True)
class Plan:
    prompt: int  # prompt tokens of the decoding streams
    new: int  # tokens each stream decodes in the aggregate figures
    ttft_prompt: int  # the prompt that arrives while 7 decode
    long_prompt: int  # the prompt admitted while the inter-token latency is watched
    rounds: int
    chunks: tuple[int, ...]  # fixed prefill chunks measured beside "whole" and "auto"
    context: int
    latency_rounds: int  # rounds of every admission policy (interleaved)
    genai_pairs: int  # batch-8 runs of lexrag and onnxruntime-genai, alternating


FULL = Plan(
    prompt=64,
    new=48,
    ttft_prompt=256,
    long_prompt=1000,
    rounds=3,
    chunks=(64,),
    context=2048,
    latency_rounds=3,
    genai_pairs=6,
)
QUICK = Plan(
    prompt=32,
    new=32,
    ttft_prompt=128,
    long_prompt=250,
    rounds=2,
    chunks=(32,),
    context=512,
    latency_rounds=2,
    genai_pairs=2,
)


@dataclass(frozen=True)
class Policy:
    """An admission policy: the scheduler's prefill_chunk, whole_prompt, chunk_steps."""

    name: str
    prefill_chunk: int | None
    whole_prompt: int
    chunk_steps: float = 1.5


def policies(plan: Plan) -> list[Policy]:
    from lexrag_local.scheduler import CHUNK_STEPS, WHOLE_PROMPT

    return [
        Policy("whole prompt", 0, 0),
        *(Policy(f"chunk {c}", c, 0) for c in plan.chunks),
        Policy(f"auto {CHUNK_STEPS} steps, every prompt chunked", None, 0, CHUNK_STEPS),
        Policy(
            f"default: ≤ {WHOLE_PROMPT} tokens whole, longer auto {CHUNK_STEPS} steps",
            None,
            WHOLE_PROMPT,
            CHUNK_STEPS,
        ),
    ]


# ---- the model -----------------------------------------------------------------------------


def prepare(shape: bench_local.Shape, work: Path, genai_python: str, *, int8_block: bool = False) -> Path:
    """The genai builder's fp32 graph with the last-position rewrite, quantized to int8
    (``int8.onnx``), and the same without the rewrite for the genai runtime
    (``int8-full.onnx``, with a ``genai_config.json`` naming it), in ``work/genai-fp32``;
    with ``int8_block``, also ``int8-block.onnx`` (``--quantize int8-block``)."""
    from lexrag_local.genai_builder import build
    from lexrag_local.graph import last_position_logits
    from lexrag_local.quantize import quantize_int8, quantize_int8_block

    hf = bench_local.build_model(shape, work / "hf")
    out = work / "genai-fp32"
    if not (out / "model.onnx").is_file():
        shutil.rmtree(out, ignore_errors=True)
        bench_local.step(
            "genai builder fp32",
            lambda: build(str(hf), out, python=genai_python, precision="fp32", device="cpu"),
        )
        shutil.rmtree(out / ".cache", ignore_errors=True)
    for name in ("config.json", "generation_config.json"):
        shutil.copy(hf / name, out / name)
    if not (out / "lexrag.onnx").is_file():
        last_position_logits(out / "model.onnx", out / "lexrag.onnx")
    for src, dst in (("lexrag.onnx", "int8.onnx"), ("model.onnx", "int8-full.onnx")):
        if not (out / dst).is_file():
            bench_local.step(
                f"int8 quantization → {dst}", lambda s=src, d=dst: quantize_int8(out / s, out / d)
            )
            gc.collect()
    if int8_block and not (out / "int8-block.onnx").is_file():
        bench_local.step(
            "int8-block quantization → int8-block.onnx",
            lambda: quantize_int8_block(out / "lexrag.onnx", out / "int8-block.onnx"),
        )
        gc.collect()
    return out


def widened(model_dir: Path, out: Path, vocab: int) -> Path:
    """``model_dir``'s int8 graph as ``model.onnx`` (what ``lexrag serve`` loads), linked, with
    a tokenizer that has text for every id of the model: the ids past the small benchmark
    tokenizer's are added tokens ``<w123>``."""
    from tokenizers import AddedToken, Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    links = {f.name: f for f in model_dir.iterdir() if f.name not in ("tokenizer.json", "genai_config.json")}
    links["model.onnx"] = model_dir / "int8.onnx"
    for name, target in links.items():
        link = out / name
        if link.is_symlink() and link.resolve() != target.resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to(target.resolve())
    if not (out / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tok.add_tokens([AddedToken(f" w{i}", normalized=False) for i in range(tok.get_vocab_size(), vocab)])
        tok.save(str(out / "tokenizer.json"))
    return out


def genai_dir(model_dir: Path, out: Path, threads: int | None, *, spin: bool = True) -> Path:
    """The genai runtime's view of the int8 weights: ``int8-full.onnx`` and ``threads``
    intra-op threads (None: genai's own count, half of ``hardware_concurrency``: one thread
    on 2 cores). ``spin``
    False turns its intra-op spinning off; True leaves genai's default, which is
    onnxruntime's (spinning: genai 0.12.2 sets no ``allow_spinning`` entry on CPU)."""
    from lexrag_local.session import SPINNING

    out.mkdir(parents=True, exist_ok=True)
    for file in model_dir.iterdir():
        if file.name != "genai_config.json" and not (out / file.name).exists():
            (out / file.name).symlink_to(file.resolve())
    config = json.loads((model_dir / "genai_config.json").read_text())
    config["model"]["decoder"]["filename"] = "int8-full.onnx"
    options = config["model"]["decoder"]["session_options"]
    options.pop("intra_op_num_threads", None)
    if threads is not None:
        options["intra_op_num_threads"] = threads
    if not spin:
        # genai hands every session_options key it does not know to AddConfigEntry.
        options[SPINNING] = "0"
    (out / "genai_config.json").write_text(json.dumps(config, indent=2))
    return out


def baseline_engine(rev: str) -> Any:
    """``lexrag_local.engine.Engine`` as it was at ``rev`` (git), beside today's modules."""
    source = subprocess.run(
        ["git", "show", f"{rev}:plugins/local_provider/src/lexrag_local/engine.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("lexrag_local._baseline_engine")
    module.__package__ = "lexrag_local"
    sys.modules[module.__name__] = module
    exec(compile(source, f"engine.py@{rev}", "exec"), module.__dict__)
    return module.Engine


# ---- measurements ---------------------------------------------------------------------------


class Timed(list):  # type: ignore[type-arg]
    """A request's token list that notes when each token came."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, token: int) -> None:
        self.times.append(time.perf_counter())
        super().append(token)


@dataclass
class Stream:
    prompt: list[int]
    new: int
    submitted: float = 0.0
    tokens: Timed = field(default_factory=Timed)
    request: Any = None

    def start(self, scheduler: Any) -> Stream:
        from lexrag_local.sampling import SamplingParams
        from lexrag_local.scheduler import Request

        self.request = Request(
            self.prompt, self.new, SamplingParams(temperature=0.0), lambda _: None, tokens=self.tokens
        )
        self.submitted = time.perf_counter()
        scheduler.submit(self.request)
        return self

    def wait(self, timeout: float = 600) -> Stream:
        assert self.request.done.wait(timeout), "a stream did not end"
        return self

    @property
    def ttft(self) -> float:
        return self.tokens.times[0] - self.submitted

    def gaps(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        """Inter-token gaps that end within [start, end]."""
        t = self.tokens.times
        return [b - a for a, b in itertools.pairwise(t) if start <= b <= end]


def aggregate(streams: list[Stream]) -> float:
    """Decode tokens/s of all streams together while all of them decode."""
    start = max(s.tokens.times[0] for s in streams)
    end = min(s.tokens.times[-1] for s in streams)
    count = sum(1 for s in streams for t in s.tokens.times[1:] if start < t <= end)
    return count / max(end - start, 1e-9)


def single_decode(run: Callable[[], list[float]]) -> float:
    times = run()
    return (len(times) - 1) / (times[-1] - times[0])


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def admission(scheduler: Any, plan: Plan, ids: Callable[[int], list[int]], policy: Policy) -> dict[str, Any]:
    """On an idle engine, the time to first token of two ``plan.ttft_prompt``-token prompts
    and of one ``plan.long_prompt``-token prompt. Then, under ``policy``, 7 streams decode;
    3 requests of ``plan.ttft_prompt`` tokens arrive one after the other, then one of
    ``plan.long_prompt``: their times to first token and the 7's inter-token gaps before
    (idle) and during the long admission, each as a ratio to its idle figure."""
    idle_ttft = statistics.median(
        Stream(ids(plan.ttft_prompt), 1).start(scheduler).wait().ttft for _ in range(2)
    )
    idle_long = Stream(ids(plan.long_prompt), 1).start(scheduler).wait().ttft
    scheduler.prefill_chunk = policy.prefill_chunk
    scheduler.whole_prompt = policy.whole_prompt
    scheduler.chunk_steps = policy.chunk_steps
    background = [Stream(ids(plan.prompt), plan.context - plan.prompt - 1).start(scheduler) for _ in range(7)]
    while min(len(s.tokens) for s in background) < 3:
        time.sleep(0.01)
    idle_from = time.perf_counter()
    while min(len(s.tokens) for s in background) < 23:
        time.sleep(0.01)
    idle_to = time.perf_counter()
    ttfts = [Stream(ids(plan.ttft_prompt), 1).start(scheduler).wait().ttft for _ in range(3)]
    # Two steady tokens first: the gap that holds the last short prefill is not the long one's.
    steady = min(len(s.tokens) for s in background) + 2
    while min(len(s.tokens) for s in background) < steady:
        time.sleep(0.005)
    long = Stream(ids(plan.long_prompt), 1).start(scheduler)
    long.wait()
    chunk_used = scheduler.chunk()
    during_to = long.tokens.times[0]
    for s in background:
        s.request.cancelled.set()
    for s in background:
        s.wait()
    idle_gaps = [g for s in background for g in s.gaps(idle_from, idle_to)]
    # Gaps that overlap the admission: they end after it began, up to the first one after it.
    during = [g for s in background for g in s.gaps(long.submitted, during_to + 1.0)]
    r = {
        "ttft_p50": statistics.median(ttfts),
        "idle_ttft": idle_ttft,
        "itl_idle_p50": p(idle_gaps, 50),
        "itl_idle_p99": p(idle_gaps, 99),
        "itl_during_p99": p(during, 99),
        "long_ttft": long.ttft,
        "idle_long": idle_long,
        "chunk": chunk_used if policy.prefill_chunk != 0 else "whole",
    }
    r["ttft_ratio"] = r["ttft_p50"] / idle_ttft
    r["itl_ratio"] = r["itl_during_p99"] / r["itl_idle_p99"]
    r["long_ratio"] = r["long_ttft"] / idle_long
    return r


class GenaiBatch(bench_local.GenaiWorker):
    """onnxruntime-genai's own batched greedy generation, in its interpreter."""

    def __call__(self, prompts: list[list[int]], new: int) -> dict[str, Any]:
        return self.ask({"ids": prompts, "new": new})


class LexragBatch(GenaiBatch):
    """lexrag's scheduler at batch 8 in a process of its own (``--batch-worker``) run by
    ``python``: lexrag's interpreter, or the genai interpreter, where the same engine runs on
    the onnxruntime build genai runs on (its CPU wheel; lexrag's own interpreter has the
    pinned onnxruntime-gpu), so that the comparison is engine against engine."""

    def __init__(self, python: str, model_dir: Path, *, spin: bool, context: int) -> None:
        paths = [str(ROOT / "core" / "src"), str(ROOT / "plugins" / "local_provider" / "src")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
        argv = [__file__, "--batch-worker", str(model_dir), "--context", str(context)]
        super().__init__(python, model_dir, argv=argv + (["--spin"] if spin else []), env=env)
        self.onnxruntime = self.ready["onnxruntime"]


def batch_worker(model_dir: Path, *, spin: bool, context: int) -> None:
    """``--batch-worker``: lexrag's scheduler on ``model_dir``'s int8 graph in this
    interpreter; one JSON request per line in (``{"ids": prompts, "new": n}``), the
    aggregate decode tokens/s of those prompts run together out (``{"tok_s": x}``)."""
    import onnxruntime

    from lexrag_local.engine import Engine
    from lexrag_local.model_files import load_tokenizer
    from lexrag_local.scheduler import Scheduler
    from lexrag_local.tokens import fast_backend

    engine = Engine(model_dir, model_file="int8.onnx", max_batch=8, max_context=context, spin=spin)
    scheduler = Scheduler(engine, fast_backend(load_tokenizer(model_dir)), queue_size=64)
    print(json.dumps({"onnxruntime": onnxruntime.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        streams = [Stream(ids, request["new"]).start(scheduler) for ids in request["ids"]]
        print(json.dumps({"tok_s": aggregate([s.wait() for s in streams])}), flush=True)
    scheduler.close()


#: ``--genai-spin``: onnxruntime-genai's sides in the batch-8 comparison: "on" (onnxruntime's
#: spinning, genai's default) and "off", both with one intra-op thread per core as lexrag has;
#: "own": genai out of the box (spinning, and its own thread count: one on 2 cores).
GENAI_SPIN = {"on": ("on",), "off": ("off",), "both": ("on", "off", "own")}


def genai_comparisons(genai_spin: str, lexrag_spin: bool) -> list[tuple[bool, str]]:
    """The (lexrag spin, genai side) pairs compared at batch 8: lexrag's engine as set
    (``--spin``) against genai as ``--genai-spin`` says; with "both", lexrag's default (spin
    off) against genai spinning on as many threads and against genai out of the box, then
    both off and both on (equal settings)."""
    if genai_spin == "both":
        return [(False, "on"), (False, "own"), (False, "off"), (True, "on")]
    return [(lexrag_spin, side) for side in GENAI_SPIN[genai_spin]]


#: lexrag's sides run in the genai interpreter (on genai's onnxruntime build): the same pairs
#: as :func:`genai_comparisons` but the one against genai out of the box.
SAME_BUILD = "lexrag on genai's onnxruntime"


def side_name(engine: str, spin: bool | str) -> str:
    if spin == "own":
        return f"{engine} out of the box"
    return f"{engine} spin {'on' if spin in (True, 'on') else 'off'}"


def comparison_name(lexrag_spin: bool, genai: str, *, same_build: bool = False) -> str:
    build = ", one onnxruntime build (genai's)" if same_build else ""
    if genai == "own":
        return "lexrag's default vs genai out of the box (spinning, its own thread count)"
    if lexrag_spin == (genai == "on"):
        return f"equal settings: both with spinning {genai}{build}"
    defaults = (
        " (each side's spinning default, same threads)" if (lexrag_spin, genai) == (False, "on") else ""
    )
    return f"lexrag spinning {'on' if lexrag_spin else 'off'} vs genai {genai}{defaults}{build}"


# ---- the server -----------------------------------------------------------------------------


async def _chat(client: Any, base: str, content: str, max_tokens: int) -> dict[str, Any]:
    body = {
        "model": "local",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    tokens = prompt = 0
    error = None
    try:
        async with client.stream("POST", base + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return {"error": f"HTTP {response.status_code}"}
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    error = event["error"].get("message")
                for choice in event.get("choices", []):
                    if first is None and choice.get("delta", {}).get("content"):
                        first = time.perf_counter() - start
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                    prompt = event["usage"]["prompt_tokens"]
    except Exception as exc:  # counted as an error of the run
        error = repr(exc)
    return {"ttft": first, "tokens": tokens, "prompt": prompt, "error": error, "end": time.perf_counter()}


def serve_figures(
    model_dir: Path, plan: Plan, concurrencies: list[int], max_tokens: int
) -> list[dict[str, Any]]:
    """``lexrag serve`` with provider "local" on ``model_dir``; ``c`` concurrent streamed chats."""
    import httpx

    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    config = work / "lexrag.toml"
    config.write_text(
        '[llm]\nprovider = "local"\nmax_retries = 0\n[retrieval]\nenabled = false\n[logging]\nlevel = "WARNING"\n'
        f'[providers.local]\nmodel_dir = "{model_dir}"\ntemperature = 0.0\nmax_batch = 8\n'
        f"max_context = {plan.context}\n",
        encoding="utf-8",
    )
    # In-process generation: an llm-service URL in the environment would replace it.
    for name in [k for k in os.environ if k.startswith("LOCAL_LLM")]:
        del os.environ[name]
    server, v1 = bench_server.serve(config, work, timeout=300)
    base = v1.removesuffix("/v1")
    results = []
    try:
        content = "Người lao động có quyền nghỉ hằng năm bao nhiêu ngày? " * 4

        async def run(c: int) -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=600) as client:
                await _chat(client, base, content, 4)  # warm
                start = time.perf_counter()
                got = await asyncio.gather(*(_chat(client, base, content, max_tokens) for _ in range(c)))
                took = max(g.get("end", start) for g in got) - start
            ttfts = [g["ttft"] for g in got if g.get("ttft") is not None]
            return {
                "concurrency": c,
                "tok_s": sum(g.get("tokens", 0) for g in got) / took,
                "ttft_p50": p(ttfts, 50),
                "ttft_p99": p(ttfts, 99),
                "errors": sum(1 for g in got if g.get("error")),
                "prompt_tokens": max(g.get("prompt", 0) for g in got),
            }

        for c in concurrencies:
            results.append(asyncio.run(run(c)))
            print(f"  server, {c} concurrent streams: {results[-1]}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    return results


# ---- the run --------------------------------------------------------------------------------


#: Llama-3.2-3B's shape, for the CUDA figures.
SHAPE_3B = bench_local.Shape("llama-3.2-3b-shape", 28, 3072, 24, 8, 8192, 128256, 512, 64, 1000, 1000, 200)


def cuda_main(model_dir: Path, streams: tuple[int, ...] = (1, 8, 32)) -> None:
    """The CUDA figures on an fp16 export in ``model_dir`` (made on a machine with a GPU and
    CUDA torch: ``python bench/bench_batching.py --make-3b DIR`` writes the random 3B-shaped
    checkpoint, then ``lexrag model export DIR OUT --device cuda --dtype fp16``): greedy
    batch == alone for 8 staggered sequences, aggregate tokens/s at 1 / 8 / 32 streams."""
    from lexrag_local.engine import Engine
    from lexrag_local.kv import GraphCopier
    from lexrag_local.model_files import load_tokenizer
    from lexrag_local.sampling import Sampler, SamplingParams
    from lexrag_local.scheduler import Scheduler
    from lexrag_local.session import CUDA
    from lexrag_local.tokens import fast_backend

    greedy = SamplingParams(temperature=0.0)
    engine = Engine(model_dir, device="cuda", max_batch=max(streams), max_context=2048)
    assert engine.providers[0] == CUDA, f"not on CUDA: {engine.providers}"
    assert isinstance(engine.cache.copier, GraphCopier)
    vocab = engine.shape.vocab_size
    rng = np.random.default_rng(0)
    prompts = [[0, *rng.integers(16, vocab, size=n).tolist()] for n in (40, 300, 7, 120, 64, 500, 15, 90)]
    limits = [64, 20, 50, 33, 64, 12, 40, 25]
    solo = Engine(model_dir, device="cuda", max_context=2048)
    alone = [list(solo.decode(p, n, Sampler(greedy))) for p, n in zip(prompts, limits, strict=True)]
    del solo
    scheduler = Scheduler(engine, fast_backend(load_tokenizer(model_dir)), prefill_chunk=64, queue_size=64)
    batch = [Stream(p, n) for p, n in zip(prompts, limits, strict=True)]
    for stream in batch:
        stream.start(scheduler)
    same = [list(s.wait().tokens) == a for s, a in zip(batch, alone, strict=True)]
    print(f"greedy fp16 batch == alone on CUDA: {sum(same)} of {len(same)}", flush=True)
    rates = {}
    for c in streams:
        runs = []
        for _ in range(2):
            group = [Stream([0, *rng.integers(16, vocab, size=63).tolist()], 128) for _ in range(c)]
            for stream in group:
                stream.start(scheduler)
            runs.append(aggregate([s.wait() for s in group]))
        rates[c] = max(runs)
        print(
            f"  {c} streams: {rates[c]:.1f} tok/s ({rates[c] / rates[streams[0]]:.1f}× 1 stream)", flush=True
        )
    scheduler.close()
    print(f"\n32 vs 1: {rates[streams[-1]] / rates[streams[0]]:.1f}× (goal ≥ 10×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small shape, about a minute")
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench-local")
    parser.add_argument(
        "--genai-python",
        default=os.environ.get("LEXRAG_GENAI_PYTHON", str(ROOT / ".bench-venv" / "bin" / "python")),
    )
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of today's engine")
    parser.add_argument("--no-server", action="store_true", help="skip the lexrag serve figures")
    parser.add_argument(
        "--spin",
        action="store_true",
        help="lexrag's engine with [providers.local] spin = true (today's stays off)",
    )
    parser.add_argument(
        "--genai-spin",
        choices=tuple(GENAI_SPIN),
        default="both",
        help="onnxruntime-genai's intra-op spinning, one thread per core: on (its default), off, or both: "
        "then genai also runs out of the box (its own thread count), lexrag with spin off and on, and "
        "batch 8 vs genai prints lexrag's default against genai spinning and out of the box, and at "
        "equal settings",
    )
    parser.add_argument(
        "--figures",
        default=",".join(FIGURES),
        help=f"comma-separated subset of {','.join(FIGURES)} (default: all)",
    )
    parser.add_argument("--cuda", type=Path, metavar="MODEL_DIR", help="the CUDA figures on an fp16 export")
    parser.add_argument(
        "--make-3b", type=Path, metavar="DIR", help="write a random Llama-3.2-3B-shaped checkpoint"
    )
    parser.add_argument("--batch-worker", type=Path, metavar="MODEL_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=int, default=FULL.context, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_worker:
        batch_worker(args.batch_worker, spin=args.spin, context=args.context)
        return
    if args.make_3b:
        bench_local.build_model(SHAPE_3B, args.make_3b)
        return
    if args.cuda:
        cuda_main(args.cuda)
        return
    shape, plan = (bench_local.QUICK, QUICK) if args.quick else (bench_local.FULL, FULL)
    figures = set(args.figures.split(","))
    if args.no_server:
        figures.discard("server")
    if figures - set(FIGURES):
        sys.exit(
            f"--figures: unknown {', '.join(sorted(figures - set(FIGURES)))} (known: {', '.join(FIGURES)})"
        )
    missing = bench_local.genai_python_usable(args.genai_python)
    if missing:
        sys.exit(
            f"{args.genai_python} cannot import onnxruntime_genai ({missing}): run scripts/setup-genai.sh"
        )
    work = args.work / shape.name
    began = time.perf_counter()
    model = prepare(shape, work, args.genai_python, int8_block="int8-block" in figures)
    wide = widened(model, work / "genai-int8-wide-tokenizer", shape.vocab)
    cores = len(os.sched_getaffinity(0))
    comparisons = genai_comparisons(args.genai_spin, args.spin)
    genai_models = {
        side: genai_dir(
            model,
            work / f"genai-int8-runtime{ {'on': '', 'off': '-nospin', 'own': '-own-threads'}[side] }",
            None if side == "own" else cores,
            spin=side != "off",
        )
        for side in {g for _, g in comparisons}
    }

    from lexrag_local.engine import Engine
    from lexrag_local.model_files import load_tokenizer
    from lexrag_local.sampling import Sampler, SamplingParams
    from lexrag_local.scheduler import Scheduler
    from lexrag_local.tokens import fast_backend

    greedy = SamplingParams(temperature=0.0)
    backend = fast_backend(load_tokenizer(wide))
    rng = np.random.default_rng(0)

    def ids(n: int) -> list[int]:
        return [0, *rng.integers(16, shape.vocab, size=n - 1).tolist()]

    def engine_times(e: Any) -> list[float]:
        times = []
        for _ in e.decode(ids(plan.prompt), plan.new, Sampler(greedy)):
            times.append(time.perf_counter())
        return times

    print(
        f"shape {shape.name}, plan {plan}, {cores} cores, spin {args.spin}; model {model / 'int8.onnx'}",
        flush=True,
    )

    # Single stream: today's engine, the new one alone and through its scheduler. Each round
    # loads both engines again, in the other order (the session loaded first ran up to 15%
    # slower here, whichever engine it was), and runs them in alternating order (ABC CBA).
    Baseline = baseline_engine(args.baseline_rev)
    single: dict[str, list[float]] = {"today": [], "new": [], "scheduler": []}
    for round_ in range(SINGLE_ROUNDS if "single" in figures else 0):
        loaded_engines: dict[str, Any] = {}
        for name in ("today", "new")[:: 1 if round_ % 2 == 0 else -1]:
            loaded_engines[name] = (
                Baseline(wide, model_file="int8.onnx", max_context=plan.context)
                if name == "today"
                else Engine(
                    wide, model_file="int8.onnx", max_batch=8, max_context=plan.context, spin=args.spin
                )
            )
        alone = Scheduler(loaded_engines["new"], backend)
        runners: dict[str, Callable[[], float]] = {
            "today": lambda e=loaded_engines["today"]: single_decode(lambda: engine_times(e)),
            "new": lambda e=loaded_engines["new"]: single_decode(lambda: engine_times(e)),
            "scheduler": lambda s=alone: single_decode(
                lambda: Stream(ids(plan.prompt), plan.new).start(s).wait().tokens.times
            ),
        }
        for run in runners.values():
            run()  # warm-up
        for turn in range(SINGLE_TURNS):
            for name in list(runners)[:: 1 if turn % 2 == 0 else -1]:
                single[name].append(runners[name]())
        alone.close()
        runners.clear()
        loaded_engines.clear()
        gc.collect()
        print(
            f"  single stream, round {round_ + 1}: medians so far "
            + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in single.items())
            + " tok/s",
            flush=True,
        )

    engine = Engine(wide, model_file="int8.onnx", max_batch=8, max_context=plan.context, spin=args.spin)
    scheduler = Scheduler(engine, backend, queue_size=64)
    engine_times(engine)  # warm-up

    def batch_rate(c: int, on: Any = None) -> float:
        streams = [Stream(ids(plan.prompt), plan.new) for _ in range(c)]
        for s in streams:
            s.start(on or scheduler)
        return aggregate([s.wait() for s in streams])

    agg: dict[str, list[float]] = {"1": [], "4": [], "8": []}
    if "aggregate" in figures:
        for round_ in range(plan.rounds):
            for c in (1, 4, 8):
                agg[str(c)].append(batch_rate(c))
            print(
                f"  aggregate, round {round_ + 1}: " + ", ".join(f"{k}: {v[-1]:.1f}" for k, v in agg.items()),
                flush=True,
            )

    # Batch 8 against onnxruntime-genai's batch 8: every side once per round, back to back,
    # in an order that rotates and reverses by turns (AB BA ..., ABCD DCBA BCDA ...); each
    # comparison's ratio is taken within a round, and the median of the rounds' ratios is
    # the figure.
    genai_runs: dict[str, list[float]] = {}
    if "genai" in figures:
        # Every side in a process of its own, as genai's runtime is: two sessions in one
        # process ran the one loaded first 4-9 % slower, whichever it was.
        scheduler.close()
        del scheduler, engine
        gc.collect()
        lexrag_sides = {
            spin: LexragBatch(sys.executable, wide, spin=spin, context=plan.context)
            for spin in sorted({s for s, _ in comparisons})
        }
        genai_sides = {spin: GenaiBatch(args.genai_python, path) for spin, path in genai_models.items()}
        # lexrag again, in the genai interpreter: both engines on one onnxruntime build.
        same_build = {
            spin: LexragBatch(args.genai_python, wide, spin=spin, context=plan.context)
            for spin in sorted({s for s, g in comparisons if g != "own"})
        }
        for worker in same_build.values():
            print(f"  {SAME_BUILD}: onnxruntime {worker.onnxruntime}", flush=True)
        sides: dict[str, Callable[[], float]] = {}
        for label, workers in (("lexrag", lexrag_sides), (SAME_BUILD, same_build)):
            for spin, worker in sorted(workers.items()):
                sides[side_name(label, spin)] = lambda w=worker: w(
                    [ids(plan.prompt) for _ in range(8)], plan.new
                )["tok_s"]
        for spin, genai in sorted(genai_sides.items()):
            sides[side_name("genai", spin)] = lambda g=genai: g(
                [ids(plan.prompt) for _ in range(8)], plan.new
            )["tok_s"]
        for run in sides.values():
            run()  # warm-up
        names = list(sides)
        genai_runs = {name: [] for name in names}
        for round_ in range(plan.genai_pairs):
            turn = round_ // 2 % len(names)
            for name in (names[turn:] + names[:turn])[:: 1 if round_ % 2 == 0 else -1]:
                genai_runs[name].append(sides[name]())
            print(
                f"  batch 8 vs genai, round {round_ + 1}: "
                + ", ".join(f"{name} {runs[-1]:.1f}" for name, runs in genai_runs.items())
                + " tok/s",
                flush=True,
            )
        for worker in [*lexrag_sides.values(), *genai_sides.values(), *same_build.values()]:
            worker.close()
        engine = Engine(wide, model_file="int8.onnx", max_batch=8, max_context=plan.context, spin=args.spin)
        scheduler = Scheduler(engine, backend, queue_size=64)
        engine_times(engine)  # warm-up

    # Admission policies, in rounds (every policy once per round): time to first token of
    # a request arriving while 7 decode, and the 7's inter-token latency while a long
    # prompt is admitted, each against the idle figure measured in the same round.
    loaded: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(plan.latency_rounds if "latency" in figures else 0):
        for policy in policies(plan)[:: 1 if round_ % 2 == 0 else -1]:
            r = admission(scheduler, plan, ids, policy)
            loaded.setdefault(policy.name, []).append(r)
            print(
                f"  round {round_ + 1}, {policy.name}: TTFT {r['ttft_ratio']:.2f}×, inter-token p99 "
                f"{r['itl_ratio']:.2f}×, long TTFT {r['long_ratio']:.2f}× (chunk {r['chunk']})",
                flush=True,
            )
    scheduler.close()
    del engine
    gc.collect()

    # What --quantize int8-block (batch-invariant) costs against dynamic int8: both loaded,
    # measured in alternating order each round.
    block: dict[str, dict[str, list[float]]] = {}
    if "int8-block" in figures:
        schedulers = {
            name: Scheduler(
                Engine(wide, model_file=f"{name}.onnx", max_batch=8, max_context=plan.context),
                backend,
                queue_size=64,
            )
            for name in ("int8", "int8-block")
        }
        for name, sched in schedulers.items():
            Stream(ids(plan.prompt), 4).start(sched).wait()  # warm-up
            block[name] = {"1": [], "8": [], "prefill": []}
        for round_ in range(plan.rounds):
            for name in list(schedulers)[:: 1 if round_ % 2 == 0 else -1]:
                sched = schedulers[name]
                for c in ("1", "8"):
                    streams = [Stream(ids(plan.prompt), plan.new).start(sched) for _ in range(int(c))]
                    block[name][c].append(aggregate([st.wait() for st in streams]))
                block[name]["prefill"].append(Stream(ids(plan.long_prompt), 1).start(sched).wait().ttft)
            print(f"  int8 vs int8-block, round {round_ + 1}: {block}", flush=True)
        for sched in schedulers.values():
            sched.close()
        schedulers.clear()
        gc.collect()

    servers = serve_figures(wide, plan, [8, 16], plan.new) if "server" in figures else []

    bandwidth = bench_local.copy_bandwidth()
    _, per_step = bench_local.weight_bytes(model / "int8.onnx")
    limit = bandwidth / per_step
    med = {k: statistics.median(v) if v else float("nan") for k, v in agg.items()}
    one = med["1"]
    s_med = {k: statistics.median(v) if v else float("nan") for k, v in single.items()}
    print(
        f"\n## continuous batching, {shape.name} int8 (genai builder graph + lexrag int8), CPU {cores} cores; "
        f"medians of {plan.rounds} rounds (aggregate), {plan.latency_rounds} (admission), "
        f"{plan.genai_pairs} rounds (genai); {time.perf_counter() - began:.0f} s\n"
    )
    print("| figure | measured | ratio | goal |")
    print("|---|---|---|---|")
    if "aggregate" in figures:
        print(f"| aggregate decode, 1 stream | {one:.1f} tok/s | 1.00× | |")
        for c, goal in (("4", "≥ 1.8×"), ("8", "≥ 2.5×")):
            print(f"| aggregate decode, {c} streams | {med[c]:.1f} tok/s | {med[c] / one:.2f}× | {goal} |")
    if "single" in figures:
        print(
            f"| single stream, new engine vs today's ({args.baseline_rev}) | {s_med['new']:.1f} vs "
            f"{s_med['today']:.1f} tok/s | {s_med['new'] / s_med['today']:.2f}× | ≥ 0.95× |"
        )
        print(
            f"| single stream through the scheduler vs today's engine | {s_med['scheduler']:.1f} tok/s | "
            f"{s_med['scheduler'] / s_med['today']:.2f}× | ≥ 0.95× |"
        )
    if loaded:

        def med_of(runs: list[dict[str, Any]], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        def listed(runs: list[dict[str, Any]], key: str) -> str:
            return ", ".join(f"{r[key]:.2f}" for r in runs)

        for name, runs in loaded.items():
            print(
                f"| TTFT p50, {plan.ttft_prompt}-token prompt while 7 decode, {name} | "
                f"{med_of(runs, 'ttft_p50'):.2f} s vs {med_of(runs, 'idle_ttft'):.2f} s idle | {med_of(runs, 'ttft_ratio'):.2f}× "
                f"({listed(runs, 'ttft_ratio')}) | ≤ 1.5× |"
            )
        for name, runs in loaded.items():
            print(
                f"| inter-token p99 of 7 streams while a {plan.long_prompt}-token prompt is admitted, {name} "
                f"(chunk {runs[-1]['chunk']}) | {med_of(runs, 'itl_during_p99') * 1000:.0f} ms vs "
                f"{med_of(runs, 'itl_idle_p99') * 1000:.0f} ms idle p99 "
                f"({med_of(runs, 'itl_idle_p50') * 1000:.0f} ms p50) | {med_of(runs, 'itl_ratio'):.2f}× "
                f"({listed(runs, 'itl_ratio')}) | ≤ 3× |"
            )
        for name, runs in loaded.items():
            print(
                f"| TTFT of that {plan.long_prompt}-token prompt, {name} | {med_of(runs, 'long_ttft'):.2f} s vs "
                f"{med_of(runs, 'idle_long'):.2f} s idle | {med_of(runs, 'long_ratio'):.2f}× | |"
            )
    rows = [(s, g, False) for s, g in comparisons] + [(s, g, True) for s, g in comparisons if g != "own"]
    for lexrag_spin, genai_spin, same in rows if genai_runs else []:
        ours, theirs = (
            genai_runs[side_name(SAME_BUILD if same else "lexrag", lexrag_spin)],
            genai_runs[side_name("genai", genai_spin)],
        )
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"| aggregate at 8 vs onnxruntime-genai 0.12.2 batch 8 (same int8 weights), "
            f"{comparison_name(lexrag_spin, genai_spin, same_build=same)}, median of {plan.genai_pairs} rounds | "
            f"{statistics.median(ours):.1f} vs {statistics.median(theirs):.1f} tok/s | "
            f"{statistics.median(ratios):.2f}× ({', '.join(f'{r:.2f}' for r in ratios)}) | ≥ 1.0× |"
        )
    if block:
        b = {name: {k: statistics.median(v) for k, v in runs.items()} for name, runs in block.items()}
        for c in ("1", "8"):
            print(
                f"| --quantize int8-block vs int8, decode at {c} stream{'s' if c != '1' else ''} | "
                f"{b['int8-block'][c]:.1f} vs {b['int8'][c]:.1f} tok/s | {b['int8-block'][c] / b['int8'][c]:.2f}× | |"
            )
        print(
            f"| --quantize int8-block vs int8, prefill of {plan.long_prompt} tokens | "
            f"{b['int8-block']['prefill']:.2f} vs {b['int8']['prefill']:.2f} s | "
            f"{b['int8']['prefill'] / b['int8-block']['prefill']:.2f}× (speed) | |"
        )
    for r in servers:
        print(
            f"| lexrag serve, {r['concurrency']} concurrent streamed chats ({r['prompt_tokens']}-token "
            f"prompts, {plan.new} new tokens each) | "
            f"{r['tok_s']:.1f} tok/s (prefills included), TTFT p50 {r['ttft_p50']:.2f} s, p99 {r['ttft_p99']:.2f} s, "
            f"{r['errors']} errors | | no error |"
        )
    print(
        f"\nbandwidth (2-thread copy) {bandwidth / 1e9:.1f} GB/s; weights read per decode step "
        f"{per_step / 1e9:.2f} GB → ≤ {limit:.1f} steps/s. Batch 1: {one:.1f} tok/s = {one / limit:.0%} of the "
        f"limit; batch 8: {med['8'] / 8:.1f} steps/s = {med['8'] / 8 / limit:.0%} of it "
        f"({med['8']:.1f} tok/s, {med['8'] / limit:.1f}× the single-stream limit)."
    )
    print(f"single stream runs (tok/s): {single}")
    print(f"aggregate runs (tok/s): {agg}")
    print(f"batch 8 vs genai runs (tok/s): {genai_runs}")


if __name__ == "__main__":
    main()
