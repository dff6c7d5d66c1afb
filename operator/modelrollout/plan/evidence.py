"""Evidence accumulated since the canary started, kept in status between reads; no I/O.

Each read gives the model servers' raw cumulative counters for both tracks (requests, 5xx
responses, the latency histogram). The difference from the previous read is one increment;
it feeds the mixture likelihood ratios of ``plan.evalues`` and the running totals. Because the
counters are cumulative, a read that fails or is skipped loses nothing: the next one covers the
gap as a single increment. A counter that goes down (a pod restarted or went away) cannot be
split into before and after; that increment is dropped and counting restarts from the new
values, which removes data but never adds false evidence.

The error evidence is a conditional test: given how many requests each track served, which
track the errors came from. A read in which only one track served requests says nothing about
that, and behind a Kubernetes Service (the replica-ratio router) whole seconds go to one pod
while a client keeps its connection. So increments are pooled until both tracks have served
requests, then judged as one; when to judge depends only on request counts, never on errors,
so the bound on false rollbacks holds as for single reads.

Everything here is plain numbers so it round-trips through ``status`` (``as_status`` /
``from_status``): a restarted operator continues the same evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .evalues import ERROR_RATIOS, LATENCY_BETS, bet_log_factors, ratio_log_factors

__all__ = ["LATENCY_FLOOR_SECONDS", "Evidence", "Reading", "Readings", "Totals"]

# Latency bounds at or under this are not tested: at a few milliseconds a difference is
# histogram-bucket noise, not a regression anyone should roll back for.
LATENCY_FLOOR_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Reading:
    """One track's raw cumulative counters at one read.

    ``buckets`` is the cumulative latency histogram as (upper bound in seconds, count),
    ascending; a trailing +Inf bucket may be given and is ignored (``requests`` is the total).
    """

    requests: int
    errors: int
    buckets: tuple[tuple[float, int], ...] = ()
    # Cumulative predictions per output and bucket, when they were asked for.
    outputs: Mapping[str, Mapping[str, float]] | None = None
    # Of the requests, those the operator's synthetic traffic sent: they reach the canary
    # straight through its own Service, not through the route.
    synthetic: int = 0

    def __post_init__(self) -> None:
        if self.requests < 0 or self.errors < 0 or self.synthetic < 0:
            raise ValueError(
                f"counters must be >= 0, got {self.errors}/{self.requests} "
                f"({self.synthetic} synthetic)"
            )

    def at(self, bounds: Sequence[float]) -> tuple[int, ...] | None:
        """Cumulative counts at exactly these bounds, or None if the histogram lacks one."""
        found = {le: count for le, count in self.buckets}
        counts = [found.get(b) for b in bounds]
        if any(c is None for c in counts):
            return None
        return tuple(int(c) for c in counts if c is not None)


@dataclass(frozen=True, slots=True)
class Readings:
    """One read of both tracks for the planner; ``error`` when the counters could not be read
    (the evidence then stays as it was: the next read covers the gap)."""

    canary: Reading | None
    stable: Reading | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    """What one track served since the canary started (from accepted increments only)."""

    requests: int = 0
    errors: int = 0
    # Requests at or under each of ``Evidence.bounds``, and how many the histogram saw.
    fast: tuple[int, ...] = ()
    observed: int = 0
    # Of the requests, those synthetic traffic sent (not routed).
    synthetic: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def slow(self, index: int) -> int:
        """Requests slower than bound ``index``."""
        return max(0, self.observed - self.fast[index])


@dataclass(frozen=True, slots=True)
class _Delta:
    requests: int
    errors: int
    fast: tuple[int, ...] | None
    observed: int
    synthetic: int


def _delta(now: Reading, before: Reading, bounds: Sequence[float]) -> _Delta | None:
    """``now - before``, or None when a counter went down (a reset)."""
    requests, errors = now.requests - before.requests, now.errors - before.errors
    synthetic = now.synthetic - before.synthetic
    if requests < 0 or errors < 0 or synthetic < 0:
        return None
    fast: tuple[int, ...] | None = None
    observed = 0
    a, b = now.at(bounds), before.at(bounds)
    a_total, b_total = _histogram_total(now), _histogram_total(before)
    if a is not None and b is not None and a_total is not None and b_total is not None:
        fast = tuple(x - y for x, y in zip(a, b, strict=True))
        observed = a_total - b_total
        if observed < 0 or any(f < 0 or f > observed for f in fast):
            return None
    # Errors and requests are two series scraped together; never let one exceed the other.
    return _Delta(requests, min(errors, requests), fast, observed, min(synthetic, requests))


def _histogram_total(reading: Reading) -> int | None:
    for le, count in reading.buckets:
        if math.isinf(le):
            return int(count)
    return None


@dataclass(frozen=True, slots=True)
class Evidence:
    """Running evidence of one canary against the stable; see the module docstring."""

    canary: Totals = field(default_factory=Totals)
    stable: Totals = field(default_factory=Totals)
    # Raw counters at the last read, to take the next increment from.
    last_canary: Reading | None = None
    last_stable: Reading | None = None
    # Finite latency bounds above the floor present in both histograms, fixed at the first read.
    bounds: tuple[float, ...] = ()
    # log likelihood ratio per alternative in ERROR_RATIOS; log wealth per bound and stake.
    log_errors: tuple[float, ...] = (0.0,) * len(ERROR_RATIOS)
    log_latency: tuple[tuple[float, ...], ...] = ()
    reads: int = 0
    resets: int = 0
    # Requests and errors not judged yet: (canary requests, canary errors, stable requests,
    # stable errors) since the last error-evidence update, until both tracks have requests.
    pending: tuple[int, int, int, int] = (0, 0, 0, 0)

    def update(self, canary: Reading, stable: Reading | None) -> Evidence:
        """Take one read of both tracks' counters (``stable`` None: no stable to compare)."""
        if self.last_canary is None or (stable is None) != (self.last_stable is None):
            return self._restart(canary, stable)
        c = _delta(canary, self.last_canary, self.bounds)
        s = _delta(stable, self.last_stable, self.bounds) if stable and self.last_stable else None
        if c is None or (stable is not None and s is None):
            moved = replace(self, last_canary=canary, last_stable=stable, reads=self.reads + 1)
            return replace(moved, resets=self.resets + 1)
        log_errors, log_latency, pending = self.log_errors, self.log_latency, self.pending
        if s is not None:
            c_req, c_err, s_req, s_err = pending
            c_req, c_err, s_req, s_err = (
                c_req + c.requests,
                c_err + c.errors,
                s_req + s.requests,
                s_err + s.errors,
            )
            if c_req and s_req:
                step = ratio_log_factors(c_req, c_err, s_req, s_err, ERROR_RATIOS)
                log_errors = tuple(a + b for a, b in zip(log_errors, step, strict=True))
                pending = (0, 0, 0, 0)
            else:
                pending = (c_req, c_err, s_req, s_err)
            if c.fast is not None and s.fast is not None:
                log_latency = _latency_step(log_latency, c.observed, c.fast, s.observed, s.fast)
        return replace(
            self,
            canary=_add(self.canary, c),
            stable=_add(self.stable, s) if s is not None else self.stable,
            last_canary=canary,
            last_stable=stable,
            log_errors=log_errors,
            log_latency=log_latency,
            reads=self.reads + 1,
            pending=pending,
        )

    def _restart(self, canary: Reading, stable: Reading | None) -> Evidence:
        """The first read, or the stable came or went: counting starts from these values."""
        if self.reads == 0:
            finite = [le for le, _ in canary.buckets if math.isfinite(le)]
            if stable is not None:
                common = {le for le, _ in stable.buckets}
                finite = [le for le in finite if le in common]
            bounds = tuple(sorted(b for b in finite if b > LATENCY_FLOOR_SECONDS))
            empty = Totals(fast=(0,) * len(bounds))
            return Evidence(
                canary=empty,
                stable=empty,
                last_canary=canary,
                last_stable=stable,
                bounds=bounds,
                log_latency=tuple((0.0,) * len(LATENCY_BETS) for _ in bounds),
                reads=1,
            )
        # What was pooled against the stable that came or went is not judged.
        return replace(
            self,
            last_canary=canary,
            last_stable=stable,
            reads=self.reads + 1,
            resets=self.resets,
            pending=(0, 0, 0, 0),
        )

    def as_status(self) -> dict[str, Any]:
        """Plain JSON for ``status`` (camelCase keys); ``from_status`` reads it back."""
        return {
            "reads": self.reads,
            "resets": self.resets,
            "bounds": list(self.bounds),
            "canary": _totals_out(self.canary),
            "stable": _totals_out(self.stable),
            "lastCanary": _reading_out(self.last_canary, self.bounds),
            "lastStable": _reading_out(self.last_stable, self.bounds),
            "logErrors": [round(v, 6) for v in self.log_errors],
            "logLatency": [[round(v, 6) for v in row] for row in self.log_latency],
            "pending": list(self.pending),
        }

    @classmethod
    def from_status(cls, data: Mapping[str, Any]) -> Evidence:
        """Read back ``as_status``; a malformed block raises ValueError naming the field."""
        try:
            bounds = tuple(float(b) for b in data.get("bounds", ()))
            evidence = cls(
                canary=_totals_in(data.get("canary") or {}),
                stable=_totals_in(data.get("stable") or {}),
                last_canary=_reading_in(data.get("lastCanary"), bounds),
                last_stable=_reading_in(data.get("lastStable"), bounds),
                bounds=bounds,
                log_errors=tuple(float(v) for v in data["logErrors"]),
                log_latency=tuple(
                    tuple(float(v) for v in row) for row in data.get("logLatency", ())
                ),
                reads=int(data.get("reads", 0)),
                resets=int(data.get("resets", 0)),
                pending=_pending_in(data.get("pending") or (0, 0, 0, 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"status evidence is malformed: {exc!r}") from None
        evidence.check()
        return evidence

    def check(self) -> None:
        """Shapes agree with each other and with the ratio grids."""
        n = len(self.bounds)
        problems = []
        if len(self.log_errors) != len(ERROR_RATIOS):
            problems.append(f"logErrors has {len(self.log_errors)} values, not {len(ERROR_RATIOS)}")
        if len(self.log_latency) != n or any(len(r) != len(LATENCY_BETS) for r in self.log_latency):
            problems.append(f"logLatency is not {n} rows of {len(LATENCY_BETS)}")
        for name, totals in (("canary", self.canary), ("stable", self.stable)):
            if len(totals.fast) != n:
                problems.append(f"{name}.fast has {len(totals.fast)} values for {n} bounds")
        if problems:
            raise ValueError("status evidence is malformed: " + "; ".join(problems))


def _latency_step(
    rows: tuple[tuple[float, ...], ...],
    c_observed: int,
    c_fast: tuple[int, ...],
    s_observed: int,
    s_fast: tuple[int, ...],
) -> tuple[tuple[float, ...], ...]:
    """Per bound, one bet on the canary's share of requests slower than it."""
    out = []
    for i, row in enumerate(rows):
        slow_c, slow_s = c_observed - c_fast[i], s_observed - s_fast[i]
        step = bet_log_factors(c_observed, slow_c, s_observed, slow_s, LATENCY_BETS)
        out.append(tuple(a + b for a, b in zip(row, step, strict=True)))
    return tuple(out)


def _add(totals: Totals, d: _Delta) -> Totals:
    fast, observed = totals.fast, totals.observed
    if d.fast is not None:
        fast = tuple(a + b for a, b in zip(fast, d.fast, strict=True))
        observed += d.observed
    return Totals(
        totals.requests + d.requests,
        totals.errors + d.errors,
        fast,
        observed,
        totals.synthetic + d.synthetic,
    )


def _totals_out(t: Totals) -> dict[str, Any]:
    return {
        "requests": t.requests,
        "errors": t.errors,
        "fast": list(t.fast),
        "observed": t.observed,
        "synthetic": t.synthetic,
    }


def _totals_in(d: Mapping[str, Any]) -> Totals:
    totals = Totals(
        requests=int(d.get("requests", 0)),
        errors=int(d.get("errors", 0)),
        fast=tuple(int(v) for v in d.get("fast", ())),
        observed=int(d.get("observed", 0)),
        synthetic=int(d.get("synthetic", 0)),  # absent in status written before it was kept
    )
    if not 0 <= totals.synthetic <= totals.requests:
        raise ValueError(f"synthetic {totals.synthetic} is not a part of {totals.requests}")
    return totals


def _reading_out(r: Reading | None, bounds: Sequence[float]) -> dict[str, Any] | None:
    """Only what the next increment needs: the counts at the evidence's bounds and the total."""
    if r is None:
        return None
    out: dict[str, Any] = {"requests": r.requests, "errors": r.errors, "synthetic": r.synthetic}
    fast, total = r.at(bounds), _histogram_total(r)
    if fast is not None and total is not None:
        out |= {"fast": list(fast), "observed": total}
    return out


def _pending_in(values: Sequence[Any]) -> tuple[int, int, int, int]:
    a, b, c, d = (int(v) for v in values)
    if min(a, b, c, d) < 0 or b > a or d > c:
        raise ValueError(f"pending counts {[a, b, c, d]} are not requests and errors")
    return a, b, c, d


def _reading_in(d: Mapping[str, Any] | None, bounds: Sequence[float]) -> Reading | None:
    if d is None:
        return None
    fast = [int(v) for v in d.get("fast") or ()]
    buckets: tuple[tuple[float, int], ...] = ()
    if d.get("observed") is not None and len(fast) == len(bounds):
        buckets = (*zip(bounds, fast, strict=True), (math.inf, int(d["observed"])))
    return Reading(
        int(d["requests"]), int(d["errors"]), buckets, synthetic=int(d.get("synthetic", 0))
    )
