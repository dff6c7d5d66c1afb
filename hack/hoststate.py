"""What a real node changes on the host, recorded before it starts and put back after it stops.

kubelet, kube-proxy, containerd and the CNI plugins change host-wide state: sysctls, iptables
chains, cgroups in every hierarchy, mounts, network namespaces and links. `record` saves the
sysctls they touch into the node's directory (so `cluster-down` can restore them even after a
crash); `restore` writes them back. The readers here are what hack/nodestop.py removes, then
checks for once the node has stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

# Sysctls kubelet and kube-proxy set (kubelet's protectKernelDefaults=false path, kube-proxy's
# conntrack and localhost-nodeport handling) and the ones this module sets for pod networking.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "net.netfilter.nf_conntrack_max",
)
# Chains created by kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT), kube-proxy
# (KUBE-SERVICES and the per-service chains), the CNI plugins (CNI-*) and this project (MRNODE-*).
CHAIN_PREFIXES = ("KUBE-", "CNI-", "MRNODE-")
TABLES = ("filter", "nat", "mangle", "raw")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("kubepods", "kubepods.slice")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        try:
            values[name] = _sysctl_path(name).read_text().strip()
        except OSError:
            continue  # not present on this kernel (no br_netfilter, no conntrack yet)
    return values


def write_sysctl(name: str, value: str) -> None:
    try:
        _sysctl_path(name).write_text(value)
    except OSError as exc:
        raise RuntimeError(f"cannot set sysctl {name}={value}: {exc}") from exc


def record(path: Path) -> None:
    """Save the sysctls as they are now, unless a record from an unfinished run is there: that
    one holds the values from before that run changed them."""
    if not path.exists():
        path.write_text(json.dumps(read_sysctls(), indent=2))


# --- iptables ----------------------------------------------------------------------------------


def _ipt(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True, check=False)


def iptables_chains() -> dict[str, list[str]]:
    """Every user-defined chain per `iptables:TABLE` and `ip6tables:TABLE`."""
    chains: dict[str, list[str]] = {}
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            out = _ipt(binary, "-t", table, "-S").stdout
            names = sorted(line.split()[1] for line in out.splitlines() if line.startswith("-N "))
            chains[f"{binary}:{table}"] = names
    return chains


def remove_chains() -> None:
    """Delete every jump into our chains from the built-in chains, then flush and delete them."""
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            rules = _ipt(binary, "-t", table, "-S").stdout.splitlines()
            ours = [r.split()[1] for r in rules if r.startswith("-N ") and _ours(r.split()[1])]
            for rule in rules:
                parts = rule.split()
                if parts[0] == "-A" and not _ours(parts[1]) and any(_ours(p) for p in parts):
                    _ipt(binary, "-t", table, "-D", *parts[1:])
            for chain in ours:
                _ipt(binary, "-t", table, "-F", chain)
            for chain in ours:
                _ipt(binary, "-t", table, "-X", chain)


def _ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIXES)


# --- processes, mounts, network namespaces, cgroups ---------------------------------------------


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below any of `roots`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def unmount_under(*roots: Path) -> None:
    for point in mounts_under(*roots):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def netns_names() -> list[str]:
    try:
        return sorted(p.name for p in Path("/run/netns").iterdir())
    except OSError:
        return []


def remove_netns(prefix: str = "cni-") -> None:
    """The CRI plugin names pod network namespaces cni-<uuid>; nothing else here uses that."""
    for name in netns_names():
        if name.startswith(prefix):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def cgroup_dirs() -> list[str]:
    found = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []:
        for name in CGROUP_NAMES:
            if (hierarchy / name).is_dir():
                found.append(str(hierarchy / name))
    return found


def remove_cgroups(timeout: float = 10.0) -> None:
    """Kill whatever still runs in the kubepods cgroups, then remove them bottom up."""
    deadline = time.monotonic() + timeout
    for top in cgroup_dirs():
        dirs = sorted((p for p in Path(top).rglob("*") if p.is_dir()), key=str, reverse=True)
        for directory in [*dirs, Path(top)]:
            while True:
                _kill_procs(directory)
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)


def _kill_procs(cgroup: Path) -> None:
    try:
        pids = (cgroup / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            continue


def processes_matching(pattern: str) -> list[str]:
    """Command lines of live processes matching `pattern` (a regular expression)."""
    regex = re.compile(pattern)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmdline and regex.search(cmdline):
            found.append(f"{entry.name} {cmdline}")
    return found


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def delete_link(name: str) -> None:
    if link_exists(name):
        subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)


def restore(sysctl_record: Path) -> dict[str, str]:
    """Write back the recorded sysctls and forget the record; return what it held."""
    try:
        saved: dict[str, str] = json.loads(sysctl_record.read_text())
    except (OSError, ValueError):
        return {}
    for name, value in saved.items():
        if _sysctl_path(name).exists():
            write_sysctl(name, value)
    sysctl_record.unlink()
    return saved
