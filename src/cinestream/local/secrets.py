"""The local stack's generated secrets and private state files: written once, readable by their
owner only (a directory made for them 0700, a file 0600)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cinestream.settings import Settings


def stored_secret(
    state_dir: Path, name: str, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)
) -> str:
    """A local stack secret, generated once into ``<state dir>/secrets/<name>`` (mode 600)."""
    return written_once(private_dir(state_dir / "secrets") / name, make)


def private_dir(path: Path) -> Path:
    """The directory ``path``; when missing, it is created with its missing parents (the state
    dir, the first time) readable by its owner only (0700). An existing one is left as it is."""
    missing = []
    folder = path
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made by another process meanwhile
            continue
        folder.chmod(0o700)  # whatever the umask left of it
    return path


def written_once(path: Path, make: Callable[[], str]) -> str:
    """The content of ``path``, written by ``make()`` the first time (mode 600; a directory it
    creates for it, 700)."""
    if not path.exists():
        private_dir(path.parent)
        # Written private under a unique name, then linked into place: never readable by others,
        # never seen half-written, and two processes starting at once agree on one value.
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(make())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def local_db_password(state_dir: Path, role: str = "cinestream") -> str:
    """Password of a local stack role, generated once per state dir."""
    name = "postgres_password" if role == "cinestream" else f"postgres_{role}_password"
    return stored_secret(state_dir, name, lambda: secrets.token_urlsafe(18))


def first_start_time(settings: Settings) -> datetime:
    """When the stack first started: CINESTREAM_FIRST_START, else recorded in the state dir
    the first time anyone asks (`up` does). The backfill's catchup is bounded from it."""
    from cinestream.timeparse import parse_instant

    if settings.first_start:
        return parse_instant(settings.first_start)
    return parse_instant(
        written_once(
            settings.state_dir / "first_start",
            lambda: datetime.now(tz=UTC).isoformat(timespec="seconds"),
        )
    )
