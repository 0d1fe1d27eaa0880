"""Serving: the metrics API and the dashboard."""

from __future__ import annotations

import subprocess
import sys

import click

from cinestream.cli.app import _settings, cli


@cli.command()
@click.option("--host", default=None, help="Bind address (default CINESTREAM_API_HOST).")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Default 8000.")
def api(host: str | None, port: int | None) -> None:
    """Serve the metrics API (FastAPI, OpenAPI at /docs)."""
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "cinestream.api.main:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
        access_log=False,
    )


@cli.command()
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Default 8501.")
def dashboard(port: int | None) -> None:
    """Serve the Streamlit dashboard (reads the metrics API)."""
    from cinestream.local.stack import dashboard_command

    settings = _settings()
    sys.exit(subprocess.call(dashboard_command(settings, port)))
