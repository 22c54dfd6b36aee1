"""Retrievers for lexrag."""
