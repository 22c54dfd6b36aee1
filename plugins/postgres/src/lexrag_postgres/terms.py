"""BM25 terms, exactly those of lexrag-retrievers' embedded BM25 (default settings): accent-folded
syllables and syllable bigrams (:func:`lexrag.terms`), plus the accented form of each syllable
whose accents matter; queries expanded with the lay-to-legal term map.

A chunk has two fields: its heading (first line) and its body. The postings keep the term
counts of each, so the heading's weight in the chunk field (``title_weight``) and the heading
field of its own (``title_field``) are chosen at query time.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from lexrag import LAY_TO_LEGAL, fold, fold_text, syllables, terms

#: What the stored postings are made of; recorded in the index, compared on open.
TERMS_VERSION = "v3:bigrams,accents,fields"


def tokens(text: str) -> list[str]:
    """The BM25 terms of ``text``."""
    out = terms(text, bigrams=True)
    out.extend(s for s in syllables(text) if s != fold(s))
    return out


def chunk_fields(text: str) -> tuple[Counter[str], int, Counter[str], int]:
    """(body term counts, body length, heading term counts, heading length) of a chunk's text."""
    heading, _, body = text.partition("\n")
    body_terms, head_terms = tokens(body), tokens(heading)
    return Counter(body_terms), len(body_terms), Counter(head_terms), len(head_terms)


@lru_cache(maxsize=8)
def _lay_patterns(extra: tuple[tuple[str, str], ...]) -> list[tuple[re.Pattern[str], str]]:
    table = dict(LAY_TO_LEGAL, **dict(extra))
    out = []
    for lay, legal in sorted(table.items(), key=lambda kv: -len(kv[0])):
        out.append((re.compile(rf"(?<!\w){re.escape(fold_text(lay))}(?!\w)"), legal))
    return out


def expansions(query: str, extra: dict[str, str] | None = None) -> list[str]:
    """Legal phrases the lay-term map adds to ``query`` (a longer key wins over those inside it)."""
    folded = fold_text(query)
    found = []
    for pattern, legal in _lay_patterns(tuple(sorted((extra or {}).items()))):
        if pattern.search(folded):
            found.append(legal)
            folded = pattern.sub(" ", folded)
    return found


def query_weights(
    query: str, *, lay_terms: bool = True, lay_weight: float = 0.5, extra: dict[str, str] | None = None
) -> dict[str, float]:
    """Term → weight: 1 per occurrence in the query, ``lay_weight`` per occurrence in its
    lay-term expansions."""
    weights: dict[str, float] = {}
    for term in tokens(query):
        weights[term] = weights.get(term, 0.0) + 1.0
    if lay_terms and lay_weight > 0:
        for phrase in expansions(query, extra):
            for term in tokens(phrase):
                weights[term] = weights.get(term, 0.0) + lay_weight
    return weights


__all__ = ["TERMS_VERSION", "chunk_fields", "expansions", "query_weights", "tokens"]
