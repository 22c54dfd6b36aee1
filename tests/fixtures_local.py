"""Fixtures for the local tests (loaded by conftest.py)."""
