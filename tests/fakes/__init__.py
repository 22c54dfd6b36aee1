"""Test doubles at the boundaries: a fake upstream HTTP server, and small in-test plugins."""

from .plugins import FakePlugins, LocalStyleProvider, StaticRetriever
from .upstream import Drop, Fail, FakeUpstream, Hang, Malformed, Recorded, Reply, Reset

__all__ = [
    "Drop",
    "Fail",
    "FakePlugins",
    "FakeUpstream",
    "Hang",
    "LocalStyleProvider",
    "Malformed",
    "Recorded",
    "Reply",
    "Reset",
    "StaticRetriever",
]
