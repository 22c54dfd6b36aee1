"""``lexrag plugins``, ``lexrag install``, ``lexrag uninstall``."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from ..plugins import describe_plugins
from ._app import App, pass_app


@click.command("plugins")
@pass_app
def plugins(app: App) -> None:
    """List installed plugins as JSON: name, version, hooks, what each registers."""
    click.echo(json.dumps(describe_plugins(app.pm, app.registry), indent=2))


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], check=False)
    if result.returncode != 0:
        raise click.ClickException(f"pip {args[0]} failed (exit {result.returncode}); see its output above")


@click.command("install")
@click.argument("packages", nargs=-1, required=True)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade packages to the latest version.")
@click.option("-e", "--editable", is_flag=True, help="Install a local directory in editable mode.")
def install(packages: tuple[str, ...], upgrade: bool, editable: bool) -> None:
    """Install plugins (a PyPI name or a local path) into lexrag's own environment."""
    args = ["install"]
    if upgrade:
        args.append("--upgrade")
    for package in packages:
        args.extend(["-e", package] if editable else [package])
    _pip(*args)


@click.command("uninstall")
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(packages: tuple[str, ...], yes: bool) -> None:
    """Uninstall plugins from lexrag's environment."""
    _pip("uninstall", *packages, *(["-y"] if yes else []))


COMMANDS = [plugins, install, uninstall]
