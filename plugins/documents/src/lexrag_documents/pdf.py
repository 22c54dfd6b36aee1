"""PDF: the text layer, read with pypdfium2 (PDFium), paragraphs rebuilt from the layout.

A PDF has no paragraphs, only lines placed on a page: a paragraph wraps wherever the line
was full. Read line by line, a wrapped line that happens to start with "Điều 5." or "2."
would look like a heading or a Khoản to the chunker, and a heading whose title wraps would
lose its end. So the lines are joined back into paragraphs from their geometry: a line
continues the one before it when that one ended because the next word did not fit (the
classic reflow rule, good for justified and ragged text alike), unless the gap between them
is a paragraph gap, the new line is indented (a first-line indent, a centred heading), the
font changes between them (a bold heading), or the new line starts a heading or a numbered
Khoản/Điểm after a line that closed a sentence or an all-capitals title.

Running headers and footers are the top or bottom lines that repeat (numbers aside) on at
least half of the pages; a bare page number ("12", "Trang 3/49", "- 4 -") at the top or
bottom of a page goes too. A PDF whose pages hold no text at all is a scan: it is refused
with that reason (no OCR here), never ingested empty.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lexrag import InvalidRequestError, Loader

NO_TEXT_LAYER = "no text layer (scanned?); OCR is not supported"

_LINE = re.compile(r"[^\r\n]+")
_PAGE_NUMBER = re.compile(
    r"^(?:trang|page|tr\.)?\s*[-–—]?\s*\d+\s*[-–—]?\s*(?:(?:/|of|trên)\s*\d+)?$", re.IGNORECASE
)
# What starts a paragraph in a legal text: a heading as the chunker reads one ("Chương IV",
# "Điều 5."; not "điều kiện", not "Điều 5 của Bộ luật"), a Khoản ("2."), a Điểm ("b)", "đ)").
_STRUCTURE = re.compile(
    r"^(?:(?i:phần|chương|tiểu mục|mục)\s+(?:(?i:thứ)\s|[IVXLCDM]+\b|\d+\b)"
    r"|(?i:điều)\s+\d+\s*(?:[.:]|$)|\d+\s*[.)]\s|[a-zđ]\)\s|[-–—•]\s)"
)
_CLOSES = re.compile(r"[.:;!?…)\]”\"]$")
#: Top and bottom lines of a page that may be a running header or footer.
_EDGE_LINES = 2
#: A paragraph gap: more than this many times the usual line pitch.
_GAP = 1.6


@dataclass
class _Line:
    text: str
    page: int
    x0: float
    x1: float
    top: float
    first_word: float
    """Width of the first word: a full line is one whose end has no room for the next's."""
    fonts: tuple[str, str]
    """Font of the first and of the last character (a bold heading, a regular body)."""


