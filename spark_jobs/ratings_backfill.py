"""Spark batch job: recompute the windows of [start, end) from Kafka (run by `cinestream backfill`).

spark-submit ... spark_jobs/ratings_backfill.py --start 2025-11-10T18:00:00Z --end ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from cinestream.errors import CinestreamError
from cinestream.settings import Settings
from cinestream.stream.submit import configure_job_logging, job_session
from cinestream.timeparse import parse_instant, parse_interval_s


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True, type=parse_instant)
    parser.add_argument("--end", required=True, type=parse_instant)
    parser.add_argument(
        "--lookback",
        default="1h",
        help="read from records timestamped this long before --start, or 'all'",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    configure_job_logging()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        lookback = None if args.lookback == "all" else int(parse_interval_s(args.lookback) * 1000)
        settings = Settings()
        from cinestream.stream.backfill import run_backfill

        spark = job_session("ratings_backfill", settings)
        result = run_backfill(spark, settings, args.start, args.end, lookback)
        print(json.dumps(result.__dict__))  # noqa: T201 - machine-readable result on stdout
        return 0
    except (CinestreamError, ValueError) as exc:
        logging.getLogger("cinestream.backfill").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return getattr(exc, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
