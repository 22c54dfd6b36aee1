"""Real PDF, DOCX and HTML files written from a plain legal text, for the loader tests and
``bench/bench_ingest_formats.py``.

Each writer lays the text out the way such documents come: headings (Phần, Chương, Mục, Điều)
as headings, every other line as a paragraph, an optional table, and, in the PDF, a running
header and a "Trang N/M" footer on every page that a loader must drop. Only the tests and the
benchmark import this module; the writers (fpdf2, python-docx) are in requirements/dev.txt.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

HEADING = re.compile(
    r"^(?:(?i:phần|chương|tiểu mục|mục)\s+(?:(?i:thứ)\s|[IVXLCDM]+\b|\d+\b)|(?i:điều)\s+\d+\s*(?:[.:]|$))"
)
ARTICLE = re.compile(r"^điều\s+\d+\s*[.:]", re.IGNORECASE)
#: Where fonts with Vietnamese glyphs are looked for (Debian's fonts-dejavu-core first).
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))

Table = Sequence[Sequence[str]]


def font_path(bold: bool = False) -> Path | None:
    """DejaVuSans (bold), which has every Vietnamese glyph, or None where it is not installed."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    candidates = [d / name for d in FONT_DIRS]
    try:
        import matplotlib

        candidates.append(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / name)
    except ImportError:
        pass
    return next((p for p in candidates if p.is_file()), None)


def first_articles(text: str, n: int) -> str:
    """``text`` up to (not including) its ``n + 1``-th article heading: a short real slice."""
    seen = 0
    out: list[str] = []
    for line in text.splitlines():
        if ARTICLE.match(line.strip()):
            seen += 1
            if seen > n:
                break
        out.append(line)
    return "\n".join(out) + "\n"


def _blocks(text: str, table_after: str | None, table: Table | None) -> list[tuple[str, object]]:
    """("heading" | "para" | "table", content) in order; the table follows the first line
    that starts with ``table_after``."""
    blocks: list[tuple[str, object]] = []
    placed = False
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        blocks.append(("heading" if HEADING.match(line) else "para", line))
        if table is not None and not placed and table_after and line.startswith(table_after):
            blocks.append(("table", table))
            placed = True
    return blocks


def write_docx(text: str, path: Path, *, table_after: str | None = None, table: Table | None = None) -> Path:
    """A DOCX: headings as Heading 2/3 paragraphs, other lines as paragraphs, the table as a
    Word table, a running header and footer (which a loader never sees in the body)."""
    import docx

    document = docx.Document()
    section = document.sections[0]
    section.header.paragraphs[0].text = "CÔNG BÁO — văn bản hợp nhất"
    section.footer.paragraphs[0].text = "Trang"
    for kind, content in _blocks(text, table_after, table):
        if kind == "heading":
            assert isinstance(content, str)
            level = 3 if content.lower().startswith("điều") else 2
            document.add_heading(content, level=level)
        elif kind == "para":
            assert isinstance(content, str)
            document.add_paragraph(content)
        else:
            rows = list(content)  # type: ignore[call-overload]
            grid = document.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    grid.cell(r, c).text = cell
    document.save(str(path))
    return path


def write_html(text: str, path: Path, *, table_after: str | None = None, table: Table | None = None) -> Path:
    """An HTML page as an online legal database serves one: a nav bar, a header and a footer
    around the text, headings as <h2>/<h3>, paragraphs as <p>, the table as <table>."""
    parts = [
        "<!DOCTYPE html><html lang='vi'><head><meta charset='utf-8'><title>Văn bản</title>",
        "<style>p { margin: 0 }</style><script>var tracking = 'Điều 999. Không phải điều';</script>",
        "</head><body><nav><a href='/'>Trang chủ</a> | <a href='/vb'>Văn bản</a></nav>",
        "<header>Cơ sở dữ liệu văn bản pháp luật</header><main>",
    ]
    for kind, content in _blocks(text, table_after, table):
        if kind == "heading":
            assert isinstance(content, str)
            tag = "h3" if content.lower().startswith("điều") else "h2"
            parts.append(f"<{tag}>{html.escape(content)}</{tag}>")
        elif kind == "para":
            assert isinstance(content, str)
            parts.append(f"<p>{html.escape(content)}</p>")
        else:
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in content  # type: ignore[attr-defined]
            )
            parts.append(f"<table><tbody>{rows}</tbody></table>")
    parts.append("</main><footer>© Cơ sở dữ liệu — Trang 1</footer></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_pdf(
    text: str,
    path: Path,
    *,
    table_after: str | None = None,
    table: Table | None = None,
    running_header: str = "CÔNG BÁO/Số 01 + 02/Ngày 01-01-2020",
    align: str = "J",
    indent: str = "    ",
) -> Path:
    """A PDF with a real text layer (fpdf2, DejaVuSans embedded): wrapped paragraphs
    (justified, or ``align="L"`` ragged-right) with a first-line ``indent``, bold headings,
    the table as a grid, and a running header and a ``Trang N/M`` footer on every page."""
    from fpdf import FPDF

    regular, bold = font_path(), font_path(bold=True)
    if regular is None or bold is None:
        raise FileNotFoundError("no DejaVuSans font found (apt-get install fonts-dejavu-core)")

    class _Gazette(FPDF):
        def header(self) -> None:
            self.set_font("dejavu", size=8)
            self.cell(0, 5, running_header, align="C")
            self.ln(8)

        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("dejavu", size=8)
            self.cell(0, 5, f"Trang {self.page_no()}/{{nb}}", align="C")

    pdf = _Gazette(format="A4")
    pdf.add_font("dejavu", "", str(regular))
    pdf.add_font("dejavu", "B", str(bold))
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    for kind, content in _blocks(text, table_after, table):
        if kind == "table":
            pdf.set_font("dejavu", size=9)
            with pdf.table() as grid:
                for row in content:  # type: ignore[attr-defined]
                    cells = grid.row()
                    for cell in row:
                        cells.cell(cell)
            pdf.ln(2)
            continue
        assert isinstance(content, str)
        if kind == "heading":
            pdf.set_font("dejavu", "B", size=10)
            pdf.multi_cell(0, 5, content, new_x="LMARGIN", new_y="NEXT")
        else:
            pdf.set_font("dejavu", size=10)
            pdf.multi_cell(0, 5, indent + content, align=align, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def write_scanned_pdf(path: Path) -> Path:
    """A PDF as a scanner makes one: pages that hold only drawings (here, filled shapes
    standing in for the page image), no text layer."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    for _ in range(2):
        pdf.add_page()
        pdf.set_fill_color(40, 40, 40)
        for y in range(30, 250, 8):
            pdf.rect(20, y, 170, 4, style="F")
    pdf.output(str(path))
    return path


__all__ = [
    "first_articles",
    "font_path",
    "write_docx",
    "write_html",
    "write_pdf",
    "write_scanned_pdf",
]
