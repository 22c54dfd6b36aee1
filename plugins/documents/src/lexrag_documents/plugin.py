"""Hook implementations of lexrag-documents (registered through the `lexrag` entry point)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lexrag import hookimpl

from .pdf import PdfLoader
from .webpage import HtmlLoader
from .word import DocxLoader


@hookimpl
def register_loaders(register: Callable[[str, type[Any]], None]) -> None:
    register(".pdf", PdfLoader)
    register(".docx", DocxLoader)
    register(".html", HtmlLoader)
    register(".htm", HtmlLoader)
