"""The results file: targets, the comparison with Flagger and Argo Rollouts, raw trials."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from .compare import SOURCES_MD, references

TARGET_P95_S = 30.0
TARGET_FALSE_ROLLBACKS = 0


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank: with 10 values, p95 is the largest."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _stats_row(label: str, values: list[float], planned: int) -> str:
    if not values:
        return f"| {label} | 0/{planned} | n/a | n/a | n/a | n/a |"
    return (
        f"| {label} | {len(values)}/{planned} | {min(values):.1f} | "
        f"{nearest_rank(values, 0.5):.1f} | {nearest_rank(values, 0.95):.1f} | "
        f"{max(values):.1f} |"
    )


def _windows(trial: dict[str, Any]) -> str:
    out = []
    for w in trial["windows"]:
        counts = ""
        if w.get("canary_requests") is not None:
            counts = f" {w.get('canary_errors') or 0}/{w['canary_requests']}"
        out.append(f"{str(w['verdict'])[0]}@{w['at']:.1f}{counts}")
    return ", ".join(out) or "n/a"


def _ratios(trial: dict[str, Any]) -> list[float]:
    """The p99 ratios an analysis window judged (the reason names them: "ratio 1.07")."""
    out = []
    for w in trial["windows"]:
        found = re.search(r"ratio (\d+(?:\.\d+)?)", str(w.get("reason", "")))
        if found:
            out.append(float(found[1]))
    return out


def _p99_compared(trial: dict[str, Any]) -> str:
    return ", ".join(f"{r:.2f}" for r in _ratios(trial)) or "none"


def _during(machine: dict[str, Any]) -> str:
    during = machine.get("loadavg_1m_during")
    if not during:
        return ""
    return (
        f", 1-minute load average sampled every 10 s during the run: mean {during['mean']}, "
        f"max {during['max']}"
    )


def _median(values: list[float]) -> str:
    return f"{nearest_rank(values, 0.5):.1f}" if values else "n/a"


def _observations(regs: list[dict[str, Any]], healthy: list[dict[str, Any]]) -> list[str]:
    """Facts read off the raw trials that explain the figures."""
    out = ["## Observations", ""]
    gaps = [
        t["first_canary_response"] - t["weight_on"]
        for t in [*regs, *healthy]
        if t["first_canary_response"] is not None and t["weight_on"] is not None
    ]
    if gaps:
        out.append(
            f"- Route weight > 0 → first canary response: median {_median(gaps)} s, max "
            f"{max(gaps):.1f} s. kwok reports a pod Ready as soon as it runs; the pod runner then "
            "starts its model server and the gateway re-reads routes every 0.5 s, so the route "
            "onset leads the canary's first answer by this much. On a cluster the readiness "
            "probe would hold the pod (and the weight) back instead; the first-5xx onset "
            "leaves this stand-in delay out."
        )
    firsts, seconds = [], []
    for t in regs:
        fails = [w["at"] for w in t["windows"] if w["verdict"] == "Fail"]
        if t["weight_on"] is not None and len(fails) >= 2:
            firsts.append(fails[0] - t["weight_on"])
            seconds.append(fails[1] - t["weight_on"])
    if firsts:
        out.append(
            f"- Regression windows, seconds after route weight > 0: first Fail median "
            f"{_median(firsts)} s (max {max(firsts):.1f}), second Fail (the rollback) median "
            f"{_median(seconds)} s (max {max(seconds):.1f}). Each window is the interval plus up "
            "to one requeue (interval / 5) before the reconcile that finds it due; the first "
            "also waits for the reconcile that reads the weight back."
        )
    bad = [(t, w) for t in healthy for w in t["windows"] if w["verdict"] != "Pass" and w["reason"]]
    for t, w in bad:
        out.append(f"- Healthy #{t['index']}, {w['verdict']} at {w['at']:.1f} s: {w['reason']}.")
    if bad:
        out.append(
            "  A single failed window does not roll back: failureLimit counts consecutive "
            "failures and the next window passed. The p99s (tens to 150 ms against 20 ms "
            "injected) are scheduling noise of the shared machine, not the ±10% difference."
        )
    for t in healthy:
        if t["canary_5xx"] or t["stable_5xx"]:
            codes = ", ".join(
                f"{k}: {v}" for k, v in sorted((t.get("codes") or {}).items()) if k[-3] != "2"
            )
            out.append(
                f"- Healthy #{t['index']}: {t['canary_5xx']} canary and {t['stable_5xx']} stable "
                f"5xx (or no response) at a client; {codes or 'status codes not recorded'}."
            )
    out.append("")
    return out if len(out) > 3 else []


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def render(run: dict[str, Any]) -> str:
    meta, settings = run["meta"], run["settings"]
    target = float(settings.get("target_p95_s", TARGET_P95_S))
    trials: list[dict[str, Any]] = run["trials"]
    regs = sorted((t for t in trials if t["kind"] == "regression"), key=lambda t: t["index"])
    healthy = sorted((t for t in trials if t["kind"] == "healthy"), key=lambda t: t["index"])
    n_reg, n_healthy = meta["planned"]["regression"], meta["planned"]["healthy"]

    rolled = [t for t in regs if t["outcome"] == "RolledBack"]
    from_weight = [t["weight_off"] - t["weight_on"] for t in rolled if t["weight_on"] is not None]
    from_5xx = [
        t["weight_off"] - t["first_canary_5xx"]
        for t in rolled
        if t["first_canary_5xx"] is not None and t["weight_off"] is not None
    ]
    missed_reg = n_reg - len(from_weight)
    false_rb = [t for t in healthy if t["outcome"] == "RolledBack"]
    promoted = [t for t in healthy if t["outcome"] == "Promoted"]
    promotion = [t["promoted"] - t["weight_on"] for t in promoted if t["weight_on"] is not None]
    undecided = [t for t in healthy if t["outcome"] not in ("Promoted", "RolledBack")]

    p95_weight = nearest_rank(from_weight, 0.95) if from_weight else math.inf
    p50_weight = nearest_rank(from_weight, 0.5) if from_weight else None
    p95_5xx = nearest_rank(from_5xx, 0.95) if from_5xx else math.inf
    # A trial not rolled back counts as a miss whatever the others did.
    reg_met = missed_reg == 0 and p95_weight <= target
    reg_met_5xx = missed_reg == 0 and p95_5xx <= target
    healthy_met = len(false_rb) == TARGET_FALSE_ROLLBACKS and not undecided

    lines: list[str] = []
    add = lines.append
    add(f"# bench-rollback, {meta['date']}")
    add("")
    add(
        "How fast a regressing canary loses its traffic, and whether a healthy one with latency "
        "noise is ever rolled back, on the real parts end to end: the local control plane, the "
        "operator as a subprocess, one `modelserver` process per pod (hack/podrunner.py), "
        "Debian's Prometheus scraping them every second, and the weighted gateway "
        "(hack/gateway.py) routing by the HTTPRoute's weights. `make bench-rollback` "
        "(bench/rollback/run.py)."
    )
    add("")
    add("## Targets")
    add("")
    add("| target | measured | met |")
    add("|---|---|---|")
    add(
        f"| regression onset → canary weight 0 ≤ {target:g} s, p95 over {n_reg} trials; "
        "onset = the canary's first 5xx seen by a client "
        f"| p95 **{_f(p95_5xx)} s** (rolled back {len(rolled)}/{n_reg}) "
        f"| {'yes' if reg_met_5xx else 'no'} |"
    )
    add(
        "| the same, onset = the canary's route weight first > 0 "
        f"| p95 **{_f(p95_weight)} s** | {'yes' if reg_met else 'no'} |"
    )
    add(
        f"| 0 rollbacks in {n_healthy} healthy trials (canary latency within ±"
        f"{settings['latency_noise'] * 100:g}% of the stable) | **{len(false_rb)} rolled back**, "
        f"{len(promoted)} promoted, {len(undecided)} undecided/failed "
        f"| {'yes' if healthy_met else 'no'} |"
    )
    add("")
    add("| seconds | trials | min | p50 | p95 | max |")
    add("|---|---|---|---|---|---|")
    add(_stats_row("regression: canary route weight > 0 → weight 0", from_weight, n_reg))
    add(_stats_row("regression: first canary 5xx at a client → weight 0", from_5xx, n_reg))
    add(_stats_row("healthy: canary route weight > 0 → promoted", promotion, n_healthy))
    add("")
    add(
        "Percentiles are nearest-rank (with 10 trials, p95 is the slowest trial). Times are "
        "taken by this process: the HTTPRoute is read every 0.25 s, and the load generator "
        "stamps each response when it arrives."
    )
    add("")

    add("## Compared with Flagger and Argo Rollouts defaults")
    add("")
    add(
        f"Same scenario: the canary takes traffic at t = 0 and answers "
        f"{settings['regression_error_ratio'] * 100:g}% of requests with 5xx; the figure is when "
        "its traffic weight is back at 0. Computed from the documented rules (below), not run."
    )
    add("")
    add("| tool | settings | onset → weight 0 | formula | note |")
    add("|---|---|---|---|---|")
    for ref in references(settings["interval_s"], settings["failure_limit"]):
        secs = "not detected" if ref.seconds is None else f"{ref.seconds:g} s"
        add(f"| {ref.tool} | {ref.settings} | {secs} | {ref.formula} | {ref.note} |")
    add(
        f"| ModelRollout (measured here) | interval {settings['interval_s']}s, failureLimit "
        f"{settings['failure_limit']} | from route weight > 0: p50 {_f(p50_weight)} s, "
        f"p95 {_f(p95_weight)} s; from first 5xx: p95 {_f(p95_5xx)} s | nominal "
        f"{settings['failure_limit']} x interval = "
        f"{settings['failure_limit'] * settings['interval_s']} s, plus the reconcile's "
        "requeue (interval / 5) and second-resolution window stamps per window | "
        "measured on the real parts |"
    )
    add("")
    add(SOURCES_MD)

    add("## Setup")
    add("")
    m = meta["machine"]
    add(
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Linux "
        f"{m['kernel']}; load average {m['loadavg_start']} at the start, {m['loadavg_end']} at "
        f"the end{_during(m)}. Shared: other work ran on the same cores during the run, so "
        "absolute times carry its noise. Nothing pinned: the control plane (etcd, kube-apiserver, "
        "controller-manager, scheduler, kwok), the operator, Prometheus, the gateway, this "
        "process (load generator, pollers, pod runner) and two model servers per running "
        "trial share the cores."
    )
    add(
        f"- Date (UTC): {meta['started']} → {meta['finished']}; "
        f"runtime {meta['runtime_min']:.1f} min."
    )
    add("- Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    add(
        f"- Each trial: a fresh namespace; ModelDeployment steps [setWeight 20, analysis, "
        f"setWeight 50, analysis], interval {settings['interval_s']}s, failureLimit "
        f"{settings['failure_limit']}, minRequests {settings['min_requests']}, maxLatencyRatio "
        f"{settings['max_latency_ratio'] or 'API default (1.5)'}, other analysis limits at "
        f"their defaults, bakeTime {settings['bake_s']}s; HTTPRoute router; "
        f"{settings['rate_per_s']:g} req/s open-loop through the gateway (127.0.0.1, at most "
        "32 in flight) from 5 s before the new version is applied until the rollout is "
        "decided (healthy trials: until the bake window ends)."
    )
    add(
        f"- Regression: v1 healthy, v2 with MODELSERVER_FAULT_ERROR_RATIO="
        f"{settings['regression_error_ratio']:g}. Healthy: v1 with MODELSERVER_FAULT_LATENCY_MS="
        f"{settings['stable_latency_ms']:g}, v2 with a latency drawn uniformly within ±"
        f"{settings['latency_noise'] * 100:g}% (seed {meta['seed']})."
    )
    add(
        f"- {meta['parallel']} trial(s) at a time, kinds interleaved; order: "
        f"{' '.join(meta['order'])}."
    )
    add("")

    add("## Regression trials")
    add("")
    add(
        "Seconds after v2 was applied. *onset→0*: route weight > 0 → 0; *5xx→0*: first canary "
        "5xx at a client → route weight 0; *last canary*: last response from the canary after "
        "the weight went to 0 (the gateway re-reads routes every 0.5 s). Windows: verdict@time "
        "errors/requests of the canary as the status showed them (F Fail, P Pass, I "
        "Inconclusive)."
    )
    add("")
    add(
        "| # | outcome | weight>0 | first canary response | first 5xx | weight 0 | onset→0 "
        "| 5xx→0 | last canary | canary 5xx/responses | dropped/sent | windows |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in regs:
        add(
            f"| {t['index']} | {t['outcome']} | {_f(t['weight_on'])} | "
            f"{_f(t['first_canary_response'])} | "
            f"{_f(t['first_canary_5xx'])} | {_f(t['weight_off'])} | "
            f"{_f(_sub(t['weight_off'], t['weight_on']))} | "
            f"{_f(_sub(t['weight_off'], t['first_canary_5xx']))} | "
            f"{_f(_sub(t['last_canary_response'], t['weight_off']))} | "
            f"{t['canary_5xx']}/{t['canary_responses']} | {t['dropped']}/{t['sent']} | "
            f"{_windows(t)} |"
        )
    add("")

    add("## Healthy trials")
    add("")
    add(
        "Seconds after v2 was applied. *promotion*: route weight > 0 → v2 is the stable "
        "revision; *bake done*: the bake window after promotion ended without a rollback."
    )
    add("")
    add(
        "| # | stable ms | canary ms | outcome | weight>0 | promoted | promotion | bake done "
        "| 5xx (canary/stable) | dropped/sent | p99 compared | windows |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in healthy:
        add(
            f"| {t['index']} | {_f(t['stable_latency_ms'])} | {_f(t['canary_latency_ms'], 2)} | "
            f"{t['outcome']} | {_f(t['weight_on'])} | {_f(t['promoted'])} | "
            f"{_f(_sub(t['promoted'], t['weight_on']))} | {_f(t['bake_done'])} | "
            f"{t['canary_5xx']}/{t['stable_5xx']} | {t['dropped']}/{t['sent']} | "
            f"{_p99_compared(t)} | {_windows(t)} |"
        )
    add("")
    compared = sum(len(_ratios(t)) for t in healthy)
    windows = sum(1 for t in healthy for w in t["windows"] if w.get("canary_requests"))
    add(
        f"The p99 latency ratio was compared in {compared} of the {windows} healthy windows "
        "with canary traffic: below 200 canary requests in a window it is not judged, and at "
        f"{settings['rate_per_s']:g} req/s a 10 s window at 50% holds about 200. *p99 "
        "compared* lists the ratios judged (canary p99 / stable p99)."
    )
    add("")

    lines.extend(_observations(regs, healthy))
    problems = [t for t in trials if t["error"] or t["outcome"] in ("Timeout", "Error")]
    wrong = [t for t in regs if t["outcome"] != "RolledBack"] + false_rb
    if problems or wrong:
        add("## Trials that went wrong")
        add("")
        for t in {id(t): t for t in [*wrong, *problems]}.values():
            why = t["error"] or t["reason"] or "n/a"
            add(f"- {t['kind']} #{t['index']} ({t['namespace']}): {t['outcome']}: {why}")
        add("")
    for met, p95, what in (
        (reg_met_5xx, p95_5xx, "first canary 5xx"),
        (reg_met, p95_weight, "canary route weight > 0"),
    ):
        if not met and math.isfinite(p95):
            add(
                f"Regression target, onset = {what}: missed by {p95 - target:.1f} s "
                f"(p95 {p95:.1f} s against {target:g} s)."
            )
            add("")
    return "\n".join(lines).rstrip() + "\n"
