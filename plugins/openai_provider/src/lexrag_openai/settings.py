"""``[providers.openai]``: the settings of the OpenAI provider."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class OpenAISettings(BaseModel):
    """Any OpenAI-compatible API: OpenAI, vLLM, llama.cpp server, LiteLLM, another lexrag.

    ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` set ``api_key`` and ``base_url``.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = "gpt-4o-mini"
    """The model asked for when the request names none (or names the provider)."""
    models: list[str] = Field(default_factory=list)
    """Other model ids a request may name to be routed here (listed in /v1/models)."""
    base_url: str | None = None
    """The API root, e.g. ``http://localhost:8001/v1``; unset means OpenAI's own."""
    api_key: SecretStr | None = None
    """Needed for OpenAI itself; servers that check no key get a placeholder."""
    organization: str | None = None
    project: str | None = None
    timeout: float = Field(default=60.0, gt=0)
    """Seconds for one upstream call (connect, each read)."""
    connect_timeout: float = Field(default=5.0, gt=0)
    context_window: int = Field(default=128_000, ge=256)
    """Prompt + completion tokens the model accepts; the prompt's passages are fitted into it."""
    token_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """The request field that carries the token limit (newer OpenAI models want
    ``max_completion_tokens``; most compatible servers read ``max_tokens``)."""
    stream_usage: bool = True
    """Ask for usage at the end of streams (``stream_options.include_usage``)."""
    health_timeout_s: float = Field(default=2.0, gt=0)
    """Seconds ``/health``'s probe of the upstream (``GET /models``) may take."""
    health_cache_s: float = Field(default=5.0, ge=0)
    """Seconds a probe's answer is reused: ``/health`` under load costs no upstream calls."""


__all__ = ["OpenAISettings"]
