"""A real node beside the kwok nodes: containerd + runc + the CNI bridge from Debian, kubelet and
kube-proxy (iptables mode) from the pinned Kubernetes module, CoreDNS for Service names and
metrics-server for real CPU metrics. `LocalCluster(real_node=True)` starts and stops it.

Network containment: pods get addresses on a bridge this module creates (POD_CIDR, the node's
address is the bridge's gateway); nothing is masqueraded, and a mangle rule drops every packet
from a pod address that would leave through another interface, and every packet to kwok's
fake node and pod addresses (which exist nowhere). Only one real node runs on a machine at a
time (a lock), since kubelet owns host-wide cgroups and iptables chains.

The node is tainted and labelled `modelrollout.io/node=real`: only pods that select it run on it,
so tests written for the kwok nodes are unaffected.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hack import certs as certgen
from hack import hoststate, nodestop
from hack.images import Builder, Image, import_into
from hack.nodeconfig import (
    BRIDGE,
    CLUSTER_DOMAIN,
    CNI_BIN,
    KWOK_CIDRS,
    LABEL,
    NODE,
    NODE_IP,
    POD_CIDR,
    RUN,
    SERVICE_CIDR,
    STATE,
    cni_config,
    containerd_address,
    containerd_config,
    corefile_text,
    kubelet_config,
    metrics_api,
    write_kubeconfig,
)
from hack.nodestop import SYSCTL_RECORD, cleanup, ctr, log
from hack.processes import free_port

__all__ = [
    "BRIDGE",
    "CLUSTER_DOMAIN",
    "LABEL",
    "NODE",
    "NODE_IP",
    "POD_CIDR",
    "RUN",
    "SERVICE_CIDR",
    "STATE",
    "RealNode",
    "cleanup",
    "unavailable",
]
LOCK = Path("/run/modelrollout-node.lock")
# Another test session's node usually stops within minutes; a demo left running does not.
LOCK_WAIT_S = 900
CONTAIN = "MRNODE-CONTAIN"
HOST_COMMANDS = ("containerd", "runc", "ctr", "iptables", "ip", "conntrack", "buildah", "umoci")
INSTALL_HINT = "run `make node-packages` (Debian's containerd, runc, CNI plugins, iptables, ...)"

Spawn = Callable[[str, Sequence[str | Path]], Any]


def unavailable() -> str | None:
    """Why a real node cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "a real node needs root (kubelet manages cgroups, mounts and iptables)"
    missing = [c for c in HOST_COMMANDS if shutil.which(c) is None]
    if missing or not (CNI_BIN / "bridge").exists():
        return f"missing {', '.join(missing) or 'CNI plugins'}: {INSTALL_HINT}"
    return None


