"""Great Expectations suites of cinestream, as code.

Each module builds one suite and the DataFrame it validates (``prepare``), so the suites can be
run by `cinestream validate`, the `cinestream_quality` DAG and the unit tests alike.
"""

from __future__ import annotations

from expectations import continuity, metrics_topic, ratings, window_metrics

SUITES = (window_metrics, metrics_topic, continuity, ratings)

__all__ = ["SUITES", "continuity", "metrics_topic", "ratings", "window_metrics"]
