"""The embedded local stack: a KRaft Kafka broker and a PostgreSQL server as plain processes.

Everything lives under ``CINESTREAM_STATE_DIR``: data, logs, pid files. Jars are resolved from
Maven Central with the poms in ``infra/`` into ``.venv/share/cinestream/jars``.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cinestream.errors import CinestreamError
from cinestream.settings import Settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
JARS_DIR = Path(sys.prefix) / "share" / "cinestream" / "jars"


# --------------------------------------------------------------------------------------------
# Jars
# --------------------------------------------------------------------------------------------
def jars(kind: str) -> list[Path]:
    """Resolve (once) and return the jars of ``kind`` (``kafka`` broker or ``spark`` connector)."""
    target = JARS_DIR / kind
    marker = target / ".complete"
    if not marker.exists():
        pom = INFRA_DIR / kind / "pom.xml"
        if not pom.exists():
            raise CinestreamError(f"{pom} is missing: run from a cinestream checkout")
        if shutil.which("mvn") is None:
            raise CinestreamError(
                "Maven (mvn) is needed to resolve the jars: apt-get install maven"
            )
        log.info("resolving %s jars from Maven Central into %s", kind, target)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={target}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise CinestreamError(f"mvn could not resolve {pom}: {' | '.join(tail)}")
        marker.touch()
    return sorted(target.glob("*.jar"))


# --------------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------------
def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ManagedProcess:
    """A background process with a pid file and a log file under the state dir."""

    name: str
    settings: Settings

    @property
    def pid_file(self) -> Path:
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def start(
        self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout_s: float = 30) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _pid_alive(pid):
            log.warning("%s (pid %d) did not stop in %.0fs; killing it", self.name, pid, timeout_s)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.5)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait(check, what: str, timeout_s: float, log_file: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tail = ""
            if log_file.exists():
                tail = " | ".join(log_file.read_text(errors="replace").strip().splitlines()[-3:])
            raise CinestreamError(
                f"{what} did not come up in {timeout_s:.0f}s; see {log_file}: {tail[-400:]}"
            )
        time.sleep(0.3)


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------
def _kafka_host_port(settings: Settings) -> tuple[str, int]:
    first = settings.kafka_bootstrap.split(",")[0]
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


class LocalKafka:
    """A single-node KRaft broker+controller (``kafka.Kafka``) with its logs under the state dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.proc = ManagedProcess("kafka", settings)
        self.host, self.port = _kafka_host_port(settings)

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        controller = self.port + 1
        data = self.home / "data"
        self.config_file.write_text(
            "\n".join(
                [
                    "# Generated by cinestream: single-node KRaft broker for the local stack.",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{self.host}:{controller}",
                    f"listeners=PLAINTEXT://{self.host}:{self.port},"
                    f"CONTROLLER://{self.host}:{controller}",
                    f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    # Topics are created explicitly with their partitions and configs.
                    "auto.create.topics.enable=false",
                    "delete.topic.enable=true",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=168",
                    "log.cleaner.backoff.ms=5000",
                    # Historical ratings keep their event time as record timestamp.
                    "log.message.timestamp.before.max.ms=9223372036854775807",
                    "",
                ]
            )
        )
        (self.home / "log4j2.properties").write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.out.type = Console",
                    "appender.out.name = OUT",
                    "appender.out.layout.type = PatternLayout",
                    "appender.out.layout.pattern = [%d{ISO8601}] %-5p %c{1}: %m%n",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.out.ref = OUT",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = WARN",
                    "logger.state.name = state.change.logger",
                    "logger.state.level = WARN",
                    "logger.apache.name = org.apache.kafka",
                    "logger.apache.level = WARN",
                    "logger.server.name = kafka.server.KafkaRaftServer",
                    "logger.server.level = INFO",
                    "",
                ]
            )
        )

    def _java(self, main: str, *args: str) -> list[str]:
        classpath = ":".join(str(j) for j in jars("kafka"))
        return [
            "java",
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def _format(self) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        log.info("formatting Kafka storage in %s (cluster id %s)", self.home / "data", cluster_id)
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_file)
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise CinestreamError(f"kafka storage format failed: {result.stdout}{result.stderr}")

    def running(self) -> bool:
        return self.proc.pid() is not None

    def start(self) -> None:
        if self.running():
            return
        if port_open(self.host, self.port):
            raise CinestreamError(
                f"port {self.port} is already taken by another process; stop it or set "
                "CINESTREAM_KAFKA_BOOTSTRAP to a free port"
            )
        self._write_config()
        self._format()
        pid = self.proc.start(self._java("kafka.Kafka", str(self.config_file)))
        log.info(
            "starting Kafka (pid %d) on %s:%d, logs %s",
            pid,
            self.host,
            self.port,
            self.proc.log_file,
        )
        from cinestream.kafka_admin import broker_ready

        _wait(
            lambda: self.proc.pid() is not None and broker_ready(self.settings),
            "Kafka",
            90,
            self.proc.log_file,
        )

    def stop(self) -> bool:
        return self.proc.stop(timeout_s=60)


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    raise CinestreamError(
        f"PostgreSQL's {name} was not found: install the server (apt-get install postgresql) "
        "or set CINESTREAM_DATABASE_URL to a running database"
    )


