"""Vietnamese word segmentation for BM25: compound words (``lao động``, ``Bộ luật``) as terms.

Vietnamese writes one syllable per space, so a word of two or three syllables is split; a
segmenter joins them back (``lao_động``). Two offline segmenters from PyPI:

- ``pyvi`` (CRF; about 150,000 characters a second here), imported lazily;
- ``underthesea`` (CRF; about 33,000 characters a second), imported lazily, offline.

Both are trained on accented text and segment a query typed without accents poorly, so queries
are matched against the vocabulary instead (:func:`dictionary_compounds`): each run of 2–4
folded syllables that the corpus has as a compound word counts as that word. The same lookup
serves accented queries, which keeps query time free of the segmenter.

A compound term is its folded syllables joined by ``+`` (``lao+dong``), apart from the syllable
bigrams (``lao_dong``) the other tokenisation uses.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Collection
from functools import lru_cache
from typing import Literal

from lexrag import PHRASE_BREAK, RetrievalError, fold

Segmenter = Literal["none", "pyvi", "underthesea"]
JOIN = "+"
_WORD = re.compile(r"\w+")


@lru_cache(maxsize=2)
def _segmenter(name: str) -> Callable[[str], str]:
    """``text → text with the syllables of each word joined by '_'``."""
    if name == "pyvi":
        try:
            from pyvi import ViTokenizer
        except ImportError:
            raise RetrievalError("segmenter = 'pyvi' needs the package pyvi (`pip install pyvi`)") from None
        tokenize: Callable[[str], str] = ViTokenizer.tokenize
        return tokenize
    if name == "underthesea":
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from underthesea import word_tokenize
        except ImportError:
            raise RetrievalError(
                "segmenter = 'underthesea' needs the package underthesea (`pip install underthesea`)"
            ) from None

        def segment(text: str) -> str:
            return str(word_tokenize(text, format="text"))

        return segment
    raise RetrievalError(f"unknown segmenter {name!r} (pyvi, underthesea or none)")


def compounds(text: str, segmenter: Segmenter) -> list[str]:
    """The folded compound words (two syllables or more) the segmenter finds in ``text``."""
    if segmenter == "none" or not text.strip():
        return []
    segmented = _segmenter(segmenter)(unicodedata.normalize("NFC", text))
    out = []
    for token in segmented.split():
        if "_" in token:
            parts = [fold(s) for s in _WORD.findall(token.lower().replace("_", " "))]
            if len(parts) > 1:
                out.append(JOIN.join(parts))
    return out


def dictionary_compounds(text: str, vocabulary: Collection[str], longest: int = 4) -> list[str]:
    """Compound words of ``vocabulary`` spelled by runs of 2 to ``longest`` folded syllables in
    ``text`` (never across punctuation), accents or not; overlapping ones all count."""
    out = []
    for phrase in PHRASE_BREAK.split(unicodedata.normalize("NFC", text).lower()):
        words = [fold(w) for w in _WORD.findall(phrase)]
        for n in range(2, longest + 1):
            for gram in itertools.pairwise(words) if n == 2 else _ngrams(words, n):
                term = JOIN.join(gram)
                if term in vocabulary:
                    out.append(term)
    return out


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


__all__ = ["JOIN", "Segmenter", "compounds", "dictionary_compounds"]
