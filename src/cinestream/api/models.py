"""The API's response shapes, for the OpenAPI document at ``/docs``.

Routes return ready JSON bytes (built once per store change, see :mod:`cinestream.api.cache`), so
FastAPI uses these models for documentation only; ``tests/integration/test_api.py`` validates real
responses against them so the document cannot drift from what is served.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WindowRecord(_Strict):
    """One window's metrics, exactly the SPEC's record format."""

    window_start: str = Field(examples=["2025-11-10T18:05:00.000Z"])
    window_end: str = Field(examples=["2025-11-10T18:06:00.000Z"])
    window_type: str = Field(examples=["tumbling_1min"])
    count: int
    avg_rating: float
    p50_rating: float
    p95_rating: float
    top_movies: str = Field(description="JSON array of up to 10 movie ids", examples=["[3,1,2]"])
    processing_time: str


class TopMovie(_Strict):
    """A movie and how many ratings it had."""

    movie_id: int
    ratings: int


class TopMovies(_Strict):
    """The most-rated movies over an event-time range."""

    minutes: int
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    movies: list[TopMovie]
    hint: str | None = Field(default=None, description="present when the store is empty")


class LastHour(_Strict):
    """Totals over the hour of event time ending with the latest window."""

    from_: str = Field(alias="from")
    to: str
    count: int
    ratings_per_minute: float
    avg_rating: float | None = None
    p50_rating: float | None = None
    p95_rating: float | None = None
    top_movies: list[TopMovie] | None = None


class FutureWindows(_Strict):
    """Windows that start after the wall clock (a producer's clock ahead): reported, never the
    live state."""

    windows: int
    ratings: int
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class PipelineState(_Strict):
    """Counts, freshness and lag of the pipeline."""

    valid_ratings: int
    dlq_count: int
    late_ratings: int
    future_ratings: int = Field(
        description="ratings stamped more than the future tolerance ahead of the wall clock"
    )
    newest_window_age_s: float | None
    consumer_lag: int | None = Field(description="ratings in the topic not yet processed")
    kafka: str = Field(examples=["up"])


class Summary(_Strict):
    """The latest window, the last hour and the pipeline's state."""

    window_type: str
    windows: int = Field(description="windows stored for window_type")
    latest_window: WindowRecord | None = Field(
        description="the newest window that has started by the wall clock"
    )
    future_windows: FutureWindows
    last_hour: LastHour | None = Field(description="event-time hour up to the newest window's end")
    pipeline: PipelineState
    hint: str | None = Field(default=None, description="present when the store is empty")
