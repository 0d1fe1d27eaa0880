"""Who may read the local stack's state dir: its owner only, wherever it holds a secret, a
password or logs.

The state dir is 0700, so no other user reaches anything inside it. The files that hold secrets
are 0600 and the log trees (directories 0700, files without group or other bits) are private on
their own as well, so a state dir copied elsewhere or opened up by hand does not hand them out.
One exception: when root starts the stack, PostgreSQL runs as the ``postgres`` user (initdb and
postgres refuse root), which has to pass through the state dir to its data directory and through
``logs/`` to its log file; those two directories are then 0710 with the server's group: it can
enter them, not list them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cinestream.errors import CinestreamError

# Paths relative to the state dir.
SECRET_FILES = (
    "airflow/simple_auth_manager_passwords.json.generated",  # Airflow's admin password
    "airflow/airflow.cfg",  # Airflow writes its generated keys into it
    "kafka/server.properties",  # the brokers' JAAS line (kafka/kafka-N/ in the cluster profile)
    "kafka/*/server.properties",
)
SECRET_TREES = ("secrets",)
# Process logs (the api-server's prints the admin password it generates), Airflow's task logs,
# the Spark workers' directories (each executor's stdout and stderr).
LOG_TREES = ("logs", "airflow/logs", "spark")
# Directories kept private besides the trees: the state dir and Airflow's home.
PRIVATE_DIRS = (".", "airflow")
# Directories another user's server passes through (see the module docstring).
PASSED_THROUGH = (".", "logs")

# How many paths `up` and `doctor` name one by one; the rest are counted.
SHOWN = 20


@dataclass(frozen=True)
class Loose:
    """A path holding a secret or logs that users other than its owner may read or enter."""

    path: Path
    mode: int  # its permission bits now
    wanted: int  # the bits it should have: ``mode`` without what others may do
    holds: str  # "a secret", "secrets", "logs", "secrets and logs" (a directory of both)
    is_dir: bool

    def __str__(self) -> str:
        return f"{self.path} ({self.holds}): {self.mode:o} -> {self.wanted:o}"

    def exposure(self) -> str:
        """Who besides the owner may do what with the path now, in words."""
        who = "every local user" if self.mode & ~self.wanted & 0o007 else "its group"
        return f"{who} can {'list or enter' if self.is_dir else 'read'} it"


@contextmanager
def owner_only_umask() -> Iterator[None]:
    """Everything created inside the block, by this process or the processes it starts, is its
    owner's only (umask 077)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def private_file(path: Path) -> Path:
    """``path``, created empty and 0600 when missing, so that a program filling it in later keeps
    that mode (an existing file is left as it is)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    return path


def let_group_through(path: Path, gid: int) -> None:
    """Give the directory ``path`` to group ``gid`` and let that group enter it (group x); any
    other group or other bit is :func:`tighten`'s to take."""
    info = path.stat()
    if info.st_gid != gid:
        os.chown(path, -1, gid)
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o010:
        path.chmod(mode | 0o010)


def _allowed(relative: str, is_dir: bool, holds: str, gid: int, traverse_gid: int | None) -> int:
    """The permission bits a path may have at most (a path is too open when its group or others
    have a bit beyond them)."""
    if is_dir:
        passed = relative in PASSED_THROUGH and traverse_gid is not None and gid == traverse_gid
        return 0o710 if passed else 0o700
    # A secret is read and written, never run; a log file keeps its owner's bits.
    return 0o600 if holds == "a secret" else 0o700


def loose_paths(state_dir: Path, traverse_gid: int | None = None) -> list[Loose]:
    """Every path in ``state_dir`` holding a secret, a password or logs that its owner does not
    keep to itself, with the mode it should have. ``traverse_gid``: the group allowed to pass
    through the state dir and ``logs/`` (the PostgreSQL server's, when it runs as another user).
    Symbolic links are neither followed nor reported."""
    found: dict[Path, Loose] = {}

    def check(path: Path, holds: str) -> None:
        if path in found:
            return
        try:
            info = path.lstat()
        except FileNotFoundError:  # removed meanwhile (a pruned log): nothing left to protect
            return
        if stat.S_ISLNK(info.st_mode):
            return
        mode = stat.S_IMODE(info.st_mode)
        relative = path.relative_to(state_dir).as_posix()
        is_dir = stat.S_ISDIR(info.st_mode)
        allowed = _allowed(relative, is_dir, holds, info.st_gid, traverse_gid)
        if mode & ~allowed & 0o077:
            found[path] = Loose(path, mode, mode & allowed, holds, is_dir)

    def walk(top: Path, holds: str, folders_hold: str) -> None:
        if not top.is_dir() or top.is_symlink():
            return
        for folder, _dirs, files in os.walk(top):
            check(Path(folder), folders_hold)
            for name in files:
                check(Path(folder) / name, holds)

    if not state_dir.is_dir():
        return []
    for relative in PRIVATE_DIRS:
        if (state_dir / relative).is_dir():
            check(state_dir / relative, "secrets and logs")
    for pattern in SECRET_FILES:
        for path in state_dir.glob(pattern):
            check(path, "a secret")
    for tree in SECRET_TREES:
        walk(state_dir / tree, "a secret", "secrets")
    for tree in LOG_TREES:
        walk(state_dir / tree, "logs", "logs")
    return sorted(found.values(), key=lambda loose: loose.path)


def tighten(state_dir: Path, traverse_gid: int | None = None) -> list[Loose]:
    """Take from every path :func:`loose_paths` finds what others may do; returns them."""
    done = []
    for loose in loose_paths(state_dir, traverse_gid):
        try:
            loose.path.chmod(loose.wanted)
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            raise CinestreamError(
                f"{loose.path} holds {loose.holds} and is mode {loose.mode:o}, but this user "
                f"cannot change it (owner uid {loose.path.lstat().st_uid}): run `chmod "
                f"{loose.wanted:o} {loose.path}` as its owner or root, then start again"
            ) from exc
        done.append(loose)
    return done
