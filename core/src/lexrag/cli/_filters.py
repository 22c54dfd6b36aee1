"""The retrieval filter flags of ``lexrag search``, ``ask`` and ``chat``: ``--in-force``,
``--as-of``, ``--status``, ``--kind``, ``--doc``, ``--include-expired``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from ..types import RetrievalFilters, parse_day

F = TypeVar("F", bound=Callable[..., Any])


def _day(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        day: dt.date = parse_day(value)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"]) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return day


def filter_options(command: F) -> F:
    """Adds the filter flags; the command receives them as one ``filters`` argument
    (:class:`RetrievalFilters` or None when none was given)."""
    options = [
        click.option(
            "--in-force",
            is_flag=True,
            default=None,
            help="Only documents in force today (or on --as-of); default: leave out those no longer in force.",
        ),
        click.option(
            "--include-expired",
            is_flag=True,
            default=None,
            help="Use every document, those no longer in force too.",
        ),
        click.option(
            "--as-of",
            callback=_day,
            metavar="YYYY-MM-DD",
            help="Only documents in force on this day (statuses shown for it).",
        ),
        click.option(
            "--status",
            multiple=True,
            help="Only documents with this status on that day: còn hiệu lực, hết hiệu lực, "
            "chưa có hiệu lực, hết hiệu lực một phần (repeatable).",
        ),
        click.option(
            "--kind", multiple=True, help="Only documents of this kind: Luật, Nghị định, … (repeatable)."
        ),
        click.option("--doc", multiple=True, help="Only this document: its id or số hiệu (repeatable)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def filters_of(
    in_force: bool | None,
    include_expired: bool | None,
    as_of: dt.date | None,
    status: tuple[str, ...],
    kind: tuple[str, ...],
    doc: tuple[str, ...],
) -> RetrievalFilters | None:
    """The flags as filters (over ``[retrieval] filters``); None when no flag was given."""
    if in_force and include_expired:
        raise click.UsageError("--in-force and --include-expired contradict each other; give one")
    values: dict[str, Any] = {}
    if in_force:
        values["in_force"] = True
    if include_expired:
        values["in_force"] = False
    if as_of is not None:
        values["as_of"] = as_of
    if status:
        values["status"] = list(status)
    if kind:
        values["kind"] = list(kind)
    if doc:
        values["doc"] = list(doc)
    if not values:
        return None
    try:
        return RetrievalFilters.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise click.BadParameter(f"{error['input']!r}: {error['msg']}", param_hint="'--status'") from None


__all__ = ["filter_options", "filters_of"]
