"""The ``cinestream`` command line."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any

import click

from cinestream.errors import CinestreamError
from cinestream.settings import Settings

log = logging.getLogger("cinestream")


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


# --------------------------------------------------------------------------------------------
# Stack
# --------------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--backlog",
    default=40_400,
    show_default=True,
    help="Historical ratings replayed on a first start (0 to skip).",
)
@click.option("--backlog-span", default="40min", show_default=True, callback=_duration)
@click.option(
    "--live-rate",
    type=click.FloatRange(min=0),
    default=None,
    help="Ratings per second of the live generator cinestream_generate runs (0 pauses it); "
    "default CINESTREAM_LIVE_RATE (20).",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="The cluster profile: three KRaft brokers with SASL/SCRAM and replication 3, a Spark "
    "standalone master with two workers (recorded in the state dir: later commands use it).",
)
def up(backlog: int, backlog_span: float, live_rate: float | None, cluster: bool) -> None:
    """Start the local stack; Airflow then runs the pipeline: a first run makes the backlog,
    the stream, generator, hourly backfill and quality DAGs keep it live."""
    from cinestream.local import stack

    settings = _settings()
    profile = stack.choose_profile(settings.state_dir, cluster or settings.profile == "cluster")
    if profile != settings.profile:
        settings = _settings(profile=profile)
    if live_rate is not None:
        settings = settings.model_copy(update={"live_rate": live_rate})
    stack.up(settings, backlog=backlog, backlog_span_s=backlog_span)
    click.echo(stack.where_to_look(settings))


@cli.command()
def down() -> None:
    """Stop everything `up` started (the processor stops between batches)."""
    from cinestream.local import stack

    for name, stopped in stack.down(_settings()):
        click.echo(f"{name:<10} {'stopped' if stopped else 'was not running'}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Where each service is and whether it runs."""
    from cinestream.local import stack

    info = stack.status(_settings())
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"profile    {info['profile']}")
    click.echo(f"kafka      {info['kafka_bootstrap']}")
    click.echo(f"spark      {info['spark_master']}")
    click.echo(f"database   {info['database_url_redacted']}")
    click.echo(f"api        {info['api_url']}")
    click.echo(f"dashboard  {info['dashboard_url']}")
    click.echo(f"airflow    {info['airflow_url']}")
    click.echo(f"checkpoint {info['checkpoint_dir']}")
    for name, state in info["services"].items():
        click.echo(f"  {name:<20} {state}")


@cli.command()
@click.argument("action", type=click.Choice(["create", "delete", "list"]))
def topics(action: str) -> None:
    """Create, delete or list the ratings, metrics and DLQ topics."""
    from cinestream.kafka import acls, admin

    settings = _settings()
    if action == "create":
        # The principals' ACLs (where they are cinestream's own: SASL), then the topics.
        for line in acls.provision(settings):
            click.echo(f"ACL: {line}")
        created = admin.create_topics(settings)
        click.echo(f"created: {', '.join(created)}" if created else "all topics exist")
    elif action == "delete":
        deleted = admin.delete_topics(settings)
        click.echo(f"deleted: {', '.join(deleted)}" if deleted else "no topics to delete")
    else:
        present = admin.list_topics(settings)
        for spec in admin.topic_specs(settings):
            if spec.name not in present:
                click.echo(f"{spec.name:<14} missing")
                continue
            parts = admin.partition_offsets(settings, spec.name)
            total = sum(p.messages for p in parts)
            click.echo(
                f"{spec.name:<14} {len(parts)} partitions, {total} messages"
                + (f", config {spec.config}" if spec.config else "")
            )


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------
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


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """Check topics, checkpoint, lag and metrics; each line OK / WARN / FAIL with its fix."""
    from cinestream.doctor import report

    text, failed = report(_settings(), as_json)
    click.echo(text)
    if failed:
        sys.exit(1)


@cli.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--keep-topics",
    is_flag=True,
    help="Keep the topics: only wipe the checkpoint and the derived windows, so the "
    "next run re-reads everything from earliest.",
)
@click.option(
    "--checkpoint-only",
    is_flag=True,
    help="Remove only the checkpoint and keep every window: the next run resumes from the "
    "offsets PostgreSQL holds (the fix when a checkpoint and the store disagree).",
)
@click.option(
    "--accept-deleted",
    is_flag=True,
    help="With --checkpoint-only: records Kafka deleted before they were counted are skipped "
    "(the next run starts at the earliest offsets Kafka still holds).",
)
def reset(yes: bool, keep_topics: bool, checkpoint_only: bool, accept_deleted: bool) -> None:
    """The full restart: stop, delete+recreate topics, wipe checkpoint, empty window_metrics."""
    from cinestream.local import stack

    settings = _settings()
    if accept_deleted and not checkpoint_only:
        raise click.UsageError("--accept-deleted goes with --checkpoint-only")
    if checkpoint_only:
        if keep_topics:
            raise click.UsageError("--checkpoint-only already keeps the topics")
        if not yes and not click.confirm(
            f"This deletes the checkpoint {settings.checkpoint_dir} (windows are kept). Continue?",
            default=False,
        ):
            raise CinestreamError("reset cancelled")
        for step in stack.reset_checkpoint(settings, accept_deleted=accept_deleted):
            click.echo(step)
        return
    what = (
        "the checkpoint and all derived windows"
        if keep_topics
        else "all topics (and their data), the checkpoint and all derived windows"
    )
    if not yes and not click.confirm(f"This deletes {what}. Continue?", default=False):
        raise CinestreamError("reset cancelled")
    for step in stack.reset(settings, keep_topics=keep_topics):
        click.echo(step)


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


if __name__ == "__main__":
    main()
