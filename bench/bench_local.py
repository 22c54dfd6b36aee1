"""Benchmark of the local provider's engine on a random-weight Llama (CPU).

Measures, in one run on one machine, each figure ``--repeats`` times (median reported, as
the machine may be shared) and as a ratio against a baseline of the same run:

- PyTorch eager generate (fp32);
- optimum's ``ORTModelForCausalLM.generate`` on the plain optimum export (fp32/int8/int4);
- lexrag's engine on the optimum export with its last-position-logits rewrite;
- lexrag's engine on onnxruntime-genai's builder's fused graph (``--builder genai``:
  GroupQueryAttention, packed QKV; int8 = the builder's fp32 graph + lexrag's int8);
- the onnxruntime-genai runtime on its own builder's int4 model (in the separate
  interpreter ``--genai-python``, default ``.bench-venv/bin/python``; skipped, with the
  reason, when that interpreter cannot import onnxruntime_genai).

Prefill / decode on a ``prompt``-token prompt with ``new`` greedy tokens; time to first
token on a ``ttft_prompt``-token prompt; end-to-end RAG latency (``rag_prompt`` + ``rag_new``)
for int8 vs int4, which picks the default CPU quantization; the memory-bandwidth limit
of decode (bytes of weights read per token / copy bandwidth).

    .venv/bin/python bench/bench_local.py           # Llama-3.2-1B shape (~16 GB RAM, ~25 min)
    .venv/bin/python bench/bench_local.py --quick   # a small shape, about a minute

Set up the genai interpreter once (it installs the CPU onnxruntime, so never into .venv):
    bash scripts/setup-genai.sh        # .bench-venv with onnxruntime-genai 0.12.2

Work files go to artifacts/bench-local/ (ignored by git) and are reused by later runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tiny tokenizer builder lives with the test fixtures


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    prompt: int
    new: int
    ttft_prompt: int
    rag_prompt: int
    rag_new: int


FULL = Shape("llama-3.2-1b-shape", 16, 2048, 32, 8, 8192, 128256, 512, 64, 1000, 1000, 200)
QUICK = Shape("quick", 4, 512, 8, 4, 1536, 32000, 128, 16, 250, 250, 50)
PRECISIONS = ("fp32", "int8", "int4")


def build_model(shape: Shape, out: Path) -> Path:
    """A random-weight Llama of ``shape`` with a small Llama-3-style tokenizer (reused if present)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from tests.fixtures_local import build_tokenizer

    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out)
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        bos_token_id=0,
        eos_token_id=[1, 8, 9],
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    GenerationConfig(bos_token_id=0, eos_token_id=[1, 8, 9]).save_pretrained(out)
    return out


