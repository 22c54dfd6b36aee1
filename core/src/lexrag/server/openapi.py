"""The OpenAPI schema, made to say what the server really answers.

FastAPI declares a 422 for every body it validates; lexrag answers 400 with OpenAI's
error body instead. The middleware adds answers no route declares: 401 (API keys), 413
(body size), 429 (concurrency). Operations other than ``/health`` carry the bearer
security scheme when keys are configured. What the server accepts depends on its config,
and the schema says so: ``max_tokens`` (and ``max_completion_tokens``) carry ``[server]
max_tokens`` as their maximum, and ``/v1/embeddings``' ``dimensions`` is offered (up to the
vectors' length) only when the embedder can shorten its vectors (``Embedder.matryoshka``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..errors import LexragError
from .auth import PUBLIC_PATHS

_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_DESCRIPTIONS = {
    "400": "Invalid request (OpenAI error body; `param` names the field)",
    "401": "Missing or invalid API key",
    "413": "Request body over [server] max_body_bytes",
    "429": "Too many requests at once ([server] max_concurrency); see Retry-After",
    "500": "Internal error",
}


def _error(code: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS.get(code, "Error"),
        "content": {"application/json": {"schema": _ERROR_REF}},
    }


#: Request schemas whose token counts the server caps at ``[server] max_tokens``.
_CAPPED = {
    "ChatCompletionRequest": ("max_tokens", "max_completion_tokens"),
    "GenerateRequest": ("max_tokens",),
    "CompletionRequest": ("max_tokens",),
}


def _token_limit(app: FastAPI) -> int | None:
    """The current config's ``[server] max_tokens`` (None before the server state exists)."""
    state = getattr(app.state, "lexrag", None)
    if state is None:
        return None
    limit: int = state.current.config.settings.server.max_tokens
    return limit


def _dimensions(app: FastAPI) -> tuple[bool, int | None]:
    """(whether the embedder honours ``dimensions``, its vectors' length if it does)."""
    state = getattr(app.state, "lexrag", None)
    if state is None:
        return False, None
    generation = state.current
    cls = generation.registry.embedders.classes.get(generation.config.settings.retrieval.embedder)
    if cls is None or not cls.matryoshka:
        return False, None
    try:
        dim: int = generation.embedder().dim
    except LexragError:
        return True, None
    return True, dim


def _offer_dimensions(schemas: dict[str, Any], dimensions: tuple[bool, int | None]) -> None:
    prop = schemas.get("EmbeddingRequest", {}).get("properties", {}).get("dimensions")
    if prop is None:
        return
    offered, dim = dimensions
    if not offered:
        prop.clear()
        prop.update(
            {
                "not": {},
                "description": "Not offered: this server's embedder cannot shorten its vectors "
                "(it is not a Matryoshka model); a request with dimensions is a 400.",
            }
        )
        return
    for branch in [prop, *prop.get("anyOf", [])]:
        if branch.get("type") == "integer" and dim is not None:
            branch["maximum"] = dim


def _cap_tokens(schemas: dict[str, Any], limit: int) -> None:
    for name, fields in _CAPPED.items():
        properties = schemas.get(name, {}).get("properties", {})
        for field in fields:
            prop = properties.get(field)
            if prop is None:
                continue
            for branch in [prop, *prop.get("anyOf", [])]:
                if branch.get("type") == "integer":
                    branch["maximum"] = limit
            if isinstance(prop.get("default"), int):
                prop["default"] = min(prop["default"], limit)


def honest_openapi(app: FastAPI, keys_required: Callable[[], bool]) -> Callable[[], dict[str, Any]]:
    """A replacement for ``app.openapi`` (built on first request, again after a reload that
    changes the keys or the token limit)."""
    built_for: list[tuple[bool, int | None, tuple[bool, int | None]]] = []

    def openapi() -> dict[str, Any]:
        secured, limit, dimensions = keys_required(), _token_limit(app), _dimensions(app)
        if app.openapi_schema and built_for == [(secured, limit, dimensions)]:
            return app.openapi_schema
        built_for[:] = [(secured, limit, dimensions)]
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                extra = ["500"]
                if "requestBody" in operation:
                    extra += ["400", "413"]
                if path.startswith("/v1/"):
                    extra.append("429")
                if secured and path not in PUBLIC_PATHS:
                    extra.append("401")
                    operation["security"] = [{"bearerAuth": []}]
                for code in extra:
                    responses.setdefault(code, _error(code))
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        if limit is not None:
            _cap_tokens(schemas, limit)
        _offer_dimensions(schemas, dimensions)
        if secured:
            components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
        app.openapi_schema = schema
        return schema

    return openapi


__all__ = ["honest_openapi"]
