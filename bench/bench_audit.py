"""How long `cinestream audit` takes over one hour of 1,000 ratings/s (3,600,000 ratings).

    .venv/bin/python bench/bench_audit.py [--count 3600000]

Starts its own Kafka and PostgreSQL (state in .state-bench-audit, ports 29192/25532), produces
COUNT ratings over one hour of event time three hours ago with the generator, drains them with
the processor (not timed), then times the audit of that hour (`run_audit`, what `cinestream
audit` runs, in this process so that its peak memory is this process's) and reports its wall
time, records per second and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from stack import bench_stack

REPO = Path(__file__).resolve().parents[1]
HOUR = 3_600_000


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cinestream.cli", *args],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3_600_000)
    args = parser.parse_args()
    from cinestream.schemas import format_time

    start = (int(time.time() * 1000) // HOUR - 3) * HOUR
    with bench_stack("bench-audit", 29192, 25532):
        made = cli(
            "generate",
            "--count",
            str(args.count),
            "--start",
            format_time(start),
            "--span",
            "60min",
            "--no-progress",
        )
        assert made.returncode == 0, made.stdout[-2000:]
        drained = cli("process", "--trigger", "available-now")
        assert drained.returncode == 0, drained.stdout[-2000:]
        from cinestream.audit import run_audit
        from cinestream.settings import Settings

        before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        began = time.monotonic()
        report = run_audit(Settings(), start, start + HOUR)  # in this process: its memory
        seconds = time.monotonic() - began
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    last = report.lines()[-1]
    print(
        json.dumps(
            {
                "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "ratings": args.count,
                "audit_seconds": round(seconds, 1),
                "records_per_second": round(args.count / seconds),
                "peak_rss_mib": round(peak_kib / 1024),
                "rss_mib_before_the_audit": round(before_kib / 1024),
                "ok": report.ok,
                "result": last,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
