"""Evaluation on a question set shaped like ``dev.jsonl``: retrieval quality (recall@k and
MRR@10) and, through the whole pipeline, answer quality (:func:`evaluate_answers`).

A question is one JSON line: ``question``, the gold ``doc`` and ``article``, and optionally
``answer_contains`` (strings a faithful answer quotes). A conversation gives ``turns`` (its
user turns, the question last) instead of ``question``: retrieval searches for what a chat
would (:func:`lexrag.vntext.combine_turns`), answers are asked turn by turn.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError, LexragError
from .retrieval import Hit, Retriever
from .types import ChatCompletionRequest, ChatMessage, Source
from .vntext import combine_turns, normalize

if TYPE_CHECKING:
    from .pipeline import Pipeline


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    doc: str
    article: int
    answer_contains: tuple[str, ...] = ()
    turns: tuple[str, ...] = ()
    """A conversation's user turns, ``question`` last; empty for a question on its own."""

    @property
    def query(self) -> str:
        """What retrieval searches for: the question, or a conversation's combined turns."""
        return combine_turns(self.turns) if len(self.turns) > 1 else self.question


def load_questions(path: Path) -> list[Question]:
    """Questions from a JSON-lines file with ``question`` (or ``turns``), ``doc`` and
    ``article`` per line, and optionally ``answer_contains``."""
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
            turns = tuple(str(t) for t in row.get("turns") or ())
            contains = row.get("answer_contains") or ()
            if isinstance(contains, str):
                contains = (contains,)
            out.append(
                Question(
                    str(row.get("id", number)),
                    turns[-1] if turns else str(row["question"]),
                    str(row["doc"]),
                    int(row["article"]),
                    tuple(str(c) for c in contains),
                    turns,
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequestError(
                f"{path}:{number}: expected an object with question (or turns), doc and article ({exc})"
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
    ranks = [rank_of(retriever.search(normalize(q.query), top_k), q) for q in questions]
    return metrics(ranks)


# --- answers ----------------------------------------------------------------------------

_CITED = re.compile(r"\[(\d+)\]")
_SPACE = re.compile(r"\s+")


def _plain(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip().lower()


def contains_all(answer: str, strings: Sequence[str]) -> bool:
    """Whether ``answer`` holds every string (NFC, case and runs of white space ignored)."""
    plain = _plain(answer)
    return all(_plain(s) in plain for s in strings)


def cited_sources(answer: str, sources: Sequence[Source]) -> list[Source]:
    """The sources the answer cites as ``[n]``; all of them when it cites none by number."""
    numbers = {int(n) for n in _CITED.findall(answer)}
    cited = [s for s in sources if s.index in numbers]
    return cited or list(sources)


def _is_gold(source: Source, question: Question) -> bool:
    return source.doc == question.doc and source.article == question.article


async def evaluate_answers(
    pipeline: Pipeline, questions: Sequence[Question], top_k: int | None = None
) -> dict[str, Any]:
    """Ask each question through the whole pipeline (a conversation turn by turn, each
    answer kept for the next turn) and score the last answer:

    - ``answer_contains``: share of answers holding all of the question's ``answer_contains``
      strings, over the ``n_answer_contains`` questions that have some;
    - ``cites_gold``: share of answers whose citations (:func:`cited_sources`) include the
      gold article; ``retrieved_gold``: share whose sources do, cited or not;
    - ``latency_p50_s`` / ``latency_p95_s``: seconds per answer (the last turn's);
    - ``errors``: questions that got no answer (each counts as wrong).
    """
    contains: list[bool] = []
    cites: list[bool] = []
    retrieved: list[bool] = []
    latencies: list[float] = []
    errors = 0
    for q in questions:
        messages: list[ChatMessage] = []
        answer, sources, seconds = "", [], 0.0
        try:
            for turn in q.turns or (q.question,):
                messages.append(ChatMessage(role="user", content=turn))
                request = ChatCompletionRequest(messages=list(messages), top_k=top_k)
                started = time.perf_counter()
                completion = await pipeline.chat(request)
                seconds = time.perf_counter() - started
                answer, sources = completion.text or "", list(completion.sources or [])
                messages.append(ChatMessage(role="assistant", content=answer or "…"))
        except LexragError:
            errors += 1
            answer, sources = "", []
        else:
            latencies.append(seconds)
        if q.answer_contains:
            contains.append(contains_all(answer, q.answer_contains))
        cites.append(any(_is_gold(s, q) for s in cited_sources(answer, sources)) if answer else False)
        retrieved.append(any(_is_gold(s, q) for s in sources))

    def share(values: Sequence[bool]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    def percentile(p: float) -> float | None:
        if not latencies:
            return None
        ordered = sorted(latencies)
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 4)

    return {
        "n": len(questions),
        "answer_contains": share(contains),
        "n_answer_contains": len(contains),
        "cites_gold": share(cites),
        "retrieved_gold": share(retrieved),
        "latency_p50_s": None if not latencies else round(statistics.median(latencies), 4),
        "latency_p95_s": percentile(0.95),
        "errors": errors,
    }


__all__ = [
    "Question",
    "cited_sources",
    "contains_all",
    "evaluate",
    "evaluate_answers",
    "load_questions",
    "metrics",
    "rank_of",
]
