"""bench-rollback: regression onset to canary weight 0, and false rollbacks of healthy canaries.

One local control plane, the operator, the pod runner, Prometheus and the weighted gateway are
started once (bench/rollback/rig.py). Each trial gets a fresh namespace, a stable v1 that is
Ready and answering, steady load through the gateway, then v2:
- regression trials: v2 answers 30% of requests with 5xx; measured from the canary's first
  route weight > 0 (and from its first 5xx seen by the load generator) to its weight back at 0;
- healthy trials: v1 and v2 both healthy, v2's added latency within +-10% of v1's; counted are
  rollbacks (the target is none) and the time to promotion.
Writes bench/results/rollback-<date>.md; the raw trials also go to a JSON file next to the
work directory, from which `--render` rebuilds the Markdown.

Usage: python -m bench.rollback.run [--regression 10] [--healthy 20] [--parallel 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.machine import cpu_model, loadavg, memory_gb, versions

from .report import nearest_rank, render
from .rig import Env, Settings, Trial, TrialResult, TrialSpec, environment

REPO = Path(__file__).resolve().parents[2]


def plan_trials(
    counts: dict[str, tuple[int, int]], seed: int, settings: Settings
) -> list[TrialSpec]:
    """Every method's (regression, healthy) trials, all interleaved evenly, so the machine's
    noise falls on every kind and method alike."""
    rng = random.Random(seed)
    lo = settings.stable_latency_ms * (1 - settings.latency_noise)
    hi = settings.stable_latency_ms * (1 + settings.latency_noise)
    specs: list[TrialSpec] = []
    for method, (regressions, healthy) in counts.items():
        specs += [TrialSpec("regression", i + 1, method=method) for i in range(regressions)]
        specs += [
            TrialSpec("healthy", i + 1, round(rng.uniform(lo, hi), 2), method=method)
            for i in range(healthy)
        ]

    def position(s: TrialSpec) -> float:
        regressions, healthy = counts[s.method]
        n = regressions if s.kind == "regression" else healthy
        return (s.index - 0.5) / n

    return sorted(specs, key=lambda s: (position(s), s.kind, s.method))


def _line(r: TrialResult) -> str:
    if r.kind == "regression":
        detail = (
            f"onset->0 {r.detection_from_weight or float('nan'):.1f}s, "
            f"5xx->0 {r.detection_from_5xx or float('nan'):.1f}s"
        )
    else:
        detail = f"promotion {r.promotion or float('nan'):.1f}s"
    windows = " ".join(w.short for w in r.windows)
    extra = f" ({r.error or r.reason})" if r.outcome not in ("RolledBack", "Promoted") else ""
    return f"{r.method} {r.kind} #{r.index}: {r.outcome}{extra}; {detail}; windows {windows}"


def run_trials(env: Env, settings: Settings, specs: list[TrialSpec], parallel: int) -> list[Any]:
    done: list[TrialResult] = []
    lock = threading.Lock()

    def one(spec: TrialSpec) -> None:
        result = Trial(env, settings, spec).run()
        with lock:
            done.append(result)
            print(f"[{len(done)}/{len(specs)}] {_line(result)}", flush=True)

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="trial") as pool:
        for future in [pool.submit(one, s) for s in specs]:
            future.result()
    return [r.to_json() for r in done]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regression", type=int, default=10, help="regression trials (sequential)")
    ap.add_argument("--healthy", type=int, default=20, help="healthy trials (sequential)")
    ap.add_argument("--windows-regression", type=int, default=5, help="the same, windows method")
    ap.add_argument("--windows-healthy", type=int, default=10, help="the same, windows method")
    ap.add_argument("--parallel", type=int, default=1, help="trials at a time (1 or 2)")
    ap.add_argument("--seed", type=int, default=20261123, help="canary latencies")
    ap.add_argument("--max-latency-ratio", type=float, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--render", type=Path, help="only rebuild the Markdown from a raw JSON file")
    args = ap.parse_args(argv)
    if not 1 <= args.parallel <= 2:
        ap.error("--parallel must be 1 or 2: the machine has two cores")

    if args.render:
        run = json.loads(args.render.read_text())
        out = args.out / f"rollback-{run['meta']['date']}.md"
        out.write_text(render_methods(run))
        print(f"wrote {out}")
        return 0

    settings = Settings(max_latency_ratio=args.max_latency_ratio)
    counts = {
        "sequential": (args.regression, args.healthy),
        "windows": (args.windows_regression, args.windows_healthy),
    }
    specs = plan_trials(counts, args.seed, settings)
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    meta: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d"),
        "started": now.strftime("%Y-%m-%d %H:%M:%S"),
        "seed": args.seed,
        "parallel": args.parallel,
        "planned": {m: {"regression": r, "healthy": h} for m, (r, h) in counts.items()},
        "order": [f"{s.method[0]}{s.kind[0].upper()}{s.index}" for s in specs],
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "memory_gb": memory_gb(),
            "kernel": platform.release(),
            "loadavg_start": loadavg(),
        },
        "versions": versions(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-rollback-"))
    raw_path = workdir.with_suffix(".json")
    print(f"work directory {workdir}; {len(specs)} trials, {args.parallel} at a time", flush=True)
    trials: list[Any] = []
    samples: list[float] = []
    stop = threading.Event()

    def sample_load() -> None:
        while not stop.wait(10):
            samples.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    try:
        with environment(workdir) as env:
            trials = run_trials(env, settings, specs, args.parallel)
    finally:
        stop.set()
        sampler.join()
        if samples:
            meta["machine"]["loadavg_1m_during"] = {
                "mean": round(sum(samples) / len(samples), 2),
                "max": round(max(samples), 2),
                "samples": len(samples),
            }
        end = dt.datetime.now(dt.UTC)
        meta["finished"] = end.strftime("%Y-%m-%d %H:%M:%S")
        meta["runtime_min"] = (time.monotonic() - started) / 60
        meta["machine"]["loadavg_end"] = loadavg()
        run = {"meta": meta, "settings": asdict(settings), "trials": trials}
        raw_path.write_text(json.dumps(run, indent=1))
        print(f"raw trials in {raw_path}", flush=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"rollback-{meta['date']}.md"
    out.write_text(render_methods(run))
    print(f"wrote {out} in {meta['runtime_min']:.1f} min", flush=True)
    return 0


# The targets for the sequential method; the windows method keeps its earlier ones.
TARGETS_P95_S = {"sequential": 8.0, "windows": 30.0}


def render_methods(run: dict[str, Any]) -> str:
    """One section per analysis method, each rendered as a run of its own trials."""
    out = [f"# bench-rollback, {run['meta']['date']}: sequential analysis and fixed windows", ""]
    out.append(
        "Both methods ran in the same session, their trials interleaved; each section below is "
        "rendered from its own trials (bench/rollback/report.py)."
    )
    out.append("")
    out += _side_by_side(run)
    for method, planned in run["meta"]["planned"].items():
        settings = dict(run["settings"]) | {"target_p95_s": TARGETS_P95_S[method]}
        if method == "sequential":
            settings |= {"interval_s": settings["sequential_interval_s"], "failure_limit": 1}
        sub = {
            "meta": run["meta"] | {"planned": planned},
            "settings": settings,
            "trials": [t for t in run["trials"] if t.get("method", "windows") == method],
        }
        text = render(sub)
        # One document: each section's headings one level down.
        body = [("#" + line if line.startswith("#") else line) for line in text.splitlines()]
        body[0] = f"## method: {method}"
        if method == "sequential":
            body = _without_section(body, "### Compared with Flagger and Argo Rollouts defaults")
        out += [*body, ""]
    return "\n".join(out)


def _without_section(lines: list[str], heading: str) -> list[str]:
    """The Flagger and Argo Rollouts rows are window rules: they are shown once, in the
    windows section, computed with its interval."""
    if heading not in lines:
        return lines
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("### ")), None)
    note = [
        heading,
        "",
        "See the windows section: those figures are computed from Flagger's and Argo Rollouts' "
        "documented rules with a 10 s interval, not measured.",
        "",
    ]
    return lines[:start] + note + (lines[end:] if end is not None else [])


def _p(values: list[float], q: float) -> str:
    return f"{nearest_rank(values, q):.1f}" if values else "n/a"


def _side_by_side(run: dict[str, Any]) -> list[str]:
    """The headline figures of both methods in one table (nearest-rank percentiles)."""
    settings = run["settings"]
    nominal = 2 * settings["interval_s"] + 3  # windows: two analysis windows plus the shifts
    cols: dict[str, dict[str, str]] = {}
    for method in run["meta"]["planned"]:
        trials = [t for t in run["trials"] if t.get("method", "windows") == method]
        regs = [t for t in trials if t["kind"] == "regression"]
        healthy = [t for t in trials if t["kind"] == "healthy"]
        rolled = [t for t in regs if t["outcome"] == "RolledBack" and t["weight_off"] is not None]
        from_5xx = [
            t["weight_off"] - t["first_canary_5xx"]
            for t in rolled
            if t["first_canary_5xx"] is not None
        ]
        from_weight = [t["weight_off"] - t["weight_on"] for t in rolled if t["weight_on"]]
        promoted = [
            t["promoted"] - t["weight_on"]
            for t in healthy
            if t["outcome"] == "Promoted" and t["weight_on"] is not None
        ]
        false_rb = sum(t["outcome"] == "RolledBack" for t in healthy)
        cols[method] = {
            "5xx": f"{_p(from_5xx, 0.5)} / {_p(from_5xx, 0.95)} ({len(rolled)}/{len(regs)})",
            "weight": f"{_p(from_weight, 0.5)} / {_p(from_weight, 0.95)}",
            "false": f"{false_rb} of {len(healthy)}",
            "promotion": f"{_p(promoted, 0.5)} / {_p(promoted, 0.95)}",
            "ratio": (f"{nearest_rank(promoted, 0.95) / nominal:.2f}" if promoted else "n/a"),
        }
    seq, win = cols.get("sequential", {}), cols.get("windows", {})
    rows = [
        ("30%-error canary: first client-visible 5xx → weight 0, p50 / p95 s (rolled back)", "5xx"),
        ("the same from route weight > 0, p50 / p95 s", "weight"),
        ("healthy canaries rolled back", "false"),
        ("healthy: route weight > 0 → promoted, p50 / p95 s", "promotion"),
        (f"healthy promotion p95 / nominal {nominal} s (two {settings['interval_s']} s windows "
         "plus the weight shifts)", "ratio"),
    ]  # fmt: skip
    out = [
        "## Side by side",
        "",
        f"| | sequential (interval {settings['sequential_interval_s']}s, failureLimit 1) "
        f"| windows (interval {settings['interval_s']}s, failureLimit "
        f"{settings['failure_limit']}) |",
        "|---|---|---|",
    ]
    out += [f"| {label} | {seq.get(key, 'n/a')} | {win.get(key, 'n/a')} |" for label, key in rows]
    out += [
        "",
        "Targets for the sequential method: rolled back <= 8 s p95 after the first "
        "client-visible error, 0 false rollbacks in 20 healthy trials, healthy promotion p95 "
        "<= 1.3x the nominal step time.",
        "",
    ]
    return out


if __name__ == "__main__":
    sys.exit(main())
