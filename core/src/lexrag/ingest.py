"""The ingest pipeline: files → chunks → vectors → the SQLite store, one transaction per document."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .chunking import DEFAULT_MAX_CHARS, chunk_document
from .errors import InvalidRequestError
from .retrieval import Embedder
from .store import DocumentRecord, Store

SUFFIXES = (".txt", ".md")


@dataclass
class IngestReport:
    """What one ingest did; ``failed`` maps a path to why it was skipped."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    chunks: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """False only when files were given and none of them could be ingested."""
        return not self.failed or bool(self.added or self.updated or self.skipped)

    def as_dict(self) -> dict[str, object]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "skipped": len(self.skipped),
            "deleted": len(self.deleted),
            "failed": dict(self.failed),
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


def find_files(paths: Iterable[Path]) -> tuple[list[Path], dict[str, str]]:
    """The .txt / .md files under ``paths`` (sorted), and paths that could not be used."""
    files: list[Path] = []
    problems: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES))
        elif path.is_file():
            if path.suffix.lower() in SUFFIXES:
                files.append(path)
            else:
                problems[str(path)] = f"not a .txt or .md file (suffix {path.suffix or 'none'})"
        else:
            problems[str(path)] = "no such file or directory"
    seen: dict[str, Path] = {}
    for file in files:
        if file.stem in seen and seen[file.stem].resolve() != file.resolve():
            problems[str(file)] = f"document id {file.stem!r} is already taken by {seen[file.stem]}"
        else:
            seen.setdefault(file.stem, file)
    return list(seen.values()), problems


def read_text(path: Path) -> str:
    """The file's text; :class:`InvalidRequestError` when it is not UTF-8 or is empty."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None
    if not text.strip():
        raise InvalidRequestError("the file is empty")
    return text


ProgressCallback = Callable[[Path, str], None]


def ingest(
    store: Store,
    embedder: Embedder | None,
    paths: Sequence[Path],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    prune: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest ``paths`` (files or directories) into ``store``.

    A document whose content hash is unchanged is skipped (unless ``force``); a changed one
    has its chunks replaced. With ``prune``, documents in the store whose file is not among
    ``paths`` any more are deleted. ``progress(path, outcome)`` is called after each file.
    """
    start = time.perf_counter()
    report = IngestReport()
    files, problems = find_files(paths)
    report.failed.update(problems)
    if embedder is not None:
        store.check_embedder(embedder.model_id, embedder.dim)
    for path in files:
        outcome = _ingest_one(store, embedder, path, max_chars, force, report)
        if progress is not None:
            progress(path, outcome)
    if prune:
        keep = {f.stem for f in files}
        for record in store.documents():
            if record.id not in keep and store.delete_document(record.id):
                report.deleted.append(record.id)
    report.seconds = time.perf_counter() - start
    return report


def _ingest_one(
    store: Store, embedder: Embedder | None, path: Path, max_chars: int, force: bool, report: IngestReport
) -> str:
    try:
        text = read_text(path)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        existing = store.document(path.stem)
        if existing is not None and existing.sha256 == digest and not force:
            report.skipped.append(path.stem)
            return "skipped"
        parsed = chunk_document(path.stem, text, max_chars=max_chars)
    except InvalidRequestError as exc:
        report.failed[str(path)] = exc.message
        return "failed"
    except OSError as exc:
        report.failed[str(path)] = f"cannot read: {exc.strerror or exc}"
        return "failed"
    vectors = embedder.embed([c.text for c in parsed.chunks]) if embedder is not None else None
    record = DocumentRecord(parsed.doc_id, parsed.title, str(path.resolve()), digest, len(parsed.chunks))
    store.put_document(
        record, parsed.chunks, vectors, None if embedder is None else (embedder.model_id, embedder.dim)
    )
    report.chunks += len(parsed.chunks)
    (report.updated if existing is not None else report.added).append(parsed.doc_id)
    return "updated" if existing is not None else "added"


__all__ = ["SUFFIXES", "IngestReport", "find_files", "ingest", "read_text"]
