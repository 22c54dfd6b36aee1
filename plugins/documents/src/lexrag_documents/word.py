"""DOCX: the body's paragraphs and tables in document order, read with python-docx.

Each paragraph is a line (headings included, whatever their style); a table is one line per
row, its cells joined by `` | `` (a merged cell, which Word repeats in every row or column it
spans, once). Word's automatic numbering, which legal drafts use for Khoản and Điểm, is not
in a paragraph's text: it is rebuilt from the numbering definitions (``1.``, ``a)``, ``I.``),
so the chunker still sees each Khoản start with its number. Running headers and footers
live outside the body and are never read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lexrag import InvalidRequestError, Loader

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _roman(n: int) -> str:
    out = ""
    for value, digits in (
        (1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
        (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i"),
    ):  # fmt: skip
        while n >= value:
            out, n = out + digits, n - value
    return out


def _letter(n: int) -> str:
    return chr(ord("a") + (n - 1) % 26) * ((n - 1) // 26 + 1)


_FORMATS: dict[str, Callable[[int], str]] = {
    "decimal": str,
    "lowerLetter": _letter,
    "upperLetter": lambda n: _letter(n).upper(),
    "lowerRoman": _roman,
    "upperRoman": lambda n: _roman(n).upper(),
}


class _Numbering:
    """Word's list numbering: the label each numbered paragraph shows, counted in order."""

    def __init__(self, document: Any) -> None:
        self.levels: dict[str, dict[int, tuple[str, str, int]]] = {}
        self.counters: dict[str, list[int]] = {}
        # Numbering a paragraph style carries (Word's "List Number"), by style id: read once,
        # as python-docx resolves a paragraph's style slowly.
        self.by_style: dict[str, tuple[str | None, int]] = {}
        for style in document.styles.element.iter(f"{_W}style"):
            ppr = style.find(f"{_W}pPr")
            found = self._parse(ppr.find(f"{_W}numPr")) if ppr is not None else None
            if found is not None:
                self.by_style[style.get(f"{_W}styleId", "")] = found
        try:
            root = document.part.numbering_part.element
        except (KeyError, NotImplementedError, AttributeError):
            return
        abstract: dict[str, dict[int, tuple[str, str, int]]] = {}
        for node in root.iter(f"{_W}abstractNum"):
            levels = {}
            for lvl in node.iter(f"{_W}lvl"):
                fmt = lvl.find(f"{_W}numFmt")
                text = lvl.find(f"{_W}lvlText")
                start = lvl.find(f"{_W}start")
                levels[int(lvl.get(f"{_W}ilvl", "0"))] = (
                    fmt.get(f"{_W}val", "decimal") if fmt is not None else "decimal",
                    text.get(f"{_W}val", "") if text is not None else "",
                    int(start.get(f"{_W}val", "1")) if start is not None else 1,
                )
            abstract[node.get(f"{_W}abstractNumId", "")] = levels
        for num in root.iter(f"{_W}num"):
            ref = num.find(f"{_W}abstractNumId")
            if ref is not None:
                self.levels[num.get(f"{_W}numId", "")] = abstract.get(ref.get(f"{_W}val", ""), {})

    def label(self, paragraph: Any) -> str:
        """The number Word shows before ``paragraph`` (``"2."``, ``"b)"``), or ``""``."""
        num_id, level = self._num_pr(paragraph)
        levels = self.levels.get(num_id or "")
        if not levels or level not in levels:
            return ""
        fmt, text, start = levels[level]
        if fmt not in _FORMATS:  # bullets and formats with no text equivalent
            return ""
        counters = self.counters.setdefault(num_id or "", [0] * 9)
        counters[level] = counters[level] + 1 if counters[level] else start
        for deeper in range(level + 1, len(counters)):
            counters[deeper] = 0
        for k in range(level + 1):
            fmt_k, _, start_k = levels.get(k, ("decimal", "", 1))
            value = counters[k] or start_k
            text = text.replace(f"%{k + 1}", _FORMATS.get(fmt_k, str)(value))
        return text

    def _num_pr(self, paragraph: Any) -> tuple[str | None, int]:
        ppr = paragraph._p.pPr
        direct = self._parse(ppr.find(f"{_W}numPr")) if ppr is not None else None
        if direct is not None:
            return direct
        return self.by_style.get(paragraph._p.style or "", (None, 0))

    @staticmethod
    def _parse(num_pr: Any) -> tuple[str | None, int] | None:
        num_id = num_pr.find(f"{_W}numId") if num_pr is not None else None
        if num_id is None:
            return None
        ilvl = num_pr.find(f"{_W}ilvl")
        return num_id.get(f"{_W}val"), int(ilvl.get(f"{_W}val", "0")) if ilvl is not None else 0


def _blocks(body: Any) -> Iterator[Any]:
    """The body's paragraphs and tables in order, content controls opened."""
    for child in body.iterchildren():
        if child.tag in (f"{_W}p", f"{_W}tbl"):
            yield child
        elif child.tag == f"{_W}sdt":
            content = child.find(f"{_W}sdtContent")
            if content is not None:
                yield from _blocks(content)


def _row_text(row: Any) -> str:
    cells: list[str] = []
    for cell in row.cells:
        text = " ".join(cell.text.split())
        if text and (not cells or cells[-1] != text):
            cells.append(text)
    return " | ".join(cells)


class DocxLoader(Loader):
    """Paragraphs and table rows of a .docx body, list numbers restored."""

    def load(self, path: Path) -> str:
        import docx
        from docx.opc.exceptions import PackageNotFoundError
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        try:
            document = docx.Document(str(path))
        except (PackageNotFoundError, KeyError, ValueError) as exc:
            raise InvalidRequestError(f"not a readable DOCX file ({exc})") from None
        except Exception as exc:  # a zip that is not a Word document: lxml, zipfile errors
            raise InvalidRequestError(f"not a readable DOCX file ({type(exc).__name__}: {exc})") from None
        numbering = _Numbering(document)
        lines: list[str] = []
        for block in _blocks(document.element.body):
            if block.tag == f"{_W}tbl":
                lines.extend(text for row in Table(block, document).rows if (text := _row_text(row)))
                continue
            paragraph = Paragraph(block, document)
            text = " ".join(paragraph.text.split())
            label = numbering.label(paragraph)
            if text:
                lines.append(f"{label} {text}" if label else text)
        return "\n".join(lines) + "\n"


__all__ = ["DocxLoader"]
