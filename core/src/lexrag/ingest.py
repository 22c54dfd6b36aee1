"""The ingest pipeline: files → chunks → vectors → the index store (``[index] backend``), one
transaction per document."""

from __future__ import annotations

import hashlib
import os
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chunking import DEFAULT_MAX_CHARS, chunk_document
from .errors import InvalidRequestError
from .legalmeta import document_meta
from .loaders import BUILTIN_LOADERS, Loader, read_text
from .retrieval import DocumentRecord, Embedder, IndexStore

#: The suffixes the core reads itself; plugins add more (``register_loaders``).
SUFFIXES = tuple(BUILTIN_LOADERS)


@dataclass
class IngestReport:
    """What one ingest did; ``failed`` maps a path to why it could not be ingested,
    ``ignored`` a path left out on purpose (a symlink leading outside its folder) to why."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
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
            "ignored": dict(self.ignored),
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class FoundFiles:
    """What :func:`scan` found: the files to ingest, the paths that could not be used and
    why (``problems``), and the symlinks left out on purpose and why (``ignored``)."""

    files: list[Path] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)


def scan(
    paths: Iterable[Path], *, follow_symlinks: bool = False, suffixes: Collection[str] = SUFFIXES
) -> FoundFiles:
    """The files under ``paths`` that a loader reads (``suffixes``: default .txt / .md), each
    directory's sorted.

    A file named on its own is used as given, a symlink too. Inside a directory, a symlink
    (to a file or to a directory) whose target lies outside that directory is left out,
    and listed in ``ignored``, unless ``follow_symlinks``; symlinks that stay inside it are
    followed. Each real directory is walked once, so symlink cycles end.
    """
    found = FoundFiles()
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_walk(path, follow_symlinks, found, suffixes))
        elif path.is_file():
            if path.suffix.lower() in suffixes:
                files.append(path)
            else:
                found.problems[str(path)] = _no_loader(path, suffixes)
        else:
            found.problems[str(path)] = "no such file or directory"
    seen: dict[str, Path] = {}
    for file in files:
        if document_id(file) in seen and seen[document_id(file)].resolve() != file.resolve():
            found.problems[str(file)] = (
                f"document id {document_id(file)!r} is already taken by {seen[document_id(file)]}"
            )
        else:
            seen.setdefault(document_id(file), file)
    found.files = list(seen.values())
    return found


def _walk(root: Path, follow_symlinks: bool, found: FoundFiles, suffixes: Collection[str]) -> list[Path]:
    """The files with one of ``suffixes`` under the directory ``root``, sorted; see :func:`scan`."""
    top = root.resolve()
    visited: set[Path] = set()
    files: list[Path] = []

    def visit(directory: Path) -> None:
        real = directory.resolve()
        if real in visited:  # a symlink cycle, or a directory reached twice
            return
        visited.add(real)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            found.problems[str(directory)] = f"cannot read the directory: {exc.strerror or exc}"
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if not is_dir and not (is_file and path.suffix.lower() in suffixes):
                continue  # not ours; a dangling symlink lands here too
            if entry.is_symlink() and not follow_symlinks:
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    continue
                if not target.is_relative_to(top):
                    found.ignored[str(path)] = f"links outside {root} (pass --follow-symlinks to ingest it)"
                    continue
            if is_dir:
                visit(path)
            else:
                files.append(path)

    visit(root)
    return sorted(files)


def document_id(path: Path) -> str:
    """A file's document id: its stem in NFC (macOS and some archives write names in NFD, which
    would give ids that look the same and compare different)."""
    return unicodedata.normalize("NFC", path.stem)


def find_files(paths: Iterable[Path], *, follow_symlinks: bool = False) -> tuple[list[Path], dict[str, str]]:
    """The .txt / .md files under ``paths`` (see :func:`scan`), and paths that could not be used."""
    found = scan(paths, follow_symlinks=follow_symlinks)
    return found.files, found.problems


def stale_documents(store: IndexStore, files: Iterable[Path]) -> list[str]:
    """Ids of the documents in ``store`` whose file is not among ``files``: what
    ``ingest(..., prune=True)`` deletes."""
    keep = {document_id(f) for f in files}
    return [record.id for record in store.documents() if record.id not in keep]


#: The suffixes the lexrag-documents plugin reads, to tell a user without it what to install.
_DOCUMENT_SUFFIXES = frozenset({".pdf", ".docx", ".html", ".htm"})


def _no_loader(path: Path, installed: Collection[str]) -> str:
    suffix = path.suffix.lower()
    hint = ""
    if suffix in _DOCUMENT_SUFFIXES:
        hint = (
            "; install the lexrag-documents plugin (pip install -e plugins/documents) for PDF, DOCX and HTML"
        )
    return (
        f"no loader reads {path.suffix or 'files without a suffix'} files "
        f"(installed: {', '.join(sorted(installed))}){hint}"
    )


def load_text(path: Path, loaders: Mapping[str, Loader]) -> str:
    """The text of ``path`` from the loader of its suffix. :class:`InvalidRequestError` with a
    one-line reason when the loader cannot read it, finds no text, or fails (a plugin's bug
    is reported against the file, never raised)."""
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        raise InvalidRequestError(_no_loader(path, loaders))
    try:
        text = loader.load(path)
    except (InvalidRequestError, OSError):
        raise
    except Exception as exc:  # a loader's bug or a library's error on a broken file: name it
        detail = " ".join(str(exc).split()) or "no details"
        raise InvalidRequestError(
            f"the {path.suffix.lower()} loader failed: {type(exc).__name__}: {detail[:300]}"
        ) from exc
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError("no text found in the file")
    return text


def builtin_loaders() -> dict[str, Loader]:
    """The core's own loaders (.txt, .md), built."""
    return {suffix: cls() for suffix, cls in BUILTIN_LOADERS.items()}


