"""One error hierarchy, and the one place that maps it to HTTP and to the CLI.

Every error lexrag raises on purpose is a :class:`LexragError`; the server turns it into
an HTTP status and an OpenAI error body (:func:`http_error`), the CLI into one line and an
exit code (:func:`cli_message`, :func:`cli_exit_code`)::

    LexragError                      500 server_error
    ├── ConfigError                  500 config_error      (CLI exit 2)
    ├── PluginError                  500 plugin_error      (CLI exit 2)
    ├── InvalidRequestError          400 invalid_request_error
    │   └── DocumentStructureError   400  a document without Điều headings
    ├── AuthenticationError          401
    ├── NotFoundError                404
    ├── PayloadTooLargeError         413
    ├── RateLimitError               429  + Retry-After
    ├── ProviderError                503 if retryable, else 502 (or the upstream's 4xx)
    │   ├── ProviderTimeoutError     504  retryable
    │   └── CoolingDown              503  the provider's breaker is open; skipped
    ├── RetrievalError               503  index missing, corrupt, other embedder
    ├── ModelExportError             500  exporting or loading a model failed
    ├── StreamCutShort               503  the server shut down mid-stream
    └── ClientDisconnected           499  the client left before its answer was ready

A plugin raises :class:`ProviderError` with ``retryable`` set for its own failures: the
router retries a retryable one, then moves on to the next provider of the chain; a permanent
one moves on at once, unless it blames the request (400, 413, 422: see
:attr:`ProviderError.blames_request`), which fails at once. Messages reach clients and logs
through :func:`lexrag.redact.redact`, so a URL's password never does.
"""

from __future__ import annotations

from typing import Any

from .redact import redact


class LexragError(Exception):
    """Base of every error lexrag raises on purpose.

    ``status`` is the HTTP status the server answers with; ``type`` and ``code`` fill
    the OpenAI error body; ``param`` names the offending request field, if any.
    """

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ConfigError(LexragError):
    """The configuration (file, environment, flags) is invalid."""

    status = 500
    type = "config_error"
    code = "bad_config"


class PluginError(LexragError):
    """A plugin is missing, broken, or clashes with another."""

    status = 500
    type = "plugin_error"
    code = "plugin_error"


class InvalidRequestError(LexragError):
    """The request is malformed or asks for something impossible."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationError(LexragError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(LexragError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLargeError(LexragError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(LexragError):
    """Too many requests; ``retry_after`` seconds is a hint for the client."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ProviderError(LexragError):
    """An LLM provider failed.

    ``retryable`` is True for transient failures (connect errors, timeouts, 429, 5xx)
    that a retry or another provider may get past, False for permanent ones.
    """

    type = "provider_error"
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.retryable = retryable
        self.retry_after = retry_after
        self.provider = provider
        # A permanent upstream 4xx is the client's fault only when it is about the
        # request; the gateway itself answers 502 for everything else.
        self.status = status if status is not None else (503 if retryable else 502)

    @property
    def blames_request(self) -> bool:
        """The request itself is at fault (bad parameters, a prompt too long: 400, 413, 422),
        so no other provider would do better. Every other failure belongs to the provider
        (transient, or a key, model or setup it lacks) and the router moves on down the chain."""
        return not self.retryable and self.status in (400, 413, 422)


class ProviderTimeoutError(ProviderError):
    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("status", 504)
        super().__init__(message, retryable=True, **kw)
        self.code = "timeout"


class CoolingDown(ProviderError):
    """The provider's breaker is open: it failed too often lately and is skipped."""

    def __init__(self, provider: str, retry_in: float) -> None:
        super().__init__(
            f"provider {provider!r} is cooling down after repeated failures and is skipped for "
            f"{retry_in:.0f} s more ([llm] breaker_cooldown_s); try again then",
            retryable=True,
            status=503,
            retry_after=retry_in,
            provider=provider,
        )
        self.code = "provider_cooling_down"


class DocumentStructureError(InvalidRequestError):
    """A document has no recognisable legal structure (no Điều headings)."""


class StreamCutShort(LexragError):
    """The server is shutting down and ends the streams still open."""

    status = 503
    type = "server_error"
    code = "server_shutting_down"


class ClientDisconnected(LexragError):
    """The client went away before its answer was ready; the work for it was cancelled.
    Nobody reads the response: the status is nginx's 499, for the logs and metrics."""

    status = 499
    type = "client_closed_request"
    code = "client_closed_request"


class RetrievalError(LexragError):
    """The index is missing, corrupt, or was built with another embedder."""

    status = 503
    type = "retrieval_error"
    code = "retrieval_error"


class ModelExportError(LexragError):
    """Exporting or loading a model failed."""

    type = "model_error"
    code = "model_error"


def error_body(exc: LexragError) -> dict[str, Any]:
    """The OpenAI error body for ``exc``."""
    return {
        "error": {
            "message": redact(exc.message),
            "type": exc.type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def http_error(exc: LexragError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, OpenAI error body, extra headers) for ``exc``."""
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return exc.status, error_body(exc), headers


def cli_message(exc: LexragError) -> str:
    """One line for the terminal: no traceback, the message says what to do."""
    return f"Error: {' '.join(redact(exc.message).split())}"


EXIT_CODES: dict[type[LexragError], int] = {ConfigError: 2, PluginError: 2}


def cli_exit_code(exc: LexragError) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


__all__ = [
    "AuthenticationError",
    "ConfigError",
    "CoolingDown",
    "DocumentStructureError",
    "InvalidRequestError",
    "LexragError",
    "ModelExportError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PluginError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RetrievalError",
    "StreamCutShort",
    "cli_exit_code",
    "cli_message",
    "error_body",
    "http_error",
]
