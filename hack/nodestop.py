"""Stopping the real node: its processes are ended and waited for, what it changed on the host is
removed, and what is still there afterwards is reported (nothing, when the stop worked).

The order matters: kubelet first (it would restart containers), then the containers through
containerd, then containerd and the shims; only when no process is left in the pods' cgroups
are the cgroups, mounts, network namespaces, iptables chains and the bridge removed. Every
wait is for a fact (a process gone, a cgroup empty), bounded in time; `leftovers` then checks
the host itself, so a stop that did not finish is reported instead of passing unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hack import hoststate
from hack.nodeconfig import BRIDGE, RUN, STATE, containerd_address

# The node's processes, found by their configuration paths (containerd's shims outlive it).
AGENTS = rf"^\S*(kubelet|kube-proxy|coredns|metrics-server) .*{STATE}"
RUNTIME = rf"^\S*(containerd|containerd-shim-runc-v2) .*({RUN}|{STATE})"
SYSCTL_RECORD = "host-sysctls.json"
# Each step's bound; under a heavily shared CPU a shim can take seconds to exit.
STEP_S = 30.0


def log(message: str) -> None:
    print(f"[realnode] {message}", file=sys.stderr, flush=True)


def ctr() -> list[str]:
    return ["ctr", "--address", containerd_address()]


def tasks() -> list[str]:
    out = subprocess.run(
        [*ctr(), "-n", "k8s.io", "tasks", "ls", "-q"], capture_output=True, text=True, check=False
    )
    return out.stdout.split() if out.returncode == 0 else []


def _ctr(*args: str) -> None:
    subprocess.run([*ctr(), "-n", "k8s.io", *args], capture_output=True, check=False)


def cleanup(kube_proxy: Path | None = None) -> None:
    """Remove everything a real node leaves on the host. Idempotent; safe after a crash."""
    stop_processes(hoststate.processes_matching(AGENTS))  # kubelet would restart containers
    for task in tasks():
        _ctr("tasks", "kill", "-s", "SIGKILL", task)
    deadline = time.monotonic() + STEP_S
    while (left := tasks()) and time.monotonic() < deadline:
        for task in left:
            _ctr("tasks", "delete", "-f", task)
        time.sleep(0.2)
    containers = subprocess.run(
        [*ctr(), "-n", "k8s.io", "containers", "ls", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    for container in containers.stdout.split() if containers.returncode == 0 else []:
        _ctr("containers", "delete", container)
    stop_processes(hoststate.processes_matching(RUNTIME))
    hoststate.remove_cgroups(timeout=STEP_S)  # kills what a killed shim left running
    hoststate.unmount_under(STATE, RUN)
    hoststate.remove_netns()
    if kube_proxy is not None:
        subprocess.run([str(kube_proxy), "--cleanup"], capture_output=True, check=False)
    hoststate.remove_chains()
    hoststate.delete_link(BRIDGE)
    shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(RUN, ignore_errors=True)


def cleanup_after_crash(directory: Path) -> None:
    """`cluster-down` when the supervisor is gone: a host record left in `directory` means a real
    node started there and was not stopped."""
    record = directory / SYSCTL_RECORD
    if record.exists():
        log("a real node was not stopped: removing what it left")
        cleanup()
        hoststate.restore(record)


def _gone(pid: int) -> bool:
    """Exited: no longer in /proc, or a zombie (the cluster's own children are reaped later)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    while (alive := [p for p in pids if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def stop_processes(lines: list[str]) -> None:
    """SIGTERM, then SIGKILL what has not exited within STEP_S; return once all have exited."""
    own = os.getpid()
    pids = [int(line.split()[0]) for line in lines if int(line.split()[0]) != own]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in _wait_gone(pids, time.monotonic() + STEP_S):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if alive := _wait_gone(pids, time.monotonic() + STEP_S):
        log(f"processes still alive after SIGKILL: {alive}")


def leftovers(sysctls: dict[str, str]) -> dict[str, object]:
    """What of the node is still on the host, by kind; `sysctls` are the values from before it
    started. Empty when the stop left nothing behind."""
    ours = {
        table: chains
        for table, names in hoststate.iptables_chains().items()
        if (chains := [c for c in names if c.startswith(hoststate.CHAIN_PREFIXES)])
    }
    now = hoststate.read_sysctls()
    found: dict[str, object] = {
        "processes": [
            *hoststate.processes_matching(AGENTS),
            *hoststate.processes_matching(RUNTIME),
        ],
        "mounts": hoststate.mounts_under(STATE, RUN),
        "netns": [n for n in hoststate.netns_names() if n.startswith("cni-")],
        "links": [BRIDGE] if hoststate.link_exists(BRIDGE) else [],
        "chains": ours,
        "cgroups": hoststate.cgroup_dirs(),
        "sysctls": {k: (v, now.get(k)) for k, v in sysctls.items() if now.get(k) != v},
        "paths": [str(p) for p in (STATE, RUN) if p.exists()],
    }
    return {kind: what for kind, what in found.items() if what}
