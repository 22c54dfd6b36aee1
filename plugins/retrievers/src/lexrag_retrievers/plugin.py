"""Hook implementations of lexrag-retrievers (registered through the `lexrag` entry point)."""

from __future__ import annotations
