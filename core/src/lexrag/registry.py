"""What the installed plugins registered, and building them from the config.

A :class:`Registry` is built once from a plugin manager: it calls every ``register_*`` hook
and checks each registered class against its contract. The functions below bind it to a
:class:`~lexrag.config.Config`: they validate each plugin's table against the class's
``Settings`` model and build providers, embedders and retrievers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import pluggy
from pydantic import BaseModel, ValidationError

from .config import CONFIG_FILE_NAME, PLUGIN_TABLES, Config
from .errors import ConfigError, PluginError
from .loaders import BUILTIN_LOADERS, Loader
from .providers import Provider
from .redact import mask_url
from .retrieval import (
    Embedder,
    IndexStore,
    RerankedRetriever,
    Reranker,
    RetrievalContext,
    Retriever,
    SharedEmbedder,
)
from .store import Store
from .types import RetrievalFilters

T = TypeVar("T")

#: The setting that selects the plugin in use of each table.
SELECTORS: dict[str, str] = {
    "providers": "llm.provider",
    "embedders": "retrieval.embedder",
    "retrievers": "retrieval.retriever",
    "rerankers": "retrieval.reranker",
}


@dataclass
class Kind(Generic[T]):
    """The classes of one kind (providers, embedders, retrievers), by name."""

    kind: str
    base: type[Any]
    """The contract (an abstract class) every registered class must subclass."""
    classes: dict[str, type[T]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add(self, owner: str, name: object, cls: object) -> None:
        """Register ``cls`` as ``name`` for the plugin ``owner``, after checking the contract."""
        self._check(owner, name, cls)
        assert isinstance(name, str) and isinstance(cls, type)
        if name in self.classes:
            raise PluginError(
                f"two plugins register the {self.kind} {name!r}: {self.owners[name]} and {owner}; "
                "uninstall one of them"
            )
        self.classes[name] = cls
        self.owners[name] = owner

    def _check(self, owner: str, name: object, cls: object) -> None:
        what = f"plugin {owner} registers the {self.kind} {name!r}"
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise PluginError(
                f"plugin {owner} registers a {self.kind} under {name!r}: a name must be a non-empty string"
            )
        if not isinstance(cls, type) or not issubclass(cls, self.base):
            raise PluginError(
                f"{what} as {cls!r}, which is not a subclass of lexrag.{self.base.__name__}; "
                "fix the plugin or uninstall it"
            )
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            raise PluginError(f"{what} as {cls.__name__}, which does not implement {', '.join(missing)}")
        settings = getattr(cls, "Settings", None)
        if not isinstance(settings, type) or not issubclass(settings, BaseModel):
            raise PluginError(
                f"{what} as {cls.__name__}, whose Settings is not a pydantic model "
                "(use lexrag.NoSettings for a class that takes none)"
            )

    def get(self, name: str) -> type[T]:
        try:
            return self.classes[name]
        except KeyError:
            known = ", ".join(sorted(self.classes)) or "none"
            raise PluginError(
                f"no {self.kind} named {name!r} is installed (installed: {known}); "
                f"install the plugin that provides it with `lexrag install`"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def names(self) -> list[str]:
        return sorted(self.classes)


_SUFFIX = re.compile(r"^\.[a-z0-9]+$")


class LoaderKind(Kind[Loader]):
    """Loaders by file suffix (``.pdf``): a name must be a lower-case suffix with its dot."""

    def _check(self, owner: str, name: object, cls: object) -> None:
        if not isinstance(name, str) or not _SUFFIX.match(name):
            raise PluginError(
                f"plugin {owner} registers a loader for {name!r}: a suffix is '.' and lower-case "
                "letters or digits, such as '.pdf'"
            )
        super()._check(owner, name, cls)

    def build(self) -> dict[str, Loader]:
        """One instance of each loader, by suffix (a class registered for two suffixes is
        built once)."""
        built: dict[type[Loader], Loader] = {}
        for cls in self.classes.values():
            if cls not in built:
                built[cls] = cls()
        return {suffix: built[cls] for suffix, cls in self.classes.items()}


class Registry:
    """Everything the plugins of a plugin manager registered, built once."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.providers: Kind[Provider] = Kind("provider", Provider)
        self.embedders: Kind[Embedder] = Kind("embedder", Embedder)
        self.retrievers: Kind[Retriever] = Kind("retriever", Retriever)
        self.rerankers: Kind[Reranker] = Kind("reranker", Reranker)
        self.stores: Kind[IndexStore] = Kind("index backend", IndexStore)
        self.loaders = LoaderKind("loader", Loader)
        # The core's own backend and loaders; plugins add theirs through register_stores
        # and register_loaders.
        self.stores.add("lexrag", "embedded", Store)
        for suffix, loader in BUILTIN_LOADERS.items():
            self.loaders.add("lexrag", suffix, loader)
        for hook_name, kind in (
            ("register_llm_providers", self.providers),
            ("register_embedders", self.embedders),
            ("register_retrievers", self.retrievers),
            ("register_rerankers", self.rerankers),
            ("register_stores", self.stores),
            ("register_loaders", self.loaders),
        ):
            self._collect(hook_name, kind)

    def _collect(self, hook_name: str, kind: Kind[Any]) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            owner = self.pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(name: str, cls: type[Any], _owner: str = owner) -> None:
                kind.add(_owner, name, cls)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # a third party's bug: name the plugin, do not crash
                detail = " ".join(str(exc).split()) or "no details"
                raise PluginError(
                    f"plugin {owner} failed in {hook_name}: {type(exc).__name__}: {detail}; "
                    "fix it, or uninstall it with `lexrag uninstall`"
                ) from exc

    def kinds(self) -> dict[str, Kind[Any]]:
        """Each plugin table (``providers``, ``embedders``, ``retrievers``, ``rerankers``) to
        its kind."""
        return {
            "providers": self.providers,
            "embedders": self.embedders,
            "retrievers": self.retrievers,
            "rerankers": self.rerankers,
        }


