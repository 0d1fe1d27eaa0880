"""cinestream_audit on the real stack, through `airflow dags test` (no scheduler needed): a
correct range passes, a window altered in PostgreSQL is found and the audit's backfill repairs
it, a window PostgreSQL holds more of than the topic fails the run with one line naming it.

cinestream_dlq's AssetWatcher needs a scheduler and a triggerer: it is tested on the live
platform's Airflow (tests/dags/test_live_platform.py), not on an Airflow of its own here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cinestream.schemas import format_time
from tests.dags.test_dags_run import _state, dags_test
from tests.reference import invalid_burst, recompute
from tests.shared_stack import Pipeline, assert_windows_equal

pytestmark = [pytest.mark.integration, pytest.mark.dags]

MINUTE = 60_000
VALID, INVALID = 1_000, 100


def test_audit_passes_finds_repairs_and_names_what_it_cannot_repair(
    pipeline: Pipeline, airflow_db: None
) -> None:
    hour0 = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    h0 = int(hour0.timestamp() * 1000)
    pipeline.produce_historical(VALID, h0, 10 * MINUTE)
    pipeline.produce_raw(invalid_burst())
    conf = {"start": format_time(h0), "end": format_time(h0 + 60 * MINUTE)}

    pipeline.process(check=True)
    from cinestream.kafka.read import read_all

    assert len(read_all(pipeline.settings, pipeline.settings.dlq_topic)) == INVALID

    # A correct range passes: no backfill (the mapped task has nothing to do), one record.
    clean = dags_test("cinestream_audit", conf=conf)
    assert _state(clean) == "success", clean[-5000:]
    assert f"OK audit [{conf['start']}, {conf['end']}): 10 windows, 1000 ratings" in clean

    # A window altered in PostgreSQL (a closed one: the watermark is minute 8) is found, the
    # audit's backfill replaces exactly its hour, and the re-audit passes.
    altered = h0 + 2 * MINUTE
    assert pipeline.db(
        "UPDATE window_metrics SET count = count - 1 WHERE window_type = 'tumbling_1min' "
        "AND window_start = to_timestamp(%s) RETURNING count",
        (altered / 1000,),
    ) == [(pipeline.db_windows()[format_time(altered)]["count"],)]
    repaired = dags_test("cinestream_audit", conf=conf)
    assert _state(repaired) == "success", repaired[-5000:]
    assert f"DIFF tumbling_1min {format_time(altered)} postgres: count " in repaired
    assert_windows_equal(pipeline.db_windows(), recompute(_valid_events(pipeline)))
    audits = pipeline.db(
        "SELECT phase, ok, differences, repair, range_start, range_end FROM audit_runs "
        "ORDER BY id DESC LIMIT 2"
    )
    hour = [format_time(h0), format_time(h0 + 60 * MINUTE)]
    assert [(p, ok, d, r) for p, ok, d, r, _, _ in audits] == [
        ("re-audit", True, 0, [hour]),
        ("audit", False, 1, [hour]),
    ]

    # A window where PostgreSQL holds more ratings than the topic (as after retention): a
    # backfill keeps such a window, so none runs for it, and the run fails with one line naming
    # it and why (before: a backfill of its hour, then "the backfill did not repair ...").
    more = h0 + 4 * MINUTE
    counted = pipeline.db_windows()[format_time(more)]["count"]
    assert pipeline.db(
        "UPDATE window_metrics SET count = count + 5 WHERE window_type = 'tumbling_1min' "
        "AND window_start = to_timestamp(%s) RETURNING count",
        (more / 1000,),
    ) == [(counted + 5,)]
    left = dags_test("cinestream_audit", conf=conf)
    assert _state(left) == "failed", left[-5000:]
    assert (
        f"not repaired: 1 window (tumbling_1min {format_time(more)}): PostgreSQL holds more "
        "ratings than the topic still has" in left
    ), left[-5000:]
    assert "the backfill did not repair" not in left
    assert pipeline.db_windows()[format_time(more)]["count"] == counted + 5  # left as it is
    ((phase, repair, lines),) = pipeline.db(
        "SELECT phase, repair, lines FROM audit_runs ORDER BY id DESC LIMIT 1"
    )
    assert (phase, repair) == ("audit", [])  # nothing backfilled, so nothing re-audited
    assert lines[0].startswith(f"UNREPAIRABLE tumbling_1min {format_time(more)}: "), lines


def _valid_events(pipeline: Pipeline) -> list[tuple[int, int, float, int]]:
    """The generator's ratings (the invalid ones are the two test producers')."""
    from cinestream.kafka.read import read_all
    from tests.reference import events_from_messages

    messages = read_all(pipeline.settings, pipeline.settings.ratings_topic)
    valid = [m for m in messages if m.key() not in (b"producer-a", b"producer-b")]
    assert len(valid) == VALID
    return events_from_messages(valid)
