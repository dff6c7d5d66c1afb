"""Latency judged on slow-request counts from the histogram, simulated window by window.

Latencies are drawn from a lognormal, bucketed with the model server's bounds, and reduced to
what Prometheus would return: cumulative counts and an interpolated p99."""

from __future__ import annotations

import math
import random

from modelrollout.metrics.base import TrackSample
from modelrollout.plan.analysis import AnalysisThresholds, Verdict, analyse

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAT_ONLY = AnalysisThresholds(max_error_rate=1.0, max_error_rate_increase=None)


def window(rng: random.Random, n: int, median_s: float, sigma: float = 0.35) -> TrackSample:
    latencies = [median_s * math.exp(rng.gauss(0, sigma)) for _ in range(n)]
    cumulative = [(b, float(sum(1 for x in latencies if x <= b))) for b in BOUNDS]
    buckets = (*cumulative, (math.inf, float(n)))
    return TrackSample(
        requests=n,
        errors=0,
        p99_seconds=_quantile(buckets, 0.99),
        window_seconds=10,
        latency_buckets=buckets,
    )


def _quantile(buckets: tuple[tuple[float, float], ...], q: float) -> float:
    """histogram_quantile: linear interpolation inside the bucket holding rank q*n."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = le, count
    return lower


def without_buckets(sample: TrackSample) -> TrackSample:
    return TrackSample(sample.requests, sample.errors, sample.p99_seconds, sample.window_seconds)


def test_healthy_noise_never_fails_on_counts_where_lone_p99s_do() -> None:
    """Same distribution, ±10% median noise, 200-400 requests a window: the p99-only rule
    fails some windows; the counted rule none."""
    rng = random.Random(7)
    fails_counts = fails_p99 = 0
    for _ in range(1000):
        stable = window(rng, 400, 0.020)
        canary = window(rng, rng.randint(200, 400), 0.020 * rng.uniform(0.9, 1.1))
        fails_counts += analyse(canary, stable, LAT_ONLY).verdict == Verdict.FAIL
        fails_p99 += (
            analyse(without_buckets(canary), without_buckets(stable), LAT_ONLY).verdict
            == Verdict.FAIL
        )
    assert fails_counts == 0
    assert fails_p99 > fails_counts


def test_a_real_latency_regression_fails() -> None:
    rng = random.Random(11)
    verdicts = [
        analyse(window(rng, 300, 0.040), window(rng, 400, 0.020), LAT_ONLY).verdict
        for _ in range(200)
    ]
    # A doubled median fails nine windows in ten on its own; two in a row roll it back.
    assert verdicts.count(Verdict.FAIL) >= 180
    assert verdicts.count(Verdict.PASS) <= 2  # interpolation inside coarse buckets


def test_failure_reason_names_the_counts() -> None:
    rng = random.Random(3)
    result = analyse(window(rng, 300, 0.060), window(rng, 400, 0.020), LAT_ONLY)
    assert result.verdict == Verdict.FAIL
    assert "canary requests slower than" in result.reason
    assert "above the 1.5 limit" in result.reason


def test_over_the_ratio_on_few_slow_requests_is_inconclusive() -> None:
    """A p99 ratio over the limit that a handful of requests make is not evidence yet."""
    buckets_s = ((0.025, 396.0), (0.05, 400.0), (math.inf, 400.0))
    buckets_c = ((0.025, 246.0), (0.05, 250.0), (math.inf, 250.0))
    stable = TrackSample(400, 0, 0.020, 10, buckets_s)
    canary = TrackSample(250, 0, 0.040, 10, buckets_c)
    result = analyse(canary, stable, LAT_ONLY)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "not significant" in result.reason
