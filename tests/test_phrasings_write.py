"""``lexrag phrasings write`` (issue 17): the phrasings of an index's articles written by the
configured provider — here the real openai provider against a fake OpenAI-compatible upstream
on loopback, run through the real command line in a subprocess — and read back by the
``phrasings`` retriever's reader.

The index is the sample corpus with hash-embedder vectors (the command reads its chunks only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lexrag import read_phrasings
from lexrag.phrasings import Article, index_articles
from lexrag.prompt import PHRASINGS_INSTRUCTION
from lexrag.registry import Registry, build_retriever
from lexrag.store import Store

from . import test_search_within
from .conftest import run_cli
from .fakes import Fail, FakeUpstream, Reply
from .fixtures_retrieval import index_config

#: A model's answer as models give them: a preamble, numbers, bullets, quotes, emphasis, a line
#: too long to be a phrase, an empty line, and one phrase more than was asked for.
CANNED = "\n".join(
    [
        "Dưới đây là 4 câu hỏi:",
        "1. Công ty bắt làm quá tám tiếng một ngày có được không?",
        '2) "Một tuần phải đi làm tối đa bao nhiêu tiếng"',
        "- **Làm thêm giờ tối đa bao nhiêu**",
        "",
        "• " + " ".join(["quá"] * 30),
        "(4) “Sếp bắt làm cả ngày chủ nhật thì sao”",
        "5. một câu thừa vượt quá số câu đã hỏi",
    ]
)
PHRASES = [
    "Công ty bắt làm quá tám tiếng một ngày có được không?",
    "Một tuần phải đi làm tối đa bao nhiêu tiếng",
    "Làm thêm giờ tối đa bao nhiêu",
    "Sếp bắt làm cả ngày chủ nhật thì sao",
]
index = test_search_within.hash_index  # the sample corpus, hash-embedder vectors (module scope)


@pytest.fixture(scope="module")
def indexed(index: Path) -> list[Article]:
    """Every article of the index, in the order the command asks for them."""
    store = Store.open(index)
    try:
        return index_articles(store)
    finally:
        store.close()


@pytest.fixture(scope="module")
def articles(indexed: list[Article]) -> list[tuple[str, int]]:
    return [a.key for a in indexed]


@pytest.fixture
def upstream() -> FakeUpstream:
    with FakeUpstream() as up:
        up.default = Reply(CANNED)
        yield up


def _write(index: Path, upstream: FakeUpstream, out: Path, *args: str):  # type: ignore[no-untyped-def]
    config = out.parent / "lexrag.toml"
    config.write_text(
        '[llm]\nprovider = "openai"\nmax_retries = 0\ndeadline_s = 20\n'
        f'[providers.openai]\nbase_url = "{upstream.base_url}"\nmodel = "fake-model"\ntimeout = 10\n'
    )
    return run_cli("--config", str(config), "phrasings", "write", str(out), "--index", str(index), *args)


def _lines(out: Path) -> list[str]:
    return [line for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_writes_phrasings_the_retriever_reads_and_a_rerun_continues(
    index: Path,
    indexed: list[Article],
    articles: list[tuple[str, int]],
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    out = tmp_path / "mine.jsonl"
    first = _write(index, upstream, out, "--limit", "5")
    assert first.returncode == 0, first.stderr
    assert "5 articles written (20 phrases), 0 already in" in first.stdout
    assert len(_lines(out)) == 5
    found = read_phrasings(out)
    assert set(found) == set(articles[:5])
    assert all(phrases == PHRASES for phrases in found.values())
    # Each article's own heading and start went to the model once, after the instruction.
    asked = sorted(r.json["messages"][-1]["content"] for r in upstream.requests)
    assert asked == sorted(
        PHRASINGS_INSTRUCTION.format(n=4, title=a.title, article=a.text) for a in indexed[:5]
    )
    assert all(a.text.startswith(f"Điều {a.number}.") and len(a.text) < 800 for a in indexed)

    again = _write(index, upstream, out, "--limit", "5")
    assert again.returncode == 0, again.stderr
    assert "5 articles written (20 phrases), 5 already in" in again.stdout
    assert len(upstream.requests) == 10  # nothing asked twice
    lines = _lines(out)
    assert len(lines) == 10
    assert set(read_phrasings(out)) == set(articles[:10])


def test_a_failed_article_is_counted_skipped_and_asked_again_next_run(
    index: Path, articles: list[tuple[str, int]], upstream: FakeUpstream, tmp_path: Path
) -> None:
    out = tmp_path / "mine.jsonl"
    upstream.script(Fail(503, "upstream overloaded"), Reply("Đây là câu trả lời:\n" + " ".join(["dài"] * 40)))
    result = _write(index, upstream, out, "--limit", "5", "--concurrency", "1")
    assert result.returncode == 0, result.stderr
    assert "3 articles written (12 phrases), 0 already in" in result.stdout
    assert ", 2 failed, " in result.stdout
    first_label = f"{articles[0][0]} Điều {articles[0][1]}"
    assert f"failed 2 (skipped; the next run asks again), the first: {first_label}: " in result.stderr
    assert "upstream overloaded" in result.stderr
    assert "Traceback" not in result.stderr
    assert set(read_phrasings(out)) == set(articles[2:5])

    again = _write(index, upstream, out, "--limit", "2", "--concurrency", "1")
    assert again.returncode == 0, again.stderr
    assert set(read_phrasings(out)) == set(articles[:5])
    assert len(_lines(out)) == 5


def test_only_the_documents_asked_for(
    index: Path, articles: list[tuple[str, int]], upstream: FakeUpstream, tmp_path: Path
) -> None:
    out = tmp_path / "mine.jsonl"
    doc = "luat-hon-nhan-gia-dinh"
    result = _write(index, upstream, out, "--doc", doc, "--per-article", "2")
    assert result.returncode == 0, result.stderr
    found = read_phrasings(out)
    assert set(found) == {key for key in articles if key[0] == doc}
    assert all(phrases == PHRASES[:2] for phrases in found.values())


def test_an_unknown_document_or_no_index_is_one_line(
    index: Path, upstream: FakeUpstream, tmp_path: Path
) -> None:
    out = tmp_path / "mine.jsonl"
    result = _write(index, upstream, out, "--doc", "khong-co-van-ban-nay")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "'khong-co-van-ban-nay'" in result.stderr and "luat-hon-nhan-gia-dinh" in result.stderr
    missing = _write(tmp_path / "no-index", upstream, out)
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0, missing.stderr
    assert "no index in" in missing.stderr
    assert not upstream.requests and not out.exists()


hash_registry = test_search_within.hash_registry  # the plugins, with the hash embedder as "hash"
TOPICS = [
    "mèo hoang trèo cây",
    "xe đạp mất bánh trước",
    "hàng xóm xây nhà lấn đất",
    "vịt bơi qua sông",
    "diều giấy mắc dây điện",
]


def test_the_written_file_serves_the_phrasings_retriever(
    index: Path,
    articles: list[tuple[str, int]],
    hash_registry: Registry,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    """Listed in ``[retrievers.phrasings] files``, the written file ranks each article first for
    its own phrasings (no ingest in between)."""
    out = tmp_path / "mine.jsonl"
    upstream.script(*(Reply(f"1. {topic} thì phải làm sao\n2. hỏi luật về {topic}") for topic in TOPICS))
    result = _write(index, upstream, out, "--limit", str(len(TOPICS)), "--concurrency", "1")
    assert result.returncode == 0, result.stderr
    config = index_config(
        index, hash_registry, {"retrieval.embedder": "hash", "retrievers.phrasings.files": [str(out)]}
    )
    retriever = build_retriever(config, hash_registry, "phrasings")
    try:
        found = [retriever.search(f"{topic} thì sao", 1) for topic in TOPICS]
    finally:
        retriever.close()
    assert [(h[0].chunk.citation.doc, h[0].chunk.citation.article) for h in found] == articles[: len(TOPICS)]
