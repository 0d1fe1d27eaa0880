"""PostgreSQL: the window store (exact per-window aggregates) and ``window_metrics``.

Rooms: ``schema`` (tables, triggers, roles, grants), ``connection`` (opening, retrying, the
writers' transaction rule), ``windows`` (the stream's commit, the backfill's replace, deriving
metrics), ``checkpoints`` (what the store holds of a checkpoint, the one-processor lock) and
``reads`` (every query the API, doctor, quality and Airflow run). No SQL lives outside this
package.

A window's start (and end) is epoch milliseconds everywhere in cinestream: the Spark jobs, the
cells hand-off, the window tables (``bigint``) and :class:`cinestream.metrics.WindowMetric`.
It is converted only at the edges: to ``timestamptz`` in ``window_metrics`` (here, in SQL, exact)
and to ISO-8601 text in the SPEC's records and the API (``schemas.format_time``).
"""
