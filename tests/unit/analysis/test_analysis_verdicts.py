"""Verdicts of one analysis window, and failure counting across windows."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from modelrollout.metrics.base import TrackSample
from modelrollout.plan.analysis import (
    AnalysisResult,
    AnalysisThresholds,
    Verdict,
    analyse,
    next_failure_count,
    should_rollback,
)

PASS, FAIL, INCONCLUSIVE = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE
DEFAULTS = AnalysisThresholds()
ERRORS_ONLY = AnalysisThresholds(max_p99_ratio=None)


def track(
    requests: int | None, errors: int | None, p99: float | None = 0.05, window: float = 60
) -> TrackSample:
    return TrackSample(requests=requests, errors=errors, p99_seconds=p99, window_seconds=window)


HEALTHY_STABLE = track(800, 4, 0.05)


@dataclass(frozen=True)
class Case:
    id: str
    canary: TrackSample | None
    stable: TrackSample | None
    verdict: Verdict
    reason_has: tuple[str, ...] = ()
    thresholds: AnalysisThresholds = DEFAULTS
    provider_error: str | None = None


CASES = [
    # --- no judgement possible ------------------------------------------------------------
    Case(
        "provider down, numbers look healthy",
        track(500, 0),
        HEALTHY_STABLE,
        INCONCLUSIVE,
        ("metrics provider error", "connection refused"),
        provider_error="Prometheus requests query failed: connection refused",
    ),
    Case(
        "provider down, numbers look bad",
        track(500, 400),
        HEALTHY_STABLE,
        INCONCLUSIVE,
        ("metrics provider error",),
        provider_error="timed out",
    ),
    Case("no canary sample", None, HEALTHY_STABLE, INCONCLUSIVE, ("no canary",)),
    Case("canary and stable missing", None, None, INCONCLUSIVE, ("no canary",)),
    Case("zero traffic", track(0, 0, None), track(0, 0, None), INCONCLUSIVE, ("served 0",)),
    Case("zero canary traffic", track(0, 0, None), HEALTHY_STABLE, INCONCLUSIVE, ("served 0",)),
    Case("low traffic", track(12, 0), HEALTHY_STABLE, INCONCLUSIVE, ("12 requests", "50")),
    Case("low traffic, all errors", track(49, 49), HEALTHY_STABLE, INCONCLUSIVE, ("49",)),
    Case("canary requests NaN", track(None, 0), HEALTHY_STABLE, INCONCLUSIVE, ("NaN",)),
    Case("canary errors NaN", track(500, None), HEALTHY_STABLE, INCONCLUSIVE, ("NaN",)),
    Case("canary p99 NaN", track(500, 2, None), HEALTHY_STABLE, INCONCLUSIVE, ("p99",)),
    Case("stable counts NaN", track(500, 2), track(None, None), INCONCLUSIVE, ("stable",)),
    Case(
        "stable p99 NaN",
        track(500, 2, 0.05),
        track(800, 4, None),
        INCONCLUSIVE,
        ("stable p99",),
    ),
    # --- the minimum-requests boundary -----------------------------------------------------
    Case("one below the minimum", track(49, 0), HEALTHY_STABLE, INCONCLUSIVE, ("49",)),
    Case("exactly at the minimum", track(50, 0), HEALTHY_STABLE, PASS, ("0% (0/50)",)),
    Case(
        "custom minimum",
        track(10, 0),
        HEALTHY_STABLE,
        PASS,
        thresholds=AnalysisThresholds(min_requests=10),
    ),
    # --- error rates -------------------------------------------------------------------------
    Case(
        "healthy canary",
        track(200, 2, 0.05),
        track(800, 6, 0.05),
        PASS,
        ("1.0% (2/200)", "0.75% (6/800)", "within limits"),
    ),
    Case(
        "bad canary",
        track(199, 46),
        track(812, 3),
        FAIL,
        ("23.1% (46/199)", "0.37% (3/812)", "exceeds 5% absolute", "z=13.4"),
    ),
    Case(
        "over the absolute limit but too few samples to be significant",
        track(50, 4),
        track(500, 5),
        INCONCLUSIVE,
        ("8.0% (4/50)", "not significantly worse", "waiting"),
    ),
    Case(
        "over the relative limit and significant",
        track(2000, 80),
        track(2000, 10),
        FAIL,
        ("4.0% (80/2000)", "exceeds stable + 2 points"),
    ),
    Case(
        "relative limit switched off",
        track(2000, 80),
        track(2000, 10),
        PASS,
        thresholds=AnalysisThresholds(max_error_rate_increase=None),
    ),
    Case(
        "stable failing as badly as canary",
        track(200, 60),
        track(200, 58),
        INCONCLUSIVE,
        ("30.0% (60/200)", "29.0% (58/200)", "stable is failing too", "not blaming"),
    ),
    Case(
        "stable failing, canary far worse",
        track(200, 150),
        track(200, 20),
        FAIL,
        ("75.0% (150/200)", "10.0% (20/200)"),
    ),
    Case(
        "big canary error rate, stable with little traffic",
        track(199, 46),
        track(5, 0),
        FAIL,
        ("significantly above the 5% limit", "stable served only 5 requests"),
    ),
    Case(
        "big canary error rate, stable with no traffic",
        track(199, 46),
        track(0, 0, None),
        FAIL,
        ("significantly above",),
    ),
    Case(
        "big canary error rate, no stable at all",
        track(199, 46),
        None,
        FAIL,
        ("no stable baseline",),
    ),
    Case(
        "big canary error rate, stable series NaN",
        track(199, 46),
        track(None, None),
        FAIL,
        ("significantly above",),
    ),
    Case(
        "no baseline, canary over the limit but not significantly",
        track(60, 4),
        None,
        INCONCLUSIVE,
        ("not significantly", "waiting"),
    ),
    Case("no baseline, healthy canary", track(300, 3), None, PASS, ("within the 5% limit",)),
    Case(
        "errors above requests from extrapolation",
        track(200, 203),
        HEALTHY_STABLE,
        FAIL,
        ("100.0% (200/200)",),
    ),
    # --- latency -------------------------------------------------------------------------------
    Case(
        "latency ratio within limit",
        track(500, 2, 0.060),
        track(800, 4, 0.050),
        PASS,
        ("ratio 1.20 within the 1.5 limit",),
    ),
    Case(
        "latency ratio above limit",
        track(500, 2, 0.400),
        track(800, 4, 0.050),
        FAIL,
        ("canary p99 400 ms vs stable 50 ms: ratio 8.00 above the 1.5 limit",),
    ),
    Case(
        "latency ratio switched off",
        track(500, 2, 0.400),
        track(800, 4, 0.050),
        PASS,
        thresholds=ERRORS_ONLY,
    ),
    Case(
        "latency floor: 2 ms vs 1 ms",
        track(500, 2, 0.002),
        track(800, 4, 0.001),
        PASS,
        ("under the 10 ms floor",),
    ),
    Case(
        "latency floor off: 2 ms vs 1 ms fails",
        track(500, 2, 0.002),
        track(800, 4, 0.001),
        FAIL,
        ("ratio 2.00",),
        thresholds=AnalysisThresholds(p99_floor_seconds=0),
    ),
    Case(
        "stable p99 zero",
        track(500, 2, 0.05),
        track(800, 4, 0.0),
        FAIL,
        ("ratio inf",),
    ),
    Case(
        "absolute p99 limit",
        track(500, 2, 0.8),
        None,
        FAIL,
        ("above the 500 ms limit",),
        thresholds=AnalysisThresholds(max_p99_seconds=0.5),
    ),
    Case(
        "absolute p99 limit met",
        track(500, 2, 0.3),
        track(800, 4, 0.25),
        PASS,
        ("within the 500 ms limit",),
        thresholds=AnalysisThresholds(max_p99_seconds=0.5),
    ),
    Case(
        "no latency baseline: stable too quiet",
        track(500, 2, 0.4),
        track(10, 0, 0.05),
        PASS,
        ("no stable baseline to compare",),
    ),
    Case(
        "latency failure with error-rate failure names both",
        track(260, 60, 0.4),
        track(812, 3, 0.05),
        FAIL,
        ("23.1% (60/260)", "ratio 8.00"),
    ),
    Case(
        "p99 of too few requests is not compared",
        track(150, 0, 0.4),
        track(812, 3, 0.05),
        PASS,
        ("not compared: 150 requests, fewer than the 200 a p99 needs",),
    ),
    Case(
        "error failure wins over missing latency",
        track(199, 46, None),
        track(812, 3),
        FAIL,
        ("23.1%",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdicts(case: Case) -> None:
    result = analyse(case.canary, case.stable, case.thresholds, case.provider_error)
    assert result.verdict is case.verdict, result.reason
    for fragment in case.reason_has:
        assert fragment in result.reason, (fragment, result.reason)


def test_measured_values_are_fields() -> None:
    result = analyse(track(199, 46, 0.12), track(812, 3, 0.1))
    assert result.measured.canary_requests == 199
    assert result.measured.canary_errors == 46
    assert result.measured.canary_error_rate == pytest.approx(46 / 199)
    assert result.measured.stable_requests == 812
    assert result.measured.stable_errors == 3
    assert result.measured.stable_error_rate == pytest.approx(3 / 812)
    assert result.measured.canary_p99_seconds == 0.12
    assert result.measured.stable_p99_seconds == 0.1
    assert result.measured.p99_ratio == pytest.approx(1.2)
    assert result.measured.z == pytest.approx(13.39, abs=0.01)
    assert result.measured.p_value is not None
    assert result.measured.p_value < 1e-20


def test_measured_values_kept_when_inconclusive() -> None:
    result = analyse(track(30, 1), HEALTHY_STABLE)
    assert result.verdict is INCONCLUSIVE
    assert (result.measured.canary_requests, result.measured.canary_errors) == (30, 1)
    assert result.measured.stable_requests == 800
    assert result.measured.p_value is None


def test_as_status_is_camel_case_and_skips_unmeasured() -> None:
    status = analyse(track(0, 0, None), None).as_status()
    assert status == {
        "verdict": "Inconclusive",
        "reason": status["reason"],
        "canaryRequests": 0,
        "canaryErrors": 0,
    }
    full = analyse(track(199, 46, 0.12), track(812, 3, 0.1)).as_status()
    assert full["verdict"] == "Fail"
    assert {"canaryErrorRate", "stableP99Seconds", "p99Ratio", "z", "pValue"} <= set(full)


def test_default_thresholds_are_documented_values() -> None:
    documented = AnalysisThresholds(
        max_error_rate=0.05,
        max_error_rate_increase=0.02,
        max_p99_ratio=1.5,
        p99_floor_seconds=0.01,
        max_p99_seconds=None,
        min_requests=50,
        significance=0.001,
    )
    assert documented == DEFAULTS


@pytest.mark.parametrize(
    "bad",
    [
        {"max_error_rate": -0.1},
        {"max_error_rate": 1.5},
        {"max_error_rate_increase": -0.01},
        {"max_p99_ratio": 0},
        {"max_p99_ratio": math.inf},
        {"p99_floor_seconds": -1},
        {"max_p99_seconds": 0},
        {"min_requests": 0},
        {"significance": 0},
        {"significance": 1},
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
def test_thresholds_reject_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        AnalysisThresholds(**bad)  # type: ignore[arg-type]


# --- many windows: noise must not fail a healthy canary, and a bad one must always fail ---------


def binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def simulate(seed: int, canary_rate: float, windows: int = 1000) -> list[AnalysisResult]:
    rng = random.Random(seed)
    results = []
    for _ in range(windows):
        # Latency noise of +-10% on both tracks, as under a shared, busy machine.
        canary = track(200, binomial(rng, 200, canary_rate), 0.08 * rng.uniform(0.9, 1.1))
        stable = track(200, binomial(rng, 200, 0.01), 0.08 * rng.uniform(0.9, 1.1))
        results.append(analyse(canary, stable))
    return results


def test_healthy_noise_never_fails() -> None:
    results = simulate(seed=20240601, canary_rate=0.01)
    verdicts = [r.verdict for r in results]
    assert verdicts.count(FAIL) == 0
    # Noise may hold a step now and then, but a healthy canary mostly passes.
    assert verdicts.count(PASS) >= 950


def test_bad_canary_always_fails() -> None:
    results = simulate(seed=7, canary_rate=0.20)
    assert all(r.verdict is FAIL for r in results), next(
        r.reason for r in results if r.verdict is not FAIL
    )


# --- failure counting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "verdict", "expected"),
    [
        (0, FAIL, 1),
        (2, FAIL, 3),
        (3, PASS, 0),
        (0, PASS, 0),
        (2, INCONCLUSIVE, 2),
        (0, INCONCLUSIVE, 0),
    ],
)
def test_next_failure_count(previous: int, verdict: Verdict, expected: int) -> None:
    assert next_failure_count(previous, verdict) == expected


@pytest.mark.parametrize(
    ("failures", "limit", "expected"),
    [(0, 1, False), (1, 1, True), (1, 2, False), (2, 2, True), (3, 2, True), (2, 3, False)],
)
def test_should_rollback(failures: int, limit: int, expected: bool) -> None:
    assert should_rollback(failures, limit) is expected


@pytest.mark.parametrize(
    ("verdicts", "limit", "rolled_back_at"),
    [
        ([FAIL, INCONCLUSIVE, FAIL], 2, 2),  # a metrics gap does not reset the count
        ([FAIL, PASS, FAIL, PASS], 2, None),  # a pass does
        ([INCONCLUSIVE] * 10, 1, None),  # holding forever never rolls back by itself
        ([PASS, FAIL], 1, 1),
    ],
)
def test_failure_sequences(verdicts: list[Verdict], limit: int, rolled_back_at: int | None) -> None:
    failures = 0
    for i, verdict in enumerate(verdicts):
        failures = next_failure_count(failures, verdict)
        if should_rollback(failures, limit):
            assert i == rolled_back_at
            return
    assert rolled_back_at is None


def test_counting_rejects_negatives() -> None:
    with pytest.raises(ValueError, match="negative"):
        next_failure_count(-1, FAIL)
    with pytest.raises(ValueError, match="at least 1"):
        should_rollback(1, 0)
