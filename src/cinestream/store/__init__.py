"""PostgreSQL: the window store (exact per-window aggregates) and ``window_metrics``.

Rooms: ``schema`` (tables, triggers, roles, grants), ``connection`` (opening, retrying, the
writers' transaction rule), ``window_metrics`` (the metrics table, deriving it from a window's
detail, staging cells), ``commit`` (the stream's micro-batch commit), ``replace`` (the backfill's
whole-window replacement), ``publication`` (committed rows to the metrics topic), ``retention``
(pruning detail), ``pipeline`` (what the store holds: its topic, windows and end offsets),
``dlq_outbox``, ``checkpoint_lock`` (what the store holds of a checkpoint, the one-processor
lock), ``reports`` (audit, DLQ and quality records) and ``reads`` (every query the API, doctor,
quality and Airflow run). No SQL lives outside this package.

A window's start (and end) is epoch milliseconds everywhere in cinestream: the Spark jobs, the
cells hand-off, the window tables (``bigint``) and :class:`cinestream.metrics.WindowMetric`.
It is converted only at the edges: to ``timestamptz`` in ``window_metrics`` (here, in SQL, exact)
and to ISO-8601 text in the SPEC's records and the API (``schemas.format_time``).
"""
