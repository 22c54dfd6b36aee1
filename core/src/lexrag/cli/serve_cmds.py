"""``lexrag serve``: the OpenAI-compatible server on uvicorn.

SIGHUP re-reads the config (file and environment, with the command's flags) and serves
new requests with it; requests in flight finish with the config they started with. A
config that does not validate is logged and the previous one kept. SIGTERM (or Ctrl-C)
stops accepting connections and gives requests in flight ``[server] shutdown_grace_s`` to
finish; streams still open shortly before that end cleanly (an error event, ``[DONE]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Generator
from types import FrameType
from typing import TYPE_CHECKING

import click

from ..errors import LexragError
from ._app import App, pass_app

if TYPE_CHECKING:
    import uvicorn

    from ..server.state import ServerState

log = logging.getLogger("lexrag.server")


def _setup_logging(level: str) -> None:
    """Call log lines go to stderr as bare JSON (one per line, for log shippers); the
    rest of lexrag's log in uvicorn's style."""
    calls = logging.getLogger("lexrag.calls")
    if not calls.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        calls.addHandler(handler)
        calls.propagate = False
    root = logging.getLogger("lexrag")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())


def _server_class() -> Callable[[uvicorn.Config, App, ServerState, float], uvicorn.Server]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, told about shutdown as it begins, and reloading on SIGHUP."""

        def __init__(self, config: uvicorn.Config, app: App, state: ServerState, grace_s: float) -> None:
            super().__init__(config)
            self.lexrag_app = app
            self.state = state
            self.grace_s = grace_s
            self._reloads: set[asyncio.Task[None]] = set()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                # Streams get most of the grace period, and a margin to send their end.
                self.state.end_streams_in(self.grace_s - min(1.0, self.grace_s / 4))
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            with super().capture_signals():
                if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
                    yield
                    return
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
                try:
                    yield
                finally:
                    loop.remove_signal_handler(signal.SIGHUP)

        def _on_sighup(self) -> None:
            task = asyncio.get_running_loop().create_task(self.reload())
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

        async def reload(self) -> None:
            self.lexrag_app.override({})  # drops the cached config, so the next read loads anew
            try:
                config = self.lexrag_app.config
            except LexragError as exc:
                log.error("config reload failed, still serving the previous config: %s", exc.message)
                return
            await self.state.reload(config)

    return Server


@click.command("serve")
@click.option("--host", default=None, help="Interface to listen on (default: [server] host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: [server] port, 8000).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), default=None, help="Index directory.")
@pass_app
def serve(app: App, host: str | None, port: int | None, index_dir: str | None) -> None:
    """Serve /v1/chat/completions, /v1/embeddings, /v1/models, /v1/generate, /health and
    /metrics. SIGHUP reloads the config; SIGTERM stops gracefully."""
    import uvicorn

    from ..server import create_app

    app.override({"server.host": host, "server.port": port, "index.dir": index_dir})
    config = app.config
    settings = config.settings
    _setup_logging(settings.logging.level)
    server_app = create_app(config, app.registry)
    state: ServerState = server_app.state.lexrag
    grace = settings.server.shutdown_grace_s
    uv_config = uvicorn.Config(
        server_app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.logging.level.lower(),
        access_log=False,
        timeout_graceful_shutdown=max(1, round(grace)),
    )
    chain = " -> ".join(state.pipeline.router.chain_names())
    click.echo(
        f"lexrag serving on http://{settings.server.host}:{settings.server.port} (providers: {chain})",
        err=True,
    )
    _server_class()(uv_config, app, state, grace).run()


COMMANDS = [serve]
