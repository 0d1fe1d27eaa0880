"""A class-data archive (AppCDS) for the Spark drivers the tests start.

Most Spark drivers of `make test` are cold ``spark-submit`` processes that live a few seconds over
small data (about a hundred per run), and a cold driver spends most of its CPU loading and
verifying the same ~20,000 classes of Spark, Scala, Hadoop and the Kafka connector. The JVM can
map them from an archive instead: an available-now drain of 2,000 rows took 31.3-31.9 s of user
CPU without one and 19.5-19.9 s with one (2026-12-02, this machine, C1 only, two rounds each).

``python tests/spark_cds.py PATH`` makes the archive (Makefile's ``$(SPARK_CDS)``, before the
tests run): it runs :data:`WARMUP` (a job doing what the processor does: a Kafka source resolved,
a windowed aggregation over a file stream with a watermark, foreachBatch into Arrow, a Python
round trip) under ``-XX:ArchiveClassesAtExit``, checks that a driver maps the result with
``-Xshare:on -XX:+VerifySharedSpaces`` (its CRC over the whole file), and only then moves it into
place (a truncated archive crashes the JVM that maps it with SIGBUS, measured here; the check
fails on one, rc 134). tests/shared_stack.py adds ``-XX:SharedArchiveFile`` to the
tests' ``SPARK_SUBMIT_OPTS`` when the file is there. A JDK or jars that no longer match the
archive make the JVM print one ``[warning][cds,dynamic]`` line (on stdout) and run without it,
as slow as before. The product's jobs do not use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The archive the tests map, next to the jars `make install` resolves.
ARCHIVE = Path(sys.prefix) / "share" / "cinestream" / "spark-cds.jsa"
C1_ONLY = "-XX:TieredStopAtLevel=1"

WARMUP = """
import json, os, sys, tempfile
from pyspark.sql import SparkSession, functions as F

spark = (
    SparkSession.builder.appName("cinestream-cds-warmup")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.ui.enabled", "false")
    .getOrCreate()
)
work = tempfile.mkdtemp(prefix="cinestream-cds-")
source = os.path.join(work, "in")
os.makedirs(source)
with open(os.path.join(source, "ratings.json"), "w") as out:
    for i in range(2000):
        row = {"movie_id": i % 50, "rating": (i % 10) / 2 + 0.5,
               "ts": "2026-01-01T00:%02d:00Z" % (i % 60)}
        out.write(json.dumps(row) + "\\n")
schema = "movie_id INT, rating DOUBLE, ts TIMESTAMP"
kafka = (
    spark.read.format("kafka").option("kafka.bootstrap.servers", "127.0.0.1:9")
    .option("subscribe", "warmup").load()
)
kafka.selectExpr("CAST(value AS STRING) AS v").select(F.from_json("v", schema).alias("r")).schema


def batch(frame, epoch):
    frame.toArrow()
    frame.collect()


query = (
    spark.readStream.schema(schema).json(source).withWatermark("ts", "1 minute")
    .groupBy(F.window("ts", "1 minute"), "movie_id")
    .agg(F.count("*"), F.avg("rating"), F.sum("rating"))
    .writeStream.outputMode("update").foreachBatch(batch).trigger(availableNow=True)
    .option("checkpointLocation", os.path.join(work, "checkpoint")).start()
)
query.awaitTermination()
spark.createDataFrame([(1, 2.0)], "a INT, b DOUBLE").groupBy("a").agg(F.max("b")).toPandas()
spark.stop()
"""


def submit_env(java_opts: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_SUBMIT_OPTS": f"{C1_ONLY} {java_opts}",
    }


def build(target: Path) -> None:
    from cinestream.stream.submit import connector_jars

    spark_submit = str(Path(sys.executable).parent / "spark-submit")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    started = time.monotonic()
    print(f"spark-cds: warming a Spark driver up to archive its classes into {target} (~1 min)")
    try:  # the partial file goes, whatever stops the build (a timeout, Ctrl-C)
        with tempfile.TemporaryDirectory(prefix="cinestream-cds-") as work:
            job = Path(work) / "warmup.py"
            job.write_text(WARMUP)
            run = subprocess.run(
                [spark_submit, "--master", "local[2]", "--jars", connector_jars(), str(job)],
                # The archive's CRC is written, and checked below over the whole file.
                env=submit_env(f"-XX:+VerifySharedSpaces -XX:ArchiveClassesAtExit={partial}"),
                capture_output=True,
                text=True,
                timeout=900,
            )
        if run.returncode != 0 or not partial.exists():
            tail = "\n".join(run.stderr.splitlines()[-15:])
            raise SystemExit(f"spark-cds: the warm-up driver failed ({run.returncode}):\n{tail}")
        check = subprocess.run(
            [spark_submit, "--version"],
            env=submit_env(f"-Xshare:on -XX:+VerifySharedSpaces -XX:SharedArchiveFile={partial}"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check.returncode != 0:
            tail = "\n".join((check.stdout + check.stderr).splitlines()[-5:])
            raise SystemExit(f"spark-cds: a driver cannot map the new archive:\n{tail}")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    size = target.stat().st_size / 2**20
    print(f"spark-cds: {target} ({size:.0f} MiB) in {time.monotonic() - started:.0f} s")


def java_opts() -> str:
    """C1 only, and the archive when it was made: the JVM options of the tests' drivers."""
    return f"{C1_ONLY} -XX:SharedArchiveFile={ARCHIVE}" if ARCHIVE.is_file() else C1_ONLY


def submit_opts() -> str:
    """The tests' ``SPARK_SUBMIT_OPTS``: :func:`java_opts` for the driver and, through the
    driver's ``spark.*`` system properties (which SparkConf reads), for the executors the
    cluster profile's workers start for it (the product's ``spark.executor.extraJavaOptions``
    come after these)."""
    return f"{java_opts()} '-Dspark.executor.defaultJavaOptions={java_opts()}'"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/spark_cds.py ARCHIVE")
    build(Path(sys.argv[1]).resolve())