def _font(textpage: Any, index: int) -> str:
    """The font name of one character, without a subset's ``ABCDEF+`` prefix."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    flags = ctypes.c_int()
    buffer = ctypes.create_string_buffer(128)
    size = pdfium_c.FPDFText_GetFontInfo(textpage.raw, index, buffer, len(buffer), ctypes.byref(flags))
    if size > len(buffer):
        buffer = ctypes.create_string_buffer(size)
        pdfium_c.FPDFText_GetFontInfo(textpage.raw, index, buffer, size, ctypes.byref(flags))
    return str(buffer.value.decode("latin-1")).rpartition("+")[2]


def _page_lines(textpage: Any, page: int) -> list[_Line]:
    text: str = textpage.get_text_range()
    lines = []
    for m in _LINE.finditer(text):
        raw = m.group()
        stripped = raw.strip()
        if not stripped:
            continue
        first = m.start() + (len(raw) - len(raw.lstrip()))
        last = m.start() + len(raw.rstrip()) - 1
        word_end = first + (len(stripped.split()[0]) - 1)
        left, _, _, top = textpage.get_charbox(first)
        right = textpage.get_charbox(last)[2]
        word_right = textpage.get_charbox(word_end)[2]
        fonts = (_font(textpage, first), _font(textpage, last))
        lines.append(
            _Line(" ".join(stripped.split()), page, left, right, top, max(0.0, word_right - left), fonts)
        )
    return lines


def _edge_key(line: _Line) -> str:
    return re.sub(r"\d+", "#", line.text.lower())


def _drop_running_lines(pages: list[list[_Line]]) -> list[list[_Line]]:
    """The pages without their running headers, footers and page numbers."""
    edges = []
    for lines in pages:
        by_height = sorted(lines, key=lambda line: -line.top)
        edges.append(by_height[:_EDGE_LINES] + by_height[-_EDGE_LINES:])
    counts: dict[str, int] = {}
    for edge in edges:
        for key in {_edge_key(line) for line in edge}:
            counts[key] = counts.get(key, 0) + 1
    pages_with_text = sum(1 for lines in pages if lines)
    repeated = {key for key, n in counts.items() if n >= max(2, math.ceil(pages_with_text / 2))}
    out = []
    for lines, edge in zip(pages, edges, strict=True):
        drop = {id(line) for line in edge if _edge_key(line) in repeated or _PAGE_NUMBER.match(line.text)}
        out.append([line for line in lines if id(line) not in drop])
    return out


def _reflow(pages: list[list[_Line]]) -> list[str]:
    """Paragraphs, each on one line, from the lines of all pages."""
    rights = [max(line.x1 for line in lines) for lines in pages if lines]
    usual_right = statistics.median(rights) if rights else 0.0
    pitches = [
        a.top - b.top for lines in pages for a, b in itertools.pairwise(lines) if 0 < a.top - b.top < 100
    ]
    pitch = statistics.median(pitches) if pitches else 12.0
    space = pitch * 0.3
    lefts = [round(line.x0) for lines in pages for line in lines]
    left = statistics.mode(lefts) if lefts else 0.0  # where wrapped lines start
    paragraphs: list[str] = []
    prev: _Line | None = None
    for lines in pages:
        right = max((line.x1 for line in lines), default=usual_right)
        if right < 0.8 * usual_right:  # a short last page: its lines do not show the margin
            right = usual_right
        for line in lines:
            if prev is not None and paragraphs and _continues(prev, line, left, right, pitch, space):
                paragraphs[-1] += " " + line.text
            else:
                paragraphs.append(line.text)
            prev = line
    return paragraphs


def _continues(prev: _Line, line: _Line, left: float, right: float, pitch: float, space: float) -> bool:
    """Whether ``line`` is the wrapped continuation of the paragraph that ``prev`` ends."""
    if prev.page == line.page and not 0 < prev.top - line.top <= _GAP * pitch:
        return False  # a paragraph gap, or a line beside or above (a table cell, a column)
    if right - prev.x1 > line.first_word + 2 * space:
        # The next word would have fitted: the paragraph ended there. Two spaces of slack, as
        # writers wrap a little early (cell margins, kerning).
        return False
    if line.x0 > left + space:
        return False  # a first-line indent (or a centred line): wrapped lines start at the margin
    if line.fonts[0] != prev.fonts[1]:
        return False  # another font: a bold heading begins or ends
    return not (_STRUCTURE.match(line.text) and (_CLOSES.search(prev.text) or _is_upper(prev.text)))


def _is_upper(text: str) -> bool:
    """A line ending in capitals: a heading's title ("Chương I. NHỮNG QUY ĐỊNH CHUNG"),
    which no sentence continues."""
    letters = [c for c in "".join(text.split()[-2:]) if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


class PdfLoader(Loader):
    """The text layer of a PDF (pypdfium2), as paragraphs; a scan without one is refused."""

    def load(self, path: Path) -> str:
        import pypdfium2 as pdfium

        try:
            document = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            reason = str(exc)
            if "password" in reason.lower():
                raise InvalidRequestError("the PDF is encrypted (a password is needed)") from None
            raise InvalidRequestError(f"not a readable PDF ({reason})") from None
        try:
            pages = []
            for index in range(len(document)):
                page = document[index]
                textpage = page.get_textpage()
                try:
                    pages.append(_page_lines(textpage, index))
                finally:
                    textpage.close()
                    page.close()
        finally:
            document.close()
        if not any(pages):
            raise InvalidRequestError(NO_TEXT_LAYER)
        return "\n".join(_reflow(_drop_running_lines(pages))) + "\n"


__all__ = ["NO_TEXT_LAYER", "PdfLoader"]
