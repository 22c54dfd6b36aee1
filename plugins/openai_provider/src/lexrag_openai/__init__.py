"""LLM provider for the OpenAI API and any OpenAI-compatible server."""

from .provider import OpenAIProvider
from .settings import OpenAISettings

__all__ = ["OpenAIProvider", "OpenAISettings"]
