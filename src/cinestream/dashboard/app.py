"""The cinestream dashboard (Streamlit): `cinestream dashboard` or `streamlit run` this file.

Reads everything from the metrics API (CINESTREAM_API_HOST/PORT), refreshing every few seconds.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pandas as pd
import streamlit as st

from cinestream.dashboard.verdict import data_notice
from cinestream.settings import Settings

REFRESH_S = 5

settings = Settings()
st.set_page_config(page_title="cinestream", page_icon="🎬", layout="wide")


def fetch(path: str, **params: Any) -> Any:
    """GET an API path; raise with the API's message on an error status."""
    response = httpx.get(f"{settings.api_url}{path}", params=params, timeout=5)
    if response.status_code >= 400:
        detail = response.json().get("detail", response.text)
        raise RuntimeError(f"{path}: HTTP {response.status_code}: {detail}")
    return response.json()


def kpi(label: str, value: Any, fmt: str = "{}", key: str = "") -> None:
    """A KPI tile, plus a hidden element with the raw value for the browser test."""
    text = "–" if value is None else fmt.format(value)
    st.metric(label, text)
    # A stable hook for browser tests: the value exactly as the API gave it.
    st.markdown(
        f"<span data-testid='kpi-{key}' style='display:none'>{value}</span>", unsafe_allow_html=True
    )


st.title("cinestream — movie ratings, live")
window_type = st.selectbox("Window type", settings.window_types, index=0)


def dlq_verdict() -> None:
    """cinestream_dlq's verdict: too many invalid records (the quality view has the report), or
    none that still holds (the newest report is too old). It never hides the numbers."""
    try:
        data = httpx.get(f"{settings.api_url}/metrics/health", timeout=5).json().get("data")
    except (httpx.HTTPError, ValueError):
        data = None
    notice = data_notice(data, f"{settings.airflow_url}/cinestream-quality/")
    if notice is not None:
        level, text = notice
        (st.error if level == "error" else st.warning)(text)
        state = (data or {}).get("state")
        st.markdown(
            f"<span data-testid='dlq-verdict' style='display:none'>{state}</span>",
            unsafe_allow_html=True,
        )


def kpis(summary: dict[str, Any]) -> None:
    """The last hour's KPIs and the latest window."""
    hour = summary["last_hour"] or {}
    latest = summary["latest_window"]
    cols = st.columns(5)
    with cols[0]:
        kpi(
            "Ratings / minute (last hour)",
            hour.get("ratings_per_minute"),
            "{:,.1f}",
            "ratings-per-minute",
        )
    with cols[1]:
        kpi("Average rating (last hour)", hour.get("avg_rating"), "{:.3f}", "avg-rating")
    with cols[2]:
        kpi(
            "p50 / p95 (last hour)",
            None if "p50_rating" not in hour else f"{hour['p50_rating']} / {hour['p95_rating']}",
            "{}",
            "p50-p95",
        )
    with cols[3]:
        kpi(
            "Latest window",
            latest["window_start"][11:16] + f" · {latest['count']:,}",
            "{}",
            "latest-window",
        )
    with cols[4]:
        kpi("Windows stored", summary["windows"], "{:,}", "windows")


def pipeline_health(summary: dict[str, Any]) -> None:
    """Lag, invalid and late ratings, and the newest window's age."""
    pipe = summary["pipeline"]
    st.subheader("Pipeline health")
    health_cols = st.columns(4)
    with health_cols[0]:
        kpi("Consumer lag", pipe["consumer_lag"], "{:,}", "lag")
    with health_cols[1]:
        kpi("Invalid (DLQ)", pipe["dlq_count"], "{:,}", "dlq")
    with health_cols[2]:
        kpi("Late ratings", pipe["late_ratings"], "{:,}", "late")
    with health_cols[3]:
        kpi("Newest window age", pipe["newest_window_age_s"], "{:,.0f} s", "age")
    st.caption(
        f"Refreshes every {REFRESH_S}s from {settings.api_url} · "
        f"{json.dumps({'kafka': pipe['kafka']})}"
    )


@st.fragment(run_every=REFRESH_S)
def live() -> None:
    """The part of the page that refreshes: KPIs, charts, top movies."""
    try:
        summary = fetch("/metrics/summary")
        windows = fetch("/metrics/windows", window_type=window_type, limit=120)
        top = fetch("/metrics/top-movies", minutes=60, limit=10)
    except (httpx.HTTPError, RuntimeError) as exc:
        st.error(
            f"The metrics API at {settings.api_url} is not answering: {exc}. "
            "Start it with `cinestream api` (or `make up`)."
        )
        return

    dlq_verdict()
    future = summary.get("future_windows") or {}
    if future.get("windows"):
        # A producer's clock ahead of ours: reported, never drawn as the live state.
        st.warning(
            f"{future['ratings']:,} ratings in {future['windows']:,} windows from "
            f"{future['from']} to {future['to']} are stamped ahead of the wall clock; they are "
            "left out of the live view (`cinestream doctor` says more)."
        )
    if summary["latest_window"] is None:
        st.info(summary.get("hint", "No windows yet."))
        return

    kpis(summary)
    frame = pd.DataFrame(windows)
    if not frame.empty:
        frame["window_start"] = pd.to_datetime(frame["window_start"])
        frame = frame.set_index("window_start")
        left, right = st.columns(2)
        with left:
            st.subheader("Ratings per window")
            st.line_chart(frame[["count"]])
        with right:
            st.subheader("Average, p50 and p95 per window")
            st.line_chart(frame[["avg_rating", "p50_rating", "p95_rating"]])

    st.subheader("Top movies (last 60 minutes)")
    movies = pd.DataFrame(top["movies"])
    if not movies.empty:
        movies["movie"] = movies["movie_id"].map(lambda m: f"movie {m}")
        st.bar_chart(movies, x="movie", y="ratings", horizontal=True, sort="-ratings")

    pipeline_health(summary)


live()
