"""One simulated canary: requests, what Prometheus scraped of them, and both rules' decisions.

Traffic is a Poisson process (``rate`` requests/s through the route); each request goes to the
canary with the route's weight at its arrival, fails with its track's error probability and
takes a lognormal time around its track's median, plus the rest of a stall when its process
is stalled (a shared machine pauses one process at a time: each track stalls on average every
``stall_every`` seconds for 50-300 ms). Counters move when a request completes. Prometheus
scrapes each track every second at its own phase; a read sees the counters of the last scrape
before it. Reads come every ``read_every`` seconds with +-25% jitter. The fixed-window rule is
the operator's ``plan.analysis.analyse`` on windows of ``window`` seconds with ``failureLimit``
2, as today; the sequential rule is ``plan.sequential.judge`` on the running evidence.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelrollout.metrics.base import TrackSample
from modelrollout.plan.analysis import AnalysisThresholds, Verdict, analyse
from modelrollout.plan.evidence import Evidence, Reading
from modelrollout.plan.sequential import SequentialLimits, judge
from modelrollout.plan.stats import fisher_greater

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIGMA = 0.35  # lognormal shape of one request's latency


@dataclass(frozen=True)
class Scenario:
    stable_error: float
    canary_error: float
    stable_median: float = 0.020
    canary_median: float = 0.020
    rate: float = 40.0
    schedule: tuple[tuple[float, float], ...] = ((0, 0.10), (120, 0.25), (240, 0.50))
    horizon: float = 360.0
    read_every: float = 3.0
    window: float = 30.0
    stall_every: float = 20.0


@dataclass
class Track:
    """Completion-ordered requests of one track and the scrape phase of its target."""

    done: np.ndarray  # completion times, sorted
    errors: np.ndarray  # cumulative errors in completion order
    fast: np.ndarray  # (len(BOUNDS), n) cumulative requests at or under each bound
    phase: float

    def reading(self, t: float) -> Reading:
        scraped = self.phase + math.floor(t - self.phase)
        n = int(np.searchsorted(self.done, scraped, side="right"))
        if n == 0:
            return Reading(0, 0, (*((b, 0) for b in BOUNDS), (math.inf, 0)))
        buckets = tuple((b, int(self.fast[i, n - 1])) for i, b in enumerate(BOUNDS))
        return Reading(n, int(self.errors[n - 1]), (*buckets, (math.inf, n)))


def _stalls(rng: np.random.Generator, horizon: float, every: float) -> np.ndarray:
    count = rng.poisson(horizon / every)
    starts = np.sort(rng.uniform(0, horizon, count))
    return np.stack([starts, starts + rng.uniform(0.05, 0.3, count)])


def _track(
    rng: np.random.Generator, arrivals: np.ndarray, error: float, median: float, sc: Scenario
) -> Track:
    n = len(arrivals)
    latency = median * np.exp(rng.normal(0.0, SIGMA, n))
    stalls = _stalls(rng, sc.horizon, sc.stall_every)
    if stalls.shape[1]:
        i = np.searchsorted(stalls[0], arrivals, side="right") - 1
        ok = i >= 0
        end = np.where(ok, stalls[1, np.maximum(i, 0)], -1.0)
        latency += np.where(ok & (arrivals < end), end - arrivals, 0.0)
    done = arrivals + latency
    order = np.argsort(done)
    failed = (rng.random(n) < error)[order]
    lat = latency[order]
    fast = np.cumsum(lat[None, :] <= np.asarray(BOUNDS)[:, None], axis=1)
    return Track(done[order], np.cumsum(failed), fast, float(rng.uniform(0, 1)))


def simulate(rng: np.random.Generator, sc: Scenario) -> tuple[Track, Track]:
    n = rng.poisson(sc.rate * sc.horizon * 1.1) + 10
    arrivals = np.cumsum(rng.exponential(1 / sc.rate, n))
    arrivals = arrivals[arrivals < sc.horizon]
    starts = np.array([s for s, _ in sc.schedule])
    weights = np.array([w for _, w in sc.schedule])
    w = weights[np.searchsorted(starts, arrivals, side="right") - 1]
    to_canary = rng.random(len(arrivals)) < w
    canary = _track(rng, arrivals[to_canary], sc.canary_error, sc.canary_median, sc)
    stable = _track(rng, arrivals[~to_canary], sc.stable_error, sc.stable_median, sc)
    return canary, stable


@dataclass(frozen=True)
class Outcome:
    """When a rule rolled the canary back (None: never within the horizon)."""

    seconds: float | None
    canary_requests: int | None
    reason: str = ""


def run_sequential(
    canary: Track,
    stable: Track,
    sc: Scenario,
    limits: Sequence[SequentialLimits],
    rng: np.random.Generator,
) -> list[Outcome]:
    """Each set of limits judged on the same reads of the same evidence."""
    ev = Evidence()
    t = 0.0
    out: list[Outcome | None] = [None] * len(limits)
    while any(o is None for o in out):
        t += sc.read_every * float(rng.uniform(0.75, 1.25))
        if t > sc.horizon:
            break
        c = canary.reading(t)
        ev = ev.update(c, stable.reading(t))
        for i, lim in enumerate(limits):
            if out[i] is None:
                result = judge(ev, lim, step_requests=ev.canary.requests)
                if result.verdict is Verdict.FAIL:
                    out[i] = Outcome(t, c.requests, result.reason)
    return [o if o is not None else Outcome(None, None) for o in out]


def _sample(before: Reading, after: Reading, window: float) -> TrackSample:
    n = after.requests - before.requests
    cum = [(b, float(a - p)) for (b, a), (_, p) in zip(after.buckets, before.buckets, strict=True)]
    p99 = _p99(cum) if n else None
    return TrackSample(n, after.errors - before.errors, p99, window, tuple(cum))


def _p99(cum: list[tuple[float, float]]) -> float:
    total = cum[-1][1]
    rank, lower, below = 0.99 * total, 0.0, 0.0
    for le, count in cum:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = le, count
    return lower


Windows = list[tuple[TrackSample, TrackSample]]


def windows(canary: Track, stable: Track, sc: Scenario) -> Windows:
    """Both tracks' samples per fixed window, as the increase() queries would return them."""
    out = []
    edges = np.arange(0.0, sc.horizon + 1e-9, sc.window)
    for a, b in itertools.pairwise(edges):
        out.append(
            (
                _sample(canary.reading(a), canary.reading(b), sc.window),
                _sample(stable.reading(a), stable.reading(b), sc.window),
            )
        )
    return out


