"""Errors that end a command with one line saying what is wrong and what to do."""

from __future__ import annotations

# Exit codes that scripts and Airflow rely on (written once, imported everywhere).
EXIT_CHECKPOINT_MISMATCH = 3
EXIT_PROCESSOR_BUSY = 75  # EX_TEMPFAIL: another processor holds the checkpoint; try again later

# The fix when a checkpoint and the store disagree on offsets. The store records where its counts
# end per partition, so a processor without a checkpoint resumes exactly there: removing the
# checkpoint keeps every window (history Kafka may no longer hold) and counts nothing twice.
CHECKPOINT_FIX = (
    "run `cinestream reset --checkpoint-only` (removes only the checkpoint; the next run resumes "
    "from the offsets PostgreSQL holds, keeping every window)"
)
# The fix when the ratings topic was deleted and recreated under a store that counted the old one.
RECREATED_FIX = (
    "to keep the windows counted so far and count the new topic into them from its start, run "
    "`cinestream reset --checkpoint-only`; to start over from the new topic alone, run "
    "`cinestream reset --keep-topics` (empties every window table)"
)
# The fix when the stream would need records that Kafka's retention deleted before they were
# counted: nothing can bring them back; going on means accepting their loss, said out loud.
DELETED_FIX = (
    "those records can no longer be counted; to go on from the earliest offsets Kafka still "
    "holds, run `cinestream reset --checkpoint-only --accept-deleted`"
)


class CinestreamError(Exception):
    """An expected failure: the CLI prints the message (one line) and exits non-zero."""

    exit_code = 1


class ServiceUnavailable(CinestreamError):
    """A dependency (Kafka, PostgreSQL) cannot be reached.

    :param fix: what to do, when it is not simply to start the stack.
    """

    # False for a dependency that answers but refuses (Kafka's authorizer): waiting does not
    # help, so retry_on_disconnect raises it at once.
    retryable = True

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
