"""Hook implementations of lexrag-openai (registered through the `lexrag` entry point)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lexrag import hookimpl

from .provider import OpenAIProvider


@hookimpl
def register_llm_providers(register: Callable[[str, type[Any]], None]) -> None:
    register("openai", OpenAIProvider)
