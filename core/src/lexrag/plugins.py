"""The plugin manager and the registries of what plugins offer."""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, TypeVar

import pluggy

from . import hookspecs
from .errors import PluginError

#: In-tree plugins, registered exactly as third-party ones are.
DEFAULT_PLUGINS: tuple[str, ...] = ("lexrag.default_plugins.extractive",)

T = TypeVar("T")


def make_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh manager with the default plugins and, unless told not to, every
    installed distribution's ``lexrag`` entry points."""
    pm = pluggy.PluginManager("lexrag")
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints("lexrag")
        except Exception as exc:  # an installed plugin that fails to import
            raise PluginError(
                f"a lexrag plugin failed to load: {exc}; "
                "fix or `lexrag uninstall` it (see `pip list | grep lexrag`)"
            ) from exc
    return pm


@dataclass
class Kind(Generic[T]):
    """The classes of one kind (providers, embedders, retrievers), by name."""

    kind: str
    classes: dict[str, type[T]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add(self, owner: str, name: str, cls: type[T]) -> None:
        if name in self.classes:
            raise PluginError(
                f"two plugins register the {self.kind} {name!r}: {self.owners[name]} and {owner}; "
                "uninstall one of them"
            )
        self.classes[name] = cls
        self.owners[name] = owner

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


class Registry:
    """Everything the installed plugins registered, built once from a plugin manager."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        from .providers import Provider
        from .retrieval import Embedder, Retriever

        self.pm = pm
        self.providers: Kind[Provider] = Kind("provider")
        self.embedders: Kind[Embedder] = Kind("embedder")
        self.retrievers: Kind[Retriever] = Kind("retriever")
        for hook_name, kind in (
            ("register_llm_providers", self.providers),
            ("register_embedders", self.embedders),
            ("register_retrievers", self.retrievers),
        ):
            self._collect(hook_name, kind)

    def _collect(self, hook_name: str, kind: Kind[Any]) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            owner = self.pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(name: str, cls: type[Any], _owner: str = owner) -> None:
                kind.add(_owner, name, cls)

            impl.function(register=register)

    def kinds(self) -> dict[str, Kind[Any]]:
        return {"providers": self.providers, "embedders": self.embedders, "retrievers": self.retrievers}


def _distribution_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str | None, str | None]:
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            return dist.metadata["name"], dist.version
    module = plugin if isinstance(plugin, ModuleType) else type(plugin)
    top = getattr(module, "__name__", "").split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    if not names:
        return None, None
    return names[0], importlib.metadata.version(names[0])


def describe_plugins(pm: pluggy.PluginManager, registry: Registry) -> list[dict[str, Any]]:
    """What ``lexrag plugins`` prints: one entry per plugin with the hooks it
    implements and what it registers."""
    out = []
    for plugin_name, plugin in sorted(pm.list_name_plugin(), key=lambda p: str(p[0])):
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        registers: dict[str, list[str]] = {}
        for kind_name, kind in registry.kinds().items():
            names = [n for n, owner in kind.owners.items() if owner == plugin_name]
            if names:
                registers[kind_name] = sorted(names)
        dist, version = _distribution_of(pm, plugin)
        out.append(
            {
                "name": plugin_name,
                "distribution": dist,
                "version": version,
                "hooks": hooks,
                "registers": registers,
            }
        )
    return out


__all__ = ["DEFAULT_PLUGINS", "Kind", "Registry", "describe_plugins", "make_plugin_manager"]
