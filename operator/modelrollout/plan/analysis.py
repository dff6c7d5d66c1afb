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

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelrollout.plan.samples import TrackSample

from .stats import binomial_sf, fisher_greater, two_proportion_z

__all__ = [
    "AnalysisResult",
    "AnalysisThresholds",
    "Verdict",
    "analyse",
    "next_failure_count",
    "should_rollback",
]


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True, slots=True)
class AnalysisThresholds:
    """Limits one analysis window is judged against; rates are fractions (0.05 = 5%)."""

    # Canary 5xx rate above this fails (when significant).
    max_error_rate: float = 0.05
    # Canary 5xx rate more than this above the stable's fails (when significant); 0.02 means
    # 2 percentage points, so 0.5% -> 3% fails. None turns the relative limit off.
    max_error_rate_increase: float | None = 0.02
    # Canary p99 / stable p99 above this fails; None turns the ratio off.
    max_p99_ratio: float | None = 1.5
    # A canary p99 at or below this never fails on latency: at a few milliseconds, ratios are
    # histogram-bucket noise (2 ms vs 1 ms is not a regression anyone should roll back for).
    p99_floor_seconds: float = 0.01
    # Canary p99 above this fails whatever the stable does; None turns it off.
    max_p99_seconds: float | None = None
    # Fewer canary requests than this and the p99 ratio is not judged: the p99 of a hundred
    # requests is its single slowest one, and one scheduling hiccup would fail the window.
    min_latency_requests: int = 200
    # Fewer canary requests than this in the window: Inconclusive. Also the least a stable
    # needs to serve to be compared against.
    min_requests: int = 50
    # One-sided significance level of the error-rate tests.
    significance: float = 0.001

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(f"max_error_rate must be in [0, 1], got {self.max_error_rate}")
        if self.max_error_rate_increase is not None and not (
            0.0 <= self.max_error_rate_increase <= 1.0
        ):
            raise ValueError(
                f"max_error_rate_increase must be in [0, 1], got {self.max_error_rate_increase}"
            )
        if self.max_p99_ratio is not None and not (
            math.isfinite(self.max_p99_ratio) and self.max_p99_ratio > 0
        ):
            raise ValueError(f"max_p99_ratio must be positive, got {self.max_p99_ratio}")
        if not (math.isfinite(self.p99_floor_seconds) and self.p99_floor_seconds >= 0):
            raise ValueError(f"p99_floor_seconds must be >= 0, got {self.p99_floor_seconds}")
        if self.max_p99_seconds is not None and not (
            math.isfinite(self.max_p99_seconds) and self.max_p99_seconds > 0
        ):
            raise ValueError(f"max_p99_seconds must be positive, got {self.max_p99_seconds}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be at least 1, got {self.min_requests}")
        if not 0.0 < self.significance < 1.0:
            raise ValueError(f"significance must be in (0, 1), got {self.significance}")


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """The verdict, why, and what was measured (for status, events and metrics)."""

    verdict: Verdict
    reason: str
    canary_requests: int | None = None
    canary_errors: int | None = None
    canary_error_rate: float | None = None
    canary_p99_seconds: float | None = None
    stable_requests: int | None = None
    stable_errors: int | None = None
    stable_error_rate: float | None = None
    stable_p99_seconds: float | None = None
    p99_ratio: float | None = None  # canary / stable, when both are known
    z: float | None = None  # pooled two-proportion z of canary vs stable error rate
    p_value: float | None = None  # of the error-rate test that ran, if one did

    def as_status(self) -> dict[str, Any]:
        """camelCase fields for a status block, leaving out what was not measured."""
        out: dict[str, Any] = {"verdict": str(self.verdict), "reason": self.reason}
        for name in (
            "canary_requests",
            "canary_errors",
            "canary_error_rate",
            "canary_p99_seconds",
            "stable_requests",
            "stable_errors",
            "stable_error_rate",
            "stable_p99_seconds",
            "p99_ratio",
            "z",
            "p_value",
        ):
            value = getattr(self, name)
            if value is not None:
                head, *rest = name.split("_")
                out[head + "".join(part.capitalize() for part in rest)] = value
        return out


@dataclass(frozen=True, slots=True)
class _Finding:
    verdict: Verdict
    text: str


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


def _pct(rate: float) -> str:
    if rate == 0:
        return "0%"
    return f"{rate * 100:.1f}%" if rate >= 0.01 else f"{rate * 100:.2f}%"


def _limit_pct(rate: float) -> str:
    return f"{rate * 100:g}%"


def _rate_text(counts: _Counts) -> str:
    return f"{_pct(counts.rate)} ({counts.errors}/{counts.requests})"


def _secs(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1000:.3g} ms"


def _pvalue(p: float) -> str:
    return f"{p:.2g}"


