"""The legal-structure chunker: Phần / Chương / Mục / Tiểu mục / Điều / Khoản / Điểm.

A document is read line by line. Structural headings are recognised in plain text
(``Chương I``, ``Chương I:NHỮNG QUY ĐỊNH CHUNG``, ``Điều 7. Tên điều``) and in Markdown
(``## Chương I. …``, ``### Điều 7. …``, ``**Điều 7.**``). Every chunk holds text of exactly one
Điều and begins with that article's heading, so it stands alone; an article longer than
``max_chars`` is split at Khoản boundaries (at Điểm or line boundaries only when one Khoản
alone is too long).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import DocumentStructureError
from .retrieval import Chunk, Citation
from .vntext import normalize

DEFAULT_MAX_CHARS = 1500

# Markdown decoration that may wrap a heading: leading #'s, bold/italic markers, quote marks.
_DECOR = re.compile(r"^[\s#>*_]+|[\s*_]+$")
_NUM = r"(?P<num>thứ\s+[^\s:.\-–—]+|[IVXLCDM]+|\d+)"
_SEP = r"(?:\s*[:.\-–—]\s*|\s+|$)"
_PART = re.compile(rf"^phần\s+{_NUM}{_SEP}(?P<title>.*)$", re.IGNORECASE)
_CHAPTER = re.compile(rf"^chương\s+{_NUM}{_SEP}(?P<title>.*)$", re.IGNORECASE)
_SUBSECTION = re.compile(rf"^tiểu\s+mục\s+{_NUM}{_SEP}(?P<title>.*)$", re.IGNORECASE)
_SECTION = re.compile(rf"^mục\s+{_NUM}{_SEP}(?P<title>.*)$", re.IGNORECASE)
# An article heading needs its number followed by '.', ':' or the end of the line, so that a
# sentence such as "Điều 274 của Bộ luật này …" is never taken for one.
_ARTICLE = re.compile(r"^điều\s+(?P<num>\d+)\s*(?:[.:]\s*(?P<title>.*))?$", re.IGNORECASE)
_CLAUSE = re.compile(r"^(?P<num>\d+)\s*[.)]\s")
_TITLE_LINE = re.compile(
    r"^(bộ\s+luật|luật|hiến\s+pháp|pháp\s+lệnh|nghị\s+(định|quyết)|thông\s+tư|quyết\s+định)\b", re.I
)
_ENACTS = re.compile(r"ban hành\s+(?P<title>(?:Bộ luật|Luật|Pháp lệnh)\s[^.;,\n]+)")


@dataclass
class _Article:
    number: int
    title: str | None
    heading: str
    part: str | None
    chapter: str | None
    section: str | None
    body: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedDocument:
    """A chunked document: its id (the file stem), its title and its chunks in order."""

    doc_id: str
    title: str
    chunks: list[Chunk]


def _strip_decor(line: str) -> str:
    return _DECOR.sub("", line)


def _is_upper_title(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def _heading_label(word: str, match: re.Match[str], next_line: str | None) -> tuple[str, bool]:
    """``"Chương I. NHỮNG QUY ĐỊNH CHUNG"`` from a heading match; True when the title was
    taken from the next line (``Chương I`` / ``NHỮNG QUY ĐỊNH CHUNG`` layouts)."""
    num = " ".join(match.group("num").split())
    title = match.group("title").strip()
    used_next = False
    if not title and next_line and _is_upper_title(next_line):
        title, used_next = next_line.strip(), True
    label = f"{word} {num}"
    return (f"{label}. {title}" if title else label), used_next


def _sentence_case(title: str) -> str:
    title = " ".join(title.split())
    return title[:1].upper() + title[1:].lower() if _is_upper_title(title) else title


def document_title(lines: list[str], fallback: str) -> str:
    """The act's name: ``Quốc hội ban hành Bộ luật Lao động`` if the preamble says so,
    else the first heading-like line (``BỘ LUẬT`` / ``LAO ĐỘNG`` joined), else ``fallback``."""
    for line in lines:
        found = _ENACTS.search(line)
        if found:
            return " ".join(found.group("title").split())
    for i, line in enumerate(lines):
        text = _strip_decor(line)
        if _TITLE_LINE.match(text) and _is_upper_title(text):
            parts = [text]
            for extra in lines[i + 1 : i + 3]:
                extra = _strip_decor(extra)
                if extra and _is_upper_title(extra) and not _TITLE_LINE.match(extra):
                    parts.append(extra)
                else:
                    break
            return _sentence_case(" ".join(parts))
    return fallback


def _parse(lines: list[str]) -> tuple[list[_Article], int]:
    """Articles in order, and the index of the first structural line (end of the preamble)."""
    articles: list[_Article] = []
    part: str | None = None
    chapter: str | None = None
    section: str | None = None
    subsection: str | None = None
    first_structure = len(lines)
    i = 0
    while i < len(lines):
        text = _strip_decor(lines[i])
        nxt = _strip_decor(lines[i + 1]) if i + 1 < len(lines) else None
        matched = True
        if m := _ARTICLE.match(text):
            title = (m.group("title") or "").strip() or None
            heading = f"Điều {int(m.group('num'))}." + (f" {title}" if title else "")
            sec = f"{section}, {subsection}" if section and subsection else (subsection or section)
            articles.append(_Article(int(m.group("num")), title, heading, part, chapter, sec))
        elif m := _PART.match(text):
            part, used = _heading_label("Phần", m, nxt)
            chapter = section = subsection = None
            i += used
        elif m := _CHAPTER.match(text):
            chapter, used = _heading_label("Chương", m, nxt)
            section = subsection = None
            i += used
        elif m := _SUBSECTION.match(text):
            subsection, used = _heading_label("Tiểu mục", m, nxt)
            i += used
        elif (m := _SECTION.match(text)) and (m.group("title") == "" or _is_upper_title(m.group("title"))):
            section, used = _heading_label("Mục", m, nxt)
            subsection = None
            i += used
        else:
            matched = False
            if articles:
                articles[-1].body.append(lines[i])
        if matched:
            first_structure = min(first_structure, i)
        i += 1
    return articles, first_structure


def _units(body: list[str]) -> list[tuple[int | None, str]]:
    """The article body as (khoản number or None, text) units: the lead-in, then each khoản
    with its điểm."""
    units: list[tuple[int | None, list[str]]] = []
    for line in body:
        m = _CLAUSE.match(line.strip())
        if m or not units:
            units.append((int(m.group("num")) if m else None, [line]))
        else:
            units[-1][1].append(line)
    return [(num, "\n".join(text).strip("\n")) for num, text in units if "\n".join(text).strip()]


def _split_long(text: str, limit: int) -> list[str]:
    """A single over-long khoản, split at line (so điểm) boundaries, then between words."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) <= limit or not current:
            current = candidate
        else:
            pieces.append(current)
            current = line
    pieces.append(current)
    out: list[str] = []
    for piece in pieces:
        while len(piece) > limit:
            cut = piece.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            out.append(piece[:cut].rstrip())
            piece = piece[cut:].lstrip()
        out.append(piece)
    return [p for p in out if p.strip()]


