"""What every command shares: the config, the plugin manager and the registry, built lazily."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import click
import pluggy

from ..config import Config, load_config
from ..plugins import Registry, make_plugin_manager


class App:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._overrides: dict[str, Any] = {}

    def override(self, values: Mapping[str, Any]) -> None:
        """Apply CLI flags (dotted key → value; None means not given) before the config loads."""
        self._overrides.update({k: v for k, v in values.items() if v is not None})
        self.__dict__.pop("config", None)

    @cached_property
    def pm(self) -> pluggy.PluginManager:
        return make_plugin_manager()

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.pm)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path, overrides=self._overrides).check(self.registry)


pass_app = click.make_pass_decorator(App)