def analyse(
    canary: TrackSample | None,
    stable: TrackSample | None,
    thresholds: AnalysisThresholds | None = None,
    provider_error: str | None = None,
) -> AnalysisResult:
    """Judge one analysis window; see the module docstring for the rules."""
    t = thresholds or AnalysisThresholds()
    c = _counts(canary)
    s = _counts(stable)
    z: float | None = None
    ratio: float | None = None
    if c is not None and s is not None and c.requests and s.requests:
        z = two_proportion_z(c.errors, c.requests, s.errors, s.requests)
    canary_p99 = canary.p99_seconds if canary is not None else None
    stable_p99 = stable.p99_seconds if stable is not None else None
    if canary_p99 is not None and stable_p99 is not None and stable_p99 > 0:
        ratio = canary_p99 / stable_p99

    def result(verdict: Verdict, reason: str, p_value: float | None = None) -> AnalysisResult:
        return AnalysisResult(
            verdict=verdict,
            reason=reason,
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

    if provider_error is not None:
        return result(Verdict.INCONCLUSIVE, f"metrics provider error: {provider_error}")
    if canary is None:
        return result(Verdict.INCONCLUSIVE, "no canary metrics sample")
    if c is None:
        return result(Verdict.INCONCLUSIVE, "canary request or error series is missing or NaN")
    if c.requests < t.min_requests:
        return result(
            Verdict.INCONCLUSIVE,
            f"canary served {c.requests} requests in the {canary.window_seconds:g}s window, "
            f"fewer than the {t.min_requests} needed to judge it",
        )

    findings: list[_Finding] = []
    baseline = s if s is not None and s.requests >= t.min_requests else None
    if stable is not None and s is None:
        findings.append(
            _Finding(Verdict.INCONCLUSIVE, "stable request or error series is missing or NaN")
        )

    error_finding, p_value = _judge_errors(c, s, baseline, t)
    findings.append(error_finding)
    findings.extend(
        _judge_latency(
            canary_p99,
            stable_p99,
            baseline is not None,
            t,
            c.requests,
            _slow_counts(canary, stable, stable_p99, t),
        )
    )

    for verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.PASS):
        chosen = [f.text for f in findings if f.verdict is verdict]
        if chosen:
            return result(verdict, "; ".join(chosen), p_value)
    raise AssertionError("the error-rate check always yields a finding")


def _judge_errors(
    c: _Counts, s: _Counts | None, baseline: _Counts | None, t: AnalysisThresholds
) -> tuple[_Finding, float | None]:
    if baseline is None:
        little = (
            "no stable baseline"
            if s is None
            else f"stable served only {s.requests} requests, too few to compare"
        )
        head = f"canary error rate {_rate_text(c)}"
        if c.rate <= t.max_error_rate:
            return (
                _Finding(
                    Verdict.PASS,
                    f"{head} within the {_limit_pct(t.max_error_rate)} limit ({little})",
                ),
                None,
            )
        p = binomial_sf(c.errors, c.requests, t.max_error_rate)
        if p < t.significance:
            text = (
                f"{head} is significantly above the {_limit_pct(t.max_error_rate)} limit "
                f"(p={_pvalue(p)}; {little})"
            )
            return _Finding(Verdict.FAIL, text), p
        text = (
            f"{head} is above the {_limit_pct(t.max_error_rate)} limit but not significantly "
            f"(p={_pvalue(p)} >= {t.significance:g}; {little}); waiting for more data"
        )
        return _Finding(Verdict.INCONCLUSIVE, text), p

    head = f"canary error rate {_rate_text(c)} vs stable {_rate_text(baseline)}"
    limits: list[str] = []
    if c.rate > t.max_error_rate:
        limits.append(f"{_limit_pct(t.max_error_rate)} absolute")
    if t.max_error_rate_increase is not None and c.rate - baseline.rate > (
        t.max_error_rate_increase
    ):
        limits.append(f"stable + {t.max_error_rate_increase * 100:g} points")
    if not limits:
        return _Finding(Verdict.PASS, f"{head}: within limits"), None

    p = fisher_greater(c.errors, c.requests, baseline.errors, baseline.requests)
    z = two_proportion_z(c.errors, c.requests, baseline.errors, baseline.requests)
    stats = f"z={z:.1f}, p={_pvalue(p)}"
    over = f"exceeds {' and '.join(limits)}"
    if p < t.significance:
        return _Finding(Verdict.FAIL, f"{head}: {over}, {stats}"), p
    if baseline.rate > t.max_error_rate:
        text = (
            f"{head}: {over}, but the stable is failing too and the canary is not "
            f"significantly worse ({stats}); not blaming the canary"
        )
        return _Finding(Verdict.INCONCLUSIVE, text), p
    text = (
        f"{head}: {over}, but not significantly worse than stable "
        f"({stats} >= {t.significance:g}); waiting for more data"
    )
    return _Finding(Verdict.INCONCLUSIVE, text), p


