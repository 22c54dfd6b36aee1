"""Pydantic models for everything that crosses a process boundary, in OpenAI's shapes."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class NoSettings(BaseModel):
    """Settings model of a plugin class that takes none: its config table must be empty."""

    model_config = ConfigDict(extra="forbid")


# --- requests -------------------------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One turn. List-of-parts content (text only) is accepted and joined."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _join_parts(cls, value: Any) -> Any:
        if isinstance(value, list):
            texts = [TextPart.model_validate(p).text for p in value]
            return "".join(texts)
        return value


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat request, plus lexrag's extras (``rag``, ``top_k``, ``fallback``).

    Unknown OpenAI fields (``user``, ``presence_penalty``, …) are accepted and ignored.
    """

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    # lexrag extras
    rag: bool | None = None
    top_k: int | None = Field(default=None, ge=1, le=100)
    fallback: list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# --- responses ------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class Source(BaseModel):
    """A retrieved passage cited by the answer as ``[index]``."""

    index: int
    doc: str
    title: str
    article: int | None = None
    article_title: str | None = None
    clauses: list[int] = Field(default_factory=list)
    citation: str
    score: float
    text: str


FinishReason = Literal["stop", "length", "content_filter", "error"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason | None = "stop"
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=new_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    sources: list[Source] | None = None

    @classmethod
    def of_text(
        cls, model: str, text: str, finish_reason: FinishReason, usage: Usage | None = None
    ) -> ChatCompletion:
        return cls(
            model=model,
            choices=[Choice(message=AssistantMessage(content=text), finish_reason=finish_reason)],
            usage=usage,
        )

    @property
    def text(self) -> str:
        return self.choices[0].message.content or ""


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    sources: list[Source] | None = None


class ChunkFactory:
    """Builds the chunks of one stream with a shared id, model and timestamp."""

    def __init__(self, model: str, id: str | None = None) -> None:
        self.id = id or new_id()
        self.model = model
        self.created = now()

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def role(self) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(delta=Delta(role="assistant", content=""))])

    def text(self, text: str) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(delta=Delta(content=text))])

    def finish(self, reason: FinishReason) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(delta=Delta(), finish_reason=reason)])

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return self._chunk([], usage=usage)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "lexrag"
    state: Literal["closed", "open", "half_open"] | None = None
    """lexrag's extra: the serving provider's circuit breaker (``open``: cooling down, skipped)."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- embeddings -----------------------------------------------------------------------


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str] = Field(min_length=1)
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- the seed's llm-service API -------------------------------------------------------


class GenerateRequest(BaseModel):
    """``POST /v1/generate`` of the seed's llm-service."""

    prompt: str = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    do_sample: bool = True


class GenerateResponse(BaseModel):
    generated_text: str
    model: str
    finish_reason: FinishReason
    usage: Usage


__all__ = [
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "ChunkFactory",
    "Delta",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "ErrorDetail",
    "ErrorResponse",
    "FinishReason",
    "GenerateRequest",
    "GenerateResponse",
    "ModelCard",
    "ModelList",
    "Source",
    "StreamOptions",
    "Usage",
    "new_id",
]
