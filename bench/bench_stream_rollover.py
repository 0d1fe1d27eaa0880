"""How long ratings wait when cinestream_stream rolls over from one run to the next.

Run on a stack started with `make up` (Airflow running the processor and the live generator),
ideally with short runs so that several roll-overs happen, for example:

    CINESTREAM_STREAM_RUN_DURATION=2min make up
    # ... wait 10 minutes ...
    .venv/bin/python bench/bench_stream_rollover.py

It reads the committed batches of the checkpoint (``processor_batches.committed_at``) and the
lock's fencing token history is not needed: inside a run, batches follow each other every
trigger interval while the generator produces; across a roll-over the gap is the previous run's
graceful stop, Airflow starting the next run, spark-submit and the query's start. Prints the
gaps between consecutive commits: median (inside runs) and the largest ones (the roll-overs).
"""

from __future__ import annotations

import statistics

from cinestream.settings import Settings
from cinestream.store.connection import connect


def main() -> None:
    settings = Settings()
    with connect(settings.resolved_database_url) as conn:
        rows = conn.execute(
            "SELECT committed_at FROM processor_batches WHERE checkpoint = %s ORDER BY batch_id",
            (settings.checkpoint_dir,),
        ).fetchall()
    times = [r[0] for r in rows]
    if len(times) < 3:
        raise SystemExit("fewer than 3 committed batches: let the stack run longer")
    gaps = sorted((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))
    print(f"checkpoint {settings.checkpoint_dir}: {len(times)} batches")  # noqa: T201
    print(f"median gap between commits: {statistics.median(gaps):.1f}s")  # noqa: T201
    print("largest gaps (roll-overs):", ", ".join(f"{g:.1f}s" for g in gaps[-5:][::-1]))  # noqa: T201


if __name__ == "__main__":
    main()
