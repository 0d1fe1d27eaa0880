"""``cinestream audit``: an independent check of the window metrics of a time range.

It reads the records of ``ratings`` with a plain Kafka consumer, validates and windows them here
(pure Python: neither Spark nor the processor's code), recomputes every window of the range from
the SPEC's definitions, and compares each with its row in PostgreSQL and its last record in
``metrics``. Only the records the store says it has consumed (its end offsets per partition) are
read, so a window the stream is still filling compares exactly too.

What it cannot confirm it says: records deleted by retention, records the processor has not
committed yet, and ratings the stream set aside as late (counted, not added: a backfill restores
them).

The metrics topic is compared exactly too, although the stream publishes a window only after
PostgreSQL has committed it. The store versions every window (``window_state.version``, and
``published_version``: the last version written to the topic), and the publisher delivers a
version before it marks it published. So the audit reads the topic between two store snapshots:
a window that was published at the first (version == published) and whose version did not move
by the second has exactly that version's value as its last record, and any other value is a
``DIFF``. Any other window (committed but not yet published, or changed while the topic was
read) is settled, not guessed: the audit waits up to :data:`PENDING_WAIT_S` for the publisher,
reads the topic's new records, and compares once a window's version holds still across the read
(with its recomputation if it is still the snapshot's version; with PostgreSQL's newer row if
the stream changed it since, which is then counted in a ``NOTE``). A window the publisher has
still not caught up with is one ``PENDING`` line: not a difference, no exit 1 (the processor
publishes after each commit; a running or the next ``cinestream process`` publishes it).

Each finding also says whether its window was still open (its end after the store's watermark,
or the wall clock minus the allowed lateness before any stream committed): the audit compares
open windows exactly (it reads what the store has consumed), but a backfill replaces only
closed ones, so ``cinestream_audit`` leaves them (:mod:`cinestream.orchestration.audit_tasks`).
"""

from cinestream.audit.run import AuditReport, run_audit

__all__ = ["AuditReport", "run_audit"]
