"""Secrets out of everything that leaves the process: URLs with a password or a token.

A proxy is often reached as ``http://user:PASSWORD@host/v1`` or with ``?api_key=…`` in the
query. :func:`mask_url` hides those parts of one URL; :func:`redact` hides them in every URL
inside a text (an error message, a log line). Responses, logs, metrics labels and
``lexrag config show`` go through one of the two.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "********"

#: Query parameters whose value is a credential (compared lower-case, ``-`` as ``_``).
CREDENTIAL_PARAMS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "access_token",
        "auth",
        "authorization",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "sig",
        "signature",
        "code",
        "x_amz_signature",
        "x_amz_credential",
        "x_amz_security_token",
    }
)

# A URL in running text: it does not end with the punctuation that follows it in a sentence.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]*[^\s\"'<>.,;:!?)\]}]")


def _credential(name: str) -> bool:
    return name.lower().replace("-", "_") in CREDENTIAL_PARAMS


def mask_url(url: str) -> str:
    """``url`` with its userinfo and credential-like query values replaced by ``********``;
    anything that does not parse as a URL with a host is returned unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_credential(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _credential(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str) -> str:
    """``text`` with every URL in it passed through :func:`mask_url`."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: mask_url(m.group(0)), text)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line (tracebacks included) went through :func:`redact`:
    the handlers ``lexrag serve`` and the CLI install use it."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


__all__ = ["CREDENTIAL_PARAMS", "MASK", "RedactingFormatter", "mask_url", "redact"]
