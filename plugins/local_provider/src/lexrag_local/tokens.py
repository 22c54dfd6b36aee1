"""From token ids to text, incrementally: UTF-8 that is never broken across tokens, and
request ``stop`` strings that are never half-emitted."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any


def _byte_decoder() -> dict[str, int]:
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


class TokenBytes:
    """The bytes each token id stands for, for byte-level BPE tokenizers (Llama-3, GPT-2).

    Special tokens (``<|eot_id|>``, headers) map to no bytes: they are never shown.
    Built once per tokenizer; decoding a token is then a table look-up.
    """

    def __init__(self, tokenizer: Any) -> None:
        decoder = _byte_decoder()
        special = set(tokenizer.all_special_ids)
        added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.table: list[bytes] = []
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                self.table.append(b"")
            elif i in added:
                self.table.append(added[i].encode())
            else:
                self.table.append(bytes(decoder[c] for c in piece if c in decoder))

    @staticmethod
    def supports(tokenizer: Any) -> bool:
        """Whether ``tokenizer`` is byte-level BPE (its pieces spell bytes)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        return backend is not None and type(backend.decoder).__name__ == "ByteLevel"

    def __getitem__(self, token_id: int) -> bytes:
        return self.table[token_id] if 0 <= token_id < len(self.table) else b""


class Detokenizer:
    """Turns token ids into text deltas.

    Byte-level tokenizers go through an incremental UTF-8 decoder, so a character split
    across tokens comes out whole once its last byte arrives; bytes that can never form a
    character are dropped rather than shown as U+FFFD. Other tokenizers decode the whole
    sequence and emit the new suffix, holding back an incomplete trailing character.
    """

    def __init__(self, tokenizer: Any, token_bytes: TokenBytes | None) -> None:
        self._tokenizer = tokenizer
        self._bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._ids: list[int] = []
        self._emitted = 0

    def feed(self, token_id: int) -> str:
        if self._bytes is not None:
            return str(self._utf8.decode(self._bytes[token_id]))
        self._ids.append(token_id)
        text: str = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta, self._emitted = text[self._emitted :], len(text)
        return delta

    def flush(self) -> str:
        if self._bytes is not None:
            return str(self._utf8.decode(b"", final=True))
        text: str = self._tokenizer.decode(self._ids, skip_special_tokens=True).replace("\ufffd", "")
        delta, self._emitted = text[self._emitted :], len(text)
        return delta


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


__all__ = ["Detokenizer", "StopText", "TokenBytes"]
