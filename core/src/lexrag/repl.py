"""``lexrag chat``: a terminal REPL with streamed Markdown answers and a sources panel."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, InMemoryHistory
from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from .errors import LexragError, cli_message
from .types import ChatCompletionRequest, ChatMessage, Source

if TYPE_CHECKING:
    from .pipeline import Pipeline

HELP = """\
/provider NAME   answer with another provider (/provider alone lists them)
/k N             retrieve N passages per question
/rag on|off      switch retrieval on or off
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


def sources_panel(sources: Sequence[Source]) -> Panel:
    if not sources:
        return Panel(Text("No passages were retrieved."), title="Sources")
    lines = Text()
    for source in sources:
        lines.append(f"[{source.index}] ", style="bold cyan")
        lines.append(source.citation + "\n", style="bold")
        excerpt = " ".join(source.text.split())
        lines.append((excerpt[:240] + "…" if len(excerpt) > 240 else excerpt) + "\n", style="dim")
    return Panel(lines, title="Sources", border_style="cyan")


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
        history = FileHistory(str(history_file)) if history_file else InMemoryHistory()
        self.session: PromptSession[str] = PromptSession(history=history)

    # --- slash commands ---------------------------------------------------------

    def command(self, line: str) -> bool:
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
            if not arg:
                current = self.state.provider or "(configured default)"
                self.console.print(f"Provider: {current}. Available: {', '.join(self.providers)}")
            elif arg not in self.providers:
                self.console.print(f"[red]No provider {arg!r}.[/] Available: {', '.join(self.providers)}")
            else:
                self.state.provider = arg
                self.console.print(f"Answering with {arg}.")
        elif name == "k":
            if not arg.isdigit() or not 1 <= int(arg) <= 100:
                self.console.print("[red]/k takes a number from 1 to 100.[/]")
            else:
                self.state.top_k = int(arg)
                self.console.print(f"Retrieving {arg} passages per question.")
        elif name == "rag":
            if arg not in ("on", "off"):
                self.console.print("[red]/rag takes on or off.[/]")
            else:
                self.state.rag = arg == "on"
                self.console.print(f"Retrieval {arg}.")
        else:
            self.console.print(f"[red]Unknown command /{name}.[/] Type /help.")
        return True

    # --- answering ----------------------------------------------------------------

    def _request(self) -> ChatCompletionRequest:
        return ChatCompletionRequest(
            model=self.state.provider,
            messages=list(self.state.history),
            stream=True,
            rag=self.state.rag,
            top_k=self.state.top_k,
        )

    async def answer(self, question: str) -> None:
        self.state.history.append(ChatMessage(role="user", content=question))
        text = ""
        model = ""
        sources: list[Source] = []
        with Live(Markdown("…"), console=self.console, refresh_per_second=8, transient=False) as live:
            try:
                async for chunk in self.pipeline.chat_stream(self._request()):
                    model = chunk.model or model
                    for choice in chunk.choices:
                        text += choice.delta.content or ""
                    if chunk.sources is not None:
                        sources = list(chunk.sources)
                    live.update(Markdown(text or "…"))
            except asyncio.CancelledError:
                live.update(Group(Markdown(text), Text("[answer stopped]", style="yellow")))
                self.state.history.pop()
                return
            except LexragError as exc:
                live.update(Text(cli_message(exc), style="red"))
                self.state.history.pop()
                return
        self.state.history.append(ChatMessage(role="assistant", content=text))
        self.state.sources = sources
        self.console.print(sources_panel(sources))
        self.console.print(Text(f"answered by {model}", style="dim"))

    async def _answer_cancellable(self, question: str) -> None:
        task = asyncio.ensure_future(self.answer(question))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            # Cancelled before the answer started: the question never got an answer.
            if self.state.history and self.state.history[-1].role == "user":
                self.state.history.pop()
            self.console.print("[yellow][answer stopped][/]")
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def run(self) -> None:
        self.console.print("lexrag chat — ask a legal question; /help lists commands, /quit leaves.")
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
                if not self.command(line):
                    break
                continue
            await self._answer_cancellable(line)
        await self.pipeline.aclose()
