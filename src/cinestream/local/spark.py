"""The cluster profile's Spark: a standalone master and two one-core workers, started with
pyspark's own ``spark-class`` as plain processes on the loopback address.

Jobs reach it with ``--master spark://127.0.0.1:7077`` (CINESTREAM_SPARK_MASTER); the driver runs
in client mode where spark-submit runs, the executors on the workers. The master's web UI is on
the master port + 1, the workers' on + 2 and + 3.
"""

from __future__ import annotations

import logging
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cinestream.errors import CinestreamError
from cinestream.local.processes import ManagedProcess, wait_until
from cinestream.net import port_open
from cinestream.settings import Settings
from cinestream.stream.submit import LOG4J2, SPARK_AUTH_ENV, python_env, spark_auth_secret

log = logging.getLogger(__name__)

WORKERS = 2
WORKER_CORES = 1
WORKER_MEMORY = "2g"
# How long `down` lets a worker stop before SIGKILL (see LocalSpark.stop).
WORKER_STOP_S = 3


@dataclass(frozen=True)
class SparkDaemon:
    """The master or one worker: its process name, main class and web UI port."""

    name: str
    main: str
    ui_port: int


def master_address(settings: Settings) -> tuple[str, int]:
    """Host and port of ``spark://host:port``."""
    host, _, port = settings.spark_master.removeprefix("spark://").partition(":")
    return host, int(port or 7077)


def spark_class() -> str:
    """pyspark's ``spark-class`` in this venv."""
    return str(Path(sys.executable).parent / "spark-class")


