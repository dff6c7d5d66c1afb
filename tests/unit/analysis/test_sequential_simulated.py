"""A few simulated rollouts end to end (bench/sequential/sim.py; `make bench-sequential` runs
thousands): Poisson traffic, per-process stalls, scrape jitter, reads every few seconds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.sequential.sim import Scenario, run_sequential, simulate
from modelrollout.plan.sequential import SequentialLimits

LIMITS = SequentialLimits(significance=0.01)


def test_healthy_canaries_with_stalls_are_not_rolled_back() -> None:
    rng = np.random.default_rng(7)
    for _ in range(12):
        p = float(rng.uniform(0.0, 0.02))
        sc = Scenario(stable_error=p, canary_error=p, horizon=240.0)
        canary, stable = simulate(rng, sc)
        (outcome,) = run_sequential(canary, stable, sc, [LIMITS], rng)
        assert outcome.seconds is None, outcome.reason


def test_a_thirty_percent_error_canary_is_rolled_back_within_seconds() -> None:
    rng = np.random.default_rng(8)
    sc = replace(Scenario(stable_error=0.0, canary_error=0.3, horizon=60.0), read_every=1.0)
    for _ in range(5):
        canary, stable = simulate(rng, sc)
        (outcome,) = run_sequential(canary, stable, sc, [LIMITS], rng)
        # 10% of 40 req/s: 4 canary requests a second, 1.2 of them errors.
        assert outcome.seconds is not None
        assert outcome.seconds < 15, outcome.reason
        assert "exceeds 5% absolute" in outcome.reason
