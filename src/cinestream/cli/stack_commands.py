"""The local stack's commands: up, down, status, topics, doctor, reset."""

from __future__ import annotations

import json
import sys

import click

from cinestream.cli.app import _duration, _settings, cli
from cinestream.errors import CinestreamError


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
    from cinestream.local import status as local_status

    settings = _settings()
    profile = stack.choose_profile(settings.state_dir, cluster or settings.profile == "cluster")
    if profile != settings.profile:
        settings = _settings(profile=profile)
    if live_rate is not None:
        settings = settings.model_copy(update={"live_rate": live_rate})
    stack.up(settings, backlog=backlog, backlog_span_s=backlog_span)
    click.echo(local_status.where_to_look(settings))


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
    from cinestream.local import status as local_status

    info = local_status.status(_settings())
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