def _validate(config: Config, table: str, name: str, cls: type[Any]) -> BaseModel:
    model: type[BaseModel] = cls.Settings
    values = getattr(config.settings, table).get(name, {})
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise config.table_error(exc, model, prefix=f"{table}.{name}.") from None


def selected(config: Config, registry: Registry, table: str) -> tuple[str, type[Any]]:
    """(name, class) of the plugin the config selects in ``table`` (``[llm] provider``,
    ``[retrieval] embedder``/``retriever``), or an error naming where the name was set."""
    dotted = SELECTORS[table]
    kind: Kind[Any] = registry.kinds()[table]
    value = config.lookup(dotted)
    if value not in kind:
        raise config.error(
            dotted,
            value,
            f"no {kind.kind} named {value!r} is installed (installed: {', '.join(kind.names()) or 'none'})",
        )
    return str(value), kind.get(value)


def backend(config: Config, registry: Registry) -> type[IndexStore]:
    """The class of the index backend ``[index] backend`` names."""
    name = config.settings.index.backend
    if name not in registry.stores:
        raise config.error(
            "index.backend",
            name,
            f"no index backend named {name!r} is installed (installed: {', '.join(registry.stores.names())}"
            + ("; `lexrag install lexrag-postgres`" if name == "postgres" else "")
            + ")",
        )
    return registry.stores.get(name)


def index_location(config: Config, registry: Registry) -> str | Path:
    """Where the configured index is: ``[index] dir``, or the database URL of a backend with
    URL schemes."""
    cls = backend(config, registry)
    if not cls.schemes:
        return config.settings.index.dir
    secret = config.settings.index.database_url
    url = secret.get_secret_value() if secret is not None else ""
    if not url:
        raise config.error(
            "index.backend",
            config.settings.index.backend,
            "needs a database: set [index] database_url or LEXRAG_DATABASE_URL "
            f"({' or '.join(s + '://…' for s in cls.schemes)})",
        )
    return url


def open_index(config: Config, registry: Registry, *, create: bool = False) -> IndexStore:
    """The configured index, opened (``create``: made if it is not there yet)."""
    return backend(config, registry).open(index_location(config, registry), create=create)


def store_for_location(registry: Registry, location: str) -> type[IndexStore]:
    """The backend that opens ``location``: the one whose ``schemes`` has its URL scheme, or
    the embedded one for a directory."""
    scheme = urlsplit(location).scheme.lower() if "://" in location else ""
    for name in registry.stores.names():
        cls = registry.stores.get(name)
        if scheme and scheme in cls.schemes:
            return cls
        if not scheme and not cls.schemes:
            return cls
    if scheme:
        raise ConfigError(
            f"{mask_url(location)}: no installed index backend opens {scheme}:// URLs "
            "(install its plugin, e.g. `lexrag install lexrag-postgres`)"
        )
    raise ConfigError(f"{location}: no installed index backend keeps an index in a directory")


def default_filters(config: Config) -> RetrievalFilters:
    """``[retrieval] filters`` as :class:`RetrievalFilters`; a :class:`ConfigError` naming the
    key and value when it is not valid."""
    raw = config.settings.retrieval.filters
    try:
        return RetrievalFilters.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        value = raw.get(str(error["loc"][0])) if error["loc"] else raw
        raise config.error(f"retrieval.filters.{key}", value, error["msg"]) from None


def check_config(config: Config, registry: Registry) -> Config:
    """Validate the plugin tables and the names that select plugins; returns ``config``.
    Over a backend other than the embedded one, an unset ``[retrieval] retriever`` becomes
    that backend's ``default_retriever``."""
    store_cls = backend(config, registry)
    if (
        config.origin("retrieval.retriever") == "default"
        and config.settings.retrieval.retriever != store_cls.default_retriever
        and store_cls.default_retriever in registry.retrievers
    ):
        config.settings.retrieval.retriever = store_cls.default_retriever
    kinds = registry.kinds()
    for table in PLUGIN_TABLES:
        kind = kinds[table]
        for name in getattr(config.settings, table):
            if name not in kind:
                origins = [o for p, o in config.origins.items() if p.startswith(f"{table}.{name}.")]
                if origins and all(o.startswith("env:") for o in origins):
                    continue  # e.g. OPENAI_API_KEY set while the plugin is not installed
                raise ConfigError(
                    f"{config.path or CONFIG_FILE_NAME}: [{table}.{name}]: no {kind.kind} named "
                    f"{name!r} is installed (installed: {', '.join(kind.names()) or 'none'})"
                )
            _validate(config, table, name, kind.get(name))
    selected(config, registry, "providers")
    default_filters(config)
    if config.settings.retrieval.reranker is not None:
        selected(config, registry, "rerankers")
    fallback = config.settings.llm.fallback
    for i, name in enumerate(fallback):
        if name not in registry.providers:
            raise config.error(
                "llm.fallback",
                fallback,
                f"entry {i} names no installed provider {name!r} "
                f"(installed: {', '.join(registry.providers.names())})",
            )
    return config


