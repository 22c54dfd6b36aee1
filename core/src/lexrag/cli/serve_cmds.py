"""``lexrag serve``: the OpenAI-compatible server on uvicorn."""

from __future__ import annotations

import click

from ._app import App, pass_app


@click.command("serve")
@click.option("--host", default=None, help="Interface to listen on (default: [server] host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: [server] port, 8000).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), default=None, help="Index directory.")
@pass_app
def serve(app: App, host: str | None, port: int | None, index_dir: str | None) -> None:
    """Serve /v1/chat/completions, /v1/embeddings, /v1/models, /v1/generate and /health."""
    import uvicorn

    from ..server import create_app

    app.override({"server.host": host, "server.port": port, "index.dir": index_dir})
    config = app.config
    settings = config.settings
    server_app = create_app(config, app.registry)
    click.echo(f"lexrag serving on http://{settings.server.host}:{settings.server.port}", err=True)
    uvicorn.run(
        server_app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.logging.level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )


COMMANDS = [serve]
