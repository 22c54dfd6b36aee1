"""The reranker kind and the ONNX cross-encoder reranker, on a tiny random cross-encoder.

Random weights say nothing of quality (no cross-encoder for Vietnamese can be had here); these
tests check shapes, the export, and the wiring: ``[retrieval] reranker`` reorders the
retriever's best hits by the reranker's scores, in the CLI's search as in the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lexrag import Reranker
from lexrag.registry import Registry, build_reranker, build_retriever
from lexrag.retrieval import RerankedRetriever

from .conftest import run_cli
from .fixtures_retrieval import index_config

WORDS = [
    "điều",
    "luật",
    "lao",
    "động",
    "người",
    "thời",
    "giờ",
    "làm",
    "việc",
    "nghỉ",
    "phép",
    "năm",
    "ngày",
    "bình",
    "thường",
    "tiền",
    "lương",
]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT sequence classifier with random weights and a small WordPiece vocabulary,
    saved as a Hugging Face directory (what a user downloads)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), *"0123456789.,?"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reranker(
    tiny_cross_encoder: Path, session_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Reranker:
    config = index_config(
        tmp_path_factory.mktemp("unused"),
        session_registry,
        {"retrieval.reranker": "cross-encoder", "rerankers.cross-encoder.model": str(tiny_cross_encoder)},
    )
    return build_reranker(config, session_registry)


def test_cross_encoder_scores_pairs_and_matches_pytorch(reranker: Reranker, tiny_cross_encoder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    query = "thời giờ làm việc"
    passages = ["điều 105. thời giờ làm việc bình thường", "tiền lương", "nghỉ phép năm 12 ngày"]
    scores = reranker.score(query, passages)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert reranker.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    assert "cross-encoder" in reranker.model_id
    # The exported model scores as the PyTorch one does.
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = BertForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    batch = tokenizer([query] * 3, passages, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(scores, ref, atol=1e-4)
    # Batching and order do not change a pair's score.
    np.testing.assert_allclose(reranker.score(query, passages[::-1])[::-1], scores, atol=1e-5)
    assert reranker.score(query, []).shape == (0,)


def test_reranker_reorders_the_retrievers_best_hits(
    reranker: Reranker, tiny_cross_encoder: Path, sample_index: Path, session_registry: Registry
) -> None:
    overrides = {
        "retrieval.reranker": "cross-encoder",
        "retrieval.rerank_candidates": 8,
        "rerankers.cross-encoder.model": str(tiny_cross_encoder),
    }
    config = index_config(sample_index, session_registry, overrides)
    reranked = build_retriever(config, session_registry)
    assert isinstance(reranked, RerankedRetriever) and reranked.base.name == "hybrid"
    # The hybrid's parts are built without reranking.
    assert not any(isinstance(part, RerankedRetriever) for part, _ in reranked.base.parts)  # type: ignore[attr-defined]
    query = "thời giờ làm việc bình thường"
    candidates = reranked.base.search(query, 8)
    hits = reranked.search(query, 5)
    assert len(hits) == 5
    expected = reranker.score(query, [h.chunk.text for h in candidates])
    order = np.argsort(-expected, kind="stable")[:5]
    assert [h.chunk.id for h in hits] == [candidates[i].chunk.id for i in order]
    np.testing.assert_allclose([h.score for h in hits], expected[order], atol=1e-5)
    assert reranked.health()["reranker"] == reranker.model_id
    reranked.close()
    # Off by default: the configured retriever as it is.
    plain = build_retriever(index_config(sample_index, session_registry), session_registry)
    assert not isinstance(plain, RerankedRetriever)
    plain.close()


def test_reranker_through_the_cli(tiny_cross_encoder: Path, sample_index: Path, tmp_path: Path) -> None:
    config = tmp_path / "lexrag.toml"
    config.write_text(
        '[retrieval]\nreranker = "cross-encoder"\nrerank_candidates = 6\n'
        f'[rerankers.cross-encoder]\nmodel = "{tiny_cross_encoder}"\n'
    )
    result = run_cli(
        "--config",
        str(config),
        "search",
        "thời giờ làm việc",
        "--top-k",
        "3",
        "--json",
        "--index",
        str(sample_index),
    )
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 3 and hits == sorted(hits, key=lambda h: -h["score"])


def test_a_missing_model_or_an_unknown_reranker_is_a_clear_error(
    session_registry: Registry, tmp_path: Path
) -> None:
    from lexrag.errors import ConfigError, LexragError

    no_model = build_reranker(
        index_config(tmp_path / "i", session_registry, {"retrieval.reranker": "cross-encoder"}),
        session_registry,
    )
    with pytest.raises(LexragError, match=r"\[rerankers.cross-encoder\] model"):
        no_model.score("q", ["a", "b"])
    with pytest.raises(ConfigError, match="no reranker named 'nope'"):
        index_config(tmp_path / "i", session_registry, {"retrieval.reranker": "nope"})
