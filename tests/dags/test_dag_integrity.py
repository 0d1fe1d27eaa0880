"""Every DAG loads, has tags, retries and an explicit schedule (no services needed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pendulum
import pytest

pytestmark = pytest.mark.dags

DAGS = Path(__file__).resolve().parents[2] / "dags"
EXPECTED = {
    "cinestream_setup",
    "cinestream_generate",
    "cinestream_stream",
    "cinestream_backfill",
    "cinestream_quality",
    "cinestream_reset",
    "cinestream_audit",
    "cinestream_dlq",
    "cinestream_pipeline",
}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("airflow_home")
    # Set for this module only: every later subprocess (the CLI, spark-submit, airflow) inherits
    # os.environ, and a CINESTREAM_FIRST_START left behind would bound the catch-up of every
    # stack started after this module from 2026-11-28.
    with pytest.MonkeyPatch.context() as env:
        for key, value in {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(DAGS.parent / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The stack's first start bounds the backfill's catchup.
            "CINESTREAM_FIRST_START": "2026-11-28T10:25:00+00:00",
        }.items():
            env.setenv(key, value)
        # Airflow puts the plugins folder on sys.path when its configuration is first read; in
        # this process that may have happened before (other tests import airflow), so do it too.
        env.syspath_prepend(str(DAGS.parent / "plugins"))
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(DAGS))


def test_no_import_errors_and_every_dag_present(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED


def test_tags_retries_and_docs(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag in dagbag.dags.values():
        assert dag.tags, dag.dag_id
        assert "retries" in dag.default_args, dag.dag_id
        assert dag.doc_md and dag.dag_id in dag.doc_md, dag.dag_id


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_schedule_is_explicit_and_dag_files_only_wire(path: Path) -> None:
    tree = ast.parse(path.read_text())
    decorators = [
        d
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        for d in node.decorator_list
        if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "dag"
    ]
    assert decorators, f"{path.name} defines no @dag"
    keywords = {k.arg for k in decorators[0].keywords}
    assert {"dag_id", "schedule", "tags", "doc_md"} <= keywords
    # A fresh stack runs: no DAG waits for someone to find its pause toggle.
    (paused,) = [k.value for k in decorators[0].keywords if k.arg == "is_paused_upon_creation"]
    assert isinstance(paused, ast.Constant) and paused.value is False, path.name
    # No client set-up, loops or SQL in dags/: task bodies are one call into cinestream.
    loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While))]
    assert not loops, f"{path.name} has loops"
    source = path.read_text()
    for forbidden in ("Producer(", "psycopg", "SELECT ", "os.getenv", "os.environ"):
        assert forbidden not in source, f"{path.name} contains {forbidden!r}"


def test_stream_and_backfill_update_the_asset_quality_is_scheduled_on(dagbag) -> None:  # type: ignore[no-untyped-def]
    quality = dagbag.dags["cinestream_quality"]
    for dag_id in ("cinestream_stream", "cinestream_backfill"):
        (task,) = dagbag.dags[dag_id].tasks
        assert [o.uri for o in task.outlets] == ["cinestream://metrics/window_metrics"]
    assert "window_metrics" in str(quality.schedule)
    assert dagbag.dags["cinestream_backfill"].catchup is True
    backfill = dagbag.dags["cinestream_backfill"]
    interval = backfill.timetable.infer_manual_data_interval(
        run_after=pendulum.datetime(2026, 11, 27, 10, tz="UTC")
    )
    assert (interval.end - interval.start).total_seconds() == 3600


def test_the_live_parts_are_supervised_continuous_runs(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id in ("cinestream_stream", "cinestream_generate"):
        dag = dagbag.dags[dag_id]
        assert type(dag.timetable).__name__ == "ContinuousTimetable", dag_id
        assert dag.max_active_runs == 1, dag_id
        assert dag.default_args["retries"] >= 3 and dag.default_args["retry_exponential_backoff"]
    (stream,) = dagbag.dags["cinestream_stream"].tasks
    assert stream.own_stop_file and stream.on_busy == "fail"
    assert "--wait-for-lock" in stream.application_args
    assert dagbag.dags["cinestream_stream"].params["mode"] == "continuous"
    # The live generator waits for pipeline runs (a backlog first), then produces for an hour.
    generate = dagbag.dags["cinestream_generate"]
    assert [t.task_id for t in generate.topological_sort()] == [
        "wait_for_pipeline_runs",
        "produce_ratings",
    ]
    assert generate.params["duration_s"] == 3600 and generate.params["count"] is None
    # The pipeline's stream step waits for the live processor instead of being skipped.
    pipeline_stream = dagbag.dags["cinestream_pipeline"].get_task("ratings_stream_processor")
    assert pipeline_stream.on_busy == "wait"


def test_backfill_catchup_is_bounded_from_the_first_start(dagbag) -> None:  # type: ignore[no-untyped-def]
    from airflow.timetables.base import TimeRestriction

    backfill = dagbag.dags["cinestream_backfill"]
    timetable = backfill.timetable
    # CINESTREAM_FIRST_START 10:25 minus CINESTREAM_BACKFILL_CATCHUP 3h, on the hour.
    bound = pendulum.datetime(2026, 11, 28, 7, tz="UTC")
    assert timetable.catchup_from == bound
    # The scheduler's first automatic run (open-ended restriction) starts at the bound...
    first = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(backfill.start_date, None, True),
    )
    assert first.data_interval.start == bound
    assert first.data_interval.end - first.data_interval.start == pendulum.duration(hours=1)
    # ...while a backfill over an older day (a closed range) gets every hour of it.
    day = pendulum.datetime(2026, 3, 1, tz="UTC")
    older = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(day, day.add(hours=5), True),
    )
    assert older.data_interval.start == day
    # It survives serialization (registered by plugins/cinestream_timetables.py).
    again = type(timetable).deserialize(timetable.serialize())
    assert again.catchup_from == bound and again.serialize() == timetable.serialize()
    (task,) = backfill.tasks
    lookback = task.application_args[task.application_args.index("--lookback") + 1]
    assert lookback == "15min"
