"""The ``extractive`` provider: answers by quoting the retrieved passages, no LLM.

It quotes the best passage's article heading and the Khoản that share the most words
with the question (all of them when none stands out), cites it by number, and lists the
other passages as related provisions. It is the fallback of last resort and what lexrag
answers with offline before any model is exported.

It honours ``stop`` (the answer ends before the first stop string) and ``max_tokens`` (cut
at the limit, ``finish_reason: "length"``), counting tokens with :func:`estimate_tokens`
like every provider without a tokenizer; its usage is marked ``estimated``. It cannot call
tools, follow a ``response_format`` or return log probabilities (``supports`` is empty).
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..hookspecs import hookimpl
from ..prompt import estimate_tokens, estimate_usage
from ..providers import GenerationParams, Provider, ProviderRequest
from ..types import ChatCompletion, ChatCompletionChunk, ChunkFactory, FinishReason, Source, Usage
from ..vntext import STOPWORDS, terms

NO_SOURCES = (
    "Không tìm thấy quy định phù hợp trong các văn bản đã nạp. "
    "Hãy thử diễn đạt câu hỏi khác hoặc nạp thêm văn bản (lexrag ingest)."
)

_CLAUSE_START = re.compile(r"^\d+[.)]\s")


class ExtractiveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_passages: int = Field(default=2, ge=1, le=10)
    """Passages quoted at most; the second only when it matches nearly as well as the first."""
    max_quote_chars: int = Field(default=1500, ge=200)
    """Longest quote of one passage."""


@dataclass
class _Quote:
    source: Source
    lines: list[str]
    score: float


def _weights(text: str) -> dict[str, float]:
    """Question terms: folded syllables (1) and syllable bigrams (2), stopwords dropped."""
    out: dict[str, float] = {}
    for term in terms(text):
        if "_" in term:
            out[term] = 2.0
        elif term not in STOPWORDS and not term.isdigit():
            out[term] = 1.0
    return out


def _scores(weights: dict[str, float], clauses: list[str]) -> list[float]:
    """Each clause's weight of question terms, each term discounted by how many of the
    article's clauses share it (a term in every clause tells them apart least)."""
    present = [set(terms(c)) for c in clauses]
    n = len(clauses)
    idf = {t: math.log((n + 1) / (0.5 + sum(t in p for p in present))) for t in weights}
    return [sum(w * idf[t] for t, w in weights.items() if t in p) for p in present]


def _clauses(text: str) -> tuple[list[str], list[list[str]]]:
    """(heading and intro lines, Khoản as lists of lines with their Điểm)."""
    head: list[str] = []
    clauses: list[list[str]] = []
    for line in text.split("\n"):
        if _CLAUSE_START.match(line):
            clauses.append([line])
        elif clauses:
            clauses[-1].append(line)
        else:
            head.append(line)
    return head, clauses


def _quote(source: Source, weights: dict[str, float], limit: int) -> _Quote:
    head, clauses = _clauses(source.text)
    scores = _scores(weights, ["\n".join(c) for c in clauses])
    best = max(scores, default=0.0)
    if clauses and best > 0 and sum(s >= 0.75 * best for s in scores) < len(clauses):
        lines = head + [line for c, s in zip(clauses, scores, strict=True) if s >= 0.75 * best for line in c]
    else:
        lines = source.text.split("\n")
    text = "\n".join(lines)
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    present = set(terms(source.text))
    return _Quote(source, text.split("\n"), sum(w for t, w in weights.items() if t in present))


def limit(text: str, params: GenerationParams) -> tuple[str, FinishReason]:
    """``text`` as a model would end it: before the first stop string (``"stop"``), or at
    ``max_tokens`` tokens by :func:`estimate_tokens` (``"length"``)."""
    hits = [i for i in (text.find(s) for s in params.stop if s) if i >= 0]
    if hits:
        text = text[: min(hits)]
    if params.max_tokens is not None and text and estimate_tokens(text) > params.max_tokens:
        # estimate_tokens(t) = len(t) // 2 + 1, so 2 * max_tokens - 1 characters fit.
        return text[: 2 * params.max_tokens - 1], "length"
    return text, "stop"


class ExtractiveProvider(Provider):
    Settings = ExtractiveSettings
    context_window = 1_000_000

    def answer(self, question: str, sources: Sequence[Source]) -> str:
        """The answer text for ``question`` from ``sources`` (best first)."""
        if not sources:
            return NO_SOURCES
        settings = self.settings
        assert isinstance(settings, ExtractiveSettings)
        weights = _weights(question)
        quotes = [_quote(sources[0], weights, settings.max_quote_chars)]
        for source in sources[1 : settings.max_passages]:
            quote = _quote(source, weights, settings.max_quote_chars)
            if quote.score >= 0.8 * quotes[0].score > 0:
                quotes.append(quote)
        parts = []
        for quote in quotes:
            body = "\n".join("> " + line for line in quote.lines)
            parts.append(f"Theo [{quote.source.index}] {quote.source.citation}:\n\n{body}")
        for quote in quotes:
            for amendment in quote.source.amended_by:
                body = "\n".join("> " + line for line in amendment.text.split("\n"))
                pending = " (chưa có hiệu lực)" if amendment.status == "chua-co-hieu-luc" else ""
                parts.append(
                    f"Điều này đã được sửa đổi, bổ sung bởi {amendment.citation}{pending}:\n\n{body}"
                )
        quoted = {q.source.index for q in quotes}
        related = [f"[{s.index}] {s.citation}" for s in sources if s.index not in quoted]
        if related:
            parts.append("Các quy định liên quan: " + "; ".join(related) + ".")
        return "\n\n".join(parts)

    def _question(self, request: ProviderRequest) -> str:
        return next((m.content or "" for m in reversed(request.messages) if m.role == "user"), "")

    def _usage(self, request: ProviderRequest, text: str) -> Usage:
        return estimate_usage(request.messages, text)

    def _generate(self, request: ProviderRequest) -> tuple[str, FinishReason]:
        self.check_options(request)
        text = self.answer(self._question(request), request.sources)
        if request.notice:
            text = f"Lưu ý: {request.notice}\n\n{text}"
        return limit(text, request.params)

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        text, finish = self._generate(request)
        return ChatCompletion.of_text(
            request.model or self.default_model, text, finish, self._usage(request, text)
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        text, finish = self._generate(request)
        chunks = ChunkFactory(request.model or self.default_model)
        yield chunks.role()
        for piece in re.findall(r"\S+\s*|\s+", text):
            yield chunks.text(piece)
        yield chunks.finish(finish)
        yield chunks.usage(self._usage(request, text))

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "kind": "extractive"}


@hookimpl
def register_llm_providers(register: Callable[[str, type[Any]], None]) -> None:
    register("extractive", ExtractiveProvider)
