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
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator
from types import FrameType
from typing import TYPE_CHECKING

import click

from ..errors import LexragError
from ..redact import RedactingFormatter
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
        handler.setFormatter(RedactingFormatter("%(message)s"))
        calls.addHandler(handler)
        calls.propagate = False
    root = logging.getLogger("lexrag")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(RedactingFormatter("%(levelname)s:     %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds it), or one line saying why not.

    Binding here, before the app is built, makes a port in use a clear error at once; uvicorn
    starts listening on the socket when it is ready to serve."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError):
            raise _listen_error(host, port, exc) from None
        raise
    return sock


def _listen_error(host: str, port: int, exc: OSError) -> LexragError:
    if isinstance(exc, socket.gaierror):
        return LexragError(f"cannot listen on {host}:{port}: unknown host {host!r}; check --host")
    reason = os.strerror(exc.errno).lower() if exc.errno else (str(exc) or type(exc).__name__)
    if exc.errno == errno.EADDRINUSE:
        hint = "choose another --port"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "choose a --port above 1023, or run with the rights to use this one"
    else:
        hint = "check --host and --port"
    return LexragError(f"cannot listen on {host}:{port}: {reason}; {hint}")


ServerFactory = Callable[["uvicorn.Config", App, "ServerState", float, Callable[[], None]], "uvicorn.Server"]


def _server_class() -> ServerFactory:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, told about shutdown as it begins, reloading on SIGHUP, and
        calling ``on_started`` once it listens and serves."""

        def __init__(
            self,
            config: uvicorn.Config,
            app: App,
            state: ServerState,
            grace_s: float,
            on_started: Callable[[], None],
        ) -> None:
            super().__init__(config)
            self.lexrag_app = app
            self.state = state
            self.grace_s = grace_s
            self.on_started = on_started
            self._reloads: set[asyncio.Task[None]] = set()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                self.on_started()

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
    from .. import tracing

    # Off unless OTEL_* asks (docs/deploy.md, "Traces"); a bad OTEL_* value is a one-line error.
    traced = tracing.configure()
    host, port = settings.server.host, settings.server.port
    sock = _bind(host, port)
    with sock:
        port = sock.getsockname()[1]  # the one the system chose for --port 0
        server_app = create_app(config, app.registry)
        state: ServerState = server_app.state.lexrag
        # A provider that cannot be built is skipped (and reported); none at all is fatal.
        state.pipeline.router.check_chain()
        grace = settings.server.shutdown_grace_s
        uv_config = uvicorn.Config(
            server_app,
            host=host,
            port=port,
            log_level=settings.logging.level.lower(),
            access_log=False,
            timeout_graceful_shutdown=max(1, round(grace)),
        )
        chain = " -> ".join(state.pipeline.router.chain_names())
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

        def started() -> None:
            click.echo(f"lexrag serving on {url} (providers: {chain})", err=True)
            if traced:
                click.echo("traces: on (OTEL_* environment variables)", err=True)

        server = _server_class()(uv_config, app, state, grace, started)
        try:
            # Listening could still fail when another socket is bound without listening.
            sock.listen(uv_config.backlog)
        except OSError as exc:
            raise _listen_error(host, port, exc) from None
        try:
            server.run(sockets=[sock])
        finally:
            tracing.shutdown()  # the spans still batched go out before the process ends


COMMANDS = [serve]
