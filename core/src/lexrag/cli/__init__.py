"""The ``lexrag`` command line: a click group; plugins add commands via ``register_commands``."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from .. import __version__
from ..errors import LexragError, cli_exit_code, cli_message
from ..plugins import PluginManager, make_plugin_manager
from ..redact import RedactingFormatter
from ._app import App, pass_app


class _Group(click.Group):
    """Turns every :class:`LexragError` into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LexragError as exc:
            click.echo(cli_message(exc), err=True)
            ctx.exit(cli_exit_code(exc))
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            # A failure nobody turned into a LexragError: still one line, unless -vv asks
            # for the traceback to report it.
            if logging.getLogger("lexrag").isEnabledFor(logging.DEBUG):
                raise
            detail = " ".join(str(exc).split()) or "no details"
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {detail} (run with -vv for the traceback)",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, "--version", prog_name="lexrag")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $LEXRAG_CONFIG, then ./lexrag.toml).",
)
@click.option("-v", "--verbose", count=True, help="Log warnings (-v) or everything (-vv) to stderr.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """lexrag: retrieval-augmented chat over Vietnamese legal documents."""
    _quiet_logs(verbose)
    ctx.obj = App(config_path, pm=ctx.obj if isinstance(ctx.obj, PluginManager) else None)


def _quiet_logs(verbose: int) -> None:
    """A command's own output and its one-line errors are what a terminal user reads;
    lexrag's log (retries, fallbacks) joins them only when asked for. ``lexrag serve``
    sets its own level from ``[logging] level``."""
    logger = logging.getLogger("lexrag")
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(RedactingFormatter("lexrag: %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel({0: logging.ERROR, 1: logging.WARNING}.get(verbose, logging.DEBUG))


def _add_builtin_commands() -> None:
    from . import chat_cmds, config_cmds, index_cmds, phrasings_cmds, plugin_cmds, serve_cmds

    for module in (config_cmds, plugin_cmds, index_cmds, phrasings_cmds, serve_cmds, chat_cmds):
        for command in module.COMMANDS:
            cli.add_command(command)


def _add_plugin_commands(pm: PluginManager) -> None:
    """Each plugin's ``register_commands``; one that raises is reported and skipped, so the
    built-in commands (``lexrag uninstall`` among them) keep working."""
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:  # a third party's bug must not take the CLI down
            name = pm.get_name(impl.plugin)
            detail = " ".join(str(exc).split()) or "no details"
            click.echo(
                f"lexrag: warning: plugin {name} failed to add its commands: {type(exc).__name__}: "
                f"{detail}; fix it, or remove it with `lexrag uninstall`",
                err=True,
            )


def main(argv: list[str] | None = None) -> None:
    """The ``lexrag`` console script: one plugin manager for the whole run."""
    _add_builtin_commands()
    pm = make_plugin_manager()
    for error in pm.broken.values():
        click.echo(f"lexrag: warning: {error}", err=True)
    _add_plugin_commands(pm)
    cli.main(args=argv, prog_name="lexrag", obj=pm)


__all__ = ["App", "cli", "main", "pass_app"]
