"""The pipeline's commands: generate, process, backfill, validate, audit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any

import click

from cinestream.cli.app import _duration, _duration_text, _instant, _settings, cli
from cinestream.errors import CinestreamError
from cinestream.settings import Settings


@cli.command()
@click.option("--count", type=click.IntRange(min=1), help="Number of ratings.")
@click.option("--duration", callback=_duration, help="Run this long, e.g. 60s, 5min.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Ratings per second (default: as fast as possible).",
)
@click.option("--users", default=5_000, show_default=True, type=click.IntRange(min=1))
@click.option("--movies", default=10_000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--start", callback=_instant, help="Historical event times from this instant.")
@click.option("--span", callback=_duration, help="Spread historical event times over this span.")
@click.option("--no-progress", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the delivery report as JSON.")
def generate(
    count: int | None,
    duration: float | None,
    rate: float | None,
    users: int,
    movies: int,
    seed: int,
    start: datetime | None,
    span: float | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Produce latent-factor ratings into the ratings topic."""
    from cinestream.generator import ModelParams
    from cinestream.generator import generate as run

    if count is None and duration is None:
        raise click.UsageError("give --count or --duration")
    if (start is None) != (span is None):
        raise click.UsageError("--start and --span go together")
    if start is not None and count is None:
        raise click.UsageError("historical event times (--start/--span) need --count")
    settings = _settings().for_kafka_role("generator")
    from cinestream.kafka.admin import list_topics

    if settings.ratings_topic not in list_topics(settings):
        raise CinestreamError(
            f"topic {settings.ratings_topic!r} does not exist: run `cinestream topics create`"
        )
    report = run(
        kafka=settings.kafka_client_config,
        topic=settings.ratings_topic,
        params=ModelParams(users=users, movies=movies, seed=seed),
        count=count,
        duration_s=duration,
        rate=rate,
        start_ms=int(start.timestamp() * 1000) if start else None,
        span_ms=int(span * 1000) if span else None,
        progress=not no_progress,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(
            f"produced {report.produced}, delivered {report.delivered}, failed "
            f"{report.failed} to {settings.ratings_topic} in {report.seconds:.1f}s "
            f"({report.rate:,.0f}/s)"
        )
        for error, n in report.errors.items():
            click.echo(f"  {n} x {error}")
    if report.failed:
        raise CinestreamError(f"{report.failed} ratings were not delivered (see above)")


def _run_spark_job(settings: Settings, script: str, args: list[str]) -> int:
    """Run a Spark job in the foreground; Ctrl-C / SIGTERM ask it to stop between batches."""
    from cinestream.stream.stop_files import request_stop
    from cinestream.stream.submit import spark_env, spark_submit_command

    proc = subprocess.Popen(spark_submit_command(settings, script, args), env=spark_env())

    def forward(signum: int, _frame: Any) -> None:
        if script == "ratings_stream_processor.py":
            request_stop(settings)
        else:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.command()
@click.option(
    "--trigger",
    type=click.Choice(["available-now", "continuous"]),
    default="available-now",
    show_default=True,
)
@click.option(
    "--interval",
    default=None,
    callback=_duration_text,
    help="Micro-batch interval in continuous mode, e.g. 10s.",
)
@click.option(
    "--max-duration",
    default=None,
    callback=_duration_text,
    help="Stop gracefully after this long.",
)
@click.option(
    "--wait-for-lock",
    default=0.0,
    type=click.FloatRange(min=0),
    help="Seconds to wait if another processor holds the checkpoint.",
)
@click.option(
    "--stop",
    "stop_",
    is_flag=True,
    help="Ask the running processor to stop after its current batch, and wait.",
)
def process(
    trigger: str,
    interval: str | None,
    max_duration: str | None,
    wait_for_lock: float,
    stop_: bool,
) -> None:
    """Run the stream processor (spark_jobs/ratings_stream_processor.py)."""
    settings = _settings().for_kafka_role("processor")
    if stop_:
        from cinestream.local import stack

        stopped = stack.stop_processor(settings)
        click.echo("processor stopped" if stopped else "no processor was running")
        return
    from cinestream.stream.start_plan import preflight

    preflight(settings)  # a checkpoint that cannot start fails here, before Spark starts
    args = ["--trigger", trigger, "--wait-for-lock", str(wait_for_lock)]
    if interval:
        args += ["--interval", interval]
    if max_duration:
        args += ["--max-duration", max_duration]
    code = _run_spark_job(settings, "ratings_stream_processor.py", args)
    if code:
        sys.exit(code)


@cli.command()
@click.option("--start", required=True, callback=_instant, help="ISO-8601, inclusive.")
@click.option("--end", required=True, callback=_instant, help="ISO-8601, exclusive.")
@click.option(
    "--lookback",
    default="1h",
    show_default=True,
    help="Read records timestamped this long before --start ('all': from earliest).",
)
def backfill(start: datetime, end: datetime, lookback: str) -> None:
    """Recompute the complete windows of [start, end) from Kafka (spark_jobs/ratings_backfill)."""
    if end <= start:
        raise click.BadParameter("--end must be after --start", param_hint="--end")
    if lookback != "all":
        _duration(None, None, lookback)
    settings = _settings().for_kafka_role("processor")
    code = _run_spark_job(
        settings,
        "ratings_backfill.py",
        ["--start", start.isoformat(), "--end", end.isoformat(), "--lookback", lookback],
    )
    if code:
        sys.exit(code)


@cli.command()
@click.option("--start", default=None, callback=_instant, help="ISO-8601, inclusive.")
@click.option("--end", default=None, callback=_instant, help="ISO-8601, exclusive.")
def validate(start: datetime | None, end: datetime | None) -> None:
    """Run the Great Expectations suites; print failures; exit 1 if any expectation fails."""
    from cinestream.quality import validate as run

    if start and end and end <= start:
        raise click.BadParameter("--end must be after --start", param_hint="--end")
    report = run(_settings().for_kafka_role("auditor"), start, end, log_results=False)
    for line in report.lines():
        click.echo(line)
    if not report.success or report.nothing_checked:
        sys.exit(1)


@cli.command()
@click.option("--start", required=True, callback=_instant, help="ISO-8601, inclusive.")
@click.option("--end", required=True, callback=_instant, help="ISO-8601, exclusive.")
def audit(start: datetime, end: datetime) -> None:
    """Recompute the windows of [start, end) from `ratings` (plain Kafka reads, no Spark) and
    compare each with PostgreSQL and `metrics`; one line per difference; exit 1 on any."""
    from cinestream.audit import run_audit

    if end <= start:
        raise click.BadParameter("--end must be after --start", param_hint="--end")
    settings = _settings().for_kafka_role("auditor")
    report = run_audit(settings, int(start.timestamp() * 1000), int(end.timestamp() * 1000))
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(1)
