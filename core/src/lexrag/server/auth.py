"""API keys: ``Authorization: Bearer <key>`` on every endpoint but ``/health`` and the page at ``/``.

No keys configured (``[server] api_keys``, ``LEXRAG_API_KEYS``) means no authentication.
Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
configured key, so the time taken says nothing about how much of a key was right, its
length, or which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from .. import calllog
from ..errors import AuthenticationError
from .errors import send_error

#: Paths served without a key: the health probe and the web page (which sends the key
#: the user types with each API call it makes).
PUBLIC_PATHS = frozenset({"/health", "/"})
#: The key under ``scope["state"]`` that holds the name of the request's API key.
KEY_NAME = "lexrag_key"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_matches(given: str, digests: Sequence[bytes]) -> bool:
    """Whether ``given`` is one of the keys (``digests`` from :func:`digest`), in time that
    does not depend on which key, if any, matched."""
    return matching_key(given, digests) is not None


def matching_key(given: str, digests: Sequence[bytes]) -> int | None:
    """The index of the key ``given`` is among ``digests``, or None; every key is compared."""
    candidate = digest(given)
    found = None
    for i, expected in enumerate(digests):
        if hmac.compare_digest(candidate, expected):
            found = i
    return found


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class AuthMiddleware:
    """Answers 401 (OpenAI's error body, ``WWW-Authenticate: Bearer``) to a request without
    a valid key. ``digests()`` gives the current keys' digests, so a config reload that
    changes the keys takes effect at once; an empty list turns authentication off."""

    def __init__(
        self,
        app: ASGIApp,
        digests: Callable[[], Sequence[bytes]],
        names: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.app = app
        self.digests = digests
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        digests = self.digests()
        if not digests:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is None:
            exc = AuthenticationError(
                "this server needs an API key: send the header 'Authorization: Bearer <key>' "
                "(the keys are in [server] api_keys or LEXRAG_API_KEYS)",
                code="missing_api_key",
            )
        elif (index := matching_key(token, digests)) is None:
            exc = AuthenticationError(
                "the API key sent is not valid for this server; check the key "
                "(the server's keys are in [server] api_keys or LEXRAG_API_KEYS)"
            )
        else:
            if self.names is not None:
                # The key's name (never the key) for the limits, the cache and the call log.
                name = self.names()[index]
                scope.setdefault("state", {})[KEY_NAME] = name
                calllog.current().key = name
            await self.app(scope, receive, send)
            return
        await send_error(send, exc, {"WWW-Authenticate": "Bearer"})


__all__ = ["KEY_NAME", "PUBLIC_PATHS", "AuthMiddleware", "digest", "key_matches", "matching_key"]