def is_local_cluster_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A pod or Service address of the real node running on this machine right now."""
    networks = (ipaddress.ip_network(POD_CIDR), ipaddress.ip_network(SERVICE_CIDR))
    return any(address in net for net in networks) and hoststate.link_exists(BRIDGE)


def cri_ready(address: str) -> bool:
    """The CRI runtime service answers a Version call. The call is sent as raw bytes: an empty
    VersionRequest is zero bytes, so no CRI stubs are needed."""
    import grpc

    with grpc.insecure_channel(f"unix://{address}") as channel:
        version = channel.unary_unary(
            "/runtime.v1.RuntimeService/Version",
            request_serializer=None,
            response_deserializer=None,
        )
        try:
            version(b"", timeout=2)
        except grpc.RpcError:
            return False
    return True


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    coredns: Path
    metrics_server: Path


class RealNode:
    """Host preparation before the API server starts (`prepare`), the node's processes after it
    is ready (`start`), and `stop`, which leaves the host as it was."""

    def __init__(self, directory: Path, binaries: NodeBinaries, spawn: Spawn) -> None:
        self.directory = directory
        self.binaries = binaries
        self.spawn = spawn
        self.images: dict[str, Image] = {}
        self._lock: IO[str] | None = None
        self.node_certs: certgen.NodeCerts | None = None
        self.metrics_api: dict[str, Any] = {}
        self.leftovers: dict[str, object] = {}

    # --- before the API server ---------------------------------------------------------------

    def prepare(self, tls: certgen.ClusterCerts) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self._acquire_lock()
        self.images = Builder().all()
        cleanup()  # what a crashed run may have left
        hoststate.record(self.directory / SYSCTL_RECORD)
        self.node_certs = certgen.generate_node(tls, self.directory / "pki-node", NODE, NODE_IP)
        for name, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
        ):
            hoststate.write_sysctl(name, value)
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        self._contain()

    def apiserver_args(self, tls: certgen.ClusterCerts, api_port: int) -> list[str]:
        assert self.node_certs is not None
        kubelet_crt, kubelet_key = self.node_certs.apiserver_kubelet_client
        proxy_crt, proxy_key = self.node_certs.front_proxy_client
        return [
            # Pods reach the API server through the `kubernetes` Service at the node address;
            # the MRNODE-CONTAIN rules keep the port closed to everything but lo and the bridge.
            "--bind-address=0.0.0.0",
            f"--advertise-address={NODE_IP}",
            "--endpoint-reconciler-type=lease",
            "--authorization-mode=Node,RBAC",
            f"--kubelet-client-certificate={kubelet_crt}",
            f"--kubelet-client-key={kubelet_key}",
            # Otherwise it resolves the node's hostname through this machine's resolver.
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer, for metrics-server's metrics.k8s.io.
            f"--requestheader-client-ca-file={tls.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={proxy_crt}",
            f"--proxy-client-key-file={proxy_key}",
            "--enable-aggregator-routing=true",
        ]

    def _contain(self) -> None:
        # The host's own connections to the node address leave through lo with a source in
        # POD_CIDR: they stay on this machine.
        rules = [["-o", "lo", "-j", "RETURN"], ["-s", POD_CIDR, "!", "-o", BRIDGE, "-j", "DROP"]]
        rules += [["-d", cidr, "-j", "DROP"] for cidr in KWOK_CIDRS]
        _ipt("-t", "mangle", "-N", CONTAIN)
        for rule in rules:
            _ipt("-t", "mangle", "-A", CONTAIN, *rule)
        _ipt("-t", "mangle", "-I", "POSTROUTING", "1", "-j", CONTAIN)

    def _close_apiserver_port(self, api_port: int) -> None:
        chain = "MRNODE-INPUT"
        _ipt("-N", chain)
        _ipt("-A", chain, "-i", "lo", "-j", "RETURN")
        _ipt("-A", chain, "-i", BRIDGE, "-j", "RETURN")
        _ipt("-A", chain, "-p", "tcp", "--dport", str(api_port), "-j", "REJECT")
        _ipt("-I", "INPUT", "1", "-j", chain)

    # --- after the API server ----------------------------------------------------------------

    def start(self, server: str, tls: certgen.ClusterCerts, api_port: int) -> None:
        assert self.node_certs is not None
        self._close_apiserver_port(api_port)
        for path in (STATE / "kubelet", STATE / "config", STATE / "cni" / "net.d", RUN):
            path.mkdir(parents=True, exist_ok=True)
        self._start_containerd()
        import_into(ctr(), list(self.images.values()))
        kubeconfigs = STATE / "config"
        kubeconfigs.mkdir(exist_ok=True)
        kubelet_kc = write_kubeconfig(
            kubeconfigs / "kubelet", server, tls.ca_cert, self.node_certs.kubelet_client
        )
        proxy_kc = write_kubeconfig(
            kubeconfigs / "kube-proxy", server, tls.ca_cert, self.node_certs.kube_proxy_client
        )
        admin_kc = self.directory / "kubeconfig"
        self._start_kubelet(kubelet_kc, tls)
        self._start_kube_proxy(proxy_kc)
        self._start_coredns(admin_kc)
        self._start_metrics_server(admin_kc, tls)

    def _start_containerd(self) -> None:
        root = Path(os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache/modelrollout")
        (STATE / "cni" / "net.d" / "10-modelrollout.conflist").write_text(
            json.dumps(cni_config(), indent=2)
        )
        config = STATE / "config" / "containerd.toml"
        config.write_text(containerd_config(root / "containerd", self.images["pause"].ref))
        self.spawn("containerd", ["containerd", "--config", str(config)])
        deadline = time.monotonic() + 30
        while subprocess.run([*ctr(), "version"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("containerd did not answer on its socket within 30s")
            time.sleep(0.2)
        # containerd serves its own API while its CRI plugin still recovers the containers an
        # earlier node left (seconds); a kubelet started then finds "server is not initialized
        # yet" and exits.
        deadline = time.monotonic() + 60
        while not cri_ready(containerd_address()):
            if time.monotonic() > deadline:
                raise TimeoutError("containerd's CRI plugin was not ready within 60s")
            time.sleep(0.2)

    def _start_kubelet(self, kubeconfig: Path, tls: certgen.ClusterCerts) -> None:
        assert self.node_certs is not None
        crt, key = self.node_certs.kubelet_serving
        config = kubelet_config((crt, key), tls.ca_cert, healthz_port=free_port())
        path = STATE / "config" / "kubelet.json"
        path.write_text(json.dumps(config, indent=2))
        self.spawn(
            "kubelet",
            [
                self.binaries.kubelet,
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={STATE / 'kubelet'}",
                f"--hostname-override={NODE}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={LABEL[0]}={LABEL[1]}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self, kubeconfig: Path) -> None:
        self.spawn(
            "kube-proxy",
            [
                self.binaries.kube_proxy,
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={NODE}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_CIDR}",
                f"--nodeport-addresses={POD_CIDR}",
                f"--healthz-bind-address=127.0.0.1:{free_port()}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                # Leave the host's conntrack limits and timeouts alone.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                "--v=1",
            ],
        )

    def _start_coredns(self, kubeconfig: Path) -> None:
        corefile = STATE / "config" / "Corefile"
        corefile.write_text(corefile_text(kubeconfig))
        self.spawn("coredns", [self.binaries.coredns, "-conf", str(corefile)])

    def _start_metrics_server(self, kubeconfig: Path, tls: certgen.ClusterCerts) -> None:
        port = free_port()
        self.spawn(
            "metrics-server",
            [
                self.binaries.metrics_server,
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={NODE_IP}",
                f"--secure-port={port}",
                f"--cert-dir={STATE / 'metrics-server'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={tls.ca_cert}",
                # kwok's nodes have no kubelet to scrape.
                f"--node-selector={LABEL[0]}={LABEL[1]}",
                "--metric-resolution=15s",  # must exceed the 10 s kubelet request timeout
            ],
        )
        self.metrics_api = metrics_api(port)

    def register_metrics_api(self, kubectl: Callable[..., str]) -> None:
        kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(self.metrics_api))

    def wait_ready(self, kubectl: Callable[..., str], deadline: float) -> None:
        path = '{.status.conditions[?(@.type=="Ready")].status}'
        while time.monotonic() < deadline:
            out = kubectl("get", "node", NODE, "-o", f"jsonpath={path}", "--ignore-not-found")
            if out.strip() == "True":
                return
            time.sleep(0.5)
        raise TimeoutError(f"real node {NODE} not Ready")

    # --- stop --------------------------------------------------------------------------------

    def drain(self, kubectl: Callable[..., str]) -> None:
        """Delete the node's pods while kubelet runs, so it tears their sandboxes down properly
        (CNI DEL, network namespaces, mounts); `cleanup` takes whatever remains."""
        if self._lock is None:
            return
        with contextlib.suppress(Exception):
            kubectl("cordon", NODE)
            kubectl(
                "delete",
                "pods",
                "--all-namespaces",
                f"--field-selector=spec.nodeName={NODE}",
                "--grace-period=1",
                "--wait=false",
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and nodestop.tasks():
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop the node and put the host back; `leftovers` then says what is still there (empty
        when nothing is). Checked before the lock is released: after it, another cluster's node
        may start changing the host."""
        if self._lock is None:
            return  # never started: another cluster's node may own the host state
        nodestop.cleanup(self.binaries.kube_proxy)
        saved = hoststate.restore(self.directory / SYSCTL_RECORD)
        self.leftovers = nodestop.leftovers(saved)
        if self.leftovers:
            log(f"the real node left host changes behind: {self.leftovers}")
        self._lock.close()
        self._lock = None

    def _acquire_lock(self) -> None:
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        handle = LOCK.open("a+")
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip()
                if time.monotonic() > deadline:
                    handle.close()
                    raise RuntimeError(
                        f"a real node is already running on this machine ({owner}); one at a "
                        "time: stop it first, or start this cluster without one"
                    ) from None
                log(f"waiting for the real node of {owner} to stop (one per machine)")
                time.sleep(10)
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}, {self.directory}\n")
        handle.flush()
        self._lock = handle


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {out.stderr.strip()}")


def _ipt(*args: str) -> None:
    out = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)} failed: {out.stderr.strip()}")
