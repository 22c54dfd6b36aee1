"""Document loaders for lexrag: the text of PDF, DOCX and HTML legal documents, laid out for
the legal chunker (headings on their own lines, Khoản and Điểm numbering kept, tables as one
line per row, running headers, footers and page numbers dropped)."""

from .pdf import PdfLoader
from .webpage import HtmlLoader
from .word import DocxLoader

__all__ = ["DocxLoader", "HtmlLoader", "PdfLoader"]
