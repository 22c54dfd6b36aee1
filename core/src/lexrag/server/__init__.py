"""The OpenAI-compatible HTTP server (FastAPI), also the seed's llm-service API."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
