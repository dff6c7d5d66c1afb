"""`make chaos`: rollouts under faults, on the real parts, seeded and bounded.

One local control plane, the pod runner, Prometheus (behind a fault proxy), the weighted gateway
and the operator (behind a proxy to kube-apiserver) are started once (bench/chaos/env.py).
Every run is a full rollout in a fresh namespace, healthy or bad canary, with one fault at a
drawn moment (bench/chaos/scenarios.py), checked as bench/chaos/checks.py says. Writes
bench/results/chaos-<date>.md and the raw runs as JSON beside the work directory.

    python -m bench.chaos.run                       # the campaign, a fresh seed (printed)
    python -m bench.chaos.run --seed 7 --only etcd-stop:2   # one run again, exactly
    python -m bench.chaos.run --short               # one run per scenario
    python -m bench.chaos.run --real-node           # pod kills on the real node (root)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.chaos.env import environment
from bench.chaos.report import render
from bench.chaos.rig import SHORT, Run, RunResult, Settings
from bench.chaos.scenarios import RunSpec, plan, short_plan

REPO = Path(__file__).resolve().parents[2]
CAMPAIGN_BUDGET_MIN = 45.0  # no run starts past this; the target is 30 minutes


def line(result: RunResult) -> str:
    fault = result.fault
    rec = "-" if result.recovery_s is None else f"{result.recovery_s:.1f}s"
    return (
        f"{result.spec.key:<22} seed={result.spec.seed:<11} {result.spec.kind:<7} {result.node:<4} "
        f"{result.outcome:<10} {'ok' if result.ok else 'FAIL'} recovery={rec} "
        f"unready={result.unready} stable_non2xx={result.stable_failures} "
        f"{result.wrong or ''} {result.error or ''} {(fault.note if fault else '')}"
        f"{' '.join(result.child_problems + result.history_problems)}"
    )


def campaign(
    specs: list[RunSpec],
    seed: int,
    workdir: Path,
    settings: Settings,
    budget_s: float,
    real_node: bool = False,
) -> tuple[list[RunResult], float]:
    print(f"chaos: seed {seed}, {len(specs)} runs; work directory {workdir}", flush=True)
    results: list[RunResult] = []
    started = time.monotonic()
    with environment(workdir, real_node=real_node) as env:
        for spec in specs:
            if time.monotonic() - started > budget_s:
                print(f"chaos: budget spent, {spec.key} and later not run", flush=True)
                break
            result = Run(env, spec, settings).execute()
            results.append(result)
            print(line(result), flush=True)
    return results, time.monotonic() - started


def _public(argv: list[str]) -> list[str]:
    """The command line as the report shows it: without this machine's directories."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        local = ("--work", "--out")
        if arg in local or (i and argv[i - 1] in local) or arg.startswith(("--work=", "--out=")):
            continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos.run", description=__doc__)
    parser.add_argument("--seed", type=int, help="campaign seed (default: drawn and printed)")
    parser.add_argument(
        "--short", action="store_true", help="the short version: one run per fault, as in CI"
    )
    parser.add_argument("--only", action="append", help="scenario NAME or NAME:INDEX (repeat)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument(
        "--budget", type=float, default=CAMPAIGN_BUDGET_MIN, help="minutes; no run starts later"
    )
    parser.add_argument("--until", help="HH:MM UTC; no run starts later (whichever is first)")
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="also start the real node (root, one per machine) and run the pod kills on it",
    )
    parser.add_argument(
        "--name", default="chaos-{date}", help="report file name, without .md ({date}: today)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    only = set(args.only) if args.only else None
    if args.short:
        specs = [s for s in short_plan(seed) if not only or s.scenario in only or s.key in only]
    else:
        specs = plan(seed, only=only)
    workdir = args.work or Path(tempfile.mkdtemp(prefix="chaos-"))
    settings = SHORT if args.short else Settings()
    budget_s = args.budget * 60
    if args.until:
        now = dt.datetime.now(dt.UTC)
        hour, minute = map(int, args.until.split(":"))
        until = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        budget_s = min(budget_s, max(0.0, (until - now).total_seconds()))
    results, elapsed = campaign(specs, seed, workdir, settings, budget_s, args.real_node)
    name = args.name.format(date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"))
    raw = workdir / f"{name}.json"
    raw.write_text(json.dumps([r.to_json() for r in results], indent=1, default=str))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{name}.md"
    out.write_text(
        render(
            results,
            seed=seed,
            elapsed_s=elapsed,
            argv=_public(sys.argv[1:]),
            settings=settings,
            planned=len(specs),
        )
    )
    print(f"chaos: seed {seed}; {out} ({raw})", flush=True)
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
