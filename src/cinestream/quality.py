"""Running the Great Expectations suites (``expectations/``) over what cinestream wrote.

GX cannot validate a streaming DataFrame, so the suites run on the ``window_metrics`` rows of a
window range, the records of the ``metrics`` topic and a sample of ``ratings``, each through a GX
checkpoint whose action builds the Data Docs under ``<state dir>/gx``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cinestream.docs_assets import make_offline
from cinestream.kafka.admin import partition_offsets
from cinestream.kafka.read import read_between
from cinestream.schemas import METRIC_FIELDS, format_time, valid_event_time
from cinestream.settings import Settings
from cinestream.store import reads, schema
from cinestream.store.connection import connect

log = logging.getLogger("cinestream.quality")

RATINGS_SAMPLE = 5_000


@dataclass
class Failure:
    """One failed expectation with its observed value."""

    suite: str
    expectation: str
    column: str | None
    observed: Any

    def line(self) -> str:
        """``FAIL suite: expectation(column) observed value``."""
        where = f"({self.column})" if self.column else ""
        return f"FAIL {self.suite}: {self.expectation}{where} observed {self.observed}"


@dataclass
class QualityReport:
    """The outcome of a validation: per-suite success, failures, Data Docs."""

    success: bool
    suites: dict[str, bool] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    docs_index: Path | None = None
    # Windows of the range that were validated, and those left out because they start after
    # the wall clock (None: not counted, as for frames given directly to run_suites).
    checked: int | None = None
    future: int = 0

    @property
    def nothing_checked(self) -> bool:
        """True when the range held no window to validate: no suite may say OK of it."""
        return self.checked == 0

    def lines(self) -> list[str]:
        """One line per suite, then each failure, then where the Data Docs are."""
        if self.nothing_checked:
            why = (
                f"its {self.future} windows start after the wall clock (see cinestream doctor)"
                if self.future
                else "it holds no windows"
            )
            out = [f"NONE no window of the range was checked: {why}"]
            out += [f"NONE suite {name}" for name in self.suites]
            out += [f.line() for f in self.failures]
            return out
        out = [f"{'OK  ' if ok else 'FAIL'} suite {name}" for name, ok in self.suites.items()]
        if self.future:
            out.append(
                f"SKIP {self.future} windows that start after the wall clock were not validated "
                "(see cinestream doctor)"
            )
        out += [f.line() for f in self.failures]
        if self.docs_index:
            out.append(f"Data Docs: {self.docs_index}")
        return out


def quiet_gx_logging() -> None:
    """GX logs hundreds of INFO lines per run (from its first import on): only its warnings,
    unless cinestream's own logging is at DEBUG (``-v``)."""
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("great_expectations").setLevel(logging.WARNING)


def summary_path(settings: Settings) -> Path:
    """The latest result of each suite, for the quality view in the Airflow UI."""
    return gx_root(settings) / "latest_results.json"


def write_summary(
    settings: Settings, report: QualityReport, start: datetime | None, end: datetime | None
) -> None:
    """Record each suite's latest run (time, range, pass/fail, failed expectations with their
    observed values); suites not run this time keep their previous entry."""
    path = summary_path(settings)
    try:
        suites = json.loads(path.read_text())["suites"] if path.exists() else {}
    except (ValueError, KeyError):
        suites = {}
    now = format_time(datetime.now(tz=UTC))
    for name, ok in report.suites.items():
        suites[name] = {
            "run_at": now,
            "range": [format_time(start) if start else None, format_time(end) if end else None],
            "success": ok,
            "windows_checked": report.checked,
            "windows_future": report.future,
            "failures": [
                {"expectation": f.expectation, "column": f.column, "observed": f.observed}
                for f in report.failures
                if f.suite == name
            ],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"updated_at": now, "suites": suites}, indent=2))
    tmp.replace(path)


def read_summary(settings: Settings) -> dict[str, Any]:
    """What :func:`write_summary` recorded (no suites before the first validation)."""
    path = summary_path(settings)
    if not path.exists():
        return {"updated_at": None, "suites": {}}
    return dict(json.loads(path.read_text()))


