"""bench/results/chaos-<date>.md from a campaign's runs: the targets, a table per scenario
(counts and the worst recovery), and every run with its seed."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence

from bench.chaos.rig import RunResult, Settings
from bench.chaos.scenarios import SCENARIOS
from bench.machine import cpu_model, memory_gb, versions

RECOVERY_TARGET_S = 30.0
CAMPAIGN_TARGET_S = 30 * 60


METHOD = [
    "## How",
    "",
    "Every run is a full rollout in a fresh namespace on the local control plane (etcd,",
    "kube-apiserver, controller-manager, scheduler; kwok nodes, a `modelserver` process per pod",
    "whose readiness probe stands in for the kubelet's, Debian's Prometheus scraping them every",
    "second): a stable v1 Ready and answering (one pod; two where a stable pod is deleted),",
    "load through the weighted gateway",
    "(127.0.0.1), then v2 applied, healthy or answering 30% of requests with 5xx (settings",
    "below). The fault starts a drawn time after the canary's first traffic (onset and down",
    "time per run in the table). The operator reaches kube-apiserver",
    "through a TCP proxy: cut off, it moves no bytes and leaves new connections unanswered (a",
    "firewall dropping packets); healed, the held bytes go through. Prometheus sits behind a",
    "proxy that refuses connections (down), answers HTTP 503, or answers an empty result.",
    "kube-apiserver and etcd are stopped with SIGTERM and started again with the same flags and",
    "data. Pods are deleted (the default grace period). Leader kill: two replicas peered in a",
    "ClusterKopfPeering, priorities 200 and 100; the first is SIGKILLed.",
    "",
    "Checked for every run: the outcome (a bad canary that was ever the stable revision is a",
    "wrong promotion; a healthy one rolled back, a wrong rollback); requests answered by a pod",
    "that was not Ready at any moment while they were out (readiness as the gateway saw it, from",
    "the pod runner's registry); non-2xx answers of the stable revision; recovery: from the",
    "fault's end to the first change of the rollout's progress in status (phase, revisions,",
    "weight, step and its evidence, bake, history), 0 when decided by then; Deployments,",
    "Services, HPAs and PDBs all owned by the ModelDeployment, none twice for a revision, none",
    "left for an old revision after scale-down; history never losing or repeating a revision,",
    "the canary's entry naming its outcome.",
    "",
    "'No pod' counts requests the gateway answered itself, 503 because the canary (or stable)",
    "Service had no ready endpoint at that moment. On kwok nodes a pod is Ready in the API as",
    "soon as it runs, before its `modelserver` process has loaded the model, so the operator",
    "sends a new canary (or a deleted pod's replacement) traffic a second or two before it can",
    "answer; on a real node the readiness probe holds the pod out of the Service until then.",
    "They are reported, not counted as answers of unready pods.",
    "",
    "With `--real-node` the pod kills (scenario 6) run on the real node (kubelet, containerd,",
    "kube-proxy): the serving image built here, placed there by node selector and toleration,",
    "its model read over HTTP at the node address, scraped by a Prometheus that finds the pods",
    "through the API server, routed by replica ratio, the load sent to the Service's cluster",
    "IP. No answer names its pod there: 'unready' counts requests that got no answer or",
    "502/503/504 (kube-proxy sends requests to Ready endpoints only, so a pod that could not",
    "serve them), 'stable non-2xx' every other non-2xx but a bad canary's injected 500s. The",
    "nodes column says where each scenario's pods ran.",
]


def _worst(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if len(known) < len(values):
        return "never (a run did not move again)"
    return f"{max(known):.1f} s" if known else "-"


def summary_rows(results: Sequence[RunResult]) -> list[str]:
    rows = [
        "| # | scenario | nodes | runs (healthy/bad) | fault during rollout | right outcome "
        "| wrong | undecided "
        "| requests | to unready pods | stable non-2xx | no pod (gateway) "
        "| worst recovery | children/history problems | all checks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        mine = [r for r in results if r.spec.scenario == scenario.name]
        if not mine:
            continue
        healthy = sum(1 for r in mine if r.spec.kind == "healthy")
        decided = [r for r in mine if r.outcome in ("Promoted", "RolledBack")]
        right = sum(1 for r in decided if not r.wrong)
        wrong = sum(1 for r in mine if r.wrong)
        problems = sum(len(r.child_problems) + len(r.history_problems) for r in mine)
        nodes = "+".join(sorted({r.node for r in mine}))
        rows.append(
            f"| {scenario.number} | {scenario.name}: {scenario.what} | {nodes} "
            f"| {len(mine)} ({healthy}/{len(mine) - healthy}) "
            f"| {sum(1 for r in mine if r.hit_rollout)} | {right} | {wrong} "
            f"| {len(mine) - len(decided)} | {sum(r.requests for r in mine)} "
            f"| {sum(r.unready for r in mine)} | {sum(r.stable_failures for r in mine)} "
            f"| {sum(r.gateway_errors for r in mine)} "
            f"| {_worst([r.recovery_s for r in mine])} | {problems} "
            f"| {sum(1 for r in mine if r.ok)}/{len(mine)} |"
        )
    return rows


def run_rows(results: Sequence[RunResult]) -> list[str]:
    rows = [
        "| run | node | seed | canary | onset / down (s) | fault during rollout | outcome "
        "| decided (s) | recovery (s) | requests | unready | stable non-2xx | no pod | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        notes = [r.wrong, r.error, r.fault.note if r.fault else "", *r.child_problems]
        notes += r.history_problems
        rec = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        decided = "-" if r.decided_s is None else f"{r.decided_s:.1f}"
        rows.append(
            f"| {r.spec.key} | {r.node} | {r.spec.seed} | {r.spec.kind} "
            f"| {r.spec.onset_s:.1f} / {r.spec.down_s:.1f} | {'yes' if r.hit_rollout else 'no'} "
            f"| {r.outcome} | {decided} | {rec} "
            f"| {r.requests} | {r.unready} | {r.stable_failures} | {r.gateway_errors} "
            f"| {'; '.join(n for n in notes if n) or ''} |"
        )
    return rows


def render(
    results: Sequence[RunResult],
    *,
    seed: int,
    elapsed_s: float,
    argv: Sequence[str],
    settings: Settings,
    planned: int,
) -> str:
    wrong = sum(1 for r in results if r.wrong)
    unready = sum(r.unready for r in results)
    stable = sum(r.stable_failures for r in results)
    recoveries = [r.recovery_s for r in results]
    worst = _worst(recoveries)
    late = sum(1 for v in recoveries if v is None or v > RECOVERY_TARGET_S)
    undecided = sum(1 for r in results if r.outcome not in ("Promoted", "RolledBack"))

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = [
        f"# Chaos campaign, {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
        f"`make chaos` (`python -m bench.chaos.run {' '.join(argv)}`), seed **{seed}**: "
        f"{len(results)} of {planned} planned runs in {elapsed_s / 60:.1f} min. Any run again: "
        f"`python -m bench.chaos.run --seed {seed} --only NAME:INDEX`.",
        "",
        "## Targets",
        "",
        "| target | result | |",
        "|---|---|---|",
        f"| 0 wrong outcomes | {wrong} | {met(wrong == 0)} |",
        f"| every rollout decided | {len(results) - undecided}/{len(results)} "
        f"| {met(undecided == 0)} |",
        f"| 0 requests answered by a pod that was not Ready | {unready} | {met(unready == 0)} |",
        f"| 0 non-2xx answers from the stable | {stable} | {met(stable == 0)} |",
        f"| recovery <= 30 s after every fault | worst {worst}, {late} over | {met(late == 0)} |",
        f"| campaign <= 30 min | {elapsed_s / 60:.1f} min "
        f"| {met(elapsed_s <= CAMPAIGN_TARGET_S)} |",
        "",
        "## Per scenario",
        "",
        *summary_rows(results),
        "",
        *METHOD,
        "",
        f"Settings: {settings.describe()}.",
        "",
        "## Every run",
        "",
        *run_rows(results),
        "",
        "## Machine",
        "",
        f"- {cpu_model()}, {os.cpu_count()} cores, {memory_gb()} GiB, "
        f"{platform.system()} {platform.release()}; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        *(f"- {k}: {v}" for k, v in versions().items()),
        "",
    ]
    return "\n".join(lines)
