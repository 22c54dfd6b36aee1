"""HTML: the page's text, one line per block, read with selectolax (the Lexbor parser).

Block elements (headings, paragraphs, list items, divs, ``<br>``) end a line; a table row is
one line, its cells joined by `` | ``; an ``<ol>``'s items get the number the browser shows
(``1.``, or ``a)`` for ``type="a"``) so Khoản and Điểm keep theirs. What is not the
document's text is left out: scripts, styles, and the site's ``<nav>``, ``<header>``,
``<footer>``, ``<aside>`` and forms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lexrag import InvalidRequestError, Loader

_SKIP = frozenset(
    {"script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "button",
     "select", "iframe", "svg", "head", "-comment"}
)  # fmt: skip
_BLOCK = frozenset(
    {"p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol",
     "table", "thead", "tbody", "tfoot", "caption", "blockquote", "pre", "dl", "dt", "dd", "hr",
     "center", "figure", "figcaption", "address", "body", "html"}
)  # fmt: skip


def _ol_label(kind: str, n: int) -> str:
    if kind == "a":
        return f"{chr(ord('a') + (n - 1) % 26)})"
    if kind == "A":
        return f"{chr(ord('A') + (n - 1) % 26)})"
    return f"{n}."


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []

    def add(self, text: str) -> None:
        self.current.append(text)

    def end_line(self) -> None:
        line = " ".join("".join(self.current).split())
        if line:
            self.lines.append(line)
        self.current = []

    def walk(self, node: Any) -> None:
        counter = 0
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self.add(child.text_content or "")
            elif tag in _SKIP:
                continue
            elif tag == "br":
                self.end_line()
            elif tag == "tr":
                self.end_line()
                cells = [
                    " ".join(cell.text(deep=True, separator=" ").split())
                    for cell in child.iter()
                    if cell.tag in ("td", "th")
                ]
                self.add(" | ".join(c for c in cells if c))
                self.end_line()
            elif tag in _BLOCK:
                self.end_line()
                if tag == "li" and node.tag == "ol":
                    counter += 1
                    start = node.attributes.get("start") or "1"
                    number = (int(start) if start.isdigit() else 1) + counter - 1
                    self.add(_ol_label(node.attributes.get("type") or "1", number) + " ")
                self.walk(child)
                self.end_line()
            else:
                self.walk(child)


class HtmlLoader(Loader):
    """The text of an HTML page, one line per block, site chrome left out."""

    def load(self, path: Path) -> str:
        from selectolax.lexbor import LexborHTMLParser

        data = path.read_bytes()
        try:
            markup = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            markup = data.decode("cp1258", errors="replace")  # the old Vietnamese Windows code page
        tree = LexborHTMLParser(markup)
        root = tree.body
        if root is None:
            raise InvalidRequestError("no <body> in the HTML page")
        text = _Text()
        text.walk(root)
        text.end_line()
        return "\n".join(text.lines) + "\n"


__all__ = ["HtmlLoader"]
