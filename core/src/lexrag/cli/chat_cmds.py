"""``lexrag ask`` and ``lexrag chat``: answers in the terminal, from the same pipeline as the server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from ..errors import InvalidRequestError
from ..legalmeta import describe
from ..types import ChatCompletionRequest, ChatMessage, DocumentMeta, Source
from ._app import App, pass_app
from ._filters import filter_options, filters_of

if TYPE_CHECKING:
    from ..pipeline import Pipeline


def _pipeline(app: App) -> Pipeline:
    from ..pipeline import Pipeline

    return Pipeline(app.config, app.registry)


async def _ask_stream(app: App, request: ChatCompletionRequest) -> tuple[str, list[Source]]:
    pipeline = _pipeline(app)
    model = ""
    sources: list[Source] = []
    try:
        async for chunk in pipeline.chat_stream(request):
            model = chunk.model or model
            for choice in chunk.choices:
                if choice.delta.content:
                    sys.stdout.write(choice.delta.content)
                    sys.stdout.flush()
            if chunk.sources is not None:
                sources = list(chunk.sources)
    finally:
        await pipeline.aclose()
    sys.stdout.write("\n")
    return model, sources


async def _ask_json(app: App, request: ChatCompletionRequest) -> str:
    pipeline = _pipeline(app)
    try:
        completion = await pipeline.chat(request)
    finally:
        await pipeline.aclose()
    return completion.model_dump_json(indent=2)


@click.command("ask")
@click.argument("question")
@click.option("--provider", help="Provider to answer with (default: [llm] provider).")
@click.option(
    "--fallback",
    multiple=True,
    help="Provider to try when the first fails (repeatable; default: [llm] fallback).",
)
@click.option("--top-k", type=click.IntRange(1, 100), help="Passages to retrieve.")
@click.option("--no-rag", is_flag=True, help="Ask the provider directly, without retrieval.")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="Index directory.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the whole chat.completion (with sources) as JSON."
)
@filter_options
@pass_app
def ask(
    app: App,
    /,
    question: str,
    provider: str | None,
    fallback: tuple[str, ...],
    top_k: int | None,
    no_rag: bool,
    index_dir: str | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Answer QUESTION once, streamed, with its sources listed under it."""
    app.override({"llm.provider": provider, "index.dir": index_dir})
    try:
        message = ChatMessage(role="user", content=question)
    except ValidationError as exc:  # bytes that are not UTF-8 (a lone surrogate)
        raise InvalidRequestError(f"QUESTION {exc.errors()[0]['msg']}", param="question") from None
    request = ChatCompletionRequest(
        messages=[message],
        stream=not as_json,
        top_k=top_k,
        rag=False if no_rag else None,
        fallback=list(fallback) or None,
        filters=filters_of(**flags),
    )
    if as_json:
        click.echo(asyncio.run(_ask_json(app, request)))
        return
    model, sources = asyncio.run(_ask_stream(app, request))
    if sources:
        click.echo(click.style("\nSources:", bold=True))
        for source in sources:
            click.echo(f"  [{source.index}] {source.citation}")
            if source.meta is not None or source.status:
                click.echo(
                    click.style("      " + describe(source.meta or DocumentMeta(), source.status), dim=True)
                )
            for amendment in source.amended_by:
                click.echo(click.style(f"      sửa đổi bởi {amendment.citation}", fg="cyan"))
    click.echo(click.style(f"\nAnswered by: {model}", dim=True))


@click.command("chat")
@click.option("--provider", help="Provider to start with (switch with /provider).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="Index directory.")
@click.option(
    "--history-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Line history (default: ~/.lexrag/chat_history).",
)
@filter_options
@pass_app
def chat(
    app: App, /, provider: str | None, index_dir: str | None, history_file: str | None, **flags: Any
) -> None:
    """Chat in the terminal: streamed Markdown answers, a sources panel, slash commands."""
    from ..repl import Repl

    app.override({"llm.provider": provider, "index.dir": index_dir})
    filters = filters_of(**flags)
    path = Path(history_file) if history_file else Path(os.path.expanduser("~/.lexrag/chat_history"))
    path.parent.mkdir(parents=True, exist_ok=True)
    repl = Repl(_pipeline(app), app.registry.providers.names(), history_file=path)
    repl.filters = filters
    asyncio.run(repl.run())


COMMANDS = [ask, chat]