def runs_with_secret(pid: int) -> bool | None:
    """Whether process ``pid`` was started with the spark.authenticate secret in its
    environment (None when that cannot be read)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return any(v.startswith(SPARK_AUTH_ENV.encode() + b"=") for v in environ.split(b"\0"))


class LocalSpark:
    """The standalone master and its workers, each a ManagedProcess under the state dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host, self.port = master_address(settings)
        self.master = SparkDaemon(
            "spark-master", "org.apache.spark.deploy.master.Master", self.port + 1
        )
        self.workers = [
            SparkDaemon(
                f"spark-worker-{i}", "org.apache.spark.deploy.worker.Worker", self.port + 1 + i
            )
            for i in range(1, WORKERS + 1)
        ]

    @property
    def daemons(self) -> list[SparkDaemon]:
        """Master first, then the workers."""
        return [self.master, *self.workers]

    @property
    def ui_url(self) -> str:
        """The master's web UI (applications, workers, executors)."""
        return f"http://{self.host}:{self.master.ui_port}"

    def process(self, daemon: SparkDaemon) -> ManagedProcess:
        """A daemon's background process."""
        return ManagedProcess(daemon.name, self.settings)

    def _env(self) -> dict[str, str]:
        # spark.authenticate: the master and workers take only jobs (and each other) that know
        # the generated secret. Daemons read no secret file; Spark's own variable for it keeps
        # it out of argv (a process's environment is readable by its owner only).
        return {
            **python_env(),
            SPARK_AUTH_ENV: spark_auth_secret(self.settings),
            # RPC and web UIs on the loopback address only (Spark binds its UIs to
            # SPARK_LOCAL_IP when set).
            "SPARK_LOCAL_IP": self.host,
            "SPARK_NO_DAEMONIZE": "1",
            # Daemon logs through the same log4j2 setup as the jobs (WARN and up), and the
            # stack's extra daemon JVM options (CINESTREAM_DAEMON_JVM_OPTS).
            "SPARK_DAEMON_JAVA_OPTS": shlex.join(
                [
                    f"-Dlog4j2.configurationFile={LOG4J2}",
                    "-Dspark.authenticate=true",
                    *self.settings.daemon_jvm_args,
                ]
            ),
            "SPARK_DAEMON_MEMORY": "512m",
        }

    def command(self, daemon: SparkDaemon) -> list[str]:
        """``spark-class`` of the master or a worker."""
        if daemon is self.master:
            return [
                spark_class(),
                daemon.main,
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--webui-port",
                str(daemon.ui_port),
            ]
        work_dir = self.settings.state_dir / "spark" / daemon.name
        work_dir.mkdir(parents=True, exist_ok=True)
        return [
            spark_class(),
            daemon.main,
            "--host",
            self.host,
            "--cores",
            str(WORKER_CORES),
            "--memory",
            WORKER_MEMORY,
            "--webui-port",
            str(daemon.ui_port),
            "--work-dir",
            str(work_dir),
            self.settings.spark_master,
        ]

    def start_daemon(self, daemon: SparkDaemon) -> None:
        """Start the master or one worker (no wait); one an older release started without
        ``spark.authenticate`` is restarted with it (jobs now authenticate)."""
        proc = self.process(daemon)
        pid = proc.pid()
        if pid is not None and runs_with_secret(pid) is False:
            log.warning(
                "restarting %s (pid %d): an older release started it without spark.authenticate",
                daemon.name,
                pid,
            )
            proc.stop(timeout_s=30)
        elif pid is not None:
            return
        if daemon is self.master and port_open(self.host, self.port):
            raise CinestreamError(
                f"port {self.port} (Spark master) is already taken by another process; stop it "
                "or set CINESTREAM_SPARK_MASTER to a free port"
            )
        pid = proc.start(self.command(daemon), env=self._env())
        log.info(
            "starting %s (pid %d), web UI on port %d, log %s",
            daemon.name,
            pid,
            daemon.ui_port,
            proc.log_file,
        )

    def state(self) -> dict[str, Any]:
        """The master's JSON status (workers, applications); empty when it does not answer."""
        try:
            return dict(httpx.get(f"{self.ui_url}/json/", timeout=3).json())
        except (httpx.HTTPError, ValueError):
            return {}

    def alive_workers(self) -> int:
        """Workers the master counts as ALIVE."""
        return int(self.state().get("aliveworkers", 0))

    def start(self) -> None:
        """Start the master, then the workers; wait until every worker has registered."""
        self.start_daemon(self.master)
        wait_until(
            lambda: port_open(self.host, self.port) and bool(self.state()),
            "Spark master",
            90,
            self.process(self.master).log_file,
        )
        for worker in self.workers:
            self.start_daemon(worker)
        self.wait_for_workers(len(self.workers))
        log.info(
            "Spark standalone master %s with %d workers of %d core(s), UI %s",
            self.settings.spark_master,
            len(self.workers),
            WORKER_CORES,
            self.ui_url,
        )

    def wait_for_workers(self, count: int, timeout_s: float = 90) -> None:
        """Wait until the master counts ``count`` ALIVE workers."""
        wait_until(
            lambda: self.alive_workers() >= count,
            f"{count} Spark workers",
            timeout_s,
            self.process(self.workers[-1]).log_file,
        )

    def kill(self, name: str) -> int:
        """``kill -9`` one daemon and its children (the fault tests); returns its pid."""
        daemon = next((d for d in self.daemons if d.name == name), None)
        if daemon is None:
            raise CinestreamError(
                f"no Spark daemon {name!r}; daemons: {[d.name for d in self.daemons]}"
            )
        return self.process(daemon).kill(group=True)

    def running(self) -> dict[str, bool]:
        """Per daemon, whether its process runs."""
        return {d.name: self.process(d).pid() is not None for d in self.daemons}

    def stop(self) -> bool:
        """Stop the workers (their executors with them), then the master.

        A worker holds no state (its applications' drivers are gone by now: `down` stops Airflow
        and every Spark job first) and lets a SIGTERM wait 30 s for its executors; both are
        stopped side by side and killed after WORKER_STOP_S. The master keeps no state either
        (no recovery mode) but stops at once."""
        with ThreadPoolExecutor(len(self.workers)) as pool:
            stopped = list(
                pool.map(lambda w: self.process(w).stop(timeout_s=WORKER_STOP_S), self.workers)
            )
        stopped.append(self.process(self.master).stop(timeout_s=30))
        return any(stopped)
