"""bench-sequential: the sequential canary test against today's fixed windows, simulated.

Healthy rollouts (canary as good as the stable; stable error rate uniform in 0-2%): how many
each rule rolls back. A grid of regressions (error rate x1.5, x2, x5, x30 over a 1% stable;
median latency x1.3, x2): how many canary requests each rule lets through before it rolls
back. Four rules, each run on the same simulated traffic:

- sequential: ``plan.sequential.judge`` with the API defaults (significance 0.01 over the
  rollout, maxErrorRate 5%, +2 points, maxLatencyRatio 1.5), read every 3 s;
- sequential, loosest limits: the same test with the limits as low as they go, i.e. the
  statistics alone;
- fixed windows: ``plan.analysis.analyse`` on 30 s windows, failureLimit 2, the defaults;
- fixed windows, errors only, calibrated: today's error test alone (one-sided Fisher per
  window, failureLimit 2) with the limits off and its significance calibrated on the healthy
  rollouts so that exactly ``alpha`` of them roll back: the false-alarm rate the sequential
  test is guaranteed not to exceed, reached here only by calibrating on this rollout length
  and traffic. It judges errors only, so it has no latency figures.

Usage: python -m bench.sequential.run [--healthy 10000] [--regression 200] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from modelrollout.plan.analysis import AnalysisThresholds
from modelrollout.plan.sequential import SequentialLimits

from .sim import (
    Outcome,
    Scenario,
    Track,
    Windows,
    error_pvalues,
    first_rollback,
    never_below,
    run_fixed,
    run_sequential,
    simulate,
    windows,
)

ALPHA = 0.01
SEQUENTIAL = SequentialLimits(significance=ALPHA)
SEQUENTIAL_LOOSE = SequentialLimits(
    max_error_rate=0.0,
    max_error_rate_increase=0.0,
    max_latency_ratio=1.0,
    min_slow_share=0.0,
    significance=ALPHA,
)
FIXED = AnalysisThresholds()
RULES = (
    "sequential",
    "sequential, loosest limits",
    "fixed windows",
    "fixed windows, errors only, calibrated",
)
MIN_REQUESTS = FIXED.min_requests
_BASE = Scenario(0.01, 0.01, horizon=1800.0)
REGRESSIONS: tuple[tuple[str, Scenario], ...] = (
    ("error rate x1.5", replace(_BASE, canary_error=0.015)),
    ("error rate x2", replace(_BASE, canary_error=0.02)),
    ("error rate x5", replace(_BASE, canary_error=0.05)),
    ("error rate x30", replace(_BASE, canary_error=0.30)),
    ("median latency x1.3", replace(_BASE, canary_median=0.026)),
    ("median latency x2", replace(_BASE, canary_median=0.040)),
)


def _sequential_both(rng: np.random.Generator, sc: Scenario, c: Track, s: Track) -> list[Outcome]:
    return run_sequential(c, s, sc, (SEQUENTIAL, SEQUENTIAL_LOOSE), rng)


def healthy(rng: np.random.Generator, count: int) -> tuple[list[list[Outcome]], list[float]]:
    """Outcomes of the first three rules, and per rollout the level above which the
    calibrated rule would roll it back."""
    outcomes: list[list[Outcome]] = []
    stored: list[float] = []
    for i in range(count):
        p = float(rng.uniform(0.0, 0.02))
        sc = Scenario(stable_error=p, canary_error=p)
        c, s = simulate(rng, sc)
        seq = _sequential_both(rng, sc, c, s)
        w = windows(c, s, sc)
        outcomes.append([*seq, run_fixed(w, sc, FIXED)])
        stored.append(never_below(error_pvalues(w, MIN_REQUESTS)))
        if (i + 1) % 1000 == 0:
            print(f"healthy {i + 1}/{count}", flush=True)
    return outcomes, stored


def calibrate(stored: list[float], target: int) -> float:
    """The significance at which the calibrated rule rolls back ``target`` healthy rollouts:
    a rollout rolls back exactly when the level is above its stored value."""
    return sorted(stored)[target]


def _fixed_errors(w: Windows, sc: Scenario, level: float) -> Outcome:
    window = first_rollback(error_pvalues(w, MIN_REQUESTS), level)
    if window is None:
        return Outcome(None, None)
    return Outcome(window * sc.window, sum(c.requests or 0 for c, _ in w[:window]))


def regressions(
    rng: np.random.Generator, count: int, level: float
) -> dict[str, list[list[Outcome]]]:
    out: dict[str, list[list[Outcome]]] = {}
    for name, sc in REGRESSIONS:
        rows = []
        for _ in range(count):
            c, s = simulate(rng, sc)
            seq = _sequential_both(rng, sc, c, s)
            w = windows(c, s, sc)
            errors_only = _fixed_errors(w, sc, level) if "error" in name else Outcome(None, None)
            rows.append([*seq, run_fixed(w, sc, FIXED), errors_only])
        out[name] = rows
        print(f"regression {name} done", flush=True)
    return out


def _requests(outcomes: list[Outcome]) -> str:
    got = [o.canary_requests for o in outcomes if o.canary_requests is not None]
    if not got:
        return "not detected"
    share = f"{len(got)}/{len(outcomes)}"
    return f"{statistics.mean(got):,.0f} (median {statistics.median(got):,.0f}; {share})"


def _seconds(outcomes: list[Outcome]) -> str:
    got = [o.seconds for o in outcomes if o.seconds is not None]
    return f"{statistics.median(got):.0f}" if got else "n/a"


def report(
    healthy_out: list[list[Outcome]],
    loose_alarms: int,
    level: float,
    regs: dict[str, list[list[Outcome]]],
    meta: dict[str, str],
) -> str:
    n = len(healthy_out)
    counts = [sum(row[i].seconds is not None for row in healthy_out) for i in range(3)]
    lines = [
        f"# bench-sequential, {meta['date']}",
        "",
        "Sequential (anytime-valid) canary analysis against today's fixed windows, simulated; "
        "`make bench-sequential` (bench/sequential/run.py, whose docstring and sim.py's give "
        "the model and the rules).",
        "",
        f"## Healthy rollouts: false rollbacks out of {n:,}",
        "",
        "Canary as good as the stable; stable error rate uniform in 0-2%; 40 req/s Poisson; "
        "weights 10%, 25%, 50% for 120 s each (360 s of canary traffic); per-process stalls; "
        f"scrape jitter; reads every {Scenario(0, 0).read_every:g} s +-25%.",
        "",
        "| rule | false rollbacks | rate | bound |",
        "|---|---|---|---|",
        f"| {RULES[0]} | {counts[0]} | {counts[0] / n:.4f} | <= alpha = {ALPHA} |",
        f"| {RULES[1]} | {counts[1]} | {counts[1] / n:.4f} | <= alpha = {ALPHA} |",
        f"| {RULES[2]} | {counts[2]} | {counts[2] / n:.4f} | none over a rollout |",
        f"| {RULES[3]} (calibrated: p < {level:.3g}) | {loose_alarms} | {loose_alarms / n:.4f} "
        f"| alpha by calibration on these rollouts |",
        "",
        f"## Regressions: canary requests until rollback ({len(next(iter(regs.values())))} "
        f"trials each)",
        "",
        "Stable error rate 1%, median latency 20 ms. Same schedule, then 50% until "
        f"{_BASE.horizon:.0f} s. Mean canary requests served before the rollback (median; "
        "rollouts rolled back within the horizon). *s*: median seconds from the canary's "
        "first traffic.",
        "",
        "| regression | " + " | ".join(RULES) + " | s (sequential / fixed) |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in regs.items():
        cells = [_requests([row[i] for row in rows]) for i in range(4)]
        if "latency" in name:
            cells[3] = "n/a (errors only)"
        secs = f"{_seconds([r[0] for r in rows])} / {_seconds([r[2] for r in rows])}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {secs} |")
    lines += [
        "",
        "With the default limits, x1.5 and x2 over a 1% stable stay inside `maxErrorRate` (5%) "
        "and `maxErrorRateIncrease` (2 points), and x1.3 latency inside `maxLatencyRatio` "
        "(1.5): neither rule is meant to roll them back. The loosest-limit columns show what "
        "the statistics alone detect.",
        "",
        "## Setup",
        "",
        f"- Machine: {meta['machine']}; date (UTC) {meta['start']} -> {meta['end']}.",
        f"- Repo commit {meta['commit']}; seed {meta['seed']}; python "
        f"{platform.python_version()}; numpy {np.__version__}.",
        "",
    ]
    return "\n".join(lines)


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}), load average {load} at the start"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--healthy", type=int, default=10_000)
    ap.add_argument("--regression", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args(argv)
    start = dt.datetime.now(dt.UTC)
    machine = _machine()
    rng = np.random.default_rng(args.seed)
    t0 = time.monotonic()
    healthy_out, stored = healthy(rng, args.healthy)
    level = calibrate(stored, round(ALPHA * args.healthy))
    loose_alarms = sum(value < level for value in stored)
    regs = regressions(rng, args.regression, level)
    end = dt.datetime.now(dt.UTC)
    meta = {
        "date": start.date().isoformat(),
        "start": start.strftime("%Y-%m-%d %H:%M"),
        "end": end.strftime("%Y-%m-%d %H:%M") + f" ({(time.monotonic() - t0) / 60:.1f} min)",
        "machine": machine,
        "seed": str(args.seed),
        "commit": _commit(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sequential-{meta['date']}.md"
    path.write_text(report(healthy_out, loose_alarms, level, regs, meta))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
