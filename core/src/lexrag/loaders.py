"""The loader contract: a file → the plain text the legal chunker reads.

The core's own loaders read ``.txt`` and ``.md``; plugins add others (PDF, DOCX, HTML)
through the ``register_loaders`` hook, one class per file suffix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from .errors import InvalidRequestError
from .types import NoSettings


class Loader(ABC):
    """Turns one file into text for :func:`lexrag.chunking.chunk_document`.

    The text must keep the structure the chunker reads: every heading (``Phần``, ``Chương``,
    ``Mục``, ``Điều 7. Tên điều``) on a line of its own, each Khoản (``1.``) and Điểm
    (``a)``) starting a line with its number, a table as one line per row; and leave out
    what is not the document's text (running headers and footers, page numbers, navigation).

    ``load`` raises :class:`lexrag.InvalidRequestError` with a one-line reason (``no text
    layer (scanned?); OCR is not supported``) when the file cannot give its text; the
    ingest reports that file with the reason and goes on with the others. A loader is built
    as ``cls()`` once per ingest and may be called from one thread at a time.
    """

    Settings: ClassVar[type[BaseModel]] = NoSettings

    @abstractmethod
    def load(self, path: Path) -> str:
        """The file's text (non-empty), structure kept as described above."""


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


class TextLoader(Loader):
    """``.txt`` and ``.md``: UTF-8 text, read as it is (Markdown headings are the chunker's)."""

    def load(self, path: Path) -> str:
        return read_text(path)


#: The loaders the core registers itself, by suffix.
BUILTIN_LOADERS: dict[str, type[Loader]] = {".txt": TextLoader, ".md": TextLoader}


__all__ = ["BUILTIN_LOADERS", "Loader", "TextLoader", "read_text"]
