"""Vietnamese text for BM25: NFC, lower case, accent folding (đ→d), syllable bigrams."""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache

_WORD = re.compile(r"\w+")
# Bigrams never cross a punctuation mark or a line break: those end a phrase.
_PHRASE_BREAK = re.compile(r"[^\w\s]+|\n")
_FOLD_TABLE = str.maketrans({"đ": "d", "Đ": "D"})


@lru_cache(maxsize=65536)
def fold(word: str) -> str:
    """``thời giờ`` → ``thoi gio``: combining marks dropped, ``đ`` → ``d``."""
    decomposed = unicodedata.normalize("NFD", word.translate(_FOLD_TABLE))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def syllables(text: str) -> list[str]:
    """Lower-cased NFC syllables (Vietnamese writes one syllable per space-separated word)."""
    return _WORD.findall(unicodedata.normalize("NFC", text).lower())


def fold_text(text: str) -> str:
    return " ".join(fold(s) for s in syllables(text))


def tokens(text: str, *, bigrams: bool = True, accents: bool = False) -> list[str]:
    """BM25 terms of ``text``: folded syllables, plus folded syllable bigrams (``thoi_gio``) that
    stand in for Vietnamese compound words, plus (``accents``) the accented form of each syllable
    whose accents matter, so an accented query prefers exact matches."""
    syl = syllables(text)
    folded = [fold(s) for s in syl]
    out = list(folded)
    if bigrams:
        for phrase in _PHRASE_BREAK.split(unicodedata.normalize("NFC", text).lower()):
            words = [fold(w) for w in _WORD.findall(phrase)]
            out.extend(f"{a}_{b}" for a, b in itertools.pairwise(words))
    if accents:
        out.extend(s for s, f in zip(syl, folded, strict=True) if s != f)
    return out


__all__ = ["fold", "fold_text", "syllables", "tokens"]