ProgressCallback = Callable[[Path, str], None]
#: ``chunk_progress(path, embedded, total)``: chunks of the document being ingested embedded so far
#: (first 0 once the document is chunked, then after every :data:`EMBED_SLICE` chunks).
ChunkProgressCallback = Callable[[Path, int, int], None]
#: Chunks embedded per call when ``chunk_progress`` is asked for (a multilingual embedder takes
#: tens of seconds for a whole code: the progress bar moves within a document).
EMBED_SLICE = 256


def ingest(
    store: IndexStore,
    embedder: Embedder | None,
    paths: Sequence[Path],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    prune: bool = False,
    prune_only: Collection[str] | None = None,
    force: bool = False,
    follow_symlinks: bool = False,
    progress: ProgressCallback | None = None,
    chunk_progress: ChunkProgressCallback | None = None,
    loaders: Mapping[str, Loader] | None = None,
) -> IngestReport:
    """Ingest ``paths`` (files or directories, walked as :func:`scan` does) into ``store``.

    ``loaders`` (suffix → loader; default the core's .txt / .md ones) decide which files are
    read and how; a file its loader cannot read lands in ``failed`` with the reason.

    A document whose content hash is unchanged is skipped (unless ``force``); a changed one
    has its chunks replaced. With ``prune``, documents in the store whose file is not among
    ``paths`` any more are deleted; ``prune_only`` limits that to these ids (the ones a
    user agreed to delete). ``progress(path, outcome)`` is called after each file,
    ``chunk_progress(path, embedded, total)`` as a document's chunks are embedded.
    """
    start = time.perf_counter()
    report = IngestReport()
    loaders = builtin_loaders() if loaders is None else loaders
    found = scan(paths, follow_symlinks=follow_symlinks, suffixes=loaders.keys())
    files = found.files
    report.failed.update(found.problems)
    report.ignored.update(found.ignored)
    if embedder is not None:
        store.check_embedder(embedder.model_id, embedder.dim)
    for path in files:
        outcome = _ingest_one(store, embedder, path, max_chars, force, report, chunk_progress, loaders)
        if progress is not None:
            progress(path, outcome)
    if prune:
        for doc_id in stale_documents(store, files):
            if (prune_only is None or doc_id in prune_only) and store.delete_document(doc_id):
                report.deleted.append(doc_id)
    report.seconds = time.perf_counter() - start
    return report


def _ingest_one(
    store: IndexStore,
    embedder: Embedder | None,
    path: Path,
    max_chars: int,
    force: bool,
    report: IngestReport,
    chunk_progress: ChunkProgressCallback | None = None,
    loaders: Mapping[str, Loader] | None = None,
) -> str:
    try:
        text = read_text(path) if loaders is None else load_text(path, loaders)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        # The header, front matter and sidecar NAME.meta.toml: a changed sidecar with the
        # same text updates the document too.
        meta, text = document_meta(path, text)
        doc_id = document_id(path)
        existing = store.document(doc_id)
        if existing is not None and existing.sha256 == digest and not force:
            if existing.metadata == meta:
                report.skipped.append(doc_id)
                return "skipped"
            # Only the metadata changed (a sidecar, or an index older than metadata): no
            # chunking or embedding again.
            store.set_metadata(doc_id, meta)
            report.updated.append(doc_id)
            return "updated"
        parsed = chunk_document(doc_id, text, max_chars=max_chars)
    except InvalidRequestError as exc:
        report.failed[str(path)] = exc.message
        return "failed"
    except OSError as exc:
        report.failed[str(path)] = f"cannot read: {exc.strerror or exc}"
        return "failed"
    vectors = None
    if chunk_progress is not None:  # the document is chunked: its bar appears, at 0
        chunk_progress(path, 0, len(parsed.chunks))
    if embedder is not None:
        texts = [c.text for c in parsed.chunks]
        if chunk_progress is None:
            vectors = embedder.embed(texts)
        else:
            parts = []
            for start in range(0, len(texts), EMBED_SLICE):
                parts.append(embedder.embed(texts[start : start + EMBED_SLICE]))
                chunk_progress(path, min(start + EMBED_SLICE, len(texts)), len(texts))
            vectors = np.concatenate(parts) if parts else embedder.embed(texts)
    elif chunk_progress is not None:
        chunk_progress(path, len(parsed.chunks), len(parsed.chunks))
    record = DocumentRecord(
        parsed.doc_id, parsed.title, str(path.resolve()), digest, len(parsed.chunks), meta
    )
    store.put_document(
        record, parsed.chunks, vectors, None if embedder is None else (embedder.model_id, embedder.dim)
    )
    report.chunks += len(parsed.chunks)
    (report.updated if existing is not None else report.added).append(parsed.doc_id)
    return "updated" if existing is not None else "added"


__all__ = [
    "SUFFIXES",
    "FoundFiles",
    "IngestReport",
    "builtin_loaders",
    "document_id",
    "find_files",
    "ingest",
    "load_text",
    "read_text",
    "scan",
    "stale_documents",
]
