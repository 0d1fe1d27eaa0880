"""The ceiling for the processor's drain rate: the same streaming read of the ratings topic and
the same parse, with no aggregation and no sink (run by bench_pipeline.py through spark-submit)."""

from __future__ import annotations

import json
import sys
import time

from cinestream.settings import Settings
from cinestream.stream.submit import job_session
from cinestream.stream.transforms import parse_ratings


def main() -> int:
    settings = Settings()
    spark = job_session("bench_spark_ceiling", settings)
    checkpoint = sys.argv[1]
    records = 0

    def parse_only(df, _batch_id):  # type: ignore[no-untyped-def]
        nonlocal records
        parsed = parse_ratings(df)
        records += parsed.where("error IS NULL").count()

    began = time.monotonic()
    query = (
        spark.readStream.format("kafka")
        .options(**settings.spark_kafka_options)
        .option("subscribe", settings.ratings_topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
        .load()
        .writeStream.option("checkpointLocation", checkpoint)
        .foreachBatch(parse_only)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    elapsed = time.monotonic() - began
    print(json.dumps({"ceiling_records": records, "ceiling_seconds": elapsed}))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
