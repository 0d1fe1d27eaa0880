"""The ``cinestream`` command group, its shared option parsers and the entry point that turns
expected failures into one line."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Any

import click

from cinestream.errors import CinestreamError
from cinestream.settings import Settings


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic's ValidationError: name the variable that is wrong
        errors = getattr(exc, "errors", None)
        if callable(errors):
            first = errors()[0]
            field = "CINESTREAM_" + str(first["loc"][0]).upper() if first.get("loc") else "?"
            raise CinestreamError(f"bad configuration {field}: {first['msg']}") from exc
        raise


def _duration(_ctx: Any, _param: Any, value: str | None) -> float | None:
    """A duration option in seconds."""
    from cinestream.timeparse import parse_interval_s

    if value is None:
        return None
    try:
        return parse_interval_s(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _duration_text(ctx: Any, param: Any, value: str | None) -> str | None:
    """A duration option checked here and passed on as written (the job parses it again)."""
    _duration(ctx, param, value)
    return value


def _instant(_ctx: Any, _param: Any, value: str | None) -> datetime | None:
    """An ISO-8601 time within the SPEC's event-time range (the bound of a range of windows)."""
    from cinestream.timeparse import parse_range_bound

    if value is None:
        return None
    try:
        return parse_range_bound(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """cinestream: real-time movie-ratings analytics on Kafka, Spark and PostgreSQL."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # One line per HTTP request to Airflow's API is noise unless debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


def main() -> None:
    """Entry point: run the CLI; expected failures print one line and exit non-zero."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        ctx = exc.ctx
        hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except CinestreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
