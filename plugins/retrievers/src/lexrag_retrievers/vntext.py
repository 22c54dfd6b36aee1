"""BM25 terms of Vietnamese text: the core's folding and bigrams (:func:`lexrag.terms`), plus
the accented forms the lexical index also keeps."""

from __future__ import annotations

from lexrag import fold, syllables, terms


def tokens(text: str, *, bigrams: bool = True, accents: bool = False) -> list[str]:
    """BM25 terms of ``text``: folded syllables, plus folded syllable bigrams (``thoi_gio``) that
    stand in for Vietnamese compound words, plus (``accents``) the accented form of each syllable
    whose accents matter, so an accented query prefers exact matches."""
    out = terms(text, bigrams=bigrams)
    if accents:
        out.extend(s for s in syllables(text) if s != fold(s))
    return out


__all__ = ["tokens"]
