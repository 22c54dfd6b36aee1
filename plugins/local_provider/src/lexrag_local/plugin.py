"""Hook implementations of lexrag-local (registered through the `lexrag` entry point).

Nothing heavy is imported here: torch, optimum and onnxruntime load when a model is
exported or the provider first generates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from lexrag import hookimpl


@hookimpl
def register_llm_providers(register: Callable[[str, type[Any]], None]) -> None:
    from .provider import LocalProvider

    register("local", LocalProvider)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import model_group

    cli.add_command(model_group)