def plugin_settings(config: Config, registry: Registry, table: str, name: str) -> BaseModel:
    """The ``[table.name]`` settings validated against the class registered as ``name``
    (its defaults where the table is absent)."""
    return _validate(config, table, name, registry.kinds()[table].get(name))


def _resolve(
    config: Config, registry: Registry, table: str, name: str | None
) -> tuple[str, type[Any], BaseModel]:
    if name is None:
        name, cls = selected(config, registry, table)
    else:
        cls = registry.kinds()[table].get(name)
    return name, cls, _validate(config, table, name, cls)


def build_provider(config: Config, registry: Registry, name: str | None = None) -> Provider:
    """The provider ``name`` (default: ``[llm] provider``) built with its validated settings."""
    name, cls, settings = _resolve(config, registry, "providers", name)
    provider: Provider = cls(name, settings)
    return provider


def build_embedder(config: Config, registry: Registry, name: str | None = None) -> Embedder:
    """The embedder ``name`` (default: ``[retrieval] embedder``) with its validated settings."""
    name, cls, settings = _resolve(config, registry, "embedders", name)
    embedder: Embedder = cls(name, settings)
    return embedder


def build_reranker(config: Config, registry: Registry, name: str | None = None) -> Reranker:
    """The reranker ``name`` (default: ``[retrieval] reranker``) with its validated settings."""
    name, cls, settings = _resolve(config, registry, "rerankers", name)
    reranker: Reranker = cls(name, settings)
    return reranker


def _shared_embedder(config: Config, registry: Registry) -> Callable[[], Embedder]:
    """Builds the configured embedder on first call, once, as a :class:`SharedEmbedder`."""
    built: list[Embedder] = []
    lock = threading.Lock()

    def get() -> Embedder:
        with lock:
            if not built:
                built.append(SharedEmbedder(build_embedder(config, registry)))
            return built[0]

    return get


def build_retriever(
    config: Config,
    registry: Registry,
    name: str | None = None,
    *,
    rerank: bool = True,
    embedder: Callable[[], Embedder] | None = None,
) -> Retriever:
    """The retriever ``name`` (default: ``[retrieval] retriever``) over ``[index] dir``; with
    ``[retrieval] reranker`` set (and ``rerank``), its best hits reordered by that reranker.
    A retriever building its parts (a hybrid) gets them without reranking, and they share one
    embedder (``embedder``: how the parts get the builder's; one query is embedded once)."""
    name, cls, settings = _resolve(config, registry, "retrievers", name)
    index_backend = config.settings.index.backend
    if cls.backends is not None and index_backend not in cls.backends:
        fits = [
            n
            for n in registry.retrievers.names()
            if index_backend in (registry.retrievers.get(n).backends or ())
        ]
        raise config.error(
            "index.backend",
            index_backend,
            f"the retriever {name!r} reads the {'/'.join(sorted(cls.backends))} index, not this one; "
            f"choose one of {', '.join(fits) or 'none installed'} ([retrieval] retriever, --retriever)",
        )
    shared = embedder or _shared_embedder(config, registry)
    context = RetrievalContext(
        index_dir=config.settings.index.dir,
        build_embedder=shared,
        build_retriever=lambda other: build_retriever(config, registry, other, rerank=False, embedder=shared),
        open_store=lambda: open_index(config, registry),
        backend=index_backend,
    )
    retriever: Retriever = cls(name, settings, context)
    if rerank and config.settings.retrieval.reranker is not None:
        reranker = build_reranker(config, registry)
        return RerankedRetriever(retriever, reranker, config.settings.retrieval.rerank_candidates)
    return retriever


def effective_settings(config: Config, registry: Registry) -> list[tuple[str, Any, str]]:
    """What ``lexrag config show`` prints: every setting, the plugin tables of every
    installed plugin with their defaults filled in, secrets masked."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for table, kind in registry.kinds().items():
        tables[table] = {
            name: plugin_settings(config, registry, table, name).model_dump(mode="python")
            for name in kind.names()
        }
    return config.effective(tables)


__all__ = [
    "SELECTORS",
    "Kind",
    "LoaderKind",
    "Registry",
    "backend",
    "build_embedder",
    "build_provider",
    "build_reranker",
    "build_retriever",
    "check_config",
    "default_filters",
    "effective_settings",
    "index_location",
    "open_index",
    "plugin_settings",
    "selected",
    "store_for_location",
]
