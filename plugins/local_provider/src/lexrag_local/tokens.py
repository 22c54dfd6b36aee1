"""From token ids to text, incrementally: characters never broken across tokens, and
request ``stop`` strings that are never half-emitted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lexrag import ModelExportError

_REPLACEMENT = "\ufffd"


def fast_backend(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer, which streaming
    decodes with; a slow (Python) tokenizer has none."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelExportError(
            f"the tokenizer ({type(tokenizer).__name__}) has no fast version (tokenizer.json): "
            "re-run `lexrag model export`, which saves one beside the model"
        )
    return backend


class Detokenizer:
    """Turns token ids into text deltas with ``tokenizers``' ``DecodeStream`` on a fast
    tokenizer's backend (:func:`fast_backend`): each step decodes a short window of recent
    ids, so a character split across tokens (byte-level BPE, byte fallback) comes out whole
    once its last piece arrives, and decoders that change a token's text by its neighbours
    (SentencePiece's leading space) are followed. Special tokens are skipped.

    Bytes that can never form a character are dropped rather than shown as U+FFFD; an
    incomplete character left at the end is dropped by ``flush``, the text before it kept.
    """

    def __init__(self, backend: Any) -> None:
        from tokenizers.decoders import DecodeStream

        self._backend = backend
        self._stream = DecodeStream(skip_special_tokens=True)
        self._ids: list[int] = []
        self._streamed = ""  # what the stream gave, before U+FFFD was dropped
        self._held = False  # the ids after the last delta end in part of a character

    def feed(self, token_id: int) -> str:
        self._ids.append(token_id)
        delta: str | None = self._stream.step(self._backend, token_id)
        self._held = delta is None
        if delta is None:
            return ""
        self._streamed += delta
        return delta.replace(_REPLACEMENT, "")

    def flush(self) -> str:
        """The text of held ids before their incomplete last character (one decode of the
        whole sequence, only when ids are held)."""
        if not self._held:
            return ""
        self._held = False
        whole: str = self._backend.decode(self._ids, skip_special_tokens=True)
        if not whole.startswith(self._streamed):
            return ""
        return whole[len(self._streamed) :].replace(_REPLACEMENT, "")


class StopText:
    """Holds back text that could be the start of a ``stop`` string; cuts at the first match."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of ``text`` that is safe to emit now."""
        if self.stopped:
            return ""
        self._pending += text
        cut = min((i for i in (self._pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._pending = self._pending[:cut], ""
            return out
        safe = len(self._pending) - self._partial_match()
        out, self._pending = self._pending[:safe], self._pending[safe:]
        return out

    def _partial_match(self) -> int:
        """Length of the longest tail of the pending text that begins some stop string."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:k]):
                    best = k
                    break
        return best

    def flush(self) -> str:
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out


__all__ = ["Detokenizer", "StopText", "fast_backend"]
