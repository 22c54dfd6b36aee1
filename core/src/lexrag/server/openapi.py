"""The OpenAPI schema, made to say what the server really answers.

FastAPI declares a 422 for every body it validates; lexrag answers 400 with OpenAI's
error body instead. The middleware adds answers no route declares: 401 (API keys), 413
(body size), 429 (concurrency). Operations other than ``/health`` carry the bearer
security scheme when keys are configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

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


def honest_openapi(app: FastAPI, keys_required: Callable[[], bool]) -> Callable[[], dict[str, Any]]:
    """A replacement for ``app.openapi`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        secured = keys_required()
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
        if secured:
            components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
        app.openapi_schema = schema
        return schema

    return openapi


__all__ = ["honest_openapi"]
