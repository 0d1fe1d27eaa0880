"""Errors that end a command with one line saying what is wrong and what to do."""

from __future__ import annotations


class CinestreamError(Exception):
    """An expected failure: the CLI prints the message (one line) and exits non-zero."""

    exit_code = 1


class ServiceUnavailable(CinestreamError):
    """A dependency (Kafka, PostgreSQL) cannot be reached."""


class CheckpointMismatch(CinestreamError):
    """The checkpoint does not belong to the topic as it is now; starting would skip data."""

    exit_code = 3


class ProcessorBusy(CinestreamError):
    """Another processor holds the checkpoint."""

    exit_code = 75  # EX_TEMPFAIL: try again later


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver errors span several), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
