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
    """Base URL of an llm-service (another ``lexrag serve``, vLLM, llama.cpp's server); set,
    it replaces in-process generation. ``api`` says which of its endpoints is used."""
    model_name: str | None = None
    """Model id reported to clients (default: the export's source, or "local")."""
    device: Literal["cpu", "cuda"] = "cpu"
    """``cuda`` uses CUDAExecutionProvider when ONNX Runtime can run it, CPU otherwise."""
    threads: int = Field(default=0, ge=0)
    """ONNX Runtime intra-op threads; 0: one per physical core this process may use (its
    affinity mask), passed as a count so that onnxruntime pins no thread."""
    spin: bool = False
    """CPU: idle ONNX Runtime intra-op threads spin instead of sleeping. Only where the cores
    are the server's own: on a quiet 2-core machine decode gained up to 1.1x; beside one
    other busy process it ran 1.5-1.8x slower."""
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
    """Requests that may wait for a free place in the running batch; more fail with a
    retryable 503 (Retry-After)."""
    max_batch: int = Field(default=8, ge=1)
    """Sequences generated together (continuous batching); the KV cache is planned for
    ``max_batch`` × the context window."""
    kv_cache_mb: int | None = Field(default=None, ge=1)
    """A budget for the KV cache (MiB): fewer than ``max_batch`` sequences run together
    when their cache would not fit in it."""
    prefill_chunk: int | None = Field(default=None, ge=0)
    """Prompt tokens prefilled per step while other sequences decode (prompts longer than
    ``prefill_whole_tokens``), so their tokens keep flowing during a long prompt; unset: as
    many as take about 1.5 decode steps' time (measured as it runs); 0: each prompt in one
    step."""
    prefill_whole_tokens: int = Field(default=512, ge=0)
    """Prompts of at most this many tokens are prefilled in one step, ahead of the next
    decode step, even while others decode: their first token comes about as soon as on an
    idle engine, and the running streams wait for it once; 0 chunks every prompt."""
    # HTTP mode
    api: Literal["chat", "completions", "generate"] = "chat"
    """HTTP mode: how the llm-service is asked. ``chat``: OpenAI's streamed
    ``POST /v1/chat/completions`` with the messages (the service applies the model's chat
    template). ``completions``: OpenAI's streamed ``POST /v1/completions`` with the prompt
    rendered here (``tokenizer_dir``'s template, else Llama-3's). ``generate``: the seed's
    ``POST /v1/generate``, one whole answer, not streamed. A raw prompt always goes to
    ``/v1/completions`` unless ``api = "generate"``."""
    upstream_model: str | None = None
    """HTTP mode: the ``model`` sent to the llm-service (vLLM wants the id it serves, e.g.
    ``phamhai/Llama-3.2-3B-Instruct-Frog``); unset, none is sent and the service answers with
    its default model (lexrag, llama.cpp)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=300.0, gt=0)
    """HTTP mode: the longest wait for the llm-service's next bytes (its first token, each
    following one), or, with ``api = "generate"``, for its whole answer."""
    tokenizer_dir: Path | None = None
    """HTTP mode: a directory whose tokenizer renders the chat template and counts tokens
    (default: ``model_dir`` if set, else the built-in Llama-3 template)."""
    context_window: int = Field(default=8192, ge=16)
    """HTTP mode: the remote model's context window (the in-process engine reads it from the model)."""


__all__ = ["REFERENCE_MODEL", "LocalSettings"]
