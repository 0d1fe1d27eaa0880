"""The Flink SQL peer: what cinestream computes per 1-minute window, as one cold Flink batch job.

    .venv/bin/python bench/bench_peer_flink.py --bootstrap 127.0.0.1:29792 --topic T
                                               [--expect N] [--parallelism 2] [--work DIR]

Reads the topic from its earliest to its latest offsets (a bounded Kafka source) and computes per
1-minute tumbling event-time window of the valid ratings (the SPEC's validity rules): the count,
the average, the half-star histogram and from it the exact nearest-rank p50/p95, and the exact
top-10 movies (Window Top-N: ROW_NUMBER over the per-movie counts, most first, ties by the smaller
id). Results go to blackhole sinks; one small extra sink receives the totals over all windows
(windows, ratings, histogram rows, top rows) so the run can be checked: with ``--expect N`` the
peer fails unless the windows count exactly N ratings (and the histogram too).

It runs as one whole cold process in a virtual environment of its own: the first use creates
``.state-bench-flink/venv`` (apache-flink FLINK_VERSION from PyPI) and resolves the Kafka SQL
connector (``bench/flink/pom.xml``, from Maven Central) into ``.state-bench-flink/jars``; both are
kept. Prints one JSON line: the job's wall time (Python start, the Flink JVM, the job) and the
totals. Java 17 is fine (JAVA_HOME is set from ``java`` on PATH when unset).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peer_args import OneLineParser, host_port, positive_int

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / ".state-bench-flink"
VENV = HOME / "venv"
JARS = HOME / "jars"
POM = REPO / "bench" / "flink" / "pom.xml"
# PyFlink 2.2.x: the Flink the Kafka SQL connector 5.0.0-2.2 (bench/flink/pom.xml) is built for.
FLINK_VERSION = "2.2.1"
# The SPEC's event-time range [2000-01-01, 2100-01-01) in epoch milliseconds.
MIN_TIMESTAMP_MS = 946_684_800_000
MAX_TIMESTAMP_MS = 4_102_444_800_000
TOP_N = 10


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stdout + result.stderr).strip().splitlines()[-8:]
        sys.exit(f"{what} failed: {' | '.join(tail)}")


def ensure_flink() -> tuple[Path, Path]:
    """The Flink venv's Python and the Kafka SQL connector jar, installed on first use."""
    marker = VENV / f".apache-flink-{FLINK_VERSION}"
    python = VENV / "bin" / "python"
    if not marker.exists():
        print(f"installing apache-flink=={FLINK_VERSION} into {VENV} ...", file=sys.stderr)
        shutil.rmtree(VENV, ignore_errors=True)
        HOME.mkdir(parents=True, exist_ok=True)
        # Python 3.11 (PyFlink 2.2 has wheels for 3.9-3.12): this interpreter's version.
        _run([sys.executable, "-m", "venv", str(VENV)], "creating the Flink venv")
        _run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], "pip upgrade")
        _run(
            [str(python), "-m", "pip", "install", "-q", f"apache-flink=={FLINK_VERSION}"],
            f"pip install apache-flink=={FLINK_VERSION}",
        )
        marker.touch()
    jar_marker = JARS / ".complete"
    if not jar_marker.exists():
        if shutil.which("mvn") is None:
            sys.exit("Maven (mvn) is needed for the Flink Kafka connector: apt-get install maven")
        print(f"resolving the Flink Kafka SQL connector into {JARS} ...", file=sys.stderr)
        shutil.rmtree(JARS, ignore_errors=True)
        JARS.mkdir(parents=True)
        _run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={JARS}",
            ],
            f"mvn -f {POM}",
        )
        jar_marker.touch()
    jars = sorted(JARS.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        sys.exit(f"no flink-sql-connector-kafka jar in {JARS}: remove {jar_marker} and rerun")
    return python, jars[0]


def java_home() -> str:
    """JAVA_HOME as set, else the JDK of ``java`` on PATH (PyFlink starts its JVM from it)."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        sys.exit("java is not on PATH and JAVA_HOME is unset: install a JDK 17")
    return str(Path(java).resolve().parents[1])


def statements(bootstrap: str, topic: str, totals_dir: Path) -> tuple[list[str], list[str]]:
    """The DDL (tables and views) and the INSERTs of the job, run as one statement set (the
    planner reads the topic once and shares the per-window histogram between its consumers)."""
    ddl = [
        f"""
        CREATE TABLE ratings (
            user_id BIGINT,
            movie_id BIGINT,
            rating DOUBLE,
            `timestamp` BIGINT,
            event_time AS TO_TIMESTAMP_LTZ(`timestamp`, 3),
            WATERMARK FOR event_time AS event_time
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{topic}',
            'properties.bootstrap.servers' = '{bootstrap}',
            'properties.group.id' = 'bench-peer-flink',
            'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'latest-offset',
            'format' = 'json',
            'json.ignore-parse-errors' = 'true'
        )""",
        # The SPEC's valid ratings; an unparsable record has NULL fields and fails the filter.
        f"""
        CREATE TEMPORARY VIEW valid_ratings AS
        SELECT movie_id, CAST(rating * 2 AS INT) AS half_stars, event_time
        FROM ratings
        WHERE user_id >= 1 AND movie_id >= 1 AND rating >= 0.5 AND rating <= 5.0
          AND rating * 2 = FLOOR(rating * 2)
          AND `timestamp` >= {MIN_TIMESTAMP_MS} AND `timestamp` < {MAX_TIMESTAMP_MS}""",
        """
        CREATE TEMPORARY VIEW histogram AS
        SELECT window_start, window_end, half_stars, COUNT(*) AS cnt
        FROM TABLE(TUMBLE(TABLE valid_ratings, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
        GROUP BY window_start, window_end, half_stars""",
        # Nearest rank: the smallest half-star value whose cumulative count reaches p * count.
        """
        CREATE TEMPORARY VIEW cumulative AS
        SELECT window_start, window_end, half_stars, cnt,
            SUM(cnt) OVER (PARTITION BY window_start, window_end ORDER BY half_stars
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto,
            SUM(cnt) OVER (PARTITION BY window_start, window_end ORDER BY half_stars
                           ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
        FROM histogram""",
        """
        CREATE TEMPORARY VIEW window_metrics AS
        SELECT window_start, window_end, SUM(cnt) AS cnt,
            CAST(SUM(cnt * half_stars) AS DOUBLE) / (2 * SUM(cnt)) AS avg_rating,
            MIN(CASE WHEN 2 * upto >= total THEN half_stars END) / 2.0 AS p50_rating,
            MIN(CASE WHEN 100 * upto >= 95 * total THEN half_stars END) / 2.0 AS p95_rating
        FROM cumulative
        GROUP BY window_start, window_end""",
        f"""
        CREATE TEMPORARY VIEW top_movies AS
        SELECT window_start, window_end, movie_id, cnt, rn FROM (
            SELECT window_start, window_end, movie_id, cnt,
                ROW_NUMBER() OVER (PARTITION BY window_start, window_end
                                   ORDER BY cnt DESC, movie_id ASC) AS rn
            FROM (
                SELECT window_start, window_end, movie_id, COUNT(*) AS cnt
                FROM TABLE(TUMBLE(TABLE valid_ratings, DESCRIPTOR(event_time),
                                  INTERVAL '1' MINUTE))
                GROUP BY window_start, window_end, movie_id
            )
        ) WHERE rn <= {TOP_N}""",
        """
        CREATE TABLE metrics_sink (
            window_start TIMESTAMP(3), window_end TIMESTAMP(3), cnt BIGINT,
            avg_rating DOUBLE, p50_rating DECIMAL(12, 1), p95_rating DECIMAL(12, 1)
        ) WITH ('connector' = 'blackhole')""",
        """
        CREATE TABLE histogram_sink (
            window_start TIMESTAMP(3), window_end TIMESTAMP(3), half_stars INT, cnt BIGINT
        ) WITH ('connector' = 'blackhole')""",
        """
        CREATE TABLE top_movies_sink (
            window_start TIMESTAMP(3), window_end TIMESTAMP(3), movie_id BIGINT, cnt BIGINT,
            rn BIGINT
        ) WITH ('connector' = 'blackhole')""",
        f"""
        CREATE TABLE totals_sink (what STRING, rows_ BIGINT, total BIGINT)
        WITH ('connector' = 'filesystem', 'path' = 'file://{totals_dir}', 'format' = 'json')""",
    ]
    inserts = [
        "INSERT INTO metrics_sink SELECT * FROM window_metrics",
        "INSERT INTO histogram_sink SELECT * FROM histogram",
        "INSERT INTO top_movies_sink SELECT * FROM top_movies",
        """
        INSERT INTO totals_sink
        SELECT 'windows', COUNT(*), SUM(cnt) FROM window_metrics
        UNION ALL SELECT 'histogram', COUNT(*), SUM(cnt) FROM histogram
        UNION ALL SELECT 'top', COUNT(*), CAST(NULL AS BIGINT) FROM top_movies""",
    ]
    return ddl, inserts


def job(bootstrap: str, topic: str, jar: Path, parallelism: int, totals_dir: Path) -> dict:
    """Run the batch job in this process (the Flink venv's Python); the totals it wrote."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    config = env.get_config()
    config.set("pipeline.jars", jar.as_uri())
    config.set("parallelism.default", str(parallelism))
    config.set("table.local-time-zone", "UTC")
    ddl, inserts = statements(bootstrap, topic, totals_dir)
    for statement in ddl:
        env.execute_sql(statement)
    statement_set = env.create_statement_set()
    for insert in inserts:
        statement_set.add_insert_sql(insert)
    statement_set.execute().wait()
    totals: dict[str, dict[str, int]] = {}
    for part in sorted(p for p in totals_dir.rglob("*") if p.is_file()):
        if part.name.startswith("."):
            continue
        for line in part.read_text().splitlines():
            row = json.loads(line)
            totals[row["what"]] = {"rows": row["rows_"], "total": row["total"] or 0}
    return totals


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=host_port, required=True, help="Kafka host:port")
    parser.add_argument("--topic", required=True, help="the ratings topic (read whole)")
    parser.add_argument("--expect", type=int, default=None, help="ratings the windows must count")
    parser.add_argument("--parallelism", type=positive_int, default=2)
    parser.add_argument("--work", type=Path, default=HOME / "work", help="scratch directory")
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jar", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--totals", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.expect is not None and args.expect < 0:
        parser.error(f"--expect must be >= 0, got {args.expect}")

    if args.job:  # inside the Flink venv: the measured process
        totals = job(args.bootstrap, args.topic, args.jar, args.parallelism, args.totals)
        print(json.dumps(totals))
        return

    print(json.dumps(run(args.bootstrap, args.topic, args.work, args.expect, args.parallelism)))


def run(
    bootstrap: str, topic: str, work: Path, expect: int | None = None, parallelism: int = 2
) -> dict:
    """One cold run of the job in the Flink venv, timed (the venv and the jar are made first,
    not timed); its totals, checked against ``expect`` when given."""
    python, jar = ensure_flink()
    work.mkdir(parents=True, exist_ok=True)
    totals_dir = Path(tempfile.mkdtemp(prefix="flink-totals-", dir=work))
    log = work / f"flink_peer_{topic}.log"
    cmd = [
        str(python),
        str(Path(__file__).resolve()),
        "--job",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--parallelism",
        str(parallelism),
        "--jar",
        str(jar),
        "--totals",
        str(totals_dir),
    ]
    # Flink's own log (the JVM's) beside ours, not inside the venv where each run overwrote it.
    env = {
        **os.environ,
        "JAVA_HOME": java_home(),
        "FLINK_LOG_DIR": str(work / f"flink-log-{topic}"),
    }
    env.pop("PYTHONPATH", None)
    began = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=out, text=True)
    wall = time.monotonic() - began
    if proc.returncode:
        sys.exit(f"the Flink job failed (exit {proc.returncode}); see {log}:\n{_tail(log)}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"the Flink job printed no totals; see {log}")
    totals = json.loads(lines[-1])
    shutil.rmtree(totals_dir, ignore_errors=True)
    windows = totals.get("windows", {"rows": 0, "total": 0})
    histogram = totals.get("histogram", {"rows": 0, "total": 0})
    top = totals.get("top", {"rows": 0, "total": 0})
    result = {
        "peer": "flink-sql",
        "flink": FLINK_VERSION,
        "topic": topic,
        "wall_s": round(wall, 2),
        "windows": windows["rows"],
        "ratings_counted": windows["total"],
        "histogram_rows": histogram["rows"],
        "histogram_total": histogram["total"],
        "top_rows": top["rows"],
    }
    if expect is not None and not (
        windows["total"] == histogram["total"] == expect
        and windows["rows"] <= top["rows"] <= TOP_N * windows["rows"]
    ):
        sys.exit(
            f"the Flink peer miscounted: windows sum {windows['total']:,}, histogram sum "
            f"{histogram['total']:,}, produced {expect:,} ({json.dumps(result)})"
        )
    return result


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


if __name__ == "__main__":
    main()
