"""bench/results/scale-DATE.md: one section per N, the numbers before the watch-fed caches and
the work queue beside them, as ratios, and each target checked."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hack.localcluster import controller_workers

# Measured on the local control plane with kwok nodes, 1,000 ModelDeployments, 2026-11-30,
# with the operator as it was before (one daemon per object reading the API server directly).
BEFORE_1000 = {
    "ready_s": 259.0,
    "apiserver_rps_with": 241.8,
    "apiserver_rps_without": 1.1,
    "rss_mib": 290.0,
}


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return (
        f"{model}, {os.cpu_count()} cores (shared with other work), "
        f"{int(mem) / 1024 / 1024:.0f} GiB, Python {platform.python_version()}"
    )


def _check(ok: bool) -> str:
    return "met" if ok else "**not met**"


def section(r: dict[str, Any]) -> str:
    n = r["count"]
    per_1000 = r["operator_rps"] / (n / 1000)
    rss_target = 250.0 if n <= 1000 else 1024.0
    ratio = r["ready_s"] / r["floor_s"]
    qps = int(r.get("controller_qps") or 20)
    lines = [
        f"## N = {n:,} ({r['date']})",
        "",
        f"Machine: {_machine()}; load average {r.get('load', '?')} during the run. "
        f"Operator workers: {r['workers']}; idle window {r['idle_s']:.0f} s; "
        f"kube-controller-manager API rate limit {qps}/s, {controller_workers(qps)} Deployment and "
        "ReplicaSet workers.",
        "",
        "| measure | before | now | now / before | target | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    before = BEFORE_1000 if n == 1000 else {}

    def row(what: str, key: str, value: float, fmt: str, target: str, ok: bool) -> None:
        was = before.get(key)
        ratio_text = f"{value / was:.3f}" if was else ""
        was_text = format(was, fmt) if was is not None else "not measured"
        lines.append(
            f"| {what} | {was_text} | {format(value, fmt)} | {ratio_text} | "
            f"{target} | {_check(ok)} |"
        )

    row(
        "time to all Ready (s)",
        "ready_s",
        r["ready_s"],
        ".1f",
        f"<= 1.5 x floor ({1.5 * r['floor_s']:.1f} s)",
        ratio <= 1.5,
    )
    lines.append(
        f"| floor: same children, plain server-side apply (s) | | {r['floor_s']:.1f} | "
        f"ready / floor = {ratio:.2f} | | |"
    )
    # Context, not targets: everything else the API server serves (controllers, kwok).
    lines.append(
        f"| API server requests/s while idle, all clients: operator running / frozen | "
        f"{'241.8 / 1.1' if before else 'not measured'} | "
        f"{r['apiserver_rps_with']:.1f} / {r['apiserver_rps_without']:.1f} | | | |"
    )
    lines.append(
        f"| operator requests/s while idle (API server, running minus frozen) | "
        f"{'240.7' if before else 'not measured'} | {r['operator_rps']:.2f} | | "
        f"<= {n / 1000:g} (1 per 1,000) | {_check(per_1000 <= 1.0)} |"
    )
    lines.append(
        f"| operator requests/s while idle (its client's own log) | | "
        f"{r['operator_logged_rps']:.3f} | | | |"
    )
    row(
        "operator RSS after the idle window (MiB)",
        "rss_mib",
        r["rss_mib"],
        ".0f",
        f"<= {rss_target:.0f}",
        r["rss_mib"] <= rss_target,
    )
    lines.append(f"| operator peak RSS (MiB) | | {r['peak_rss_mib']:.0f} | | | |")
    lines.append(
        f"| operator CPU while idle (% of a core) | | {r['cpu_percent']:.2f} | | < 2 | "
        f"{_check(r['cpu_percent'] < 2)} |"
    )
    lines.append(
        f"| model version of {r['changed']} changed at once: all promoted (s) | | "
        f"{r['promoted_s']:.1f} | | | |"
    )
    unchanged = r["unchanged_with_writes"] + r["unchanged_objects_modified"]
    lines.append(
        f"| writes to the other {n - r['changed']} during that rollout | | "
        f"{len(unchanged)} | | 0 | {_check(not unchanged)} |"
    )
    lines += ["", "```json", json.dumps(r, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


HEADER = """# bench-scale results, {date}

`make bench-scale` (bench/scale/): a local control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) with kwok nodes sized for the pods; N ModelDeployments
of one small model (1 replica each, one `setWeight: 100` step, no analysis). The floor is a
plain script server-side applying the same children (copied from what the operator built for
one ModelDeployment) 16 at a time, until every Deployment is Available. Idle API requests are
the API server's `apiserver_request_total` rate with the operator running minus the rate with
the operator frozen (SIGSTOP: its watches stay open, it sends nothing), each over the same
window; the operator's own client log counts the same requests from its side. "Before" is the
operator before the watch-fed caches and the work queue (one daemon per ModelDeployment,
reading the API server at every reconcile), measured the same way at N = 1,000.

"""


def write(out: Path, result: dict[str, Any]) -> Path:
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"scale-{date}.md"
    text = path.read_text() if path.exists() else HEADER.format(date=date)
    heading = f"## N = {result['count']:,} "
    # One section per N: a new run replaces the earlier one.
    pattern = re.compile(rf"^{re.escape(heading)}.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub("", text).rstrip() + "\n\n" + section(result)
    path.write_text(text)
    return path
