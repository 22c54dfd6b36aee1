"""``lexrag phrasings write``: everyday phrasings of every indexed article, written by the
configured LLM provider, for the ``phrasings`` retriever (:mod:`lexrag.phrasings`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._app import App, pass_app
from .index_cmds import index_option

if TYPE_CHECKING:
    from ..phrasings import Article, PhrasingsReport


@click.group("phrasings")
def phrasings_group() -> None:
    """Phrasings for the `phrasings` retriever: everyday questions written ahead per article."""


@phrasings_group.command("write")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@index_option
@click.option(
    "--doc", "docs", multiple=True, help="Only this document's articles (its id; repeatable; default: all)."
)
@click.option(
    "--provider",
    default=None,
    help="Provider (or one of its model ids) that writes them (default: [llm] provider).",
)
@click.option(
    "--per-article",
    type=click.IntRange(1, 20),
    default=4,
    show_default=True,
    help="Phrasings asked for per article.",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Calls at a time."
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Write at most this many articles (a trial)."
)
@pass_app
def write_command(
    app: App,
    out: Path,
    docs: tuple[str, ...],
    provider: str | None,
    per_article: int,
    concurrency: int,
    limit: int | None,
) -> None:
    """Ask the provider for short everyday questions and phrases (4–14 words, the words a
    layperson uses) for each article of the index, and append them to OUT as JSON lines
    {"doc", "article", "phrases"}: the file `[retrievers.phrasings] files` reads.

    Articles already in OUT are skipped, so a run that stopped (or --limit) continues where it
    left off; an article whose call fails is counted and skipped (the next run asks again)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..phrasings import index_articles, plan, write_phrasings
    from ..registry import open_index
    from ..router import Router

    store = open_index(app.config, app.registry)
    try:
        todo = plan(index_articles(store, docs), out, limit)
    finally:
        store.close()
    console = Console(stderr=True)

    async def run() -> PhrasingsReport:
        router = Router(app.config, app.registry)
        try:
            route = await router.resolve(provider)
            router.provider(route.provider)  # one that cannot be built stops here, in one line
            with Progress(
                TextColumn("[bold]phrasings[/bold] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=not console.is_terminal,
            ) as progress:
                task = progress.add_task(f"asking {route.provider}", total=len(todo.pending))

                def advance(article: Article, outcome: str) -> None:
                    progress.update(task, advance=1, description=f"{article.label} ({outcome})")

                report = await write_phrasings(
                    router,
                    route,
                    todo,
                    out,
                    per_article=per_article,
                    concurrency=concurrency,
                    progress=advance,
                )
                return report
        finally:
            await router.aclose()

    report = asyncio.run(run())
    if report.failed:
        click.echo(
            f"failed {report.failed} (skipped; the next run asks again), the first: {report.first_error}",
            err=True,
        )
    click.echo(
        f"{report.written} articles written ({report.phrases} phrases), {report.already} already in "
        f"{out}, {report.failed} failed, {report.left} left; {report.seconds:.1f} s → {out}"
    )
    if not report.ok:
        click.echo("Error: no phrasings could be written", err=True)
        raise click.exceptions.Exit(1)


COMMANDS = [phrasings_group]