def _judge_latency(
    canary_p99: float | None,
    stable_p99: float | None,
    has_baseline: bool,
    t: AnalysisThresholds,
    canary_requests: int,
    slow: _Slow | None = None,
) -> list[_Finding]:
    if t.max_p99_ratio is None and t.max_p99_seconds is None:
        return []
    if canary_p99 is None:
        return [_Finding(Verdict.INCONCLUSIVE, "canary p99 latency series is missing or NaN")]
    head = f"canary p99 {_secs(canary_p99)}"
    if canary_p99 <= t.p99_floor_seconds:
        return [_Finding(Verdict.PASS, f"{head} is under the {_secs(t.p99_floor_seconds)} floor")]
    findings: list[_Finding] = []
    if t.max_p99_seconds is not None:
        if canary_p99 > t.max_p99_seconds:
            text = f"{head} above the {_secs(t.max_p99_seconds)} limit"
            findings.append(_Finding(Verdict.FAIL, text))
        else:
            text = f"{head} within the {_secs(t.max_p99_seconds)} limit"
            findings.append(_Finding(Verdict.PASS, text))
    if t.max_p99_ratio is not None:
        if not has_baseline:
            findings.append(_Finding(Verdict.PASS, f"{head} (no stable baseline to compare)"))
        elif slow is not None and stable_p99 is not None:
            findings.append(_judge_slow(head, canary_p99, stable_p99, slow, t))
        elif canary_requests < t.min_latency_requests:
            text = (
                f"{head} not compared: {canary_requests} requests, fewer than the "
                f"{t.min_latency_requests} a p99 needs"
            )
            findings.append(_Finding(Verdict.PASS, text))
        elif stable_p99 is None:
            text = "stable p99 latency series is missing or NaN"
            findings.append(_Finding(Verdict.INCONCLUSIVE, text))
        else:
            ratio = canary_p99 / stable_p99 if stable_p99 > 0 else math.inf
            text = f"{head} vs stable {_secs(stable_p99)}: ratio {ratio:.2f}"
            if ratio > t.max_p99_ratio:
                text += f" above the {t.max_p99_ratio:g} limit"
                findings.append(_Finding(Verdict.FAIL, text))
            else:
                text += f" within the {t.max_p99_ratio:g} limit"
                findings.append(_Finding(Verdict.PASS, text))
    return findings


@dataclass(frozen=True, slots=True)
class _Slow:
    """Requests slower than `bound` seconds, in each track."""

    bound: float
    canary_slow: int
    canary_total: int
    stable_slow: int
    stable_total: int


def _cumulative_at(buckets: tuple[tuple[float, float], ...], bound: float) -> float | None:
    for le, count in buckets:
        if le == bound:
            return count
    return None


def _slow_counts(
    canary: TrackSample | None,
    stable: TrackSample | None,
    stable_p99: float | None,
    t: AnalysisThresholds,
) -> _Slow | None:
    """Count, in both tracks, the requests slower than a histogram bound between the stable's
    p99 and the limit (stable p99 x max ratio), or else the first bound above the limit.
    Counts can be tested for significance; two lone p99 values cannot."""
    if canary is None or stable is None or stable_p99 is None or t.max_p99_ratio is None:
        return None
    cb, sb = canary.latency_buckets, stable.latency_buckets
    if not cb or not sb:
        return None
    limit = max(stable_p99 * t.max_p99_ratio, t.p99_floor_seconds)
    finite = [le for le, _ in cb if math.isfinite(le)]
    between = [le for le in finite if stable_p99 < le <= limit]
    above = [le for le in finite if le >= limit]
    bound = between[-1] if between else (above[0] if above else None)
    if bound is None:
        return None
    c_at, s_at = _cumulative_at(cb, bound), _cumulative_at(sb, bound)
    if c_at is None or s_at is None:
        return None
    c_total, s_total = round(cb[-1][1]), round(sb[-1][1])
    c_slow = min(c_total, max(0, c_total - round(c_at)))
    s_slow = min(s_total, max(0, s_total - round(s_at)))
    if c_total == 0 or s_total == 0:
        return None
    return _Slow(bound, c_slow, c_total, s_slow, s_total)


def _judge_slow(
    head: str, canary_p99: float, stable_p99: float, slow: _Slow, t: AnalysisThresholds
) -> _Finding:
    """The p99 ratio says whether the canary looks slower; the slow-request counts say whether
    that is more than noise (one-sided Fisher test at the error tests' significance)."""
    assert t.max_p99_ratio is not None
    ratio = canary_p99 / stable_p99 if stable_p99 > 0 else math.inf
    text = f"{head} vs stable {_secs(stable_p99)}: ratio {ratio:.2f}"
    if ratio <= t.max_p99_ratio:
        return _Finding(Verdict.PASS, f"{text} within the {t.max_p99_ratio:g} limit")
    counts = (
        f"{slow.canary_slow}/{slow.canary_total} canary requests slower than "
        f"{_secs(slow.bound)} vs {slow.stable_slow}/{slow.stable_total} stable"
    )
    p = fisher_greater(slow.canary_slow, slow.canary_total, slow.stable_slow, slow.stable_total)
    if slow.canary_slow / slow.canary_total > 0.01 and p < t.significance:
        return _Finding(
            Verdict.FAIL,
            f"{text} above the {t.max_p99_ratio:g} limit; {counts}, p={_pvalue(p)}",
        )
    return _Finding(
        Verdict.INCONCLUSIVE,
        f"{text} above the {t.max_p99_ratio:g} limit but not significant; {counts}, p={_pvalue(p)}",
    )


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
