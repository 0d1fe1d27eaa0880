"""The tests' warm Spark driver: one long-lived driver per test worker that runs the foreground
jobs (``cinestream process --trigger available-now``, ``cinestream backfill``) of the tests.

Why: a cold ``spark-submit`` of a small test job costs 13-25 CPU-seconds (JVM start, Spark's
classes, Kafka's source, code generation) for a second of work, and the service tests start
about a hundred of them on a two-core machine. A job run in a driver that is already up costs a
few.

What stays real: the test runs ``cinestream process``/``backfill`` as a user does (the CLI, its
pre-flight checks and exit codes); only the spark-submit it launches is this module's client
(``CINESTREAM_SPARK_SUBMIT``, given by ``Pipeline.cli``), which hands the job script and its
arguments to the warm driver. The driver runs the script as spark-submit would (``__main__``,
``sys.argv``, the caller's ``CINESTREAM_*`` environment) in a SparkSession made with exactly the
submit options the CLI would have used, and streams back its output (the job's own lines, then
Spark's log lines of that run) and its exit code.

The client falls back to the real spark-submit, unchanged, whenever the warm driver cannot take
the job as it was asked: other submit options (a smaller ``--driver-memory``, other confs), a
driver not up, or one busy with another job (two processors at once). Jobs that tests kill run
from ``Pipeline.start_cli`` and always cold: killing the CLI must kill its driver.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).resolve()
# Only these parts of the caller's environment are the job's (Settings reads CINESTREAM_*; the
# Airflow context names the lock holder); the rest is the driver's own.
JOB_ENV_PREFIXES = ("CINESTREAM_", "AIRFLOW_CTX_")
JOB_SCRIPTS = ("ratings_stream_processor.py", "ratings_backfill.py")
# The environment that shapes the driver itself (its JVM and its options, its Python, Hadoop's
# configuration, the locale and time zone): a job asking for other values (a test's
# -Dspark.driver.maxResultSize=1m) runs cold.
DRIVER_ENV = (
    "SPARK_",
    "PYSPARK_",
    "PYTHONPATH",
    "HADOOP_",
    "JAVA_HOME",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_",
    "TZ",
    "LANG",
    "LC_",
)
# How long a client waits for the driver to say whether it takes the job before running it cold.
TAKE_TIMEOUT_S = 60


def driver_env(env: Mapping[str, str]) -> dict[str, str]:
    """What of ``env`` shapes a driver started with it, and the ``java`` its PATH finds."""
    shaping = {k: v for k, v in env.items() if k.startswith(DRIVER_ENV)}
    shaping["java on PATH"] = shutil.which("java", path=env.get("PATH")) or ""
    return shaping


def runs_warm(real: Mapping[str, Any], argv: list[str], env: Mapping[str, str]) -> bool:
    """Whether spark-submit's ``argv`` with ``env`` asks for the warm driver described by
    ``real`` (its options.json): one of our jobs, the same submit options and driver env."""
    app = next((i for i, a in enumerate(argv) if a.endswith(".py")), None)
    return (
        app is not None
        and Path(argv[app]).name in JOB_SCRIPTS
        and submit_options(argv[:app]) == real["options"]
        and driver_env(env) == real["env"]
    )


def cold_spark_submit(client: Path, real: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """The spark-submit the caller would have run without the warm driver: pyspark's when the CLI
    named the client (``CINESTREAM_SPARK_SUBMIT``), else the next ``spark-submit`` on PATH after
    the client's own directory (Airflow's SparkSubmitHook looks it up there); None: there is none,
    as a caller without the warm driver would have found."""
    if env.get("CINESTREAM_SPARK_SUBMIT"):
        return str(real["spark_submit"])
    rest = [d for d in env.get("PATH", "").split(os.pathsep) if Path(d or ".") != client.parent]
    return shutil.which("spark-submit", path=os.pathsep.join(rest))


# --- the client: what CINESTREAM_SPARK_SUBMIT runs ------------------------------------------------
def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def client_main(state: Path, argv: list[str]) -> int:
    """Run spark-submit's ``argv`` in the warm driver whose files are in ``state``; exec the real
    spark-submit when it cannot."""
    real = json.loads((state / "options.json").read_text())
    cold = cold_spark_submit(Path(sys.argv[0]).resolve(), real, os.environ)
    if cold is None:
        print("spark-submit: not found on PATH", file=sys.stderr)  # noqa: T201
        return 127
    if runs_warm(real, argv, os.environ):
        app = next(i for i, a in enumerate(argv) if a.endswith(".py"))
        rc = _run_warm(state / "driver.sock", argv[app], argv[app + 1 :])
        if rc is not None:
            return rc
    os.execv(cold, [cold, *argv])
    return 127  # not reached


def submit_options(options: list[str]) -> dict[str, Any]:
    """spark-submit's options as what they configure, so that the CLI's command and Airflow's
    SparkSubmitHook's (another order, ``--deploy-mode client``) compare equal when they ask for
    the same driver: ``--name`` is left out (a label), each ``--conf`` is one entry."""
    out: dict[str, Any] = {"conf": {}}
    pairs = iter(options)
    for option in pairs:
        value = next(pairs, None)
        if option == "--conf" and value is not None and "=" in value:
            key, _, conf = value.partition("=")
            out["conf"][key] = conf
        elif option == "--name" or (option, value) == ("--deploy-mode", "client"):
            continue
        else:
            out[option] = value
    return out


def _run_warm(sock_path: Path, app: str, args: list[str]) -> int | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(TAKE_TIMEOUT_S)
        conn.connect(str(sock_path))
        env = {k: v for k, v in os.environ.items() if k.startswith(JOB_ENV_PREFIXES)}
        _send(conn, {"app": app, "args": args, "env": env, "cwd": os.getcwd()})
        reader = conn.makefile("rb")
        first = reader.readline()
        taken = bool(first) and json.loads(first).get("taken")
    except (OSError, ValueError):  # not there, wedged (a timeout), or an answer cut short
        taken = False
    if not taken:
        conn.close()
        return None
    # Taken: from here on the job runs warm, and closing the socket (this process killed) stops
    # it. SIGTERM/SIGINT end this process as they would end spark-submit.
    conn.settimeout(None)
    line = reader.readline()
    while line:
        message = json.loads(line)
        if "out" in message:
            sys.stdout.write(message["out"])
            sys.stdout.flush()
        if "rc" in message:
            return int(message["rc"])
        line = reader.readline()
    sys.stdout.write("warm driver: the driver went away before the job ended\n")
    return 1


# --- the driver --------------------------------------------------------------------------------
class _Output:
    """A text stream that sends what is written to the current caller (thread-safe: the job's
    batches log from py4j's callback threads)."""

    def __init__(self) -> None:
        self.conn: socket.socket | None = None
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            if self.conn is not None and text:
                try:
                    _send(self.conn, {"out": text})
                except OSError:
                    self.conn = None
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def serve(sock_path: Path, log_path: Path) -> None:
    import logging
    import runpy
    import traceback

    from cinestream.settings import Settings
    from cinestream.stream.submit import job_session

    output = _Output()
    handler = logging.StreamHandler(output)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("py4j", "py4j.clientserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    spark = job_session("warm_driver", Settings())
    busy = threading.Lock()
    jobs: list[tuple[socket.socket, dict[str, Any]]] = []
    ready = threading.Condition()

    def take(conn: socket.socket) -> None:
        """Take the caller's job, or answer busy; a caller gone or cut short is dropped."""
        try:
            conn.settimeout(TAKE_TIMEOUT_S)
            request = json.loads(conn.makefile("rb").readline() or b"{}")
            conn.settimeout(None)
            if not request or not busy.acquire(blocking=False):
                _send(conn, {"busy": True})
                conn.close()
                return
        except (OSError, ValueError):
            conn.close()
            return
        try:
            _send(conn, {"taken": True})
        except OSError:
            conn.close()
            busy.release()
            return
        with ready:
            jobs.append((conn, request))
            ready.notify()

    def accept(listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            take(conn)

    sock_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    listener.listen(8)
    threading.Thread(target=accept, args=(listener,), daemon=True).start()
    print(f"warm driver ready on {sock_path}", flush=True)  # noqa: T201

    while True:
        with ready:
            while not jobs:
                ready.wait()
            conn, request = jobs.pop()
        try:
            log_from = log_path.stat().st_size
            began = time.monotonic()
            rc = _run_job(spark, output, conn, request, runpy, traceback)
            print(  # noqa: T201 - the driver's own log: which jobs it ran
                f"warm driver: {Path(request['app']).name} {' '.join(request['args'])}: "
                f"exit {rc} in {time.monotonic() - began:.1f}s",
                flush=True,
            )
            time.sleep(0.2)  # Spark's last log lines of the run reach the log file
            with open(log_path, "rb") as log:
                log.seek(log_from)
                spark_lines = log.read().decode(errors="replace")
            # Not Spark's words to a job of its own: the session this one job reuses.
            spark_lines = "".join(
                line
                for line in spark_lines.splitlines(keepends=True)
                if "Using an existing Spark session" not in line
                and not line.startswith("warm driver: ")
            )
            if spark_lines:
                output.conn = conn
                output.write(spark_lines)
            _send(conn, {"rc": rc})
        except OSError:
            pass
        finally:
            output.conn = None
            conn.close()
            busy.release()


def _run_job(
    spark: Any, output: _Output, conn: socket.socket, request: dict[str, Any], runpy: Any, tb: Any
) -> int:
    saved_env = dict(os.environ)
    saved_argv, saved_path, saved_cwd = sys.argv, list(sys.path), os.getcwd()
    saved_streams = sys.stdout, sys.stderr
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    # The job's queries are the ones it starts; the caller's death stops them, never the next
    # job's: the watcher acts under ``state`` and only while ``running`` is true.
    state = threading.Lock()
    running = [True]
    before = {q.id for q in spark.streams.active}

    def own_queries() -> list[Any]:
        return [q for q in spark.streams.active if q.id not in before]

    def watch_caller() -> None:
        # The caller killed (a test's timeout, a signal to the CLI): stop the job, as its own
        # driver would have been stopped (here between batches, not mid-batch).
        try:
            while conn.recv(1024):
                pass
        except OSError:
            pass
        with state:
            if not running[0]:
                return
            for query in own_queries():
                try:
                    query.stop()
                except Exception:  # noqa: S110 - best effort, the query may have ended
                    pass

    rc = 1
    try:
        for key in [k for k in os.environ if k.startswith(JOB_ENV_PREFIXES)]:
            del os.environ[key]
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        # As under spark-submit: the job's own directory first on sys.path (not this one's).
        sys.path[0] = str(Path(request["app"]).parent)
        sys.argv = [request["app"], *request["args"]]
        output.conn = conn
        sys.stdout = sys.stderr = output  # type: ignore[assignment]
        threading.Thread(target=watch_caller, daemon=True).start()
        runpy.run_path(request["app"], run_name="__main__")
        rc = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            rc = exc.code or 0
        else:
            print(exc.code)  # noqa: T201
            rc = 1
    except BaseException:
        tb.print_exc()
        rc = 1
    finally:
        with state:
            running[0] = False
        try:
            # A query the job left running is stopped, within a bound (a batch stuck in a
            # callback must not hang the worker's jobs for good).
            spark.conf.set("spark.sql.streaming.stopTimeout", "60s")
            for query in own_queries():
                query.stop()
            spark.streams.resetTerminated()
            spark.catalog.clearCache()
            spark.sql("RESET")
        except Exception:
            tb.print_exc()
            rc = rc or 1
        finally:
            sys.stdout, sys.stderr = saved_streams
            for sig, handler in saved_signals.items():
                signal.signal(sig, handler)
            os.environ.clear()
            os.environ.update(saved_env)
            sys.argv, sys.path[:] = saved_argv, saved_path
            os.chdir(saved_cwd)
    return rc


# --- the fixture's side ------------------------------------------------------------------------
class WarmDriver:
    """Start, wait for and stop the warm driver of one test stack (state dir ``state``)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> Path:
        return self.state / "spark-submit"

    def start(self, timeout: float = 300) -> None:
        from cinestream.settings import Settings
        from cinestream.stream.submit import spark_env, spark_submit_command, venv_spark_submit

        self.stop_leftover()
        self.state.mkdir(parents=True, exist_ok=True)
        sock, log = self.state / "driver.sock", self.state / "driver.log"
        sock.unlink(missing_ok=True)
        settings = Settings()
        env = spark_env()
        cmd = spark_submit_command(settings, str(SERVER), ["serve", str(sock), str(log)])
        app = cmd.index(str(SERVER))
        # What a job's spark-submit must be given to run here: the CLI's options for the same
        # settings, checked by the client on every call.
        (self.state / "options.json").write_text(
            json.dumps(
                {
                    "options": submit_options(cmd[1:app]),
                    "env": driver_env(env),
                    "spark_submit": str(venv_spark_submit()),
                }
            )
        )
        self.client.write_text(
            f"#!{sys.executable}\nimport sys\nfrom pathlib import Path\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            "from tests.warm_driver import client_main\n"
            f"sys.exit(client_main(Path({str(self.state)!r}), sys.argv[1:]))\n"
        )
        self.client.chmod(0o700)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        (self.state / "driver.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the warm driver did not start; see {log}")
            time.sleep(0.5)

    def stop_leftover(self) -> None:
        """Stop the warm driver a test run that died left behind (its process group)."""
        try:
            pid = int((self.state / "driver.pid").read_text())
            alive = "warm_driver.py" in Path(f"/proc/{pid}/cmdline").read_text()
        except (OSError, ValueError):
            return
        if alive:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.proc = None


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(Path(sys.argv[2]), Path(sys.argv[3]))