def gx_root(settings: Settings) -> Path:
    """The file-backed GX project of the local stack."""
    return settings.state_dir / "gx"


def docs_dir(settings: Settings) -> Path:
    """Where the Data Docs site is built."""
    return gx_root(settings) / "gx" / "uncommitted" / "data_docs" / "local_site"


def readable(value: Any) -> str:
    """A value as a person writes it: numpy scalars as plain numbers and text (no
    ``np.str_('...')``), whole floats without ``.0``, times without trailing zero nanoseconds,
    lists comma-separated."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(readable(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {readable(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, (datetime, pd.Timestamp)):
        return format_time(value)
    text = str(value)
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+", text):
        text = text.rstrip("0").rstrip(".")
    return text


def _observed(result: dict[str, Any]) -> str:
    res = result.get("result") or {}
    if "observed_value" in res:
        return readable(res["observed_value"])
    if "unexpected_count" in res:
        sample = res.get("partial_unexpected_list") or []
        return (
            f"{res['unexpected_count']} unexpected of {res.get('element_count')}: "
            f"{readable(sample[:5])}"
        )
    return readable(res or result.get("exception_info"))


def run_suites(
    settings: Settings, frames: dict[str, tuple[Any, pd.DataFrame]], build_docs: bool = True
) -> QualityReport:
    """Validate each ``suite name -> (suite, DataFrame)`` through a GX checkpoint."""
    quiet_gx_logging()
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    context: Any
    if build_docs:
        root = gx_root(settings)
        root.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(root))
    else:
        context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_pandas("cinestream")
    report = QualityReport(success=True)
    for name, (suite, frame) in frames.items():
        try:
            asset = source.get_asset(name)
        except LookupError:
            asset = source.add_dataframe_asset(name=name)
        try:
            batch = asset.get_batch_definition("all")
        except (KeyError, LookupError, ValueError):
            batch = asset.add_batch_definition_whole_dataframe("all")
        suite = context.suites.add_or_update(suite)
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        actions: list[Any] = [UpdateDataDocsAction(name="data_docs")] if build_docs else []
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"cinestream_{name}",
                validation_definitions=[definition],
                actions=actions,
                result_format={"result_format": "SUMMARY"},
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        ok = bool(result.success)
        report.suites[name] = ok
        report.success &= ok
        for validation in result.run_results.values():
            for er in validation.results:
                if er.success:
                    continue
                data: dict[str, Any] = dict(er.to_json_dict())  # type: ignore[arg-type]
                config: dict[str, Any] = data.get("expectation_config") or {}
                kwargs: dict[str, Any] = config.get("kwargs") or {}
                report.failures.append(
                    Failure(
                        suite=name,
                        expectation=config.get("type", "?"),
                        column=kwargs.get("column")
                        or (
                            f"{kwargs.get('column_A')} vs {kwargs.get('column_B')}"
                            if "column_A" in kwargs
                            else None
                        ),
                        observed=_observed(data),
                    )
                )
    if build_docs:
        index = docs_dir(settings) / "index.html"
        report.docs_index = index if index.exists() else None
        if index.exists():
            make_offline(docs_dir(settings))
    return report


# --------------------------------------------------------------------------------------------
# Loading what the pipeline wrote
# --------------------------------------------------------------------------------------------
def load_frames(
    settings: Settings,
    start: datetime | None,
    end: datetime | None,
    counts: dict[str, int] | None = None,
) -> dict[str, tuple[Any, pd.DataFrame]]:
    """Each suite with the frame it validates, for windows starting in ``[start, end)``;
    ``counts`` receives how many windows are ``checked`` and how many are ``future``."""
    from expectations import continuity, metrics_topic, ratings, window_metrics

    start_ms = (
        int(start.timestamp() * 1000) if start else int(time.time() * 1000) - settings.retention_ms
    )
    end_ms = int(end.timestamp() * 1000) if end else None
    lengths = {w.name: w.size_ms for w in settings.windows}
    now_ms = int(time.time() * 1000)
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        stored = reads.windows_between(conn, None, start_ms, end_ms)
    # Windows that start after the wall clock are a producer's clock ahead: doctor and
    # /metrics/summary report them; validating them would fail every run until they start.
    future = [m for m in stored if m.window_start_ms > now_ms]
    if future:
        log.warning(
            "%d windows start after the wall clock (from %s); not validated, see cinestream doctor",
            len(future),
            format_time(min(m.window_start_ms for m in future)),
        )
    stored = [m for m in stored if m.window_start_ms <= now_ms]
    if counts is not None:
        counts.update(checked=len(stored), future=len(future))
    rows = pd.DataFrame([m.record() for m in stored], columns=list(METRIC_FIELDS))
    for column in ("window_start", "window_end", "processing_time"):
        rows[column] = pd.to_datetime(rows[column], utc=True)
    for column in ("avg_rating", "p50_rating", "p95_rating"):
        rows[column] = rows[column].astype(float)
    primary = settings.window_types[0]
    window_starts = [m.window_start_ms for m in stored if m.window_type == primary]

    # A window's metric is published at or after its start minus the future tolerance.
    published_from = start_ms - settings.future_tolerance_s * 1000 - settings.windows[0].size_ms
    metric_messages = [
        (m.key(), m.value())
        for m in read_between(settings, settings.metrics_topic, published_from, None)
    ]
    values, minutes = _ratings_sample(settings, start_ms, end_ms)
    total = sum(p.messages for p in partition_offsets(settings, settings.ratings_topic))
    dlq = sum(p.messages for p in partition_offsets(settings, settings.dlq_topic))
    return {
        window_metrics.NAME: (
            window_metrics.suite(),
            window_metrics.prepare(rows, lengths, settings.future_tolerance_s * 1000),
        ),
        metrics_topic.NAME: (metrics_topic.suite(), metrics_topic.prepare(metric_messages)),
        continuity.NAME: (continuity.suite(), continuity.prepare(minutes, window_starts)),
        ratings.NAME: (ratings.suite(settings.max_dlq_share), ratings.prepare(values, dlq, total)),
    }


def _ratings_sample(
    settings: Settings, start_ms: int, end_ms: int | None
) -> tuple[list[bytes | None], set[int]]:
    """The newest records of ``ratings`` in the range (a sample) and the start of every primary
    window of the range that holds a valid rating and is closed by now.

    Only the offsets whose record timestamps (the event time, as the generator writes them) can
    hold the range are read, looked up by timestamp with the allowed lateness as margin.
    """
    lateness_ms = settings.allowed_lateness_s * 1000
    ahead_ms = lateness_ms + settings.future_tolerance_s * 1000
    messages = read_between(
        settings,
        settings.ratings_topic,
        start_ms - lateness_ms,
        None if end_ms is None else end_ms + ahead_ms,
        timeout_s=300,
    )
    values = [msg.value() for msg in messages[-RATINGS_SAMPLE:]]
    size = settings.windows[0].size_ms
    # Windows still inside the allowed lateness may legitimately not exist yet.
    closed_before = int(time.time() * 1000) - lateness_ms - size
    starts: set[int] = set()
    for msg in messages:
        ts = valid_event_time(msg.value())
        if ts is None or ts < start_ms or (end_ms is not None and ts >= end_ms):
            continue
        if ts < closed_before:
            starts.add(ts - ts % size)
    return values, starts


def validate(
    settings: Settings,
    start: datetime | None = None,
    end: datetime | None = None,
    log_results: bool = True,
) -> QualityReport:
    """Run every suite over what the pipeline wrote: windows starting in ``[start, end)``; with
    no start, the retention period (CINESTREAM_RETENTION) up to now. The result lines are logged
    (an Airflow task's log) unless ``log_results`` is False (the CLI prints them itself)."""
    quiet_gx_logging()
    counts: dict[str, int] = {}
    report = run_suites(settings, load_frames(settings, start, end, counts))
    report.checked, report.future = counts.get("checked"), counts.get("future", 0)
    write_summary(settings, report, start, end)
    for line in report.lines() if log_results else []:
        (log.info if line.startswith(("OK", "Data", "SKIP", "NONE")) else log.error)("%s", line)
    return report
