"""The plugin manager: the in-tree default plugins, then every installed distribution's
``lexrag`` entry points (or only those ``LEXRAG_LOAD_PLUGINS`` names).

A plugin that fails to import does not take the command line down with it: it is kept in
:attr:`PluginManager.broken` with the reason, reported once on stderr by the CLI and by
``lexrag plugins``, so ``lexrag uninstall`` can still remove it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .registry import Registry

#: In-tree plugins, registered exactly as third-party ones are.
DEFAULT_PLUGINS: tuple[str, ...] = ("lexrag.default_plugins.extractive",)

#: Environment variable: a comma-separated list of distributions whose plugins are loaded
#: (``lexrag-openai,lexrag-retrievers``); set and empty, no installed plugin is loaded.
LOAD_PLUGINS_ENV = "LEXRAG_LOAD_PLUGINS"

ENTRY_POINT_GROUP = "lexrag"


def _canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``Lexrag_OpenAI`` == ``lexrag-openai``."""
    return re.sub(r"[-_.]+", "-", name).lower()


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus where each plugin came from and the plugins that failed."""

    def __init__(self) -> None:
        super().__init__("lexrag")
        self.add_hookspecs(hookspecs)
        #: entry point name → one line saying why it could not be loaded.
        self.broken: dict[str, str] = {}
        self._dists: list[tuple[object, importlib.metadata.Distribution]] = []

    def load_entry_points(self, only: set[str] | None = None) -> None:
        """Load the ``lexrag`` entry points of every installed distribution, or of those
        in ``only`` (distribution names). A failing one goes to :attr:`broken`."""
        for dist in importlib.metadata.distributions():
            dist_name = dist.metadata["name"] or ""
            if only is not None and _canonical(dist_name) not in only:
                continue
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or self.has_plugin(ep.name) or ep.name in self.broken:
                    continue
                try:
                    plugin = ep.load()
                    self.register(plugin, name=ep.name)
                except Exception as exc:  # a third party's import error must not stop lexrag
                    detail = " ".join(str(exc).split()) or "no details"
                    self.broken[ep.name] = (
                        f"plugin {ep.name} ({dist_name} {dist.version}) failed to load: "
                        f"{type(exc).__name__}: {detail}; fix it, or remove it with "
                        f"`lexrag uninstall {dist_name}`"
                    )
                    continue
                self._dists.append((plugin, dist))

    def list_plugin_distinfo(self) -> list[tuple[object, Any]]:
        """(plugin, distribution) of every plugin loaded from an entry point."""
        return list(self._dists)


def make_plugin_manager(
    *, load_entrypoints: bool = True, env: Mapping[str, str] | None = None
) -> PluginManager:
    """A fresh manager with the default plugins and, unless told not to, the installed
    plugins (all of them, or those ``LEXRAG_LOAD_PLUGINS`` lists)."""
    pm = PluginManager()
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    if load_entrypoints:
        wanted = (os.environ if env is None else env).get(LOAD_PLUGINS_ENV)
        only = None if wanted is None else {_canonical(n.strip()) for n in wanted.split(",") if n.strip()}
        pm.load_entry_points(only)
    return pm


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
    implements and what it registers; a plugin that failed to load, with its error."""
    out: list[dict[str, Any]] = []
    for plugin_name, plugin in sorted(pm.list_name_plugin(), key=lambda p: str(p[0])):
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        registers: dict[str, list[str]] = {}
        kinds = {**registry.kinds(), "stores": registry.stores, "loaders": registry.loaders}
        for kind_name, kind in kinds.items():
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
    for name, error in sorted(getattr(pm, "broken", {}).items()):
        out.append({"name": name, "error": error, "hooks": [], "registers": {}})
    return out


__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "LOAD_PLUGINS_ENV",
    "PluginManager",
    "describe_plugins",
    "make_plugin_manager",
]
