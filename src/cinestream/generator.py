"""Latent-factor ratings generator.

rating = global mean + user bias + movie bias + <user vector, movie vector> + noise, rounded to
half stars and clamped to [0.5, 5]. Movies are picked with a Zipf-like popularity skew (so the
top movies mean something) and users with a log-normal activity skew. Reproducible for a seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelParams:
    """Parameters of the latent-factor model (sizes, biases, noise, popularity skew, seed)."""

    users: int = 5_000
    movies: int = 10_000
    factors: int = 8
    global_mean: float = 3.47
    user_bias_sd: float = 0.35
    movie_bias_sd: float = 0.45
    factor_sd: float = 0.30
    noise_sd: float = 0.55
    popularity_exponent: float = 1.0
    seed: int = 42


@dataclass
class LatentFactorModel:
    """Users and movies with biases and latent vectors; samples rated events."""

    params: ModelParams
    user_bias: np.ndarray = field(init=False)
    movie_bias: np.ndarray = field(init=False)
    user_vectors: np.ndarray = field(init=False)
    movie_vectors: np.ndarray = field(init=False)
    _movie_cdf: np.ndarray = field(init=False)
    _user_cdf: np.ndarray = field(init=False)
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        p = self.params
        if p.users < 1 or p.movies < 1:
            raise ValueError("users and movies must be >= 1")
        rng = np.random.default_rng(p.seed)
        self.user_bias = rng.normal(0, p.user_bias_sd, p.users)
        self.movie_bias = rng.normal(0, p.movie_bias_sd, p.movies)
        self.user_vectors = rng.normal(0, p.factor_sd, (p.users, p.factors))
        self.movie_vectors = rng.normal(0, p.factor_sd, (p.movies, p.factors))
        # Popularity: movie ids in a random order get Zipf weights 1/rank^s.
        ranks = rng.permutation(p.movies) + 1
        weights = 1.0 / ranks.astype(float) ** p.popularity_exponent
        self._movie_cdf = np.cumsum(weights / weights.sum())
        activity = rng.lognormal(0, 0.8, p.users)
        self._user_cdf = np.cumsum(activity / activity.sum())
        self._rng = np.random.default_rng(p.seed + 1)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` events: 1-based user ids, 1-based movie ids and ratings in half stars."""
        rng = self._rng
        users = np.minimum(np.searchsorted(self._user_cdf, rng.random(n)), self.params.users - 1)
        movies = np.minimum(np.searchsorted(self._movie_cdf, rng.random(n)), self.params.movies - 1)
        dot = np.einsum("ij,ij->i", self.user_vectors[users], self.movie_vectors[movies])
        raw = (
            self.params.global_mean
            + self.user_bias[users]
            + self.movie_bias[movies]
            + dot
            + rng.normal(0, self.params.noise_sd, n)
        )
        ratings = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
        return users + 1, movies + 1, ratings


def event_times(start_ms: int, span_ms: int, first: int, n: int, total: int) -> np.ndarray:
    """Event times of events ``first .. first+n`` of ``total`` spread evenly over a span."""
    idx = np.arange(first, first + n, dtype=np.int64)
    return start_ms + (idx * span_ms) // max(total, 1)


def encode(
    users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, times: np.ndarray
) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, value, timestamp) per event in the SPEC's JSON format."""
    for u, m, r, t in zip(
        users.tolist(), movies.tolist(), ratings.tolist(), times.tolist(), strict=True
    ):
        yield (
            str(u).encode(),
            f'{{"user_id":{u},"movie_id":{m},"rating":{r},"timestamp":{t}}}'.encode(),
            t,
        )


