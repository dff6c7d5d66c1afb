"""Canary analysis: judge one window of canary metrics against the stable's, without I/O.

Verdicts:

- **Pass**: the canary has enough traffic and is within every limit.
- **Fail**: the canary breaks a limit *and* the evidence is statistically significant: worse
  than the stable in a one-sided Fisher exact test on error counts or, when the stable has too
  little traffic to compare with, above the absolute limit in a one-sided binomial test. A
  latency limit fails on the measured p99 (histograms carry no variance to test with).
- **Inconclusive**: the window cannot decide. The step holds; it never promotes and, on this
  alone, never rolls back. This covers: the metrics provider being down, missing or NaN series,
  the canary below the minimum requests, an error rate over a limit that is not significant yet,
  and a stable that fails as badly as the canary. In that last case the canary is not blamed
  (no rollback) but not passed either: promoting a revision with the same outage gains nothing,
  and holding until the shared cause clears is the safe choice.

Stable baseline: the stable sample is a baseline when its counts are known and it served at
least ``min_requests``. Without one (``stable`` is None, e.g. after promotion, or it has too
little traffic) the canary is judged on the absolute limits only, so a canary with a large
error rate and enough requests still fails. A stable sample whose series are missing or NaN
makes the verdict Inconclusive unless the canary fails on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelrollout.api.status import AnalysisMeasurements
from modelrollout.plan.samples import TrackSample

from .latency import judge_latency, slow_counts
from .predictions import ShiftLimits, ShiftResult, judge_window
from .stats import binomial_sf, fisher_greater, two_proportion_z
from .verdicts import AnalysisThresholds, Finding, Verdict, percent_text, pvalue_text

__all__ = [
    "AnalysisResult",
    "AnalysisThresholds",
    "Verdict",
    "analyse",
    "next_failure_count",
    "should_rollback",
]


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """The verdict, why, and what was measured (for status, events and metrics)."""

    verdict: Verdict
    reason: str
    measured: AnalysisMeasurements = field(default_factory=AnalysisMeasurements)

    def as_status(self) -> dict[str, Any]:
        """camelCase fields for a status block, leaving out what was not measured."""
        return {"verdict": str(self.verdict), "reason": self.reason} | self.measured.wire()


@dataclass(frozen=True, slots=True)
class _Counts:
    requests: int
    errors: int

    @property
    def rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _counts(sample: TrackSample | None) -> _Counts | None:
    if sample is None or sample.requests is None or sample.errors is None:
        return None
    requests = max(0, sample.requests)
    # Two increase() queries extrapolate separately, so errors can exceed requests slightly.
    return _Counts(requests, min(max(0, sample.errors), requests))


def _limit_pct(rate: float) -> str:
    return f"{rate * 100:g}%"


def _rate_text(counts: _Counts) -> str:
    return f"{percent_text(counts.rate)} ({counts.errors}/{counts.requests})"


def _measure(
    canary: TrackSample | None, stable: TrackSample | None, p_value: float | None = None
) -> AnalysisMeasurements:
    """What the window measured, for status: counts, rates, p99s, their ratio and z."""
    c, s = _counts(canary), _counts(stable)
    canary_p99 = canary.p99_seconds if canary is not None else None
    stable_p99 = stable.p99_seconds if stable is not None else None
    z = None
    if c is not None and s is not None and c.requests and s.requests:
        z = two_proportion_z(c.errors, c.requests, s.errors, s.requests)
    ratio = None
    if canary_p99 is not None and stable_p99 is not None and stable_p99 > 0:
        ratio = canary_p99 / stable_p99
    return AnalysisMeasurements(
        canary_requests=c.requests if c else None,
        canary_errors=c.errors if c else None,
        canary_error_rate=c.rate if c and c.requests else None,
        canary_p99_seconds=canary_p99,
        stable_requests=s.requests if s else None,
        stable_errors=s.errors if s else None,
        stable_error_rate=s.rate if s and s.requests else None,
        stable_p99_seconds=stable_p99,
        p99_ratio=ratio,
        z=z,
        p_value=p_value,
    )


def _unjudgeable(
    canary: TrackSample | None, c: _Counts | None, t: AnalysisThresholds, provider_error: str | None
) -> str | None:
    """Why the window cannot be judged at all, if it cannot."""
    if provider_error is not None:
        return f"metrics provider error: {provider_error}"
    if canary is None:
        return "no canary metrics sample"
    if c is None:
        return "canary request or error series is missing or NaN"
    if c.requests < t.min_requests:
        return (
            f"canary served {c.requests} requests in the {canary.window_seconds:g}s window, "
            f"fewer than the {t.min_requests} needed to judge it"
        )
    return None


def analyse(
    canary: TrackSample | None,
    stable: TrackSample | None,
    thresholds: AnalysisThresholds | None = None,
    provider_error: str | None = None,
    shift: ShiftLimits | None = None,
) -> AnalysisResult:
    """Judge one analysis window; see the module docstring for the rules. With ``shift``, the
    predictions too (plan.predictions), when both samples carry them."""
    t = thresholds or AnalysisThresholds()
    c, s = _counts(canary), _counts(stable)
    why_not = _unjudgeable(canary, c, t, provider_error)
    if why_not is not None or c is None:
        return AnalysisResult(Verdict.INCONCLUSIVE, why_not or "", _measure(canary, stable))

    findings: list[Finding] = []
    baseline = s if s is not None and s.requests >= t.min_requests else None
    if stable is not None and s is None:
        findings.append(
            Finding(Verdict.INCONCLUSIVE, "stable request or error series is missing or NaN")
        )
    error_finding, p_value = _judge_errors(c, s, baseline, t)
    findings.append(error_finding)
    stable_p99 = stable.p99_seconds if stable is not None else None
    slow = slow_counts(canary, stable, stable_p99, t)
    assert canary is not None  # _unjudgeable said so
    has_baseline = baseline is not None
    findings += judge_latency(canary.p99_seconds, stable_p99, has_baseline, t, c.requests, slow)

    judged = _judge_shift(canary, stable, shift)
    measured = _measure(canary, stable, p_value)
    if judged is not None:
        findings.append(judged.finding)
        measured = measured.model_copy(
            update={
                "prediction_divergence": judged.divergence,
                "prediction_p_value": judged.p_value,
            }
        )
    for verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.PASS):
        chosen = [f.text for f in findings if f.verdict is verdict]
        if chosen:
            return AnalysisResult(verdict, "; ".join(chosen), measured)
    raise AssertionError("the error-rate check always yields a finding")


def _judge_shift(
    canary: TrackSample, stable: TrackSample | None, shift: ShiftLimits | None
) -> ShiftResult | None:
    if shift is None or stable is None or canary.outputs is None or stable.outputs is None:
        return None
    return judge_window(canary.outputs, stable.outputs, shift)


def _judge_errors(
    c: _Counts, s: _Counts | None, baseline: _Counts | None, t: AnalysisThresholds
) -> tuple[Finding, float | None]:
    if baseline is None:
        little = (
            "no stable baseline"
            if s is None
            else f"stable served only {s.requests} requests, too few to compare"
        )
        head = f"canary error rate {_rate_text(c)}"
        if c.rate <= t.max_error_rate:
            return (
                Finding(
                    Verdict.PASS,
                    f"{head} within the {_limit_pct(t.max_error_rate)} limit ({little})",
                ),
                None,
            )
        p = binomial_sf(c.errors, c.requests, t.max_error_rate)
        if p < t.significance:
            text = (
                f"{head} is significantly above the {_limit_pct(t.max_error_rate)} limit "
                f"(p={pvalue_text(p)}; {little})"
            )
            return Finding(Verdict.FAIL, text), p
        text = (
            f"{head} is above the {_limit_pct(t.max_error_rate)} limit but not significantly "
            f"(p={pvalue_text(p)} >= {t.significance:g}; {little}); waiting for more data"
        )
        return Finding(Verdict.INCONCLUSIVE, text), p

    head = f"canary error rate {_rate_text(c)} vs stable {_rate_text(baseline)}"
    limits: list[str] = []
    if c.rate > t.max_error_rate:
        limits.append(f"{_limit_pct(t.max_error_rate)} absolute")
    if t.max_error_rate_increase is not None and c.rate - baseline.rate > (
        t.max_error_rate_increase
    ):
        limits.append(f"stable + {t.max_error_rate_increase * 100:g} points")
    if not limits:
        return Finding(Verdict.PASS, f"{head}: within limits"), None

    p = fisher_greater(c.errors, c.requests, baseline.errors, baseline.requests)
    z = two_proportion_z(c.errors, c.requests, baseline.errors, baseline.requests)
    stats = f"z={z:.1f}, p={pvalue_text(p)}"
    over = f"exceeds {' and '.join(limits)}"
    if p < t.significance:
        return Finding(Verdict.FAIL, f"{head}: {over}, {stats}"), p
    if baseline.rate > t.max_error_rate:
        text = (
            f"{head}: {over}, but the stable is failing too and the canary is not "
            f"significantly worse ({stats}); not blaming the canary"
        )
        return Finding(Verdict.INCONCLUSIVE, text), p
    text = (
        f"{head}: {over}, but not significantly worse than stable "
        f"({stats} >= {t.significance:g}); waiting for more data"
    )
    return Finding(Verdict.INCONCLUSIVE, text), p


def next_failure_count(previous: int, verdict: Verdict) -> int:
    """Consecutive failed analyses after this verdict.

    Fail adds one, Pass resets to 0, Inconclusive keeps the count: a gap in the metrics (a
    Prometheus restart, a quiet minute) between two Fails must not launder a failing canary,
    and it is no evidence of failure either.
    """
    if previous < 0:
        raise ValueError(f"failure count cannot be negative, got {previous}")
    if verdict is Verdict.FAIL:
        return previous + 1
    if verdict is Verdict.PASS:
        return 0
    return previous


def should_rollback(failures: int, failure_limit: int) -> bool:
    """True once the consecutive failures reach the limit.

    The limit is the number of failed windows in a row that triggers a rollback (Flagger's
    ``threshold``; Argo Rollouts' ``failureLimit`` counts tolerated failures, one fewer): 1 rolls
    back on the first Fail, 2 on the second in a row.
    """
    if failure_limit < 1:
        raise ValueError(f"failure_limit must be at least 1, got {failure_limit}")
    return failures >= failure_limit
