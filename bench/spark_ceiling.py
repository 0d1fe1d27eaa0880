"""The ceiling for the processor's drain rate: Spark's own batch pass over the same topic, with
the same parse and the same aggregation into window cells, counted (no hand-off to the driver, no
sink). Run twice in one JVM; the second (warm) pass is the ceiling. Started by bench_pipeline.py
through spark-submit; prints one JSON line."""

from __future__ import annotations

import json
import sys
import time

from cinestream.settings import Settings
from cinestream.stream.kafka_io import KAFKA_READ_OPTIONS, records_per_task
from cinestream.stream.submit import job_session
from cinestream.stream.transforms import parse_ratings, window_cells


def main() -> int:
    settings = Settings()
    spark = job_session("bench_spark_ceiling", settings)
    passes = []
    for _ in range(2):
        began = time.monotonic()
        raw = (
            spark.read.format("kafka")
            .options(**settings.spark_kafka_options)
            .options(**KAFKA_READ_OPTIONS)  # the processor's own read settings
            .option("subscribe", settings.ratings_topic)
            .option("startingOffsets", "earliest")
            .option("endingOffsets", "latest")
            .option("maxRecordsPerPartition", records_per_task(spark, settings))
            .load()
        )
        parsed = parse_ratings(raw)
        cells = window_cells(parsed, settings.windows, int(time.time() * 1000) + 300_000)
        cell_count = cells.count()
        records = parsed.where("error IS NULL").count() if not passes else passes[0]["records"]
        passes.append(
            {"records": records, "cells": cell_count, "seconds": time.monotonic() - began}
        )
    warm = passes[-1]
    print(  # noqa: T201
        json.dumps(
            {
                "ceiling_records": warm["records"],
                "ceiling_cells": warm["cells"],
                "ceiling_seconds": warm["seconds"],
                "cold_seconds": passes[0]["seconds"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
