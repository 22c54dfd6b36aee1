"""Small in-test plugins, registered with ``pm.register(FakePlugins())``.

- retriever ``static``: a handful of articles in memory, scored by word overlap.
- provider ``local-style``: generates in-process the way the local provider does
  (its own tokenizer, ChunkFactory chunks), answering with a fixed text that cites [1].
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from lexrag import hookimpl
from lexrag.providers import Provider, ProviderRequest
from lexrag.retrieval import Chunk, Citation, Embedder, FloatArray, Hit, Retriever
from lexrag.types import ChatCompletion, ChatCompletionChunk, ChunkFactory, Usage

ARTICLES = [
    Citation(
        "bo-luat-lao-dong",
        "Bộ luật Lao động",
        chapter="Chương VII",
        article=105,
        article_title="Thời giờ làm việc bình thường",
        clauses=(1,),
    ),
    Citation(
        "bo-luat-lao-dong",
        "Bộ luật Lao động",
        chapter="Chương II",
        article=25,
        article_title="Thời gian thử việc",
    ),
    Citation(
        "bo-luat-lao-dong",
        "Bộ luật Lao động",
        chapter="Chương II",
        article=26,
        article_title="Tiền lương thử việc",
    ),
    Citation(
        "luat-hon-nhan-gia-dinh",
        "Luật Hôn nhân và gia đình",
        article=8,
        article_title="Điều kiện kết hôn",
        clauses=(1,),
    ),
]
TEXTS = [
    "Điều 105. Thời giờ làm việc bình thường\n1. Thời giờ làm việc bình thường không quá 08 giờ "
    "trong 01 ngày và không quá 48 giờ trong 01 tuần.",
    "Điều 25. Thời gian thử việc\nKhông quá 180 ngày đối với công việc của người quản lý doanh nghiệp.",
    "Điều 26. Tiền lương thử việc\nTiền lương thử việc ít nhất phải bằng 85% mức lương của công việc đó.",
    "Điều 8. Điều kiện kết hôn\n1. Nam từ đủ 20 tuổi trở lên, nữ từ đủ 18 tuổi trở lên.",
]
CHUNKS = [Chunk(f"{c.doc}:{c.article}", c, t) for c, t in zip(ARTICLES, TEXTS, strict=True)]


def _words(text: str) -> set[str]:
    folded = unicodedata.normalize("NFD", text.lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).replace("đ", "d")
    return set(re.findall(r"\w+", folded))


class StaticRetriever(Retriever):
    """Every chunk that shares a word with the query, best overlap first."""

    searches: list[tuple[str, str]] = []  # noqa: RUF012 - shared on purpose: (query, thread name)

    def search(self, query: str, k: int) -> list[Hit]:
        StaticRetriever.searches.append((query, threading.current_thread().name))
        q = _words(query)
        scored = [(len(q & _words(c.text)) / (len(q) or 1), c) for c in CHUNKS]
        scored = [s for s in scored if s[0] > 0]
        scored.sort(key=lambda s: -s[0])
        return [Hit(c, score) for score, c in scored[:k]]


class LocalStyleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = "Theo quy định, không quá 08 giờ trong 01 ngày [1]."
    context_window: int = 4096


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]|\s+", text)


class LocalStyleProvider(Provider):
    """An in-process generator shaped like the local provider: its own tokenizer."""

    Settings = LocalStyleSettings
    seen: list[ProviderRequest] = []  # noqa: RUF012 - shared on purpose: tests read what was sent

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, LocalStyleSettings)
        self.context_window = settings.context_window
        self.text = settings.text

    @property
    def default_model(self) -> str:
        return "frog-test"

    def count_tokens(self, text: str) -> int | None:
        return len([t for t in _tokens(text) if not t.isspace()])

    def _usage(self, request: ProviderRequest) -> Usage:
        prompt = sum(self.count_tokens(m.content or "") or 0 for m in request.messages)
        return Usage.of(prompt, self.count_tokens(self.text) or 0)

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        LocalStyleProvider.seen.append(request)
        return ChatCompletion.of_text(
            request.model or self.default_model, self.text, "stop", self._usage(request)
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        LocalStyleProvider.seen.append(request)
        chunks = ChunkFactory(request.model or self.default_model)
        yield chunks.role()
        for token in _tokens(self.text):
            yield chunks.text(token)
        yield chunks.finish("stop")
        yield chunks.usage(self._usage(request))


class BrokenRetriever(Retriever):
    """Fails the way a buggy plugin does: with an exception lexrag did not foresee."""

    def search(self, query: str, k: int) -> list[Hit]:
        raise RuntimeError("boom: a bug inside a retriever plugin /secret/path.py line 1")


class HashEmbedder(Embedder):
    """Deterministic 16-d unit vectors from the text's hash (no model)."""

    @property
    def model_id(self) -> str:
        return "hash-16"

    @property
    def dim(self) -> int:
        return 16

    def embed(self, texts: Sequence[str]) -> FloatArray:
        out = np.zeros((len(texts), 16), dtype=np.float32)
        for i, text in enumerate(texts):
            digest = hashlib.sha256(text.encode()).digest()
            out[i] = np.frombuffer(digest[:16], dtype=np.uint8).astype(np.float32) + 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class FakePlugins:
    """Registers the in-test plugins: ``pm.register(FakePlugins())``."""

    @hookimpl
    def register_retrievers(self, register: Callable[[str, type[Any]], None]) -> None:
        register("static", StaticRetriever)
        register("broken", BrokenRetriever)

    @hookimpl
    def register_embedders(self, register: Callable[[str, type[Any]], None]) -> None:
        register("hash", HashEmbedder)

    @hookimpl
    def register_llm_providers(self, register: Callable[[str, type[Any]], None]) -> None:
        register("local-style", LocalStyleProvider)
