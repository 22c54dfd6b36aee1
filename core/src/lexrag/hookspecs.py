"""The hooks a lexrag plugin may implement.

Every ``register_*`` hook is called once, when a :class:`~lexrag.plugins.Registry`
is built from the plugin manager, and receives a ``register`` callback. A plugin
calls it once per class it offers; two plugins offering the same name is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

hookspec = pluggy.HookspecMarker("lexrag")
hookimpl = pluggy.HookimplMarker("lexrag")


@hookspec
def register_llm_providers(register: Callable[[str, type[Any]], None]) -> None:
    """Offer LLM providers.

    Called once when the registry is built. Call ``register(name, cls)`` for each
    provider, where ``cls`` subclasses :class:`lexrag.providers.Provider`. ``name`` is
    what ``[llm] provider`` and the request's ``model`` select, and names the
    config table ``[providers.<name>]`` that is validated against ``cls.Settings``.
    """


@hookspec
def register_embedders(register: Callable[[str, type[Any]], None]) -> None:
    """Offer text embedders.

    Called once when the registry is built. Call ``register(name, cls)`` for each
    embedder, where ``cls`` subclasses :class:`lexrag.retrieval.Embedder`; its
    settings come from ``[embedders.<name>]`` validated against ``cls.Settings``.
    """


@hookspec
def register_retrievers(register: Callable[[str, type[Any]], None]) -> None:
    """Offer retrievers.

    Called once when the registry is built. Call ``register(name, cls)`` for each
    retriever, where ``cls`` subclasses :class:`lexrag.retrieval.Retriever`; its
    settings come from ``[retrievers.<name>]`` validated against ``cls.Settings``.
    ``[retrieval] retriever`` selects one by name.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``lexrag`` command line.

    Called once when the CLI starts, with the top-level ``lexrag`` group. Add
    commands or groups with ``cli.add_command(...)`` or ``@cli.command()``.
    """
