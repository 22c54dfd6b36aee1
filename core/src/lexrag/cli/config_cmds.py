"""``lexrag config show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..registry import effective_settings
from ._app import App, pass_app


@click.group("config")
def config_group() -> None:
    """Inspect the effective configuration."""


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: key → {value, source}.")
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print every setting, its value (secrets masked) and where it came from."""
    config = app.config
    rows = effective_settings(config, app.registry)
    chain = config.settings.llm.chain
    if as_json:
        payload = {
            "file": str(config.path) if config.path else None,
            "chain": chain,
            "settings": {key: {"value": _plain(v), "source": src} for key, v, src in rows},
        }
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    table = Table(
        title=f"lexrag settings (file: {config.path or 'none, built-in defaults'})",
        caption=f"provider chain: {' -> '.join(chain)} (llm.provider, then llm.fallback)",
    )
    table.add_column("key")
    table.add_column("value", overflow="fold")
    table.add_column("source")
    for key, value, source in rows:
        shown = value if isinstance(value, str) else json.dumps(_plain(value), ensure_ascii=False)
        if isinstance(shown, str) and len(shown) > 80:
            shown = shown[:77] + "…"
        table.add_row(key, shown, source)
    Console().print(table)


COMMANDS = [config_group]
