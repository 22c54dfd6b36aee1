"""Benchmark of the local provider's engine on a random-weight Llama (CPU).

Compares, in one run on one machine: PyTorch eager generate (fp32), optimum's
``ORTModelForCausalLM.generate`` on the plain optimum export, and lexrag's engine (raw ORT
loop, IO-bound KV buffers, last-position logits), at fp32 / int8 / int4; time to first
token on a long prompt; end-to-end RAG latency for int8 vs int4; and the memory-bandwidth
limit of decode. Prints ratios against the baselines measured in the same run.

    .venv/bin/python bench/bench_local.py           # Llama-3.2-1B shape (~12-19 GB RAM, ~15 min)
    .venv/bin/python bench/bench_local.py --quick   # a small shape, under a minute

Work files go to artifacts/bench-local/ (ignored by git) and are reused by later runs.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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


def export_variants(hf: Path, out: Path) -> dict[str, str]:
    """optimum's plain export quantized to int8/int4, and each with lexrag's last-position
    logits rewrite. Returns file name by variant ("fp32", "fp32-last", ...)."""
    from optimum.exporters.onnx import main_export

    from lexrag_local.graph import last_position_logits
    from lexrag_local.quantize import QUANTIZERS

    files = {p: f"{p}.onnx" for p in PRECISIONS} | {f"{p}-last": f"{p}-last.onnx" for p in PRECISIONS}
    if all((out / f).is_file() for f in files.values()):
        return files
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
    return files


def step(title: str, fn) -> None:
    start = time.perf_counter()
    print(f"  {title}…", end="", flush=True)
    fn()
    print(f" {time.perf_counter() - start:.1f} s", flush=True)


def random_ids(n: int, vocab: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(16, vocab, size=n).tolist()


@dataclass
class Row:
    engine: str
    precision: str
    prefill_s: float
    decode_tps: float


def time_generate(model, ids: list[int], new: int) -> tuple[float, float]:
    """(prefill s, decode tok/s) of a transformers-style ``generate``: a 1-token run gives
    the prefill, a ``new``-token run the rest."""
    import torch

    x = torch.tensor([ids])
    kwargs = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    with torch.no_grad():
        warm = x[:, :8]
        model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=2, **kwargs)
        mask = torch.ones_like(x)
        start = time.perf_counter()
        model.generate(x, attention_mask=mask, max_new_tokens=1, min_new_tokens=1, **kwargs)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(x, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, **kwargs)
        total = time.perf_counter() - start
    return prefill, (new - 1) / max(total - prefill, 1e-9)


def time_engine(engine, ids: list[int], new: int) -> tuple[float, float]:
    """(time to first token s, decode tok/s) of lexrag's engine, eos ignored."""
    from lexrag_local.sampling import Sampler, SamplingParams

    sampler = Sampler(SamplingParams(temperature=0.0))
    list(engine.decode(ids[:8], 2, sampler))  # warm-up
    start = time.perf_counter()
    first = None
    for _ in engine.decode(ids, new, sampler):
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    assert first is not None
    return first, (new - 1) / max(total - first, 1e-9)


