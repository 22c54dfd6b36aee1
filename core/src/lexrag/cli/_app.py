"""What every command shares: the config, the plugin manager and the registry, built lazily."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import click

from ..config import Config, load_config
from ..plugins import PluginManager, make_plugin_manager
from ..registry import Registry, check_config


class App:
    """Built once per command line run; ``pm`` is the plugin manager :func:`lexrag.cli.main`
    already made for ``register_commands`` (one per run), or a fresh one."""

    def __init__(self, config_path: str | None, pm: PluginManager | None = None) -> None:
        self.config_path = config_path
        self._overrides: dict[str, Any] = {}
        if pm is not None:
            self.pm = pm

    def override(self, values: Mapping[str, Any]) -> None:
        """Apply CLI flags (dotted key → value; None means not given) before the config loads."""
        self._overrides.update({k: v for k, v in values.items() if v is not None})
        self.__dict__.pop("config", None)

    @cached_property
    def pm(self) -> PluginManager:
        return make_plugin_manager()

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.pm)

    @cached_property
    def config(self) -> Config:
        return check_config(load_config(self.config_path, overrides=self._overrides), self.registry)


pass_app = click.make_pass_decorator(App)
