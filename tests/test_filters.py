"""Answers from the law in force (issue 15): two versions of the Labour Code (2012, in force
2013-2020; 2019, in force from 2021) where the retirement age changed, and an amending law.
Retrieval is the real BM25 retriever over a real index; the answers come from the extractive
provider, through the pipeline, the real server with the openai SDK, and the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from lexrag.config import load_config
from lexrag.errors import ConfigError
from lexrag.ingest import ingest
from lexrag.pipeline import Pipeline
from lexrag.registry import Registry, check_config
from lexrag.store import Store
from lexrag.types import ChatCompletionRequest, RetrievalFilters

from .conftest import run_cli
from .fixtures_browser import chromium_page
from .metadata_docs import write_versions

QUESTION = "Tuổi nghỉ hưu của người lao động nam, nữ là bao nhiêu?"


@pytest.fixture
def versions_index(tmp_path: Path) -> Path:
    """An index of the two versions and the amending law (no vectors: BM25 reads the text)."""
    folder = write_versions(tmp_path / "docs", amending=True)
    store = Store.open(tmp_path / "index", create=True)
    try:
        assert len(ingest(store, None, [folder]).added) == 3
    finally:
        store.close()
    return tmp_path / "index"


def _config_text(index: Path, extra: str = "") -> str:
    return f'[index]\ndir = "{index}"\n[retrieval]\nretriever = "bm25"\ntop_k = 2\n{extra}'


def _pipeline(tmp_path: Path, index: Path, registry: Registry, extra: str = "") -> Pipeline:
    path = tmp_path / "lexrag.toml"
    path.write_text(_config_text(index, extra), encoding="utf-8")
    return Pipeline(check_config(load_config(path, env={}), registry), registry)


def _ask(pipeline: Pipeline, filters: dict[str, object] | None = None, question: str = QUESTION):  # type: ignore[no-untyped-def]
    request = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": question}], **({"filters": filters} if filters else {})}
    )

    async def run():  # type: ignore[no-untyped-def]
        try:
            return await pipeline.chat(request)
        finally:
            await pipeline.aclose()

    return asyncio.run(run())


def test_the_version_in_force_on_the_day_answers(
    tmp_path: Path, versions_index: Path, registry: Registry
) -> None:
    old = _ask(_pipeline(tmp_path, versions_index, registry), {"as_of": "2019-01-01"})
    assert old.sources and {s.doc for s in old.sources} == {"bo-luat-lao-dong-2012"}
    assert "nam đủ 60 tuổi, nữ đủ 55 tuổi" in old.text
    assert old.sources[0].status == "con-hieu-luc"  # on 2019-01-01
    assert old.sources[0].meta is not None and old.sources[0].meta.so_hieu == "10/2012/QH13"

    for filters in (None, {"as_of": "2024-01-01"}, {"in_force": True}):
        new = _ask(_pipeline(tmp_path, versions_index, registry), filters)
        assert new.sources and "bo-luat-lao-dong-2012" not in {s.doc for s in new.sources}, filters
        assert "62 tuổi đối với lao động nam" in new.text, filters
        assert new.notice is None

    everything = _ask(_pipeline(tmp_path, versions_index, registry), {"in_force": False})
    by_doc = {s.doc: s.status for s in (everything.sources or [])}
    assert by_doc.get("bo-luat-lao-dong-2012") == "het-hieu-luc"


def test_only_expired_documents_matching_is_said(
    tmp_path: Path, versions_index: Path, registry: Registry
) -> None:
    reply = _ask(_pipeline(tmp_path, versions_index, registry), {"doc": ["10/2012/QH13"]})
    assert reply.sources == []
    assert reply.notice is not None
    assert "10/2012/QH13" in reply.notice and "hết hiệu lực từ 01/01/2021" in reply.notice
    assert reply.text.startswith("Lưu ý: " + reply.notice)  # the extractive answer says it first

    # Before either code took effect: nothing is in force, and the notice says why.
    early = _ask(_pipeline(tmp_path, versions_index, registry), {"as_of": "2010-01-01"})
    assert early.sources == [] and early.notice is not None
    assert "10/2012/QH13): chưa có hiệu lực (từ 01/05/2013)" in early.notice


def test_a_replacing_code_ends_the_old_one_without_sidecars(tmp_path: Path, registry: Registry) -> None:
    """The 2019 code's last article ends the 2012 one: no sidecar is needed for the default
    search to leave the old one out, or for an as_of search to use it."""
    folder = write_versions(tmp_path / "docs", sidecars=False)
    store = Store.open(tmp_path / "index", create=True)
    try:
        ingest(store, None, [folder])
    finally:
        store.close()
    now = _ask(_pipeline(tmp_path, tmp_path / "index", registry))
    assert {s.doc for s in now.sources or []} == {"bo-luat-lao-dong-2019"}
    then = _ask(_pipeline(tmp_path, tmp_path / "index", registry), {"as_of": "2019-06-30"})
    assert {s.doc for s in then.sources or []} == {"bo-luat-lao-dong-2012"}


def test_the_amendment_is_shown_next_to_the_amended_article(
    tmp_path: Path, versions_index: Path, registry: Registry
) -> None:
    reply = _ask(
        _pipeline(tmp_path, versions_index, registry),
        question="Thời gian thử việc của người quản lý doanh nghiệp tối đa bao nhiêu ngày?",
    )
    probation = next(s for s in reply.sources or [] if s.doc == "bo-luat-lao-dong-2019" and s.article == 25)
    (amendment,) = probation.amended_by
    assert (amendment.doc, amendment.so_hieu, amendment.article) == (
        "luat-sua-doi-bo-luat-lao-dong",
        "99/2024/QH15",
        1,
    )
    assert amendment.text.startswith("1. Sửa đổi, bổ sung khoản 1 Điều 25")
    assert "120 ngày" in amendment.text and "Bãi bỏ" not in amendment.text
    assert amendment.status == "con-hieu-luc"
    assert "Điều này đã được sửa đổi, bổ sung bởi Luật sửa đổi, Điều 1" in reply.text

    before = _ask(
        _pipeline(tmp_path, versions_index, registry),
        {"as_of": "2024-06-30"},
        question="Thời gian thử việc của người quản lý doanh nghiệp tối đa bao nhiêu ngày?",
    )
    probation = next(s for s in before.sources or [] if s.article == 25)
    assert [a.status for a in probation.amended_by] == ["chua-co-hieu-luc"]  # passed, not yet in force
    assert "(chưa có hiệu lực)" in before.text


def test_an_amendment_by_name_goes_to_the_version_then_in_force(tmp_path: Path, registry: Registry) -> None:
    """ "… một số điều của Bộ luật Lao động" without its number names both versions: the link
    goes to the one in force when the amending law was passed."""
    from .metadata_docs import AMENDING

    folder = write_versions(tmp_path / "docs")
    (folder / "luat-sua-doi.txt").write_text(AMENDING.replace(" số 45/2019/QH14", ""), encoding="utf-8")
    store = Store.open(tmp_path / "index", create=True)
    try:
        ingest(store, None, [folder])
        record = store.document("luat-sua-doi")
        assert record is not None and record.metadata.amends == ("Bộ luật lao động",)
    finally:
        store.close()
    pipeline = _pipeline(tmp_path, tmp_path / "index", registry)
    question = "Thời gian thử việc của người quản lý doanh nghiệp tối đa bao nhiêu ngày?"
    sources = pipeline.retrieve(question, 5, RetrievalFilters(in_force=False))
    links = pipeline.catalog.snapshot().amended_by
    asyncio.run(pipeline.aclose())
    assert links == {"bo-luat-lao-dong-2019": ["luat-sua-doi"]}  # not the 2012 code, expired by then
    amended = {(s.doc, s.article): [a.doc for a in s.amended_by] for s in sources}
    assert amended[("bo-luat-lao-dong-2019", 25)] == ["luat-sua-doi"]


def test_config_default_filters_and_their_errors(
    tmp_path: Path, versions_index: Path, registry: Registry
) -> None:
    pipeline = _pipeline(tmp_path, versions_index, registry, '[retrieval.filters]\nas_of = "2019-01-01"\n')
    assert {s.doc for s in _ask(pipeline).sources or []} == {"bo-luat-lao-dong-2012"}
    # A request's filter wins over the default one, field by field.
    pipeline = _pipeline(tmp_path, versions_index, registry, '[retrieval.filters]\nas_of = "2019-01-01"\n')
    assert {s.doc for s in _ask(pipeline, {"as_of": "2024-01-01"}).sources or []} == {"bo-luat-lao-dong-2019"}
    with pytest.raises(ConfigError, match=r"\[retrieval\] filters.as_of = '2019-02-30'.*not a date"):
        _pipeline(tmp_path, versions_index, registry, '[retrieval.filters]\nas_of = "2019-02-30"\n')
    with pytest.raises(ConfigError, match=r"filters.colour"):
        _pipeline(tmp_path, versions_index, registry, '[retrieval.filters]\ncolour = "red"\n')


def test_filters_through_the_server_and_the_openai_sdk(
    versions_index: Path, running_server: Callable[[str], str]
) -> None:
    base = running_server(_config_text(versions_index))
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
    old = client.chat.completions.create(
        model="extractive",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"filters": {"as_of": "2019-01-01"}},
    )
    body = old.model_dump()
    assert {s["doc"] for s in body["sources"]} == {"bo-luat-lao-dong-2012"}
    assert body["sources"][0]["meta"]["effective"] == "2013-05-01"
    assert "55 tuổi" in (old.choices[0].message.content or "")

    stream = client.chat.completions.create(
        model="extractive",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        extra_body={"filters": {"doc": "10/2012/QH13"}},
    )
    chunks = [c.model_dump() for c in stream]
    assert "10/2012/QH13" in chunks[-1]["notice"] and chunks[-1]["sources"] == []

    for bad, param in (
        ({"as_of": "hôm qua"}, "filters.as_of"),
        ({"status": ["đang áp dụng"]}, "filters.status[0]"),
        ({"in_force": "yes"}, "filters.in_force"),
        ({"colour": "red"}, "filters.colour"),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="extractive",
                messages=[{"role": "user", "content": QUESTION}],
                extra_body={"filters": bad},
            )
        error = info.value.body
        assert isinstance(error, dict) and error["type"] == "invalid_request_error", bad
        assert param in (error.get("param") or "") + error["message"], (bad, error)


def test_filter_flags_on_the_cli(tmp_path: Path, versions_index: Path) -> None:
    (tmp_path / "lexrag.toml").write_text(_config_text(versions_index), encoding="utf-8")

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, cwd=tmp_path)

    result = cli("search", QUESTION, "--as-of", "2019-01-01", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["doc"] for r in rows} == {"bo-luat-lao-dong-2012"}
    assert rows[0]["meta"]["so_hieu"] == "10/2012/QH13" and rows[0]["status"] == "con-hieu-luc"

    result = cli("search", QUESTION, "--include-expired", "--kind", "bộ luật", "--doc", "10/2012/QH13")
    assert result.returncode == 0, result.stderr
    assert (
        "10/2012/QH13 · Bộ luật · Quốc hội · hiệu lực từ 01/05/2013 · đến 01/01/2021 · Hết hiệu lực"
        in result.stdout
    )

    result = cli("search", QUESTION, "--status", "hết hiệu lực", "--json")
    assert {r["doc"] for r in json.loads(result.stdout)} == {"bo-luat-lao-dong-2012"}, result.stderr

    result = cli("ask", QUESTION, "--in-force")
    assert result.returncode == 0, result.stderr
    assert "62 tuổi" in result.stdout and "45/2019/QH14" in result.stdout

    result = cli("ask", QUESTION, "--doc", "10/2012/QH13")
    assert "hết hiệu lực từ 01/01/2021" in result.stdout  # the notice, in the answer

    result = cli("search", QUESTION, "--as-of", "2019-31-01")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--as-of" in result.stderr and "is not a date" in result.stderr


def test_filter_validation_in_the_model() -> None:
    filters = RetrievalFilters.model_validate(
        {"status": "Còn hiệu lực", "as_of": "01/01/2024", "kind": "Luật"}
    )
    assert filters.status == ["con-hieu-luc"] and filters.kind == ["Luật"]
    assert filters.as_of is not None and filters.as_of.isoformat() == "2024-01-01"
    assert RetrievalFilters(as_of="2019-01-01").merged(RetrievalFilters(in_force=False)).as_of is not None


def test_the_repl_shows_metadata_amendments_and_the_notice(
    tmp_path: Path, versions_index: Path, registry: Registry
) -> None:
    from rich.console import Console

    from lexrag.repl import Repl

    console = Console(record=True, width=200, color_system=None)
    repl = Repl(_pipeline(tmp_path, versions_index, registry), ["extractive"], console=console)
    asyncio.run(repl.command("/asof 2019-31-12"))
    asyncio.run(repl.command("/asof 2019-01-01"))
    asyncio.run(repl.answer(QUESTION))
    asyncio.run(repl.command("/asof off"))
    asyncio.run(repl.answer("Thời gian thử việc của người quản lý doanh nghiệp tối đa bao nhiêu ngày?"))
    repl.filters = RetrievalFilters(doc=["10/2012/QH13"])
    asyncio.run(repl.answer(QUESTION))
    asyncio.run(repl.pipeline.aclose())
    text = console.export_text()
    assert "/asof: '2019-31-12' is not a date" in text and "Documents in force on 01/01/2019." in text
    assert (
        "10/2012/QH13 · Bộ luật · Quốc hội · hiệu lực từ 01/05/2013 · đến 01/01/2021 · Còn hiệu lực" in text
    )
    assert "sửa đổi bởi Luật sửa đổi, Điều 1. Sửa đổi, bổ sung một số điều của Bộ luật Lao động" in text
    assert text.count("hết hiệu lực từ 01/01/2021") >= 2  # the notice line, and the answer quoting it


def test_the_web_page_shows_metadata_and_asks_for_a_day(
    running_server: Callable[[str], str], versions_index: Path, tmp_path: Path
) -> None:
    base = running_server(_config_text(versions_index))
    with chromium_page(tmp_path / "profile") as page:
        page.goto(base + "/")
        page.fill("#asof", "2019-01-01")
        page.fill("#question", QUESTION)
        page.click("#send")
        page.wait_for_selector(".turn.assistant .sources .source", timeout=30_000)
        sources = page.locator(".turn.assistant .sources").inner_text()
        assert (
            "10/2012/QH13 · Bộ luật · Quốc hội · hiệu lực từ 01/05/2013 · đến 01/01/2021 · Còn hiệu lực"
            in sources
        )
        assert "45/2019/QH14" not in sources
        assert "55 tuổi" in page.locator(".turn.assistant .answer").inner_text()

        page.fill("#asof", "")
        page.fill("#question", "Thời gian thử việc của người quản lý doanh nghiệp tối đa bao nhiêu ngày?")
        page.click("#send")
        page.wait_for_selector(".turn.assistant >> nth=1 >> .sources .amended", timeout=30_000)
        amended = page.locator(".turn.assistant >> nth=1 >> .amended").first.inner_text()
        assert "Sửa đổi, bổ sung bởi" in amended and "99/2024/QH15" in amended and "120 ngày" in amended


def test_a_model_is_told_the_notice(tmp_path: Path, versions_index: Path, fake_pm) -> None:  # type: ignore[no-untyped-def]
    """An LLM provider gets the notice in its system message, so that its answer can say it."""
    from .fakes.plugins import LocalStyleProvider

    registry = Registry(fake_pm)
    pipeline = _pipeline(tmp_path, versions_index, registry, '[llm]\nprovider = "local-style"\n')
    reply = _ask(pipeline, {"doc": ["10/2012/QH13"]})
    assert reply.notice is not None
    system = LocalStyleProvider.seen[-1].messages[0]
    assert system.role == "system" and (system.content or "").endswith("Lưu ý: " + reply.notice)


def test_law_in_force_from_docx_pdf_and_html(tmp_path: Path, registry: Registry) -> None:
    """The old code as DOCX, the new one as PDF (both with sidecars), the amending law as HTML:
    the headers read through the loaders give the same metadata, and the answers follow the day."""
    from .documents import write_docx, write_html, write_pdf
    from .metadata_docs import AMENDING, NEW, NEW_SIDECAR, OLD, OLD_SIDECAR

    docs = tmp_path / "docs"
    docs.mkdir()
    write_docx(OLD, docs / "bo-luat-lao-dong-2012.docx")
    (docs / "bo-luat-lao-dong-2012.meta.toml").write_text(OLD_SIDECAR, encoding="utf-8")
    write_pdf(NEW, docs / "bo-luat-lao-dong-2019.pdf")
    (docs / "bo-luat-lao-dong-2019.meta.toml").write_text(NEW_SIDECAR, encoding="utf-8")
    write_html(AMENDING, docs / "luat-sua-doi.html")
    store = Store.open(tmp_path / "index", create=True)
    try:
        report = ingest(store, None, [docs], loaders=registry.loaders.build())
        assert len(report.added) == 3, report.as_dict()
        metas = {r.id: r.metadata for r in store.documents()}
    finally:
        store.close()
    assert metas["bo-luat-lao-dong-2012"].issued is not None  # from the DOCX's header
    assert (metas["bo-luat-lao-dong-2019"].so_hieu, metas["bo-luat-lao-dong-2019"].issuer) == (
        "45/2019/QH14",
        "Quốc hội",
    )
    assert metas["luat-sua-doi"].amends == ("45/2019/QH14",)  # from the HTML's title

    old = _ask(_pipeline(tmp_path, tmp_path / "index", registry), {"as_of": "2019-01-01"})
    assert "nam đủ 60 tuổi, nữ đủ 55 tuổi" in old.text
    new = _ask(_pipeline(tmp_path, tmp_path / "index", registry))
    assert "62 tuổi đối với lao động nam" in new.text
    pipeline = _pipeline(tmp_path, tmp_path / "index", registry)
    try:
        probation = pipeline.retrieve(
            "Thời gian thử việc của người quản lý doanh nghiệp tối đa bao nhiêu ngày?", 3
        )
    finally:
        asyncio.run(pipeline.aclose())
    assert [a.doc for s in probation if s.article == 25 for a in s.amended_by] == ["luat-sua-doi"]


def test_a_cached_answer_keeps_its_notice(versions_index: Path, running_server: Callable[[str], str]) -> None:
    base = running_server(_config_text(versions_index) + "[cache]\nenabled = true\nttl_s = 60\n")
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
    kwargs: dict[str, object] = {
        "model": "extractive",
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "extra_body": {"filters": {"doc": "10/2012/QH13"}},
    }
    first = client.chat.completions.with_raw_response.create(**kwargs)  # type: ignore[call-overload]
    assert first.headers["x-lexrag-cache"] == "miss"
    for stream in (False, True):
        again = client.chat.completions.with_raw_response.create(stream=stream, **kwargs)  # type: ignore[call-overload]
        assert again.headers["x-lexrag-cache"] == "hit"
        last = list(again.parse())[-1] if stream else again.parse()
        assert "10/2012/QH13" in (last.model_dump().get("notice") or ""), stream
