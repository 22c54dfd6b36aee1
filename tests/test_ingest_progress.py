"""Progress inside one long document: ``ingest`` reports the chunks embedded as it goes (what
``lexrag ingest`` shows under its per-file bar), not only when the file is done."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lexrag import FloatArray
from lexrag.ingest import EMBED_SLICE, ingest
from lexrag.store import Store

from .fixtures_postgres import HashEmbedder

ARTICLES = 2 * EMBED_SLICE + 40


class RecordingEmbedder(HashEmbedder):
    """The hash embedder, noting each call in a shared event list."""

    events: list[tuple[str, int, int]]

    def embed(self, texts: Sequence[str]) -> FloatArray:
        self.events.append(("embed", len(texts), 0))
        return super().embed(texts)


def _long_code(path: Path) -> Path:
    lines = ["Luật Thử nghiệm tiến độ", "", "Chương I", "QUY ĐỊNH CHUNG", ""]
    for n in range(1, ARTICLES + 1):
        lines += [
            f"Điều {n}. Quy định số {n}",
            f"Người lao động thứ {n} được nghỉ {n % 7 + 1} ngày mỗi năm.",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_chunk_progress_moves_within_one_long_document(tmp_path: Path) -> None:
    code = _long_code(tmp_path / "tien-do.txt")
    events: list[tuple[str, int, int]] = []
    embedder = RecordingEmbedder("hash", None)  # type: ignore[arg-type]
    embedder.events = events
    store = Store.open(tmp_path / "index", create=True)
    try:
        report = ingest(
            store,
            embedder,
            [code],
            chunk_progress=lambda path, done, total: events.append(("progress", done, total)),
            progress=lambda path, outcome: events.append(("file", 0, 0)),
        )
    finally:
        store.close()
    assert report.added == ["tien-do"] and report.chunks >= ARTICLES
    total = report.chunks
    # Announced at 0 once chunked, then after every slice the embedder was called with; the
    # file's own progress comes last.
    slices = [(start, min(start + EMBED_SLICE, total)) for start in range(0, total, EMBED_SLICE)]
    expected: list[tuple[str, int, int]] = [("progress", 0, total)]
    for start, end in slices:
        expected += [("embed", end - start, 0), ("progress", end, total)]
    assert events == [*expected, ("file", 0, 0)]
    assert len(slices) >= 3


def test_without_an_embedder_the_document_still_reports_its_chunks(tmp_path: Path) -> None:
    code = _long_code(tmp_path / "tien-do.txt")
    seen: list[tuple[int, int]] = []
    store = Store.open(tmp_path / "index", create=True)
    try:
        report = ingest(
            store, None, [code], chunk_progress=lambda path, done, total: seen.append((done, total))
        )
    finally:
        store.close()
    assert seen == [(0, report.chunks), (report.chunks, report.chunks)]