class LocalPostgres:
    """A PostgreSQL cluster in the state dir, listening on 127.0.0.1 only."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "postgres"
        self.data = self.home / "data"
        self.socket_dir = self.home / "socket"
        self.proc = ManagedProcess("postgres", settings)

    def _as_owner(self, cmd: list[str]) -> list[str]:
        # initdb and postgres refuse to run as root; the Debian package provides the user.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (ValueError, IndexError):
            return False
        return _pid_alive(pid)

    def _init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        from cinestream.settings import local_db_password

        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.home, self.socket_dir):
            self._chown(path)
        pwfile = self.home / ".pwfile"
        pwfile.write_text(local_db_password(self.settings.state_dir))
        self._chown(pwfile)
        log.info("initialising PostgreSQL in %s", self.data)
        result = subprocess.run(
            self._as_owner(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "cinestream",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            capture_output=True,
            text=True,
        )
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise CinestreamError(f"initdb failed: {result.stderr.strip()[-400:]}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# cinestream local stack\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.settings.pg_port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\n"
                "shared_buffers = 256MB\n"
                "fsync = on\n"
                "logging_collector = off\n"
            )

    def start(self) -> None:
        if not self.settings.uses_local_database:
            return
        if self.running():
            return
        self._init()
        if port_open("127.0.0.1", self.settings.pg_port):
            raise CinestreamError(
                f"port {self.settings.pg_port} is already taken; stop that server or set "
                "CINESTREAM_PG_PORT (or CINESTREAM_DATABASE_URL to use it)"
            )
        log_file = self.settings.log_dir / "postgres.log"
        log_file.touch()
        self._chown(log_file)
        result = subprocess.run(
            self._as_owner(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(log_file),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise CinestreamError(
                f"PostgreSQL did not start: {result.stdout.strip()[-300:]}; see {log_file}"
            )
        self._create_database()
        log.info("PostgreSQL is up at %s", self.settings.redacted_database_url())

    def _create_database(self) -> None:
        import psycopg

        url = self.settings.resolved_database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'cinestream'"
            ).fetchone()
            if not exists:
                conn.execute("CREATE DATABASE cinestream")
        from psycopg import sql

        from cinestream.settings import local_db_password

        reader_password = local_db_password(self.settings.state_dir, role="cinestream_reader")
        with psycopg.connect(self.settings.resolved_database_url, autocommit=True) as conn:
            # The API connects as a read-only role; ensure_schema grants it SELECT.
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = 'cinestream_reader'"
            ).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE cinestream_reader LOGIN PASSWORD {}").format(
                    sql.Literal(reader_password)
                )
            )
            conn.execute("GRANT CONNECT ON DATABASE cinestream TO cinestream_reader")
            conn.execute("GRANT USAGE ON SCHEMA public TO cinestream_reader")
            # Airflow's metadata lives in its own database, owned by its own role.
            airflow_password = local_db_password(self.settings.state_dir, role="airflow")
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'airflow'").fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE airflow LOGIN PASSWORD {}").format(
                    sql.Literal(airflow_password)
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'").fetchone():
                conn.execute("CREATE DATABASE airflow OWNER airflow")

    def stop(self, mode: str = "fast") -> bool:
        if not self.running():
            return False
        subprocess.run(
            self._as_owner([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            text=True,
        )
        return True