def _pieces(article: _Article, max_chars: int) -> list[tuple[tuple[int, ...], str]]:
    """(khoản numbers, body text) pieces of one article, each within ``max_chars`` with its heading."""
    units = _units(article.body)
    whole = "\n".join(text for _, text in units)
    budget = max(200, max_chars - len(article.heading) - 1)
    if len(whole) <= budget:
        return [((), whole)]
    pieces: list[tuple[list[int], str]] = []
    for num, text in units:
        parts = [text] if len(text) <= budget else _split_long(text, budget)
        for part in parts:
            if pieces and len(pieces[-1][1]) + 1 + len(part) <= budget:
                nums, prev = pieces[-1]
                if num is not None and num not in nums:
                    nums.append(num)
                pieces[-1] = (nums, f"{prev}\n{part}")
            else:
                pieces.append(([num] if num is not None else [], part))
    return [(tuple(nums), text) for nums, text in pieces]


def chunk_document(doc_id: str, text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> ParsedDocument:
    """Chunks of ``text``: one per article, or per group of Khoản for a long article.

    Raises :class:`DocumentStructureError` when the text holds no Điều heading.
    """
    lines = normalize(text).split("\n")
    articles, first = _parse(lines)
    if not articles:
        raise DocumentStructureError(
            f"{doc_id}: no article headings (lines like 'Điều 1. …') found; "
            "lexrag ingests legal texts structured in Điều"
        )
    title = document_title(lines[:first], fallback=doc_id)
    chunks: list[Chunk] = []
    for article in articles:
        for clauses, body in _pieces(article, max_chars):
            citation = Citation(
                doc=doc_id,
                doc_title=title,
                part=article.part,
                chapter=article.chapter,
                section=article.section,
                article=article.number,
                article_title=article.title,
                clauses=clauses,
            )
            chunk_text = f"{article.heading}\n{body}" if body else article.heading
            chunks.append(Chunk(id=f"{doc_id}:{len(chunks)}", citation=citation, text=chunk_text))
    return ParsedDocument(doc_id=doc_id, title=title, chunks=chunks)


__all__ = ["DEFAULT_MAX_CHARS", "ParsedDocument", "chunk_document"]
