"""Wall time of the cinestream_pipeline DAG: setup, generate 40,400, stream, quality.

    .venv/bin/python bench/bench_airflow_pipeline.py

Runs `airflow dags test cinestream_pipeline` on a private stack (its own Kafka, PostgreSQL and
Airflow metadata database) and reports the wall time of the
whole run (process start to DagRun finished).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stack import bench_stack


def airflow(*args: str) -> subprocess.CompletedProcess[str]:
    from cinestream.local.airflow import airflow_env
    from cinestream.settings import Settings

    return subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args],
        env={**os.environ, **airflow_env(Settings())},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def main() -> None:
    with bench_stack("bench-airflow", 29292, 25632):
        migrate = airflow("db", "migrate")
        if migrate.returncode:
            raise SystemExit(migrate.stdout[-3000:])
        start = datetime.now(tz=UTC).replace(second=0, microsecond=0) - timedelta(minutes=50)
        conf = {
            "count": 40_400,
            "start": start.isoformat(),
            "span_s": 2400,
            "seed": 42,
            "duration_s": None,
            "rate": None,
        }
        began = time.monotonic()
        run = airflow("dags", "test", "cinestream_pipeline", "-c", json.dumps(conf))
        wall = time.monotonic() - began
        if "state=success" not in run.stdout.split("DagRun Finished")[-1][:2000]:
            raise SystemExit(run.stdout[-5000:])
    print(
        json.dumps(
            {
                "date": datetime.now(tz=UTC).strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "pipeline_wall_s": round(wall, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
