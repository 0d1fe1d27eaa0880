"""The local stack's PostgreSQL: a cluster in the state dir, listening on 127.0.0.1 only."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

from cinestream.errors import CinestreamError
from cinestream.local.modes import let_group_through
from cinestream.local.processes import ManagedProcess, pid_alive
from cinestream.local.secrets import local_db_password, private_dir
from cinestream.net import port_open
from cinestream.settings import Settings
from cinestream.store.schema import AIRFLOW_ROLE, READER_ROLE, SUPERUSER, ensure_local_databases

log = logging.getLogger(__name__)


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


def server_gid(settings: Settings) -> int | None:
    """The group of the ``postgres`` user when the local server runs as it (the stack started by
    root); None when it runs as this user or is not local."""
    if os.geteuid() != 0 or not settings.uses_local_database:
        return None
    try:
        return pwd.getpwnam("postgres").pw_gid
    except KeyError:  # no server package: _pg_bin says what to install
        return None


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
        """True while the server of this data directory runs."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (ValueError, IndexError):
            return False
        return pid_alive(pid)

    def let_server_through(self) -> None:
        """The state dir and the log dir exist (created private); a server running as
        ``postgres`` may pass through both, to its data directory and to its log file."""
        gid = server_gid(self.settings)
        for folder in (self.settings.state_dir, self.settings.log_dir):
            private_dir(folder)
            if gid is not None:
                let_group_through(folder, gid)

    def _init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.home, self.socket_dir):
            self._chown(path)
        pwfile = self.home / ".pwfile"
        # Private from the first byte: the superuser password is never world-readable.
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(local_db_password(self.settings.state_dir, role=SUPERUSER))
        self._chown(pwfile)
        log.info("initialising PostgreSQL in %s", self.data)
        result = subprocess.run(
            self._as_owner(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    SUPERUSER,
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
        """Initialise (once), start and prepare the databases and roles; idempotent."""
        if not self.settings.uses_local_database:
            return
        self.let_server_through()
        if self.running():
            return
        self._init()
        if port_open("127.0.0.1", self.settings.pg_port):
            raise CinestreamError(
                f"port {self.settings.pg_port} is already taken; stop that server or set "
                "CINESTREAM_PG_PORT (or CINESTREAM_DATABASE_URL to use it)"
            )
        log_file = self.settings.log_dir / "postgres.log"
        log_file.touch(mode=0o600)
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

    def _admin_url(self) -> str:
        """The superuser's URL; a state dir from before the separate superuser keeps using the
        application role, which initdb made the superuser there."""
        state = self.settings.state_dir
        if (state / "secrets" / f"postgres_{SUPERUSER}_password").exists():
            password = quote(local_db_password(state, role=SUPERUSER))
            return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.settings.pg_port}/postgres"
        log.warning(
            "this PostgreSQL was initialised by an older cinestream: the application role is "
            "its superuser; `make down && rm -rf %s` recreates it least-privileged",
            self.home,
        )
        return self.settings.resolved_database_url.rsplit("/", 1)[0] + "/postgres"

    def _create_database(self) -> None:
        state = self.settings.state_dir
        ensure_local_databases(
            self._admin_url(),
            app_password=local_db_password(state),
            reader_password=local_db_password(state, role=READER_ROLE),
            airflow_password=local_db_password(state, role=AIRFLOW_ROLE),
        )

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server (``fast`` or ``immediate``); False if it was not running. A server
        that ``pg_ctl`` could not stop is an error naming the data directory and why (it must not
        be reported stopped while it runs on)."""
        if not self.running():
            return False
        result = subprocess.run(
            self._as_owner([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 and self.running():
            why = " ".join((result.stderr or result.stdout).split())[-300:]
            raise CinestreamError(
                f"PostgreSQL of {self.data} did not stop (pg_ctl exit {result.returncode}: "
                f"{why}); see {self.settings.log_dir / 'postgres.log'}"
            )
        return True
