"""Latency checks of one analysis window: the p99 against its limits, and, when both tracks
have histograms, the slow-request counts that say whether a slower p99 is more than noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelrollout.plan.samples import TrackSample

from .stats import fisher_greater
from .verdicts import AnalysisThresholds, Finding, Verdict, pvalue_text, seconds_text

__all__ = ["judge_latency", "slow_counts"]


def judge_latency(
    canary_p99: float | None,
    stable_p99: float | None,
    has_baseline: bool,
    t: AnalysisThresholds,
    canary_requests: int,
    slow: Slow | None = None,
) -> list[Finding]:
    if t.max_p99_ratio is None and t.max_p99_seconds is None:
        return []
    if canary_p99 is None:
        return [Finding(Verdict.INCONCLUSIVE, "canary p99 latency series is missing or NaN")]
    head = f"canary p99 {seconds_text(canary_p99)}"
    if canary_p99 <= t.p99_floor_seconds:
        return [
            Finding(Verdict.PASS, f"{head} is under the {seconds_text(t.p99_floor_seconds)} floor")
        ]
    findings: list[Finding] = []
    if t.max_p99_seconds is not None:
        if canary_p99 > t.max_p99_seconds:
            text = f"{head} above the {seconds_text(t.max_p99_seconds)} limit"
            findings.append(Finding(Verdict.FAIL, text))
        else:
            text = f"{head} within the {seconds_text(t.max_p99_seconds)} limit"
            findings.append(Finding(Verdict.PASS, text))
    if t.max_p99_ratio is not None:
        if not has_baseline:
            findings.append(Finding(Verdict.PASS, f"{head} (no stable baseline to compare)"))
        elif slow is not None and stable_p99 is not None:
            findings.append(_judge_slow(head, canary_p99, stable_p99, slow, t))
        elif canary_requests < t.min_latency_requests:
            text = (
                f"{head} not compared: {canary_requests} requests, fewer than the "
                f"{t.min_latency_requests} a p99 needs"
            )
            findings.append(Finding(Verdict.PASS, text))
        elif stable_p99 is None:
            text = "stable p99 latency series is missing or NaN"
            findings.append(Finding(Verdict.INCONCLUSIVE, text))
        else:
            ratio = canary_p99 / stable_p99 if stable_p99 > 0 else math.inf
            text = f"{head} vs stable {seconds_text(stable_p99)}: ratio {ratio:.2f}"
            if ratio > t.max_p99_ratio:
                text += f" above the {t.max_p99_ratio:g} limit"
                findings.append(Finding(Verdict.FAIL, text))
            else:
                text += f" within the {t.max_p99_ratio:g} limit"
                findings.append(Finding(Verdict.PASS, text))
    return findings


@dataclass(frozen=True, slots=True)
class Slow:
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


def slow_counts(
    canary: TrackSample | None,
    stable: TrackSample | None,
    stable_p99: float | None,
    t: AnalysisThresholds,
) -> Slow | None:
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
    return Slow(bound, c_slow, c_total, s_slow, s_total)


def _judge_slow(
    head: str, canary_p99: float, stable_p99: float, slow: Slow, t: AnalysisThresholds
) -> Finding:
    """The p99 ratio says whether the canary looks slower; the slow-request counts say whether
    that is more than noise (one-sided Fisher test at the error tests' significance)."""
    assert t.max_p99_ratio is not None
    ratio = canary_p99 / stable_p99 if stable_p99 > 0 else math.inf
    text = f"{head} vs stable {seconds_text(stable_p99)}: ratio {ratio:.2f}"
    if ratio <= t.max_p99_ratio:
        return Finding(Verdict.PASS, f"{text} within the {t.max_p99_ratio:g} limit")
    counts = (
        f"{slow.canary_slow}/{slow.canary_total} canary requests slower than "
        f"{seconds_text(slow.bound)} vs {slow.stable_slow}/{slow.stable_total} stable"
    )
    p = fisher_greater(slow.canary_slow, slow.canary_total, slow.stable_slow, slow.stable_total)
    if slow.canary_slow / slow.canary_total > 0.01 and p < t.significance:
        return Finding(
            Verdict.FAIL,
            f"{text} above the {t.max_p99_ratio:g} limit; {counts}, p={pvalue_text(p)}",
        )
    return Finding(
        Verdict.INCONCLUSIVE,
        f"{text} above the {t.max_p99_ratio:g} limit but not significant; {counts}, "
        f"p={pvalue_text(p)}",
    )
