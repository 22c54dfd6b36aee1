"""``lexrag chat``: a terminal REPL with streamed Markdown answers and a sources panel."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, InMemoryHistory
from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from .config import CONFIG_FILE_NAME, ENV_OVERRIDES
from .errors import LexragError, cli_message
from .legalmeta import describe
from .types import ChatCompletionRequest, ChatMessage, DocumentMeta, RetrievalFilters, Source, parse_day

if TYPE_CHECKING:
    from .pipeline import Pipeline

T = TypeVar("T")

HELP = """\
/provider NAME   answer with another provider (/provider alone lists them)
/k N             retrieve N passages per question
/rag on|off      switch retrieval on or off
/asof DATE|off   use only the documents in force on DATE (YYYY-MM-DD); off: today's
/sources         show the passages cited by the last answer
/reset           forget the conversation
/help            this list
/quit            leave (Ctrl-D too); Ctrl-C stops the current answer"""


@dataclass
class ChatState:
    provider: str | None = None
    top_k: int | None = None
    rag: bool = True
    history: list[ChatMessage] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)


def hard_breaks(text: str) -> str:
    """``text`` with every line break outside code blocks made a Markdown hard break.

    Markdown joins the lines of a paragraph; in a quoted article each Khoản and each Điểm
    (a), b), c)…) is a line of its own and must stay one. Two trailing spaces break the
    line wherever a break can be (a break at the end of a block is ignored)."""
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None:
            if stripped.startswith(fence):
                fence = None
        elif line.strip() and not line.endswith("  "):
            line += "  "
        out.append(line)
    return "\n".join(out)


def answer_markdown(text: str) -> Markdown:
    """How the REPL shows an answer (also while it streams): Markdown, line breaks kept."""
    return Markdown(hard_breaks(text or "…"))


def excerpt(text: str, limit: int = 240) -> str:
    """The start of a passage, at most ``limit`` characters, its lines kept."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    short = "\n".join(line for line in lines if line)
    return short[:limit].rstrip() + "…" if len(short) > limit else short


def sources_panel(sources: Sequence[Source]) -> Panel:
    if not sources:
        return Panel(Text("No passages were retrieved."), title="Sources")
    lines = Text()
    for source in sources:
        lines.append(f"[{source.index}] ", style="bold cyan")
        lines.append(source.citation + "\n", style="bold")
        if source.meta is not None or source.status:
            lines.append(
                "    " + describe(source.meta or DocumentMeta(), source.status) + "\n", style="italic"
            )
        lines.append(excerpt(source.text) + "\n", style="dim")
        for amendment in source.amended_by:
            lines.append(f"    sửa đổi bởi {amendment.citation}\n", style="cyan")
    return Panel(lines, title="Sources", border_style="cyan")


def not_configured(name: str, config_file: str = CONFIG_FILE_NAME) -> str:
    """Why an installed provider without settings cannot answer, and what sets it up: the
    environment variables that fill its table (``OPENAI_API_KEY``: its api_key) or the table."""
    prefix = f"providers.{name}."
    env = [
        f"{var} ({dotted[len(prefix) :]})"
        for var, dotted in ENV_OVERRIDES.items()
        if dotted.startswith(prefix)
    ]
    how = f"set {' or '.join(env)}, or " if env else ""
    return f"{name} is not configured: {how}add a [providers.{name}] table to {config_file}"


