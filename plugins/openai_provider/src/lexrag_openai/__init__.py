"""LLM provider for the OpenAI API and any OpenAI-compatible server."""

from .provider import OpenAIProvider, retry_after
from .settings import OpenAISettings

__all__ = ["OpenAIProvider", "OpenAISettings", "retry_after"]
