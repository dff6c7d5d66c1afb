"""Sequential canary verdicts: judge the evidence since the canary started, at every read.

Where ``plan.analysis`` judges each window afresh, this judges the running evidence of
``plan.evidence`` (the mixture likelihood ratios of ``plan.evalues``), so a regression fails
as soon as the evidence suffices and a healthy canary is ever failed with probability at most
``significance`` over the whole rollout, however often it is read (Ville's inequality; see
``plan.evalues``). The budget is split: half for errors and half for latency when both are
judged; the latency half again equally over the histogram bounds tested (Bonferroni), so each
bound's evidence can be reported on its own.

Verdicts:

- **Fail**: a limit is exceeded on the counts since the canary started *and* the e-value for
  "the canary is worse than the stable" reached its threshold. Errors: the canary's error rate
  over ``max_error_rate`` or more than ``max_error_rate_increase`` above the stable's. Latency:
  the canary's p99 (from its histogram since the start) over ``max_latency_ratio`` x the
  stable's and over the floor, and at some histogram bound the canary has more than
  ``min_slow_share`` of its requests slower than it and its evidence reached its threshold
  (the bound where the canary's share of slower requests rises most is usually well below the
  p99: a tail bound alone sees a few requests per read). Latency is
  judged once both tracks have ``min_requests`` in their histograms. Without a stable (the bake
  window) errors are tested against ``max_error_rate`` alone and latency is not judged.
- **Pass**: no limit is exceeded and the step's exposure (``step_requests``, the canary
  requests since the step began) reached ``min_requests``.
- **Inconclusive**: neither: too little exposure yet, or a limit exceeded without enough
  evidence (waiting for more), or the stable as bad as the canary (not blamed, not passed).

The limits are a gate on top of the test, never a replacement: they can only remove Fails, so
the false-rollback bound holds whatever they are set to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .analysis import Verdict
from .evalues import limit_log_evalue, log_mixture
from .evidence import LATENCY_FLOOR_SECONDS, Evidence, Totals
from .verdicts import percent_text, seconds_text

__all__ = ["SequentialLimits", "SequentialResult", "judge", "quantile"]

# e-values are shown, not computed with, past this (exp overflows near 709).
_MAX_LOG = 690.0


@dataclass(frozen=True, slots=True)
class SequentialLimits:
    """What a canary is held to; rates are fractions (0.05 = 5%)."""

    max_error_rate: float = 0.05
    max_error_rate_increase: float | None = 0.02
    max_latency_ratio: float | None = 1.5
    # Share of the canary's requests that must be slower than the tested bound.
    min_slow_share: float = 0.01
    # Canary requests a step needs to pass; also what a stable needs to be a baseline.
    min_requests: int = 50
    # Probability of ever failing a canary as good as the stable, over the whole rollout.
    significance: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(f"max_error_rate must be in [0, 1], got {self.max_error_rate}")
        inc = self.max_error_rate_increase
        if inc is not None and not 0.0 <= inc <= 1.0:
            raise ValueError(f"max_error_rate_increase must be in [0, 1], got {inc}")
        ratio = self.max_latency_ratio
        if ratio is not None and not (math.isfinite(ratio) and ratio >= 1.0):
            raise ValueError(f"max_latency_ratio must be >= 1, got {ratio}")
        if not 0.0 <= self.min_slow_share < 1.0:
            raise ValueError(f"min_slow_share must be in [0, 1), got {self.min_slow_share}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be at least 1, got {self.min_requests}")
        if not 0.0 < self.significance < 1.0:
            raise ValueError(f"significance must be in (0, 1), got {self.significance}")


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """The verdict, why, and the running evidence behind it (for status and events)."""

    verdict: Verdict
    reason: str
    canary_requests: int
    canary_errors: int
    stable_requests: int
    stable_errors: int
    error_evalue: float  # against "canary error rate <= stable's" (or <= the limit)
    error_threshold: float  # the error_evalue that fails
    latency_evalue: float | None = None  # the strongest bound's; each bound has its threshold
    latency_threshold: float | None = None
    canary_p99_seconds: float | None = None
    stable_p99_seconds: float | None = None
    prediction_divergence: float | None = None
    prediction_evalue: float | None = None
    prediction_threshold: float | None = None

    def as_status(self) -> dict[str, Any]:
        """camelCase fields for a status block, leaving out what was not measured."""
        out: dict[str, Any] = {"verdict": str(self.verdict), "reason": self.reason}
        if self.canary_requests:
            out["canaryErrorRate"] = _shown(self.canary_errors / self.canary_requests)
        if self.stable_requests:
            out["stableErrorRate"] = _shown(self.stable_errors / self.stable_requests)
        for name in (
            "canary_requests",
            "canary_errors",
            "stable_requests",
            "stable_errors",
            "error_evalue",
            "error_threshold",
            "latency_evalue",
            "latency_threshold",
            "canary_p99_seconds",
            "stable_p99_seconds",
            "prediction_divergence",
            "prediction_evalue",
            "prediction_threshold",
        ):
            value = getattr(self, name)
            if value is not None:
                head, *rest = name.split("_")
                out[head + "".join(p.capitalize() for p in rest)] = _shown(value)
        return out


def _shown(value: float) -> float:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def quantile(
    bounds: tuple[float, ...], fast: tuple[int, ...], total: int, q: float
) -> float | None:
    """Prometheus' histogram_quantile on cumulative counts: linear within the bucket holding
    rank q x total. None without requests; the highest finite bound past the last one."""
    if total <= 0 or not bounds:
        return None
    rank = q * total
    lower, below = 0.0, 0
    for le, count in zip(bounds, fast, strict=True):
        if count >= rank:
            return lower + (le - lower) * (rank - below) / max(count - below, 1)
        lower, below = le, count
    return lower


def _rate(t: Totals) -> str:
    return f"{percent_text(t.error_rate)} ({t.errors}/{t.requests})"


def _e(log_value: float) -> float:
    return math.exp(min(log_value, _MAX_LOG))


@dataclass(frozen=True, slots=True)
class _Finding:
    verdict: Verdict
    text: str


def judge(evidence: Evidence, limits: SequentialLimits, step_requests: int) -> SequentialResult:
    """The verdict on the evidence so far; see the module docstring for the rules."""
    c, s = evidence.canary, evidence.stable
    # The rate-ratio test needs no minimum from the stable: few stable requests only make its
    # evidence weaker. The bake window has no stable at all.
    baseline = evidence.last_stable is not None
    latency_judged = baseline and limits.max_latency_ratio is not None and bool(evidence.bounds)
    alpha_errors = limits.significance / 2 if latency_judged else limits.significance
    error_finding, log_error = _judge_errors(evidence, baseline, limits, alpha_errors)
    findings = [error_finding]
    lat_e: float | None = None
    lat_threshold: float | None = None
    p99s: tuple[float | None, float | None] = (None, None)
    if latency_judged:
        alpha_latency = limits.significance / 2
        lat_threshold = len(evidence.bounds) / alpha_latency
        finding, lat_e, p99s = _judge_latency(evidence, limits, lat_threshold)
        if finding is not None:
            findings.append(finding)
    if c.requests == 0:
        findings.append(_Finding(Verdict.INCONCLUSIVE, "no canary requests yet"))
    elif step_requests < limits.min_requests:
        findings.append(
            _Finding(
                Verdict.INCONCLUSIVE,
                f"canary served {step_requests} requests in this step, fewer than the "
                f"{limits.min_requests} needed to pass it",
            )
        )
    verdict = next(
        v
        for v in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.PASS)
        if any(f.verdict is v for f in findings)
    )
    return SequentialResult(
        verdict=verdict,
        reason="; ".join(f.text for f in findings if f.verdict is verdict),
        canary_requests=c.requests,
        canary_errors=c.errors,
        stable_requests=s.requests,
        stable_errors=s.errors,
        error_evalue=_e(log_error),
        error_threshold=1 / alpha_errors,
        latency_evalue=lat_e,
        latency_threshold=lat_threshold,
        canary_p99_seconds=p99s[0],
        stable_p99_seconds=p99s[1],
    )


def _judge_errors(
    evidence: Evidence, baseline: bool, limits: SequentialLimits, alpha: float
) -> tuple[_Finding, float]:
    c, s = evidence.canary, evidence.stable
    threshold = math.log(1 / alpha)
    if not baseline:
        log_e = limit_log_evalue(c.errors, c.requests, limits.max_error_rate)
        head = f"canary error rate {_rate(c)} since it started (no stable baseline)"
        limit = f"the {limits.max_error_rate * 100:g}% limit"
        if c.error_rate <= limits.max_error_rate:
            return _Finding(Verdict.PASS, f"{head} within {limit}"), log_e
        stats = f"e-value {_e(log_e):.3g}, fails at {1 / alpha:.3g}"
        if log_e >= threshold:
            return _Finding(Verdict.FAIL, f"{head} is above {limit}: {stats}"), log_e
        return _Finding(Verdict.INCONCLUSIVE, f"{head} is above {limit}, {stats}"), log_e

    log_e = log_mixture(evidence.log_errors)
    head = f"canary error rate {_rate(c)} vs stable {_rate(s)} since the canary started"
    over = []
    if c.error_rate > limits.max_error_rate:
        over.append(f"{limits.max_error_rate * 100:g}% absolute")
    inc = limits.max_error_rate_increase
    if inc is not None and c.error_rate - s.error_rate > inc:
        over.append(f"stable + {inc * 100:g} points")
    if not over:
        return _Finding(Verdict.PASS, f"{head}: within limits"), log_e
    stats = f"e-value {_e(log_e):.3g}, fails at {1 / alpha:.3g}"
    if log_e >= threshold:
        return _Finding(Verdict.FAIL, f"{head}: exceeds {' and '.join(over)}, {stats}"), log_e
    if s.error_rate > limits.max_error_rate:
        text = f"{head}: the stable is failing too, not blaming the canary ({stats})"
        return _Finding(Verdict.INCONCLUSIVE, text), log_e
    text = f"{head}: exceeds {' and '.join(over)}, not significant yet ({stats})"
    return _Finding(Verdict.INCONCLUSIVE, text), log_e


def _judge_latency(
    evidence: Evidence, limits: SequentialLimits, threshold: float
) -> tuple[_Finding | None, float, tuple[float | None, float | None]]:
    """Latency on the histograms since the canary started: the p99 ratio gates, the
    slow-request evidence at the strongest bound decides."""
    assert limits.max_latency_ratio is not None
    c, s, bounds = evidence.canary, evidence.stable, evidence.bounds
    # Each bound is tested at significance / (2 x bounds); threshold is its reciprocal.
    scaled = [_e(log_mixture(row)) for row in evidence.log_latency]
    strongest = max(scaled, default=0.0)
    c99 = quantile(bounds, c.fast, c.observed, 0.99)
    s99 = quantile(bounds, s.fast, s.observed, 0.99)
    if c99 is None or s99 is None:
        return None, strongest, (c99, s99)
    if min(c.observed, s.observed) < limits.min_requests:
        # A p99 of a few dozen requests is their slowest one or two: one scheduling stall.
        return None, strongest, (c99, s99)
    head = f"canary p99 {seconds_text(c99)} vs stable {seconds_text(s99)} since the canary started"
    ratio = c99 / s99 if s99 > 0 else math.inf
    if c99 <= LATENCY_FLOOR_SECONDS:
        text = f"{head}: under the {seconds_text(LATENCY_FLOOR_SECONDS)} floor"
        return _Finding(Verdict.PASS, text), strongest, (c99, s99)
    if ratio <= limits.max_latency_ratio:
        text = f"{head}: ratio {ratio:.2f} within the {limits.max_latency_ratio:g} limit"
        return _Finding(Verdict.PASS, text), strongest, (c99, s99)
    head = f"{head}: ratio {ratio:.2f} above the {limits.max_latency_ratio:g} limit"
    candidates = [
        i
        for i, b in enumerate(bounds)
        if c.observed and c.slow(i) / c.observed > limits.min_slow_share
    ]
    if not candidates:
        text = f"{head}, but too few canary requests are slow to tell"
        return _Finding(Verdict.INCONCLUSIVE, text), strongest, (c99, s99)
    best = max(candidates, key=lambda i: scaled[i])
    counts = (
        f"{c.slow(best)}/{c.observed} canary requests slower than {seconds_text(bounds[best])} vs "
        f"{s.slow(best)}/{s.observed} stable, e-value {scaled[best]:.3g}, fails at {threshold:.3g}"
    )
    if scaled[best] >= threshold:
        return _Finding(Verdict.FAIL, f"{head}; {counts}"), strongest, (c99, s99)
    return (
        _Finding(Verdict.INCONCLUSIVE, f"{head}, not significant yet; {counts}"),
        strongest,
        (c99, s99),
    )