class Repl:
    """Reads questions and slash commands; streams each answer as Markdown."""

    def __init__(
        self,
        pipeline: Pipeline,
        providers: Sequence[str],
        *,
        console: Console | None = None,
        history_file: Path | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.providers = list(providers)
        self.console = console or Console()
        self.state = ChatState()
        self.filters: RetrievalFilters | None = None
        """The filter flags ``lexrag chat`` was started with (over ``[retrieval] filters``)."""
        history = FileHistory(str(history_file)) if history_file else InMemoryHistory()
        self.session: PromptSession[str] = PromptSession(history=history)

    # --- slash commands ---------------------------------------------------------

    @property
    def current_provider(self) -> str:
        return self.state.provider or self.pipeline.router.default_provider

    async def provider_problem(self, name: str) -> str | None:
        """Why provider ``name`` cannot answer here (None: it can): not configured, fails to
        build (its settings), or its health check says it is down."""
        router = self.pipeline.router
        if name not in router.configured():
            return not_configured(name, str(router.config.path or CONFIG_FILE_NAME))
        try:
            with self.console.status(f"Checking {name}…"):
                health = await router.provider(name).health()
        except LexragError as exc:
            return f"{name} cannot answer: {' '.join(exc.message.split())}"
        status = health.get("status", "ok")
        if status not in ("ok", "degraded"):  # down, unauthorized, unavailable…
            error = " ".join(str(health.get("error") or f"its health check says {status}").split())
            return f"{name} cannot answer: {error}"
        return None

    async def switch_provider(self, name: str) -> None:
        """Answer with ``name`` from now on, unless it cannot: then say what it lacks and keep
        the provider in use."""
        problem = await self.provider_problem(name)
        if problem is not None:
            line = Text(problem, style="red")
            line.append(f"; still answering with {self.current_provider}.", style="default")
            self.console.print(line, soft_wrap=True)  # one line, however wide the terminal
            return
        self.state.provider = name
        self.console.print(f"Answering with {name}.")

    async def _check_start(self) -> None:
        """Say at once when the provider the chat starts with cannot answer."""
        problem = await self.provider_problem(self.current_provider)
        if problem is not None:
            line = Text(problem, style="red")
            line.append("; switch with /provider (/provider alone lists them).", style="default")
            self.console.print(line, soft_wrap=True)

    async def command(self, line: str) -> bool:
        """Run a slash command; False means leave the REPL."""
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            self.console.print(HELP)
        elif name == "reset":
            self.state.history.clear()
            self.state.sources = []
            self.console.print("Conversation cleared.")
        elif name == "sources":
            self.console.print(sources_panel(self.state.sources))
        elif name == "provider":
            configured = self.pipeline.router.configured()
            available = ", ".join(n for n in configured if n in self.providers)
            if not arg:
                idle = [n for n in self.providers if n not in configured]
                more = f" (installed, not configured: {', '.join(idle)})" if idle else ""
                self.console.print(Text(f"Provider: {self.current_provider}. Available: {available}{more}"))
            elif arg not in self.providers:
                self.console.print(f"[red]No provider {arg!r}.[/] Available: {available}")
            else:
                await self.switch_provider(arg)
        elif name == "k":
            if not arg.isdigit() or not 1 <= int(arg) <= 100:
                self.console.print("[red]/k takes a number from 1 to 100.[/]")
            else:
                self.state.top_k = int(arg)
                self.console.print(f"Retrieving {arg} passages per question.")
        elif name == "asof":
            self._as_of(arg)
        elif name == "rag":
            if arg not in ("on", "off"):
                self.console.print("[red]/rag takes on or off.[/]")
            else:
                self.state.rag = arg == "on"
                self.console.print(f"Retrieval {arg}.")
        else:
            self.console.print(f"[red]Unknown command /{name}.[/] Type /help.")
        return True

    def _as_of(self, arg: str) -> None:
        filters = self.filters or RetrievalFilters()
        if arg in ("", "off"):
            self.filters = filters.model_copy(update={"as_of": None})
            self.console.print("Documents in force today.")
            return
        try:
            day = parse_day(arg)
        except ValueError as exc:  # pydantic's error is a ValueError
            self.console.print(Text(f"/asof: {exc}".splitlines()[0], style="red"))
            return
        self.filters = filters.model_copy(update={"as_of": day})
        self.console.print(f"Documents in force on {day:%d/%m/%Y}.")

    # --- answering ----------------------------------------------------------------

    def _request(self) -> ChatCompletionRequest:
        return ChatCompletionRequest(
            model=self.state.provider,
            messages=list(self.state.history),
            stream=True,
            rag=self.state.rag,
            top_k=self.state.top_k,
            filters=self.filters,
        )

    async def answer(self, question: str) -> None:
        self.state.history.append(ChatMessage(role="user", content=question))
        text = ""
        model = ""
        sources: list[Source] = []
        notice: str | None = None
        with Live(answer_markdown(""), console=self.console, refresh_per_second=8, transient=False) as live:
            try:
                async for chunk in self.pipeline.chat_stream(self._request()):
                    model = chunk.model or model
                    for choice in chunk.choices:
                        text += choice.delta.content or ""
                    if chunk.sources is not None:
                        sources = list(chunk.sources)
                    notice = chunk.notice or notice
                    live.update(answer_markdown(text))
            except asyncio.CancelledError:
                live.update(Group(Markdown(hard_breaks(text)), Text("[answer stopped]", style="yellow")))
                self.state.history.pop()
                return
            except LexragError as exc:
                live.update(Text(cli_message(exc), style="red"))
                self.state.history.pop()
                return
        self.state.history.append(ChatMessage(role="assistant", content=text))
        self.state.sources = sources
        if notice:
            self.console.print(Text(notice, style="yellow"))
        self.console.print(sources_panel(sources))
        self.console.print(Text(f"answered by {model}", style="dim"))

    async def _interruptible(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``work`` with Ctrl-C cancelling it rather than the REPL; the finished task."""
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        return task

    async def _answer_cancellable(self, question: str) -> None:
        task = await self._interruptible(self.answer(question))
        if task.cancelled():
            # Cancelled before the answer started: the question never got an answer.
            if self.state.history and self.state.history[-1].role == "user":
                self.state.history.pop()
            self.console.print("[yellow][answer stopped][/]")
        else:
            task.result()

    async def _command_cancellable(self, line: str) -> bool:
        """Run a slash command; Ctrl-C stops a slow one (a provider check) and keeps the REPL."""
        task = await self._interruptible(self.command(line))
        if task.cancelled():
            self.console.print(
                Text(f"[stopped] still answering with {self.current_provider}.", style="yellow")
            )
            return True
        return task.result()

    async def run(self) -> None:
        self.console.print("lexrag chat — ask a legal question; /help lists commands, /quit leaves.")
        await self._interruptible(self._check_start())
        while True:
            try:
                line = await self.session.prompt_async("› ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not await self._command_cancellable(line):
                    break
                continue
            await self._answer_cancellable(line)
        await self.pipeline.aclose()
