"""Hook implementations of lexrag-local (registered through the `lexrag` entry point)."""

from __future__ import annotations
