"""Prediction shift: does the canary predict differently from the stable? Pure, no I/O.

The model servers count their predictions per output in fixed buckets
(``modelserver_output_bucket_total``; docs/reference-profile.md). Canary and stable counts of
one output are two distributions over the same buckets; the check asks for both a large
**effect** and significant **evidence** before it fails, like the error checks:

- effect: the Jensen-Shannon divergence (base 2, 0 = identical, 1 = disjoint) between the two
  since the canary started (sequential) or over the window (windows). Over ``maxDivergence``
  is a shift worth rolling back for; at or under it, Pass.
- evidence, windows method: a G-test of homogeneity on the 2 x buckets table of the window
  (chi-square with buckets - 1 degrees of freedom), its p-value under ``significance`` divided
  by the outputs judged (Bonferroni).
- evidence, sequential method: an e-process that stays valid however often it is read. Within
  one read's increment, if both tracks predict alike, which of the increment's predictions went
  to the canary is a random subset: the canary's bucket counts are a draw without replacement
  from the pooled ones. For any bucket weights ``w`` fixed before the increment,
  ``prod_b w_b^c_b / (sum_b q_b w_b)^n_c`` (``c_b`` the canary's counts, ``n_c`` their sum,
  ``q_b`` the pooled shares) then has expectation at most 1: drawing without replacement is
  dominated in the convex order by drawing with replacement (Hoeffding 1963, theorem 4), under
  which the expectation is exactly 1. The product over reads is a nonnegative supermartingale,
  so by Ville's inequality it reaches ``1 / alpha`` with probability at most alpha. The
  weights bet on the shift seen so far: the ratio of the canary's to the stable's smoothed
  bucket shares before the increment, tempered by powers in ``TEMPERS`` (a mixture, as in
  ``plan.evalues``). A mirrored canary that sees the stable's very requests pools equal counts,
  where the factor is at most 1 (the weighted geometric mean is at most the arithmetic one):
  still valid. Requests are assumed exchangeable between the tracks (random traffic split or a
  mirror), as the error test assumes.

The budget ``significance`` is the check's own, besides the analysis' one for errors and
latency: the probability of ever failing a canary that predicts like the stable. Outputs with
fewer than ``min_requests`` predictions on either side are Inconclusive; outputs counted in
different buckets by the two tracks (a changed reference profile) are not judged. A Fail names
the buckets that moved most.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .evalues import log_mixture
from .stats import chi2_sf
from .verdicts import Finding, Verdict, percent_text, pvalue_text

__all__ = [
    "TEMPERS",
    "Buckets",
    "OutputEvidence",
    "PredictionEvidence",
    "ShiftLimits",
    "ShiftResult",
    "js_divergence",
    "judge_sequential",
    "judge_window",
]

# output -> bucket label -> count (cumulative counters, or a window's increase)
Buckets = Mapping[str, Mapping[str, float]]
TEMPERS: tuple[float, ...] = (0.25, 0.5, 1.0)
_MAX_LOG = 690.0


@dataclass(frozen=True, slots=True)
class ShiftLimits:
    max_divergence: float = 0.05
    significance: float = 0.01
    min_requests: int = 50

    def __post_init__(self) -> None:
        if not 0.0 < self.max_divergence <= 1.0:
            raise ValueError(f"max_divergence must be in (0, 1], got {self.max_divergence}")
        if not 0.0 < self.significance < 1.0:
            raise ValueError(f"significance must be in (0, 1), got {self.significance}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be at least 1, got {self.min_requests}")


@dataclass(frozen=True, slots=True)
class ShiftResult:
    """The check's finding and what it measured (largest divergence, strongest evidence)."""

    finding: Finding
    divergence: float | None = None
    evalue: float | None = None  # sequential
    threshold: float | None = None  # sequential: the evalue that fails one output
    p_value: float | None = None  # windows: the smallest


