"""Fixtures for the retrieval tests (loaded by conftest.py)."""