def copy_bandwidth(threads: int = 2, mb: int = 256) -> float:
    """Bytes/s moved (read + write) by ``threads`` threads copying large arrays."""
    src = [np.ones(mb * 2**20 // 8) for _ in range(threads)]
    dst = [np.empty_like(s) for s in src]
    best = 0.0
    for _ in range(3):
        workers = [threading.Thread(target=np.copyto, args=(d, s)) for d, s in zip(dst, src, strict=True)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, 2 * sum(s.nbytes for s in src) / (time.perf_counter() - start))
    return best


def weight_bytes(onnx_dir: Path, file: str) -> int:
    """Bytes of ``file`` and its external data (optimum's fp32 export keeps ``model.onnx_data``)."""
    data = [*onnx_dir.glob(f"{file}*")] + ([onnx_dir / "model.onnx_data"] if file == "fp32.onnx" else [])
    return sum(p.stat().st_size for p in data if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape, under a minute")
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench-local")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: one per core)")
    parser.add_argument("--skip-pytorch", action="store_true")
    args = parser.parse_args()
    shape = QUICK if args.quick else FULL
    work = args.work / shape.name
    print(f"shape {shape}")
    hf = build_model(shape, work / "hf")
    onnx_dir = work / "onnx"
    _check_memory(hf, onnx_dir)
    files = export_variants(hf, onnx_dir)

    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    from lexrag_local.engine import Engine
    from lexrag_local.parity import check  # noqa: F401  (parity is reported by `lexrag model export`)

    torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))
    ids = random_ids(shape.prompt, shape.vocab)
    rows: list[Row] = []
    if not args.skip_pytorch:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
        rows.append(Row("PyTorch eager generate", "fp32", *time_generate(model, ids, shape.new)))
        del model
        gc.collect()
    ttft: dict[tuple[str, str], float] = {}
    long_ids = random_ids(shape.ttft_prompt, shape.vocab, seed=1)
    for precision in PRECISIONS:
        ort_model = ORTModelForCausalLM.from_pretrained(
            onnx_dir, file_name=files[precision], provider="CPUExecutionProvider", use_cache=True
        )
        rows.append(
            Row("optimum ORTModelForCausalLM.generate", precision, *time_generate(ort_model, ids, shape.new))
        )
        ttft[("optimum", precision)] = time_generate(ort_model, long_ids, 1)[0]
        del ort_model
        gc.collect()
        engine = Engine(onnx_dir, threads=args.threads, model_file=files[f"{precision}-last"])
        rows.append(Row("lexrag engine (raw ORT loop)", precision, *time_engine(engine, ids, shape.new)))
        ttft[("lexrag", precision)] = time_engine(engine, long_ids, 2)[0]
        if precision != "fp32":
            rag_ids = random_ids(shape.rag_prompt, shape.vocab, seed=2)
            start = time.perf_counter()
            list(engine.decode(rag_ids, shape.rag_new, _greedy()))
            ttft[("rag", precision)] = time.perf_counter() - start
        del engine
        gc.collect()

    bandwidth = copy_bandwidth()
    print(
        f"\n## {shape.name}: prompt {shape.prompt}, {shape.new} greedy new tokens (CPU, {_cores()} cores)\n"
    )
    print("| engine | precision | prefill (s) | decode tok/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r.engine} | {r.precision} | {r.prefill_s:.2f} | {r.decode_tps:.1f} |")
    print(
        f"\nbandwidth (2-thread copy): {bandwidth / 1e9:.1f} GB/s; decode limit = bandwidth / weight bytes:"
    )
    for precision in PRECISIONS:
        size = weight_bytes(onnx_dir, files[precision])
        print(f"  {precision}: {size / 1e9:.2f} GB of weights → ≤ {bandwidth / size:.1f} tok/s")
    base = next((r for r in rows if r.engine.startswith("PyTorch")), None)
    print("\nratios (same run):")
    for precision in PRECISIONS:
        ours = next(r for r in rows if r.engine.startswith("lexrag") and r.precision == precision)
        theirs = next(r for r in rows if r.engine.startswith("optimum") and r.precision == precision)
        line = f"  {precision}: decode lexrag/optimum {ours.decode_tps / theirs.decode_tps:.2f}×"
        if base:
            line += f", lexrag/PyTorch-fp32 {ours.decode_tps / base.decode_tps:.2f}×"
        line += (
            f"; TTFT {shape.ttft_prompt}-token prompt lexrag {ttft[('lexrag', precision)]:.2f} s vs optimum "
            f"{ttft[('optimum', precision)]:.2f} s = {ttft[('lexrag', precision)] / ttft[('optimum', precision)]:.2f}×"
        )
        print(line)
    print(f"\nRAG end to end ({shape.rag_prompt}-token prompt + {shape.rag_new} new tokens, lexrag engine):")
    for precision in ("int8", "int4"):
        print(f"  {precision}: {ttft[('rag', precision)]:.1f} s")
    best = min(("int8", "int4"), key=lambda p: ttft[("rag", p)])
    print(f"  → default CPU quantization by this measurement: {best}")


def _check_memory(hf: Path, onnx_dir: Path) -> None:
    """Stop before an export that the machine cannot hold (int8 quantization peaks highest)."""
    from lexrag_local.memory import GB, available_bytes, needed_bytes, parameter_count

    if (onnx_dir / "int4-last.onnx").is_file():
        return
    need, step_name = needed_bytes(parameter_count(str(hf)), dtype="fp32", device="cpu", quantize="int8")
    have = available_bytes()
    if have is not None and need > have:
        sys.exit(f"the exports need about {need / GB:.1f} GB ({step_name}); {have / GB:.1f} GB is available")


def _greedy():
    from lexrag_local.sampling import Sampler, SamplingParams

    return Sampler(SamplingParams(temperature=0.0))


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
