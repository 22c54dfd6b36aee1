"""Hook implementations of lexrag-openai (registered through the `lexrag` entry point)."""

from __future__ import annotations
