"""What kube-proxy has programmed on the real node: the pod addresses a Service's cluster IP is
sent to, read from its iptables rules.

A pod turning Ready reaches the Service in three steps: the EndpointSlice controller marks its
endpoint ready, kube-proxy sees the slice, and kube-proxy rewrites its rules (at most once a
second). Until the last step a Service without programmed endpoints answers with a REJECT
("connection refused"). Waiting on the pod or the slice alone races that; `routed` reads the
rules themselves.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

# kube-proxy's iptables mode: KUBE-SERVICES jumps to one KUBE-SVC-* chain per service port,
# which picks one KUBE-SEP-* chain per endpoint, which DNATs to the pod.
SERVICES = "KUBE-SERVICES"


def _nat_rules() -> list[list[str]]:
    out = subprocess.run(
        ["iptables", "-w", "5", "-t", "nat", "-S"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"iptables -t nat -S failed: {out.stderr.strip()}")
    return [shlex.split(line) for line in out.stdout.splitlines() if line.startswith("-A ")]


def _arg(rule: list[str], flag: str) -> str | None:
    return rule[rule.index(flag) + 1] if flag in rule[:-1] else None


def routed(cluster_ip: str, port: int) -> set[str]:
    """The pod addresses kube-proxy sends `cluster_ip:port` to now (empty: none, or REJECT)."""
    return routed_in(_nat_rules(), cluster_ip, port)


def routed_in(rules: list[list[str]], cluster_ip: str, port: int) -> set[str]:
    """`routed`, from the nat table's rules as `iptables -S` prints them, split into words."""
    chains = {
        target
        for rule in rules
        if rule[1] == SERVICES
        and _arg(rule, "-d") == f"{cluster_ip}/32"
        and _arg(rule, "--dport") == str(port)
        and (target := _arg(rule, "-j"))
    }
    endpoints = {
        target
        for rule in rules
        if rule[1] in chains and (target := _arg(rule, "-j")) and target.startswith("KUBE-SEP-")
    }
    return {
        destination.rsplit(":", 1)[0]
        for rule in rules
        if rule[1] in endpoints and (destination := _arg(rule, "--to-destination"))
    }


def ready_ips(pods: Iterable[dict[str, Any]]) -> set[str]:
    """The addresses of the pods that are Ready and not being deleted: what the Service's
    EndpointSlice lists as ready."""
    return {
        pod["status"]["podIP"]
        for pod in pods
        if not pod["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
    }


def wait_routed(
    cluster_ip: str, port: int, expected: Callable[[], set[str]], timeout: float = 60
) -> set[str]:
    """Wait until kube-proxy sends `cluster_ip:port` to exactly the addresses `expected()`
    returns (the Service's Ready pods) and that set is not empty; return it."""
    deadline = time.monotonic() + timeout
    want: set[str] = set()
    have: set[str] = set()
    while time.monotonic() < deadline:
        want, have = expected(), routed(cluster_ip, port)
        if want and want == have:
            return have
        time.sleep(0.25)
    raise TimeoutError(
        f"kube-proxy does not route {cluster_ip}:{port} to the ready pods {sorted(want)} "
        f"within {timeout:.0f}s (it routes to {sorted(have)})"
    )