def _order(label: str) -> tuple[int, float, str]:
    """Buckets in a readable order: numbers ascending, then +Inf, then names, then other."""
    if label == "other":
        return (3, 0.0, label)
    try:
        value = float(label)
    except ValueError:
        return (2, 0.0, label)
    return (0 if math.isfinite(value) else 1, value, label)


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence of two count vectors (normalised here), base 2, in [0, 1]."""
    tp, tq = sum(p), sum(q)
    if tp <= 0 or tq <= 0:
        return 0.0
    out = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = a / tp, b / tq
        m = (a + b) / 2
        if a > 0:
            out += a * math.log2(a / m) / 2
        if b > 0:
            out += b * math.log2(b / m) / 2
    return min(1.0, max(0.0, out))


def _moved(labels: Sequence[str], c: Sequence[float], s: Sequence[float], top: int = 3) -> str:
    """The buckets whose shares moved most, as text: `bucket 1 12% -> 80%`."""
    tc, ts = max(sum(c), 1), max(sum(s), 1)
    moves = sorted(range(len(labels)), key=lambda i: -abs(c[i] / tc - s[i] / ts))[:top]
    return ", ".join(
        f"bucket {labels[i]} {percent_text(s[i] / ts)} -> {percent_text(c[i] / tc)}"
        for i in moves
        if c[i] / tc != s[i] / ts
    )


def _common(canary: Buckets, stable: Buckets) -> dict[str, tuple[str, ...]]:
    """Outputs both tracks count in the same buckets, with the buckets in order."""
    return {
        name: tuple(sorted(buckets, key=_order))
        for name, buckets in sorted(canary.items())
        if name in stable and set(stable[name]) == set(buckets) and len(buckets) >= 2
    }


def _combine(parts: list[tuple[Finding, float | None]]) -> Finding:
    verdict = next(
        v
        for v in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.PASS)
        if any(f.verdict is v for f, _ in parts)
    )
    return Finding(verdict, "; ".join(f.text for f, _ in parts if f.verdict is verdict))


def _effect_finding(
    name: str, c: Sequence[float], s: Sequence[float], limits: ShiftLimits, labels: Sequence[str]
) -> tuple[Finding | None, float, str]:
    """Pass or Inconclusive for the sample size and the effect; None: evidence decides."""
    nc, ns = round(sum(c)), round(sum(s))
    d = js_divergence(c, s)
    head = f"output {name}: divergence {d:.3g} between canary and stable predictions"
    if min(nc, ns) < limits.min_requests:
        text = (
            f"output {name}: {nc} canary and {ns} stable predictions, fewer than the "
            f"{limits.min_requests} needed to compare them"
        )
        return Finding(Verdict.INCONCLUSIVE, text), d, head
    if d <= limits.max_divergence:
        return Finding(Verdict.PASS, f"{head}, within {limits.max_divergence:g}"), d, head
    return None, d, f"{head} over {limits.max_divergence:g} ({_moved(labels, c, s)})"


# --- windows --------------------------------------------------------------------------------


def g_test(c: Sequence[float], s: Sequence[float]) -> float:
    """p-value of the G-test of homogeneity of two count vectors."""
    nc, ns = sum(c), sum(s)
    total = nc + ns
    g, df = 0.0, -1
    for a, b in zip(c, s, strict=True):
        k = a + b
        if k <= 0:
            continue
        df += 1
        for observed, n in ((a, nc), (b, ns)):
            if observed > 0:
                g += 2 * observed * math.log(observed / (k * n / total))
    return chi2_sf(g, df) if df >= 1 else 1.0


def judge_window(canary: Buckets, stable: Buckets, limits: ShiftLimits) -> ShiftResult | None:
    """The window's verdict on prediction shift; None when no output can be compared."""
    common = _common(canary, stable)
    if not common:
        return None
    alpha = limits.significance / len(common)
    parts: list[tuple[Finding, float | None]] = []
    top_d, min_p = 0.0, None
    for name, labels in common.items():
        c = [max(0.0, canary[name][b]) for b in labels]
        s = [max(0.0, stable[name][b]) for b in labels]
        finding, d, head = _effect_finding(name, c, s, limits, labels)
        top_d = max(top_d, d)
        if finding is not None:
            parts.append((finding, d))
            continue
        p = g_test(c, s)
        min_p = p if min_p is None else min(min_p, p)
        stats = f"G-test p={pvalue_text(p)}, fails under {alpha:.2g}"
        verdict = Verdict.FAIL if p < alpha else Verdict.INCONCLUSIVE
        tail = "" if verdict is Verdict.FAIL else ", not significant yet"
        parts.append((Finding(verdict, f"{head}: {stats}{tail}"), d))
    return ShiftResult(_combine(parts), divergence=top_d, p_value=min_p)


# --- sequential -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputEvidence:
    """One output's running evidence: counters at the last read, totals, log wealth per temper."""

    output: str
    buckets: tuple[str, ...]
    last_canary: tuple[int, ...]
    last_stable: tuple[int, ...]
    canary: tuple[int, ...]
    stable: tuple[int, ...]
    log_wealth: tuple[float, ...] = (0.0,) * len(TEMPERS)

    def update(self, c_now: tuple[int, ...], s_now: tuple[int, ...]) -> OutputEvidence:
        dc = [a - b for a, b in zip(c_now, self.last_canary, strict=True)]
        ds = [a - b for a, b in zip(s_now, self.last_stable, strict=True)]
        moved = replace(self, last_canary=c_now, last_stable=s_now)
        if any(v < 0 for v in (*dc, *ds)):
            return moved  # a counter went down (a pod left): drop the increment
        step = _log_factors(self.canary, self.stable, dc, ds)
        return replace(
            moved,
            canary=tuple(a + b for a, b in zip(self.canary, dc, strict=True)),
            stable=tuple(a + b for a, b in zip(self.stable, ds, strict=True)),
            log_wealth=tuple(w + f for w, f in zip(self.log_wealth, step, strict=True)),
        )


