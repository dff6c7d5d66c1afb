"""The real parts a chaos campaign runs on, started once: the rollout benchmarks' rig
(bench/rig.py: the local control plane with kwok nodes, the pod runner whose `modelserver`
readiness stands in for the kubelet's probe, Debian's Prometheus, the weighted gateway), a fault
proxy in front of Prometheus, and the operator (one replica, or two peered ones) talking to
kube-apiserver through a proxy that can cut it off.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos.proxies import PrometheusProxy, TcpProxy
from bench.rig import Rig, local_rig
from hack.localcluster import LocalCluster
from hack.podrunner import PodRunner, PodServer
from hack.prometheus import Prometheus
from tests.integration.kube import OperatorProcess
from tests.integration.realnode import ModelHost

PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {
        "group": "kopf.dev",
        "scope": "Cluster",
        "names": {
            "kind": "ClusterKopfPeering",
            "listKind": "ClusterKopfPeeringList",
            "plural": "clusterkopfpeerings",
            "singular": "clusterkopfpeering",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                },
            }
        ],
    },
}


class ReadinessLog:
    """When each pod was Ready, from the pod runner's registry: the gateway routes to a pod
    exactly while the registry says it is ready, as a Service does with its endpoints."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}
        self._spans: dict[str, list[tuple[float, float]]] = {}

    def publish(self, servers: tuple[PodServer, ...]) -> None:
        now = time.monotonic()
        ready = {s.pod for s in servers if s.ready}
        with self._lock:
            for pod in ready - self._since.keys():
                self._since[pod] = now
            for pod in set(self._since) - ready:
                self._spans.setdefault(pod, []).append((self._since.pop(pod), now))

    def spans(self) -> dict[str, list[tuple[float, float]]]:
        """Ready spans per pod; a pod Ready now has a span open until now."""
        now = time.monotonic()
        with self._lock:
            out = {pod: list(spans) for pod, spans in self._spans.items()}
            for pod, since in self._since.items():
                out.setdefault(pod, []).append((since, now))
        return out


@dataclass
class Operators:
    """The operator replicas; every one reaches kube-apiserver through `kubeconfig` (the
    proxy), so cutting the proxy cuts them all off."""

    cluster: LocalCluster
    kubeconfig: Path
    log_path: Path
    replicas: list[OperatorProcess] = field(default_factory=list)
    peering: str = ""

    def _replica(self, extra: dict[str, str]) -> OperatorProcess:
        env = {"KUBECONFIG": str(self.kubeconfig), "MODELROLLOUT_KUBECONFIG": str(self.kubeconfig)}
        proc = OperatorProcess(self.cluster, self.log_path, env=env | extra)
        proc.start()
        return proc

    def single(self) -> None:
        """One replica, standalone (no peering)."""
        if len(self.replicas) == 1 and not self.peering and self.alive():
            return
        self.stop()
        self.replicas = [self._replica({})]

    def pair(self) -> None:
        """Two replicas in a fresh peering object: the first (higher priority) is active."""
        self.stop()
        self.peering = f"chaos-{uuid.uuid4().hex[:8]}"
        self.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(PEERING_CRD))
        self.cluster.kubectl("wait", "--for=condition=Established", "crd/" + _crd_name())
        peering = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": self.peering},
        }
        self.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(peering))
        peered = {"MODELROLLOUT_PEERING": self.peering}
        self.replicas = [
            self._replica(peered | {"MODELROLLOUT_PEERING_PRIORITY": p}) for p in ("200", "100")
        ]

    def alive(self) -> bool:
        return all(r.popen is not None and r.popen.poll() is None for r in self.replicas)

    def kill(self, index: int = 0) -> None:
        self.replicas[index].kill()

    def restart(self, index: int = 0) -> None:
        self.replicas[index].start()

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.replicas = []
        if self.peering:
            self.cluster.kubectl(
                "delete", "clusterkopfpeering", self.peering, "--ignore-not-found", check=False
            )
            self.peering = ""


def _crd_name() -> str:
    return str(PEERING_CRD["metadata"]["name"])  # type: ignore[index]


@dataclass(frozen=True)
class RealNodeParts:
    """What pods on the real node need: the serving image built here, the model served over
    HTTP at the node address (pods cannot read this machine's files), and a Prometheus that
    finds the pods through the API server and scrapes them at their pod IPs."""

    image: str
    model_uri: str
    prometheus_url: str


@dataclass
class Env:
    rig: Rig
    readiness: ReadinessLog
    prometheus_proxy: PrometheusProxy
    api_proxy: TcpProxy
    operators: Operators
    spawner: ThreadPoolExecutor  # restarts control-plane processes; lives as long as they do
    real: RealNodeParts | None = None  # with the real node: where pod kills run

    @property
    def cluster(self) -> LocalCluster:
        return self.rig.cluster

    @property
    def podrunner(self) -> PodRunner:
        return self.rig.podrunner

    @property
    def gateway_url(self) -> str:
        return self.rig.gateway_url


def _proxied_kubeconfig(cluster: LocalCluster, port: int, path: Path) -> Path:
    config = json.loads(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def _real_node_parts(rig: Rig, stack: contextlib.ExitStack) -> RealNodeParts:
    node = rig.cluster.node
    assert node is not None
    host = stack.enter_context(ModelHost(rig.model_path.parent))
    directory = rig.workdir / "pod-prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    prom = stack.enter_context(
        Prometheus(directory, directory / "unused.json", kubeconfig=rig.cluster.kubeconfig)
    )
    return RealNodeParts(node.images["modelserver"].ref, host.url(rig.model_path), prom.url)


@contextlib.contextmanager
def environment(workdir: Path, real_node: bool = False) -> Iterator[Env]:
    """`real_node`: also a real node (one per machine: hack/realnode.py), where the pod kill
    scenarios run, their pods probed by a kubelet and routed by kube-proxy."""
    readiness = ReadinessLog()
    with (
        local_rig(workdir, readiness.publish, real_node=real_node) as rig,
        contextlib.ExitStack() as stack,
    ):
        real = _real_node_parts(rig, stack) if real_node else None
        prom_proxy = PrometheusProxy(rig.prometheus.url)
        stack.callback(prom_proxy.close)
        api_proxy = TcpProxy("127.0.0.1", rig.cluster.api_port)
        stack.callback(api_proxy.close)
        kubeconfig = _proxied_kubeconfig(
            rig.cluster, api_proxy.port, workdir / "operator.kubeconfig"
        )
        operators = Operators(rig.cluster, kubeconfig, workdir / "operator.log")
        stack.callback(operators.stop)
        spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-spawner")
        stack.callback(spawner.shutdown)
        yield Env(rig, readiness, prom_proxy, api_proxy, operators, spawner, real)
