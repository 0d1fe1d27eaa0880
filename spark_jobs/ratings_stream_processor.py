"""Spark Structured Streaming job: ratings -> window metrics (run by `cinestream process`).

spark-submit ... spark_jobs/ratings_stream_processor.py --trigger available-now
spark-submit ... spark_jobs/ratings_stream_processor.py --trigger continuous --interval 10s
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cinestream.errors import CinestreamError
from cinestream.settings import Settings
from cinestream.stream.submit import configure_job_logging, job_session
from cinestream.timeparse import parse_interval_s


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trigger", choices=["available-now", "continuous"], default="available-now"
    )
    parser.add_argument("--interval", default=None, help="micro-batch interval, e.g. 10s")
    parser.add_argument("--max-duration", default=None, help="stop after this long, e.g. 30m")
    parser.add_argument(
        "--wait-for-lock",
        type=float,
        default=0.0,
        help="seconds to wait for another processor on the checkpoint",
    )
    parser.add_argument("--max-restarts", type=int, default=10)
    parser.add_argument(
        "--stop-file",
        type=Path,
        default=None,
        help="creating this file stops this processor alone, between batches",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    configure_job_logging()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings()
        max_duration = parse_interval_s(args.max_duration) if args.max_duration else None
        from cinestream.stream.processor import StreamProcessor

        spark = job_session("ratings_stream_processor", settings)
        processor = StreamProcessor(
            spark,
            settings,
            trigger=args.trigger,
            interval=args.interval,
            max_duration_s=max_duration,
            lock_wait_s=args.wait_for_lock,
            max_restarts=args.max_restarts,
            own_stop_file=args.stop_file,
        )
        return processor.run()
    except (CinestreamError, ValueError) as exc:
        logging.getLogger("cinestream.processor").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - the one line a caller reads
        return getattr(exc, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
