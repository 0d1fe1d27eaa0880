"""Background processes of the local stack: pid files, log files, a graceful stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cinestream.errors import CinestreamError
from cinestream.local.secrets import private_dir
from cinestream.settings import Settings

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """True while a process with this pid runs (a zombie, exited but not yet reaped by a parent
    that is not us, does not: `down` would otherwise wait out its timeout for a daemon another
    process had restarted, as the fault tests do)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass
class ManagedProcess:
    """A background process with a pid file and a log file under the state dir."""

    name: str
    settings: Settings

    @property
    def pid_file(self) -> Path:
        """Where the process's pid is kept."""
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        """Where the process's output goes."""
        return self.settings.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid while the process runs, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(
        self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        """Start ``cmd`` in its own session with output to the log file; returns the pid.

        The log file is its owner's only (it can hold what a program prints, Airflow's generated
        admin password among it), and so is whatever the process creates (umask 077)."""
        private_dir(self.settings.run_dir)
        private_dir(self.settings.log_dir)
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
                umask=0o077,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout_s: float = 30) -> bool:
        """SIGTERM the process group, SIGKILL after ``timeout_s``; False if none ran."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if pid_alive(pid):
            log.warning("%s (pid %d) did not stop in %.0fs; killing it", self.name, pid, timeout_s)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.5)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self, group: bool = False) -> int:
        """``kill -9`` the process (with ``group``, its whole process group) and wait up to 10 s
        for it to go; returns its pid. For the fault tests: no graceful stop."""
        pid = self.pid()
        if pid is None:
            raise CinestreamError(f"{self.name} is not running")
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        return pid


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(check: Callable[[], bool], what: str, timeout_s: float, log_file: Path) -> None:
    """Wait for ``check()``; on time-out raise naming ``what`` and the log's last lines."""
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


def prune_logs(settings: Settings) -> int:
    """Delete log files of the local stack (its processes', Airflow's task logs) not written for
    longer than CINESTREAM_RETENTION; returns how many."""
    cutoff = time.time() - settings.retention_ms / 1000
    removed = 0
    for root in (settings.log_dir, settings.state_dir / "airflow" / "logs"):
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of the processes whose environment sets ``name`` to ``value`` (with AIRFLOW_HOME: the
    tasks a local Airflow started and the Spark jobs they submitted), this process and its
    parents excepted."""
    wanted = f"{name}={value}".encode()
    exempt = {os.getpid()}
    parent = os.getppid()
    while parent > 1 and parent not in exempt:
        exempt.add(parent)
        try:
            stat = Path(f"/proc/{parent}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exempt:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def kill_processes(pids: list[int], timeout_s: float = 30) -> int:
    """SIGTERM ``pids``, SIGKILL those left after ``timeout_s``; how many there were."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        for pid in pids:
            _reap(pid)
        time.sleep(0.2)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
    return len(pids)


def descendants(roots: list[int]) -> set[int]:
    """Every process below ``roots`` in the process tree (found from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def listeners(port: int, proc: Path = Path("/proc")) -> list[str]:
    """``pid N (name)`` of each process listening on TCP ``port`` (best effort: the sockets in
    ``/proc/net/tcp*`` and the processes whose descriptors hold them; those of other users stay
    unnamed)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                # local address "HEX_IP:HEX_PORT", state 0A = LISTEN, inode in column 10
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or not inodes:
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                name = (entry / "comm").read_text().strip()
                found.append(f"pid {entry.name} ({name})")
    return found


def ensure_port_free(port: int, what: str, setting: str) -> None:
    """Refuses, in one line naming who holds it, to start ``what`` on a port another process
    listens on (before: the stack went on and talked to that process, an old stack's Airflow
    say, and failed minutes later with an unrelated message)."""
    from cinestream.net import port_open

    if not port_open("127.0.0.1", port):
        return
    holders = ", ".join(listeners(port)) or "a process this user cannot see"
    raise CinestreamError(
        f"port {port} for {what} is taken by {holders}: stop it, or set {setting} to a free port"
    )