def rating_batches(
    model: LatentFactorModel,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    rate: float | None = None,
    start_ms: int | None = None,
    span_ms: int | None = None,
    chunk: int = 5_000,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Chunks of (users, movies, ratings, event times) until ``count`` or ``duration_s``.

    Paced to ``rate`` per second when given. Event times are live (now) unless ``start_ms`` and
    ``span_ms`` spread them evenly over a historical span (which needs ``count``).
    """
    if count is None and duration_s is None:
        raise ValueError("give a count or a duration")
    if start_ms is not None and (count is None or span_ms is None):
        raise ValueError("a historical start needs a count and a span")
    began = time.monotonic()
    sent = 0
    while count is None or sent < count:
        now = time.monotonic()
        if duration_s is not None and now - began >= duration_s:
            return
        n = chunk if count is None else min(chunk, count - sent)
        if rate:
            # Pace whole chunks so that sent / elapsed never exceeds the rate.
            n = max(1, min(n, int(rate)))
            ahead = sent / rate - (now - began)
            if ahead > 0:
                time.sleep(min(ahead, 0.5))
                continue
        users, movies, ratings = model.sample(n)
        if start_ms is not None and span_ms is not None and count is not None:
            times = event_times(start_ms, span_ms, sent, n, count)
        else:
            times = np.full(n, int(time.time() * 1000), dtype=np.int64)
        yield users, movies, ratings, times
        sent += n


@dataclass
class DeliveryReport:
    """What a generator run produced, delivered and failed, and how fast."""

    produced: int = 0
    delivered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    first_event_ms: int | None = None
    last_event_ms: int | None = None

    @property
    def rate(self) -> float:
        """Delivered ratings per second."""
        return self.delivered / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``generate --json``)."""
        return {
            "produced": self.produced,
            "delivered": self.delivered,
            "failed": self.failed,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rate_per_s": round(self.rate, 1),
            "first_event_ms": self.first_event_ms,
            "last_event_ms": self.last_event_ms,
        }


def generate(
    *,
    kafka: Mapping[str, Any],
    topic: str,
    params: ModelParams,
    count: int | None = None,
    duration_s: float | None = None,
    rate: float | None = None,
    start_ms: int | None = None,
    span_ms: int | None = None,
    progress: bool = True,
    chunk: int = 5_000,
) -> DeliveryReport:
    """Produce ratings to ``topic`` over the connection ``kafka`` (``Settings.kafka_client_config``)
    until ``count`` or ``duration_s``; live event times unless ``start_ms``.

    With ``start_ms`` and ``span_ms`` (needs ``count``), event times are spread evenly over the
    historical span and each record's Kafka timestamp is its event time.
    """
    from confluent_kafka import KafkaError, Producer
    from tqdm import tqdm

    from cinestream.kafka.acls import CLIENT_FAILURES, KafkaRefused, refused_by, refused_line
    from cinestream.kafka.produce import producer_config

    model = LatentFactorModel(params)
    batches = rating_batches(
        model,
        count=count,
        duration_s=duration_s,
        rate=rate,
        start_ms=start_ms,
        span_ms=span_ms,
        chunk=chunk,
    )
    report = DeliveryReport()

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is None:
            report.delivered += 1
        else:
            report.failed += 1
            # A refusal by the authorizer: one line naming the principal (kafka/acls.py).
            why = refused_line(kafka, err, "WRITE", "topic", topic) or err.str()
            report.errors[why] = report.errors.get(why, 0) + 1

    producer = Producer(producer_config(kafka))
    bar = tqdm(
        total=count, unit="ratings", disable=not progress, mininterval=0.5, desc=f"-> {topic}"
    )
    began = time.monotonic()
    try:
        for users, movies, ratings, times in batches:
            if report.first_event_ms is None:
                report.first_event_ms = int(times[0])
            report.last_event_ms = int(times[-1])
            for key, value, ts in encode(users, movies, ratings, times):
                while True:
                    try:
                        producer.produce(topic, value, key, on_delivery=on_delivery, timestamp=ts)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
            report.produced += len(users)
            bar.update(len(users))
        remaining = producer.flush(120)
        if remaining:
            report.failed += remaining
            report.errors["not delivered within 120s"] = remaining
    except CLIENT_FAILURES as exc:
        line = refused_by(exc, kafka, "WRITE", "topic", topic)
        if line is None:
            raise
        raise KafkaRefused(line) from exc
    finally:
        bar.close()
        report.seconds = time.monotonic() - began
    return report
