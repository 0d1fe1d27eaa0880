from __future__ import annotations

import json

import numpy as np

from cinestream.generator import LatentFactorModel, ModelParams, encode, event_times


def test_reproducible_for_a_seed() -> None:
    a = LatentFactorModel(ModelParams(seed=3)).sample(1000)
    b = LatentFactorModel(ModelParams(seed=3)).sample(1000)
    c = LatentFactorModel(ModelParams(seed=4)).sample(1000)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_ratings_are_half_stars_with_a_mean_near_3_5_and_skewed_popularity() -> None:
    users, movies, ratings = LatentFactorModel(ModelParams()).sample(100_000)
    assert set(np.unique(ratings)) <= {x / 2 for x in range(1, 11)}
    assert 3.3 < ratings.mean() < 3.7
    assert users.min() >= 1 and users.max() <= 5_000
    assert movies.min() >= 1 and movies.max() <= 10_000
    counts = np.bincount(movies)
    top10_share = np.sort(counts)[-10:].sum() / len(movies)
    assert top10_share > 0.15  # uniform popularity would give 0.001


def test_historical_times_spread_evenly_over_the_span() -> None:
    times = event_times(1_000_000, 60_000, 0, 4, 4)
    assert times.tolist() == [1_000_000, 1_015_000, 1_030_000, 1_045_000]
    assert event_times(1_000_000, 60_000, 2, 2, 4).tolist() == [1_030_000, 1_045_000]


def test_encode_follows_the_spec_format() -> None:
    key, value, ts = next(
        encode(np.array([12]), np.array([34]), np.array([4.5]), np.array([1762797900000]))
    )
    assert key == b"12" and ts == 1762797900000
    assert json.loads(value) == {
        "user_id": 12,
        "movie_id": 34,
        "rating": 4.5,
        "timestamp": 1762797900000,
    }
