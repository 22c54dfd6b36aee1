"""Test doubles at the boundaries: a fake upstream HTTP server, and small in-test plugins."""

from .plugins import FakePlugins, LocalStyleProvider, StaticRetriever
from .upstream import Drop, Fail, FakeUpstream, Hang, Malformed, Recorded, Reply, Reset

__all__ = [
    "CHUNKS",
    "Drop",
    "Fail",
    "FakePlugins",
    "FakeUpstream",
    "Hang",
    "HashEmbedder",
    "LocalStyleProvider",
    "Malformed",
    "Recorded",
    "Reply",
    "Reset",
    "StaticRetriever",
]
