"""Windows written through the pipeline's own commit code, for the API and dashboard tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from cinestream.settings import Settings
from cinestream.store.commit import BatchCommit, commit_batch
from cinestream.store.connection import connect
from cinestream.stream.cells import BatchCells

T = TypeVar("T")

T0 = 1_762_797_900_000  # 2025-11-10T18:05:00Z
W = 60_000


def sample_events() -> list[tuple[int, int, float, int]]:
    """Three minutes of ratings with ties in movie counts."""
    events = []
    for minute in range(3):
        for i in range(40 + minute * 7):
            movie = (i * 7 + minute) % 13 + 1
            rating = ((i * 3 + minute) % 10 + 1) / 2
            events.append((i + 1, movie, rating, T0 + minute * W + i * 1000))
    return events


def write_windows(settings: Settings, events: list[tuple[int, int, float, int]]) -> None:
    cells: dict[tuple[int, int, int], int] = {}
    for _u, movie, rating, ts in events:
        key = (ts - ts % W, movie, int(rating * 2))
        cells[key] = cells.get(key, 0) + 1
    csv = BatchCells.from_rows(
        ("tumbling_1min", ws, ws + W, m, h, n) for (ws, m, h), n in cells.items()
    ).to_csv()
    with connect(settings.resolved_database_url) as conn:
        commit_batch(
            conn,
            BatchCommit(
                checkpoint=settings.checkpoint_dir,
                topic=settings.ratings_topic,
                topic_id=None,
                batch_id=0,
                cells_csv=csv,
                invalid=4,
                max_event_ms=T0,
                wall_clock_ms=int(time.time() * 1000),
                allowed_lateness_ms=120_000,
                end_offsets={"0": 0, "1": 0, "2": 0},
                primary_window_type="tumbling_1min",
            ),
        )


def eventually(check: Callable[[], T | None], timeout: float = 5.0) -> T:
    """``check()``'s first truthy result. The API hears of a commit by a PostgreSQL notification,
    milliseconds after it, so a read right after a write may still see the previous answer."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"still {value!r} after {timeout}s"
            return value
        time.sleep(0.05)
