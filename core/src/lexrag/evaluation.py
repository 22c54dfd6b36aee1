"""Retrieval quality on a question set shaped like ``dev.jsonl``: recall@k and MRR@10."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidRequestError
from .retrieval import Hit, Retriever
from .vntext import normalize


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    doc: str
    article: int


def load_questions(path: Path) -> list[Question]:
    """Questions from a JSON-lines file with ``question``, ``doc`` and ``article`` per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"{path}: cannot read the question file ({exc})") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(
                Question(
                    str(row.get("id", number)), str(row["question"]), str(row["doc"]), int(row["article"])
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequestError(
                f"{path}:{number}: expected an object with question, doc and article ({exc})"
            ) from None
    if not out:
        raise InvalidRequestError(f"{path}: no questions")
    return out


def rank_of(hits: Sequence[Hit], question: Question) -> int | None:
    """1-based rank of the first hit in the gold document and article, or None."""
    for rank, hit in enumerate(hits, 1):
        c = hit.chunk.citation
        if c.doc == question.doc and c.article == question.article:
            return rank
    return None


def metrics(ranks: Sequence[int | None]) -> dict[str, float | int]:
    """``{"n", "recall@1", "recall@5", "recall@10", "mrr@10"}`` from the gold ranks."""
    n = len(ranks)
    found = [r for r in ranks if r is not None]

    def recall(k: int) -> float:
        return round(sum(1 for r in found if r <= k) / n, 4) if n else 0.0

    mrr = round(sum(1.0 / r for r in found if r <= 10) / n, 4) if n else 0.0
    return {"n": n, "recall@1": recall(1), "recall@5": recall(5), "recall@10": recall(10), "mrr@10": mrr}


def evaluate(retriever: Retriever, questions: Sequence[Question], top_k: int = 10) -> dict[str, float | int]:
    ranks = [rank_of(retriever.search(normalize(q.question), top_k), q) for q in questions]
    return metrics(ranks)


__all__ = ["Question", "evaluate", "load_questions", "metrics", "rank_of"]
