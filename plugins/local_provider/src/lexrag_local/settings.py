"""The ``[providers.local]`` settings table."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: The reference model: Llama 3.2 3B, Vietnamese, RAG-tuned.
REFERENCE_MODEL = "phamhai/Llama-3.2-3B-Instruct-Frog"


class LocalSettings(BaseModel):
    """In-process generation from an exported model directory, or, when ``url`` is set
    (``LOCAL_LLM_API_URL``), a running llm-service spoken to over HTTP."""

    model_config = ConfigDict(extra="forbid")

    model_dir: Path | None = None
    """Directory written by ``lexrag model export`` (model.onnx, tokenizer, generation config)."""
    url: str | None = None
    """Base URL of an llm-service (``POST {url}/v1/generate``); set, it replaces in-process generation."""
    model_name: str | None = None
    """Model id reported to clients (default: the export's source, or "local")."""
    device: Literal["cpu", "cuda"] = "cpu"
    """``cuda`` uses CUDAExecutionProvider when ONNX Runtime can run it, CPU otherwise."""
    threads: int = Field(default=0, ge=0)
    """ONNX Runtime intra-op threads; 0 lets it choose (one per core)."""
    max_context: int | None = Field(default=None, ge=16)
    """Caps the context window below the model's own (KV buffers are sized by it)."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """Default temperature; unset: the generation config's (Frog: 0.6), 0 means greedy."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Default top_p; unset: the generation config's (Frog: 0.9)."""
    top_k: int | None = Field(default=None, ge=0)
    """Default top_k; unset: the generation config's, 0 disables it."""
    max_tokens: int = Field(default=512, ge=1)
    """Default completion length when a request names none."""
    queue_size: int = Field(default=32, ge=1)
    """Requests that may wait for the model at once; more fail with a retryable error."""
    # HTTP mode
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=300.0, gt=0)
    """Time to wait for a whole answer of the llm-service (it does not stream)."""
    tokenizer_dir: Path | None = None
    """HTTP mode: a directory whose tokenizer renders the chat template and counts tokens
    (default: ``model_dir`` if set, else the built-in Llama-3 template)."""
    context_window: int = Field(default=8192, ge=16)
    """HTTP mode: the remote model's context window (the in-process engine reads it from the model)."""


__all__ = ["REFERENCE_MODEL", "LocalSettings"]