def _log_factors(
    c_tot: Sequence[int], s_tot: Sequence[int], dc: Sequence[int], ds: Sequence[int]
) -> list[float]:
    """log of one increment's factor per temper; the weights come from the totals before it."""
    nc, ns = sum(dc), sum(ds)
    if nc == 0 or ns == 0:
        return [0.0] * len(TEMPERS)
    k = len(c_tot)
    tc, ts = sum(c_tot) + k, sum(s_tot) + k
    log_ratio = [
        math.log((a + 1) / tc) - math.log((b + 1) / ts) for a, b in zip(c_tot, s_tot, strict=True)
    ]
    pooled = [(a + b) / (nc + ns) for a, b in zip(dc, ds, strict=True)]
    out = []
    for t in TEMPERS:
        gained = sum(x * t * r for x, r in zip(dc, log_ratio, strict=True))
        norm = math.log(sum(q * math.exp(t * r) for q, r in zip(pooled, log_ratio, strict=True)))
        out.append(gained - nc * norm)
    return out


@dataclass(frozen=True, slots=True)
class PredictionEvidence:
    outputs: tuple[OutputEvidence, ...] = ()

    def update(self, canary: Buckets, stable: Buckets) -> PredictionEvidence:
        """Take one read of both tracks' cumulative bucket counters."""
        common = _common(canary, stable)
        known = {o.output: o for o in self.outputs}
        out = []
        for name, labels in common.items():
            c_now = tuple(max(0, round(canary[name][b])) for b in labels)
            s_now = tuple(max(0, round(stable[name][b])) for b in labels)
            before = known.get(name)
            if before is None or before.buckets != labels:
                zero = (0,) * len(labels)
                out.append(OutputEvidence(name, labels, c_now, s_now, zero, zero))
            else:
                out.append(before.update(c_now, s_now))
        return PredictionEvidence(tuple(out))

    def as_status(self) -> list[dict[str, Any]]:
        return [
            {
                "output": o.output,
                "buckets": list(o.buckets),
                "lastCanary": list(o.last_canary),
                "lastStable": list(o.last_stable),
                "canary": list(o.canary),
                "stable": list(o.stable),
                "logWealth": [round(v, 6) for v in o.log_wealth],
            }
            for o in self.outputs
        ]

    @classmethod
    def from_status(cls, items: Sequence[Mapping[str, Any]]) -> PredictionEvidence:
        """Read back ``as_status``; ValueError when a block is malformed."""
        outputs = []
        try:
            for d in items:
                o = OutputEvidence(
                    output=str(d["output"]),
                    buckets=tuple(str(b) for b in d["buckets"]),
                    last_canary=tuple(int(v) for v in d["lastCanary"]),
                    last_stable=tuple(int(v) for v in d["lastStable"]),
                    canary=tuple(int(v) for v in d["canary"]),
                    stable=tuple(int(v) for v in d["stable"]),
                    log_wealth=tuple(float(v) for v in d["logWealth"]),
                )
                n = len(o.buckets)
                shapes = {len(o.last_canary), len(o.last_stable), len(o.canary), len(o.stable)}
                if shapes != {n} or len(o.log_wealth) != len(TEMPERS):
                    raise ValueError(f"output {o.output}: lengths disagree")
                outputs.append(o)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"status prediction evidence is malformed: {exc!r}") from None
        return cls(tuple(outputs))


def judge_sequential(evidence: PredictionEvidence, limits: ShiftLimits) -> ShiftResult | None:
    """The verdict on the prediction evidence so far; None when no output can be compared."""
    if not evidence.outputs:
        return None
    threshold = len(evidence.outputs) / limits.significance
    parts: list[tuple[Finding, float | None]] = []
    top_d, top_e = 0.0, 0.0
    for o in evidence.outputs:
        finding, d, head = _effect_finding(o.output, o.canary, o.stable, limits, o.buckets)
        e = math.exp(min(log_mixture(o.log_wealth), _MAX_LOG))
        top_d, top_e = max(top_d, d), max(top_e, e)
        if finding is not None:
            parts.append((finding, d))
            continue
        stats = f"e-value {e:.3g}, fails at {threshold:.3g}"
        verdict = Verdict.FAIL if e >= threshold else Verdict.INCONCLUSIVE
        tail = "" if verdict is Verdict.FAIL else ", not significant yet"
        parts.append((Finding(verdict, f"{head}: {stats}{tail}"), d))
    return ShiftResult(_combine(parts), divergence=top_d, evalue=top_e, threshold=threshold)
