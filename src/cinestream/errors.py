"""Errors that end a command with one line saying what is wrong and what to do."""

from __future__ import annotations

# Exit codes that scripts and Airflow rely on (written once, imported everywhere).
EXIT_CHECKPOINT_MISMATCH = 3
EXIT_PROCESSOR_BUSY = 75  # EX_TEMPFAIL: another processor holds the checkpoint; try again later

# The one fix when the checkpoint and the topic or the store disagree. It re-reads the topic into
# empty window tables; a new checkpoint location over the same tables would count every rating
# still in the topic a second time, so it is never suggested.
RESET_FIX = (
    "to re-read the topic from the start run `cinestream reset --keep-topics` (wipes the "
    "checkpoint and the windows derived from it, then the next run recomputes them exactly)"
)


class CinestreamError(Exception):
    """An expected failure: the CLI prints the message (one line) and exits non-zero."""

    exit_code = 1


class ServiceUnavailable(CinestreamError):
    """A dependency (Kafka, PostgreSQL) cannot be reached.

    :param fix: what to do, when it is not simply to start the stack.
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class CheckpointMismatch(CinestreamError):
    """The checkpoint does not belong to the topic as it is now; starting would skip data.

    :param problem: what does not match, in one sentence.
    :param fix: the command (and what it does) that makes a correct start possible.
    """

    exit_code = EXIT_CHECKPOINT_MISMATCH

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


class ProcessorBusy(CinestreamError):
    """Another processor holds the checkpoint."""

    exit_code = EXIT_PROCESSOR_BUSY


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver errors span several), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
