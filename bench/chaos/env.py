"""The real parts a chaos campaign runs on, started once: the local control plane (kwok nodes),
the pod runner (one `modelserver` process per Running pod, its readiness probe standing in for
the kubelet's), Debian's Prometheus behind a fault proxy, the weighted gateway as a process of
its own, and the operator (one replica, or two peered ones) talking to kube-apiserver through a
proxy that can cut it off.
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
from bench.rollback.rig import _GatewayProcess
from hack.localcluster import LocalCluster, running
from hack.models import write_mlp
from hack.podrunner import PodRunner, PodServer
from hack.prometheus import INSTALL_HINT, Prometheus, find_binary
from tests.integration.kube import REPO, OperatorProcess

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


@dataclass
class Env:
    cluster: LocalCluster
    podrunner: PodRunner
    readiness: ReadinessLog
    prometheus: Prometheus
    prometheus_proxy: PrometheusProxy
    api_proxy: TcpProxy
    gateway_url: str
    operators: Operators
    model_uri: str
    model_sha256: str
    workdir: Path
    spawner: ThreadPoolExecutor  # restarts control-plane processes; lives as long as they do


def _proxied_kubeconfig(cluster: LocalCluster, port: int, path: Path) -> Path:
    config = json.loads(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def environment(workdir: Path) -> Iterator[Env]:
    if find_binary() is None:
        raise RuntimeError(f"prometheus is not installed: {INSTALL_HINT}")
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "models" / "small.onnx"
    sha256 = write_mlp(model)
    with running(workdir / "cluster") as cluster, contextlib.ExitStack() as stack:
        crd = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"
        routers = sorted((REPO / "hack" / "crds").glob("*.yaml"))
        for path in [crd, *routers]:
            cluster.kubectl("apply", "--server-side", "-f", str(path))
        names = [f"crd/{p.name.removesuffix('.yaml')}" for p in [crd, *routers]]
        cluster.kubectl("wait", "--for=condition=Established", *names)
        readiness = ReadinessLog()
        runner = PodRunner(
            cluster.kubeconfig,
            workdir / "podrunner",
            namespaces=set(),
            on_publish=readiness.publish,
        )
        stack.enter_context(runner)
        assert runner.file_sd_path is not None
        assert runner.registry_path is not None
        prom = stack.enter_context(Prometheus(workdir / "prometheus", runner.file_sd_path))
        prom_proxy = PrometheusProxy(prom.url)
        stack.callback(prom_proxy.close)
        api_proxy = TcpProxy("127.0.0.1", cluster.api_port)
        stack.callback(api_proxy.close)
        kubeconfig = _proxied_kubeconfig(cluster, api_proxy.port, workdir / "operator.kubeconfig")
        gateway = _GatewayProcess(cluster.kubeconfig, runner.registry_path, workdir / "gateway.log")
        stack.callback(gateway.stop)
        gateway.wait_ready()
        operators = Operators(cluster, kubeconfig, workdir / "operator.log")
        stack.callback(operators.stop)
        spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-spawner")
        stack.callback(spawner.shutdown)
        yield Env(
            cluster=cluster,
            podrunner=runner,
            readiness=readiness,
            prometheus=prom,
            prometheus_proxy=prom_proxy,
            api_proxy=api_proxy,
            gateway_url=gateway.url,
            operators=operators,
            model_uri=f"file://{model}",
            model_sha256=sha256,
            workdir=workdir,
            spawner=spawner,
        )
