"""The hooks a lexrag plugin may implement.

A plugin is a module (or object) with functions marked ``@lexrag.hookimpl``, named after
the hooks below and taking the arguments they list (pluggy lets an implementation take
fewer). Installed plugins are found through the entry-point group ``lexrag``; the
in-tree ``extractive`` provider registers through the same hooks.

When they run: the command line builds one plugin manager per run and calls
:func:`register_commands` before it parses the arguments or reads the config. The
``register_*`` hooks of classes run once, when a :class:`lexrag.registry.Registry` is
built from that manager, which commands and the server do on first use of a plugin.

A hook that raises stops the registry from being built: the error is a
:class:`lexrag.PluginError` naming the plugin and the hook, and the commands that need
plugins fail with that one line (``lexrag plugins``, ``lexrag uninstall`` and the other
built-in commands keep working, so the plugin can be removed). A plugin that cannot even
be imported is reported by ``lexrag plugins`` and on stderr, and skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from .loaders import Loader
    from .providers import Provider
    from .retrieval import Embedder, IndexStore, Reranker, Retriever

hookspec = pluggy.HookspecMarker("lexrag")
hookimpl = pluggy.HookimplMarker("lexrag")


@hookspec
def register_llm_providers(register: Callable[[str, type[Provider]], None]) -> None:
    """Offer LLM providers.

    :param register: ``register(name, cls)``; call it once per provider the plugin offers.

    ``name`` is what ``[llm] provider``, ``[llm] fallback``, ``LLM_PROVIDER`` and a
    request's ``model`` select, and names the config table ``[providers.<name>]``.
    ``cls`` must be a concrete subclass of :class:`lexrag.Provider` (``complete`` and
    ``stream`` implemented) whose class variable ``Settings`` is a pydantic model
    (:class:`lexrag.NoSettings` when it takes none). The core validates the table against
    ``Settings`` and builds the provider as ``cls(name, settings)`` once per server (or
    per command), lazily, when it is first asked for.

    Checked at registration: a name registered twice (by this or another plugin), a class
    that is not a concrete ``Provider`` or has no pydantic ``Settings`` raise
    :class:`lexrag.PluginError` naming the plugin.
    """


@hookspec
def register_embedders(register: Callable[[str, type[Embedder]], None]) -> None:
    """Offer text embedders.

    :param register: ``register(name, cls)``; call it once per embedder.

    ``name`` is what ``[retrieval] embedder`` selects and names the table
    ``[embedders.<name>]``. ``cls`` must be a concrete subclass of :class:`lexrag.Embedder`
    (``model_id``, ``dim``, ``embed``) with a pydantic ``Settings``; it is built as
    ``cls(name, settings)`` by ingest, by a dense retriever, and by ``/v1/embeddings``.
    The same registration checks as :func:`register_llm_providers` apply.
    """


@hookspec
def register_retrievers(register: Callable[[str, type[Retriever]], None]) -> None:
    """Offer retrievers.

    :param register: ``register(name, cls)``; call it once per retriever.

    ``name`` is what ``[retrieval] retriever`` and ``lexrag search --retriever`` select,
    and names the table ``[retrievers.<name>]``. ``cls`` must be a concrete subclass of
    :class:`lexrag.Retriever` (``search``) with a pydantic ``Settings``; it is built as
    ``cls(name, settings, context)`` where ``context`` is a
    :class:`lexrag.RetrievalContext` (the index directory, and builders of the configured
    embedder and of other retrievers). The same registration checks as
    :func:`register_llm_providers` apply.
    """


@hookspec
def register_rerankers(register: Callable[[str, type[Reranker]], None]) -> None:
    """Offer rerankers: models that score (query, passage) pairs together (cross-encoders).

    :param register: ``register(name, cls)``; call it once per reranker.

    ``name`` is what ``[retrieval] reranker`` selects (unset: no reranking) and names the
    table ``[rerankers.<name>]``. ``cls`` must be a concrete subclass of
    :class:`lexrag.Reranker` (``model_id``, ``score``) with a pydantic ``Settings``; it is
    built as ``cls(name, settings)`` with the configured retriever, whose best
    ``[retrieval] rerank_candidates`` hits it reorders. The same registration checks as
    :func:`register_llm_providers` apply.
    """


@hookspec
def register_stores(register: Callable[[str, type[IndexStore]], None]) -> None:
    """Offer index backends: where documents, chunks and vectors are kept.

    :param register: ``register(name, cls)``; call it once per backend.

    ``name`` is what ``[index] backend`` selects (the core's own is ``embedded``: SQLite and
    files in ``[index] dir``). ``cls`` must be a concrete subclass of
    :class:`lexrag.IndexStore`; the core opens it as ``cls.open(location, create=...)`` for
    ``lexrag ingest`` and ``lexrag index copy``, where ``location`` is ``[index] dir`` for a
    backend without ``schemes`` and ``[index] database_url`` (or ``LEXRAG_DATABASE_URL``, or
    a ``lexrag index copy --to`` URL of one of its ``schemes``) otherwise. Its retrievers
    (``backends`` naming it) reach it through :attr:`lexrag.RetrievalContext.open_store`;
    ``[retrieval] retriever`` defaults to its ``default_retriever``. The same registration
    checks as :func:`register_llm_providers` apply.
    """


@hookspec
def register_loaders(register: Callable[[str, type[Loader]], None]) -> None:
    """Offer document loaders: a file suffix → the class that turns such a file into text.

    :param register: ``register(suffix, cls)``; call it once per suffix (``".pdf"``, ``".docx"``).

    The suffix is lower case with its dot; ``lexrag ingest`` reads the files whose suffix
    (compared in lower case) has a loader, and names the others. ``cls`` must be a concrete
    subclass of :class:`lexrag.Loader` (``load(path) -> str``); it is built as ``cls()`` once
    per ingest. Its text goes to the legal chunker, so it keeps headings on their own lines
    and the Khoản/Điểm numbering, and drops running headers, footers and page numbers; a file
    that gives no text raises :class:`lexrag.InvalidRequestError` with the reason, which the
    ingest reports against that file. The core registers ``.txt`` and ``.md`` itself.

    Checked at registration: a suffix registered twice (by this or another plugin, or one of
    the core's), a suffix that is not ``.`` and lower-case letters or digits, a class that
    is not a concrete ``Loader`` raise :class:`lexrag.PluginError` naming the plugin.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``lexrag`` command line.

    :param cli: the top-level ``lexrag`` click group.

    Called once per command-line run, before the arguments are parsed and before the
    config is loaded: read the config inside the command, not here (the commands of
    :mod:`lexrag.cli` show how, through ``lexrag.cli.pass_app``). Add commands or groups
    with ``cli.add_command(...)``. A plugin whose hook raises is reported on stderr and
    its commands are missing; the other commands work.
    """
