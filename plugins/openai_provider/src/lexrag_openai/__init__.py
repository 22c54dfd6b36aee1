"""LLM provider for the OpenAI API and any OpenAI-compatible server."""
