"""Vietnamese text for matching: NFC, lower case, accent folding (đ→d), syllable bigrams."""

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


def terms(text: str, *, bigrams: bool = True) -> list[str]:
    """Folded syllables, plus folded syllable bigrams (``thoi_gio``) that stand in for
    Vietnamese compound words; bigrams never cross punctuation or a line break."""
    out = [fold(s) for s in syllables(text)]
    if bigrams:
        for phrase in _PHRASE_BREAK.split(unicodedata.normalize("NFC", text).lower()):
            words = [fold(w) for w in _WORD.findall(phrase)]
            out.extend(f"{a}_{b}" for a, b in itertools.pairwise(words))
    return out


__all__ = ["fold", "syllables", "terms"]
