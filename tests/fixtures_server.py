"""Fixtures for the server tests (loaded by conftest.py)."""