def step(title: str, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    print(f"  {title}…", end="", flush=True)
    fn()
    print(f" {time.perf_counter() - start:.1f} s", flush=True)


def optimum_variants(hf: Path, out: Path) -> None:
    """optimum's plain export quantized to int8/int4 (``{p}.onnx``), and each with lexrag's
    last-position logits rewrite (``{p}-last.onnx``)."""
    from optimum.exporters.onnx import main_export

    from lexrag_local.graph import last_position_logits
    from lexrag_local.quantize import QUANTIZERS

    if all((out / f"{p}{s}.onnx").is_file() for p in PRECISIONS for s in ("", "-last")):
        return
    shutil.rmtree(out, ignore_errors=True)
    step(
        f"optimum export of {hf.name}",
        lambda: main_export(str(hf), output=out, task="text-generation-with-past", do_validation=False),
    )
    (out / "model.onnx").rename(out / "fp32.onnx")
    for precision, quantize in QUANTIZERS.items():
        step(
            f"{precision} quantization",
            lambda q=quantize, p=precision: q(out / "fp32.onnx", out / f"{p}.onnx"),
        )
        gc.collect()
    for precision in PRECISIONS:
        last_position_logits(out / f"{precision}.onnx", out / f"{precision}-last.onnx")


def genai_variants(hf: Path, work: Path, python: str) -> dict[str, Path]:
    """The genai builder's graphs: ``genai-int4/`` as built (for its runtime) plus
    ``lexrag.onnx`` (last-position logits) beside it; ``genai-fp32/`` with ``lexrag.onnx``
    and ``int8.onnx`` (lexrag's int8 quantization of it), as ``lexrag model export
    --builder genai`` writes them. Returns the directory by precision."""
    from lexrag_local.genai_builder import build
    from lexrag_local.graph import last_position_logits
    from lexrag_local.quantize import quantize_int8

    dirs = {"int4": work / "genai-int4", "fp32": work / "genai-fp32"}
    for precision, out in dirs.items():
        if not (out / "model.onnx").is_file():
            shutil.rmtree(out, ignore_errors=True)
            step(
                f"genai builder {precision}",
                lambda o=out, p=precision: build(str(hf), o, python=python, precision=p, device="cpu"),
            )
            shutil.rmtree(out / ".cache", ignore_errors=True)
        for name in ("config.json", "generation_config.json"):
            shutil.copy(hf / name, out / name)
        if not (out / "lexrag.onnx").is_file():
            last_position_logits(out / "model.onnx", out / "lexrag.onnx")
    # The runtime opens its session with one intra-op thread on this machine unless its
    # genai_config says otherwise: a copy of the int4 model told to use every core.
    threaded = work / "genai-int4-all-cores"
    threaded.mkdir(exist_ok=True)
    for file in dirs["int4"].iterdir():
        if file.name != "genai_config.json" and not (threaded / file.name).exists():
            (threaded / file.name).symlink_to(file.resolve())
    config = json.loads((dirs["int4"] / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = len(os.sched_getaffinity(0))
    (threaded / "genai_config.json").write_text(json.dumps(config, indent=2))
    fp32 = dirs["fp32"]
    if not (fp32 / "int8.onnx").is_file():
        step(
            "int8 quantization of the genai fp32 graph",
            lambda: quantize_int8(fp32 / "lexrag.onnx", fp32 / "int8.onnx"),
        )
        gc.collect()
    return {"fp32": fp32, "int8": fp32, "int4": dirs["int4"], "int4-all-cores": threaded}


def random_ids(n: int, vocab: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(16, vocab, size=n).tolist()


# ---- engines: each runs (prompt ids, n new tokens) and returns (first-token s, total s) ----

Runner = Callable[[list[int], int], tuple[float, float]]


class _FirstTokenStreamer:
    """A transformers streamer that timestamps the first generated token (the first
    ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first = 0.0

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def generate_runner(model: Any) -> Runner:
    """transformers-style ``generate`` (PyTorch eager or optimum's ORTModelForCausalLM)."""
    import torch

    kwargs = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}

    def run(ids: list[int], new: int) -> tuple[float, float]:
        x = torch.tensor([ids])
        streamer = _FirstTokenStreamer()
        with torch.no_grad():
            start = time.perf_counter()
            model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=new,
                min_new_tokens=new,
                streamer=streamer,
                **kwargs,
            )
            end = time.perf_counter()
        return streamer.first - start, end - start

    run(ids=list(range(16, 24)), new=2)  # warm-up
    return run


def engine_runner(engine: Any) -> Runner:
    """lexrag's engine, greedy, eos ignored."""
    from lexrag_local.sampling import Sampler, SamplingParams

    def run(ids: list[int], new: int) -> tuple[float, float]:
        sampler = Sampler(SamplingParams(temperature=0.0))
        start = time.perf_counter()
        first = 0.0
        for i, _ in enumerate(engine.decode(ids, new, sampler)):
            if i == 0:
                first = time.perf_counter() - start
        return first, time.perf_counter() - start

    run(list(range(16, 24)), 2)
    return run


#: Greedy generation by onnxruntime-genai for a batch of prompts of one length ("ids": one list
#: per row): the time to the first token, the total, and the decode tokens/s after the first.
_GENAI_WORKER = r"""
import json, sys, time
import numpy as np
import onnxruntime_genai as og
model = og.Model(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    ids, new = np.asarray(req["ids"], dtype=np.int32), req["new"]
    batch, prompt = ids.shape
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompt + new, min_length=prompt + new, do_sample=False, batch_size=batch)
    gen = og.Generator(model, params)
    start = time.perf_counter()
    gen.append_tokens(ids)
    gen.generate_next_token()
    first = time.perf_counter() - start
    for _ in range(new - 1):
        gen.generate_next_token()
    total = time.perf_counter() - start
    print(json.dumps({"first": first, "total": total, "tok_s": batch * (new - 1) / (total - first)}), flush=True)
    del gen
"""


class GenaiWorker:
    """onnxruntime-genai's interpreter running ``_GENAI_WORKER`` on ``model_dir`` (or
    ``python`` running ``argv``, in ``env``): one JSON request per line in, one JSON answer per
    line out, after its first line (``ready``, e.g. ``{"ready": true}``)."""

    def __init__(
        self,
        python: str,
        model_dir: Path,
        *,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [python, *(argv or ["-c", _GENAI_WORKER, str(model_dir)])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.ready: dict[str, Any] = json.loads(self.proc.stdout.readline())

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


class GenaiRuntime(GenaiWorker):
    """The onnxruntime-genai runtime in its own interpreter, answering measurements over a pipe."""

    def __init__(self, python: str, model_dir: Path) -> None:
        super().__init__(python, model_dir)
        self(list(range(16, 24)), 2)

    def __call__(self, ids: list[int], new: int) -> tuple[float, float]:
        answer = self.ask({"ids": [ids], "new": new})
        return answer["first"], answer["total"]


def genai_python_usable(python: str) -> str | None:
    """None when ``python`` can import onnxruntime_genai, else why not."""
    try:
        probe = subprocess.run(
            [python, "-c", "import onnxruntime_genai"], capture_output=True, text=True, check=False
        )
    except OSError as exc:
        return str(exc)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1]


# ---- measurements ----


@dataclass
class Result:
    engine: str
    graph: str
    precision: str
    prefill: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    rag: list[float] = field(default_factory=list)

    def med(self, name: str) -> float:
        values: list[float] = getattr(self, name)
        return statistics.median(values) if values else float("nan")


@dataclass
class Candidate:
    result: Result
    load: Callable[[], Runner]
    rag: bool = False


def measure(group: list[Candidate], shape: Shape, repeats: int) -> None:
    """Load the group's engines together, then run every measurement round-robin, so a
    busy moment of a shared machine falls on all of them alike."""
    runners: list[tuple[Candidate, Runner]] = []
    for candidate in group:
        runners.append((candidate, candidate.load()))
    ids = random_ids(shape.prompt, shape.vocab)
    long_ids = random_ids(shape.ttft_prompt, shape.vocab, seed=1)
    rag_ids = random_ids(shape.rag_prompt, shape.vocab, seed=2)
    for round_ in range(repeats):
        for candidate, run in runners:
            r = candidate.result
            first, total = run(ids, shape.new)
            r.prefill.append(first)
            r.decode.append((shape.new - 1) / max(total - first, 1e-9))
            r.ttft.append(run(long_ids, 1)[0])
            if candidate.rag:
                r.rag.append(run(rag_ids, shape.rag_new)[1])
            print(
                f"  round {round_ + 1}/{repeats} {r.engine} [{r.graph}] {r.precision}: prefill {first:.2f} s, "
                f"decode {r.decode[-1]:.1f} tok/s, TTFT {r.ttft[-1]:.2f} s"
                + (f", RAG {r.rag[-1]:.1f} s" if candidate.rag else ""),
                flush=True,
            )
    for _, run in runners:
        close = getattr(run, "close", None)
        if close is not None:
            close()
    runners.clear()
    gc.collect()


def copy_bandwidth(threads: int = 2, mb: int = 256) -> float:
    """Bytes/s moved (read + write) by ``threads`` threads copying large arrays (best of 5)."""
    src = [np.ones(mb * 2**20 // 8) for _ in range(threads)]
    dst = [np.empty_like(s) for s in src]
    best = 0.0
    for _ in range(5):
        workers = [threading.Thread(target=np.copyto, args=(d, s)) for d, s in zip(dst, src, strict=True)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, 2 * sum(s.nbytes for s in src) / (time.perf_counter() - start))
    return best


_LOOKUPS = {"Gather", "GatherBlockQuantized"}
#: Ops that only reshape a weight on its way to a lookup (folded once when the session starts).
_LAYOUT = {"Transpose", "Cast", "Reshape"}


def weight_bytes(path: Path) -> tuple[int, int]:
    """(bytes on disk of ``path`` and every external data file its initializers name,
    bytes of initializers read by each decode step). The second leaves out tensors only
    looked up (the embedding table: one row per token, also behind a Transpose as in the
    genai builder's tied embeddings), and counts a tensor once however many nodes read it."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    files = {path}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def looked_up_only(name: str) -> bool:
        nodes = readers.get(name, [])
        return bool(nodes) and all(
            n.op_type in _LOOKUPS or (n.op_type in _LAYOUT and looked_up_only(n.output[0])) for n in nodes
        )

    per_token = 0
    for init in graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                files.add(path.parent / entry.value)
        if readers.get(init.name) and not looked_up_only(init.name):
            size = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
            per_token += int(np.prod(init.dims, dtype=np.int64)) * size
    return sum(f.stat().st_size for f in files if f.is_file()), per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape, about a minute")
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench-local")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: one per core)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per figure; medians are reported")
    parser.add_argument(
        "--genai-python",
        default=os.environ.get("LEXRAG_GENAI_PYTHON", str(ROOT / ".bench-venv" / "bin" / "python")),
        help="interpreter with onnxruntime-genai 0.12.2 (builder and runtime)",
    )
    parser.add_argument("--skip-pytorch", action="store_true")
    args = parser.parse_args()
    shape = QUICK if args.quick else FULL
    work = args.work / shape.name
    print(f"shape {shape}")
    hf = build_model(shape, work / "hf")
    onnx_dir = work / "onnx"
    _check_memory(hf, onnx_dir)
    optimum_variants(hf, onnx_dir)
    no_genai = genai_python_usable(args.genai_python)
    genai_dirs: dict[str, Path] = {}
    if no_genai:
        print(f"  genai rows skipped: {args.genai_python} cannot import onnxruntime_genai ({no_genai})")
    else:
        genai_dirs = genai_variants(hf, work, args.genai_python)

    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    from lexrag_local.engine import Engine

    torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))
    results: list[Result] = []

    def add(engine: str, graph: str, precision: str) -> Result:
        results.append(Result(engine, graph, precision))
        return results[-1]

    def optimum_loader(precision: str) -> Callable[[], Runner]:
        return lambda: generate_runner(
            ORTModelForCausalLM.from_pretrained(
                onnx_dir, file_name=f"{precision}.onnx", provider="CPUExecutionProvider", use_cache=True
            )
        )

    def engine_loader(model_dir: Path, file: str) -> Callable[[], Runner]:
        return lambda: engine_runner(Engine(model_dir, threads=args.threads, model_file=file))

    groups: list[list[Candidate]] = []
    if not args.skip_pytorch:
        from transformers import AutoModelForCausalLM

        groups.append(
            [
                Candidate(
                    add("PyTorch eager generate", "PyTorch", "fp32"),
                    lambda: generate_runner(
                        AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
                    ),
                )
            ]
        )
    genai_file = {"fp32": "lexrag.onnx", "int8": "int8.onnx", "int4": "lexrag.onnx"}
    for precision in PRECISIONS:
        group = [
            Candidate(add("optimum generate", "optimum", precision), optimum_loader(precision)),
            Candidate(
                add("lexrag engine", "optimum + last-position", precision),
                engine_loader(onnx_dir, f"{precision}-last.onnx"),
                rag=precision != "fp32" and not genai_dirs,
            ),
        ]
        if not genai_dirs:
            groups.append(group)
            continue
        fused = Candidate(
            add("lexrag engine", "genai builder + last-position", precision),
            engine_loader(genai_dirs[precision], genai_file[precision]),
            rag=precision != "fp32",
        )
        if precision == "fp32":
            # Three fp32 models do not fit beside each other in 24 GB: the fused one runs alone.
            groups.extend([group, [fused]])
            continue
        group.append(fused)
        if precision == "int4":
            group.append(
                Candidate(
                    add("onnxruntime-genai 0.12.2 runtime", "genai builder", "int4"),
                    lambda: GenaiRuntime(args.genai_python, genai_dirs["int4"]),
                )
            )
            group.append(
                Candidate(
                    add(
                        "onnxruntime-genai 0.12.2 runtime, intra_op_num_threads = cores",
                        "genai builder",
                        "int4",
                    ),
                    lambda: GenaiRuntime(args.genai_python, genai_dirs["int4-all-cores"]),
                )
            )
        groups.append(group)
    for group in groups:
        measure(group, shape, args.repeats)
    report(shape, results, onnx_dir, genai_dirs, genai_file, args)


def report(
    shape: Shape,
    results: list[Result],
    onnx_dir: Path,
    genai_dirs: dict[str, Path],
    genai_file: dict[str, str],
    args: argparse.Namespace,
) -> None:
    def find(engine: str, graph: str, precision: str) -> Result | None:
        return next(
            (
                r
                for r in results
                if r.engine.startswith(engine) and r.graph.startswith(graph) and r.precision == precision
            ),
            None,
        )

    bandwidth = copy_bandwidth()
    print(
        f"\n## {shape.name}: prompt {shape.prompt}, {shape.new} greedy new tokens, TTFT on {shape.ttft_prompt} "
        f"tokens (CPU, {len(os.sched_getaffinity(0))} cores; medians of {args.repeats})\n"
    )
    print(
        f"| engine | graph | precision | prefill {shape.prompt} (s) | decode tok/s | TTFT {shape.ttft_prompt} (s) |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.engine} | {r.graph} | {r.precision} | {r.med('prefill'):.2f} | {r.med('decode'):.1f} "
            f"| {r.med('ttft'):.2f} |"
        )
    print(
        f"\nbandwidth (2-thread copy): {bandwidth / 1e9:.1f} GB/s; decode limit = bandwidth / weight bytes read per token:"
    )
    files = {("optimum", p): onnx_dir / f"{p}.onnx" for p in PRECISIONS}
    files |= {("genai", p): genai_dirs[p] / genai_file[p] for p in PRECISIONS if p in genai_dirs}
    for (graph, precision), path in files.items():
        disk, per_token = weight_bytes(path)
        print(
            f"  {graph} {precision}: {disk / 1e9:.2f} GB on disk (graph + external data), "
            f"{per_token / 1e9:.2f} GB read per token → ≤ {bandwidth / per_token:.1f} tok/s"
        )

    torch_row = find("PyTorch", "PyTorch", "fp32")
    runtimes = [r for r in results if r.engine.startswith("onnxruntime-genai")]
    print("\nratios (medians of the same run):")
    for precision in PRECISIONS:
        theirs = find("optimum generate", "optimum", precision)
        assert theirs is not None
        for graph in ("optimum + last-position", "genai builder + last-position"):
            ours = find("lexrag", graph, precision)
            if ours is None:
                continue
            line = (
                f"  {precision} lexrag [{graph}]: decode {ours.med('decode') / theirs.med('decode'):.2f}× optimum"
                f", TTFT {ours.med('ttft') / theirs.med('ttft'):.2f}× optimum (goal ≤ 0.70)"
            )
            if torch_row:
                line += f", decode {ours.med('decode') / torch_row.med('decode'):.2f}× PyTorch eager fp32"
            if precision == "int4":
                for runtime in runtimes:
                    threads = "cores" if "cores" in runtime.engine else "default"
                    line += (
                        f", decode {ours.med('decode') / runtime.med('decode'):.2f}× genai runtime "
                        f"({threads} threads; goal ≥ 1.0)"
                    )
            print(line)
    rag = {
        p: r
        for p in ("int8", "int4")
        for r in [find("lexrag", "genai", p) or find("lexrag", "optimum", p)]
        if r is not None and r.rag
    }
    if len(rag) == 2:
        print(
            f"\nRAG end to end ({shape.rag_prompt}-token prompt + {shape.rag_new} new tokens, lexrag engine):"
        )
        for precision, r in rag.items():
            print(
                f"  {precision} [{r.graph}]: {r.med('rag'):.1f} s (runs: {', '.join(f'{v:.1f}' for v in r.rag)})"
            )
        best = min(rag, key=lambda p: rag[p].med("rag"))
        other = "int4" if best == "int8" else "int8"
        print(f"  int8/int4 = {rag['int8'].med('rag') / rag['int4'].med('rag'):.2f}")
        print(
            f"  → default CPU quantization by this measurement: {best} ({rag[other].med('rag') / rag[best].med('rag'):.2f}× faster than {other})"
        )


def _check_memory(hf: Path, onnx_dir: Path) -> None:
    """Stop before an export that the machine cannot hold (int8 quantization peaks highest)."""
    from lexrag_local.memory import GB, available_bytes, needed_bytes, parameter_count

    if (onnx_dir / "int4-last.onnx").is_file():
        return
    need, step_name = needed_bytes(parameter_count(str(hf)), dtype="fp32", device="cpu", quantize="int8")
    have = available_bytes()
    if have is not None and need > have:
        sys.exit(f"the exports need about {need / GB:.1f} GB ({step_name}); {have / GB:.1f} GB is available")


if __name__ == "__main__":
    main()
