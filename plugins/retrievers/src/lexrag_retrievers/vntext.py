"""BM25 terms of Vietnamese text: the core's folding and bigrams (:mod:`lexrag.vntext`), plus the
accented forms the lexical index also keeps, and the question words a query can do without."""

from __future__ import annotations

import re

from lexrag.vntext import fold, syllables, terms

# Words that say what kind of answer is wanted, not what the question is about ("bao nhiêu",
# "có được … không", "là gì", "như thế nào"). In the codes they are common words of little
# weight, yet BM25 still rewards the articles that happen to repeat them. Matched with their
# accents; in a query typed without accents only the phrases of two or more syllables and the
# words whose folded form is no other word, since "toi" may be "tối" and "thi" "thi hành".
QUESTION_WORDS: tuple[str, ...] = (
    "như thế nào",
    "thế nào",
    "ra sao",
    "bao nhiêu",
    "bao lâu",
    "bao giờ",
    "khi nào",
    "là gì",
    "tại sao",
    "vì sao",
    "hay không",
    "được không",
    "có phải",
    "phải không",
    "những gì",
    "cái gì",
    "ở đâu",
    "mấy",
    "gì",
    "nào",
    "thì",
    "ạ",
    "nhé",
    "vậy",
    "tôi",
    "mình",
    "có",
    "được",
    "bị",
)
_UNACCENTED_OK = frozenset({"gi", "duoc"})
_QUESTION_SEQS = sorted((tuple(w.split()) for w in QUESTION_WORDS), key=len, reverse=True)
_FOLDED_SEQS = sorted(
    {tuple(fold(w) for w in seq) for seq in _QUESTION_SEQS if len(seq) > 1 or fold(seq[0]) in _UNACCENTED_OK},
    key=len,
    reverse=True,
)
_PHRASE_BREAK = re.compile(r"[^\w\s]+|\n")


def fold_text(text: str) -> str:
    """``Thời giờ`` → ``thoi gio``: folded syllables joined by spaces."""
    return " ".join(fold(s) for s in syllables(text))


def without_question_words(text: str) -> str:
    """``text`` (lower-cased) without the words that only make it a question. A removed word
    leaves a comma, so bigrams never join the words on either side of it; a phrase's final
    "không" asks yes or no ("có được … không?") and goes too, elsewhere it negates and stays."""
    out = []
    for phrase in _PHRASE_BREAK.split(text):
        words = syllables(phrase)
        if words and fold(words[-1]) == "khong":
            words = words[:-1]
        # Without a single accent the query was typed unaccented: match folded forms.
        plain = all(w == fold(w) for w in words)
        forms = [fold(w) for w in words] if plain else words
        kept: list[str] = []
        i = 0
        while i < len(words):
            for seq in _FOLDED_SEQS if plain else _QUESTION_SEQS:
                if tuple(forms[i : i + len(seq)]) == seq:
                    kept.append(",")
                    i += len(seq)
                    break
            else:
                kept.append(words[i])
                i += 1
        out.append(" ".join(kept))
    return " , ".join(out)


def tokens(text: str, *, bigrams: bool = True, accents: bool = False) -> list[str]:
    """BM25 terms of ``text``: folded syllables, plus folded syllable bigrams (``thoi_gio``) that
    stand in for Vietnamese compound words, plus (``accents``) the accented form of each syllable
    whose accents matter, so an accented query prefers exact matches."""
    out = terms(text, bigrams=bigrams)
    if accents:
        out.extend(s for s in syllables(text) if s != fold(s))
    return out


__all__ = ["QUESTION_WORDS", "fold", "fold_text", "syllables", "tokens", "without_question_words"]
