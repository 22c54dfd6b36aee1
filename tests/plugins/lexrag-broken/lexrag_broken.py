"""A plugin whose import fails, as a plugin with a missing dependency does."""

from __future__ import annotations

raise ImportError("lexrag_broken needs the package 'not-installed-anywhere'")