def run_fixed(samples: Windows, sc: Scenario, t: AnalysisThresholds) -> Outcome:
    """Today's rule: failureLimit 2 consecutive Fails (Inconclusive keeps the count)."""
    failures, seen = 0, 0
    for i, (c, s) in enumerate(samples):
        seen += c.requests or 0
        result = analyse(c, s, t)
        if result.verdict is Verdict.FAIL:
            failures += 1
        elif result.verdict is Verdict.PASS:
            failures = 0
        if failures >= 2:
            return Outcome((i + 1) * sc.window, seen, result.reason)
    return Outcome(None, None)


def error_pvalues(samples: Windows, min_requests: int) -> list[float | None]:
    """Per window, the one-sided Fisher p-value of canary vs stable errors; None for a window
    with fewer than ``min_requests`` canary requests (Inconclusive: keeps the count)."""
    out: list[float | None] = []
    for c, s in samples:
        if not c.requests or c.requests < min_requests or not s.requests:
            out.append(None)
        else:
            out.append(fisher_greater(c.errors or 0, c.requests, s.errors or 0, s.requests))
    return out


def never_below(pvalues: list[float | None], limit: int = 2) -> float:
    """The errors-only fixed-window rule (limits off, failureLimit ``limit``) rolls this
    rollout back exactly at significance levels above the returned value."""
    judged = [p for p in pvalues if p is not None]
    if len(judged) < limit:
        return 1.0
    return min(max(judged[i : i + limit]) for i in range(len(judged) - limit + 1))


def first_rollback(pvalues: list[float | None], level: float, limit: int = 2) -> int | None:
    """The 1-based window whose end rolls back at this level (errors only), or None."""
    failures = 0
    for i, p in enumerate(pvalues):
        if p is None:
            continue
        failures = failures + 1 if p < level else 0
        if failures >= limit:
            return i + 1
    return None
