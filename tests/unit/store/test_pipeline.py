"""The store's rules on what it holds: which pipeline, and where the next batch must start."""

from __future__ import annotations

from cinestream.store.pipeline import (
    PipelineBinding,
    binding_problem,
    continuity_problem,
    merged_end,
)

BOUND = PipelineBinding("ratings", "id-1", ("tumbling_1min",), {"0": 10, "1": 20}, 0, 0, None)


def test_a_batch_must_start_where_the_store_ends_on_every_partition() -> None:
    assert continuity_problem({"0": 10, "1": 20}, {"0": 10, "1": 20}) is None
    # A lost batch: the next one starts past the store's end.
    assert continuity_problem({"0": 10, "1": 20}, {"0": 15, "1": 20}) == (
        "partition 0 starts at 15 but the store ends at 10"
    )
    # A second checkpoint re-reading what the store holds.
    assert "partition 1 starts at 0" in (
        continuity_problem({"0": 10, "1": 20}, {"0": 0, "1": 0}) or ""
    )
    assert continuity_problem({"0": 10, "1": 20}, {"0": 10}) == "partitions 1 are not in the batch"


def test_the_first_batch_of_a_new_store_and_new_partitions_start_anywhere() -> None:
    assert continuity_problem({}, {"0": 500}) is None
    assert continuity_problem({}, None) is None
    assert continuity_problem({"0": 10}, {"0": 10, "1": 7}) is None


def test_a_batch_of_unknown_start_is_refused_by_a_store_that_holds_offsets() -> None:
    assert continuity_problem({"0": 10}, None) == "its start offsets are unknown"


def test_the_end_moves_per_partition() -> None:
    assert merged_end({"0": 10, "1": 20}, {"1": 25, "2": 3}) == {"0": 10, "1": 25, "2": 3}


def test_a_store_belongs_to_one_topic_and_window_types() -> None:
    assert binding_problem(None, "ratings", "id-1", ("tumbling_1min",), "db") is None
    assert binding_problem(BOUND, "ratings", "id-1", ("tumbling_1min",), "db") is None
    other = binding_problem(BOUND, "movies", "id-7", ("tumbling_1min",), "db")
    assert other is not None and "'ratings'" in other.problem and "'movies'" in other.problem
    types = binding_problem(BOUND, "ratings", "id-1", ("tumbling_1min", "tumbling_5min"), "db")
    assert types is not None and "CINESTREAM_WINDOW_TYPES=tumbling_1min" in types.fix
    recreated = binding_problem(BOUND, "ratings", "id-2", ("tumbling_1min",), "db")
    assert recreated is not None and "deleted and recreated" in recreated.problem
    # A store from before the binding recorded no window types or id: it accepts and learns them.
    legacy = PipelineBinding("ratings", None, (), {"0": 10}, 0, 0, None)
    assert binding_problem(legacy, "ratings", "id-1", ("tumbling_1min",), "db") is None
