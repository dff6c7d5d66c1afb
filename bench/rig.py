"""The local rig the rollout benchmarks share (`make bench-rollback`, `make chaos`).

One local control plane (hack.localcluster) with the ModelDeployment CRD and the project's
HTTPRoute and VirtualService stand-in CRDs, the pod runner (one `modelserver` process per
Running pod), Debian's Prometheus scraping them every second, and the weighted gateway
(hack.gateway) as a process of its own, so the load generator and the pollers of the benchmark
do not share an interpreter lock with the proxy. Each benchmark adds its operator(s) and faults.

Per rollout: a fresh namespace, an HTTPRoute sending everything to the stable Service, a
ModelDeployment of the shared model with the benchmark's steps and analysis, its status read
straight from kube-apiserver.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from lightkube import ApiError, Client

from hack.gateway import ModelDeployment
from hack.loadgen import infer_payload, run_load
from hack.localcluster import LocalCluster, running
from hack.models import write_mlp
from hack.podrunner import PodRunner, PodServer
from hack.processes import die_with_parent, free_port
from hack.prometheus import INSTALL_HINT, Prometheus, find_binary
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.plan.revision import revision_of

try:  # lightkube 1.x talks through httpx2, older releases through httpx
    from httpx2 import HTTPError as _KubeHTTPError
except ImportError:  # pragma: no cover
    from httpx import HTTPError as _KubeHTTPError  # type: ignore[assignment]

# What a lightkube read raises while kube-apiserver cannot answer (an outage, a restart).
KUBE_ERRORS: tuple[type[Exception], ...] = (ApiError, _KubeHTTPError, OSError)

REPO = Path(__file__).resolve().parents[1]
IMAGE = "modelrollout/modelserver:test"  # what OperatorProcess configures as the serving image
NAME = "iris"
ROUTE = "web"
PAYLOAD = infer_payload(4, input_name="input")  # the shared model's input (hack.models)


class GatewayProcess:
    """hack.gateway in a process of its own, on a free loopback port."""

    def __init__(self, kubeconfig: Path, registry: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--kubeconfig", str(kubeconfig), "--registry", str(registry)]
        with log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "hack.gateway", *args, "--port", str(self.port)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.popen.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/_gateway/healthz").status_code == 200:
                        return
                time.sleep(0.2)
        raise TimeoutError("gateway did not answer /_gateway/healthz")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Rig:
    cluster: LocalCluster
    podrunner: PodRunner
    prometheus: Prometheus
    gateway_url: str
    model_path: Path
    model_sha256: str
    workdir: Path

    @property
    def model_uri(self) -> str:
        return f"file://{self.model_path}"


@contextlib.contextmanager
def local_rig(
    workdir: Path,
    on_publish: Callable[[tuple[PodServer, ...]], None] | None = None,
    *,
    real_node: bool = False,
) -> Iterator[Rig]:
    """The shared parts, started in order and stopped in reverse; `on_publish` sees every set
    of pods the pod runner publishes (for who was Ready when). `real_node`: the cluster also
    runs the real node (hack/realnode.py, one per machine), for pods placed on it."""
    if find_binary() is None:
        raise RuntimeError(f"prometheus is not installed: {INSTALL_HINT}")
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "models" / "small.onnx"
    sha256 = write_mlp(model)
    with (
        running(workdir / "cluster", real_node=real_node) as cluster,
        contextlib.ExitStack() as stack,
    ):
        crd = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"
        routers = sorted((REPO / "hack" / "crds").glob("*.yaml"))
        for path in [crd, *routers]:
            cluster.kubectl("apply", "--server-side", "-f", str(path))
        names = [f"crd/{p.name.removesuffix('.yaml')}" for p in [crd, *routers]]
        cluster.kubectl("wait", "--for=condition=Established", *names)
        runner = PodRunner(
            cluster.kubeconfig, workdir / "podrunner", namespaces=set(), on_publish=on_publish
        )
        stack.enter_context(runner)
        assert runner.file_sd_path is not None
        assert runner.registry_path is not None
        prom = stack.enter_context(Prometheus(workdir / "prometheus", runner.file_sd_path))
        gateway = GatewayProcess(cluster.kubeconfig, runner.registry_path, workdir / "gateway.log")
        stack.callback(gateway.stop)
        gateway.wait_ready()
        yield Rig(cluster, runner, prom, gateway.url, model, sha256, workdir)


# --- one rollout ------------------------------------------------------------------------------


def http_route(namespace: str) -> dict[str, Any]:
    """The user's HTTPRoute: everything to the stable Service; the operator steers it."""
    backend = {"name": f"{NAME}-stable", "port": 8080, "weight": 100}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "public-gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [backend],
                }
            ],
        },
    }


def model_deployment(
    rig: Rig,
    namespace: str,
    version: str,
    *,
    env: dict[str, str],
    replicas: tuple[int, int],
    weights: Sequence[int],
    analysis: dict[str, Any],
    bake_s: int,
    router: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """NAME on the shared model at `version`, its pods given `env`, routed by ROUTE (or
    `router`), each step's weight followed by an analysis (`analysis`:
    spec.rollout.analysis)."""
    steps: list[dict[str, Any]] = []
    for weight in weights:
        steps += [{"setWeight": weight}, {"analysis": {}}]
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"uri": rig.model_uri, "sha256": rig.model_sha256, "version": version},
            "serving": {"env": [{"name": k, "value": v} for k, v in env.items()]},
            "autoscaling": {"minReplicas": replicas[0], "maxReplicas": replicas[1]},
            "rollout": {
                "steps": steps,
                "analysis": analysis,
                "trafficRouter": router or {"type": "gatewayAPI", "httpRoute": ROUTE},
                "bakeTime": f"{bake_s}s",
                "scaleDownDelay": "2s",
                "progressDeadline": "5m",
            },
        },
    }


def apply(cluster: LocalCluster, manifest: dict[str, Any]) -> str:
    """kubectl apply; for a ModelDeployment, the revision the operator will name it by."""
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    if manifest["kind"] != "ModelDeployment":
        return ""
    spec = ModelDeploymentSpec.model_validate(manifest["spec"])
    return revision_of(spec, spec.serving.image or IMAGE)


def read_status(client: Client, namespace: str) -> dict[str, Any] | None:
    """NAME's status from kube-apiserver; None when it cannot be read now."""
    try:
        obj = client.get(ModelDeployment, NAME, namespace=namespace)
    except KUBE_ERRORS:
        return None
    return dict(dict(obj).get("status") or {})


def wait_for(what: str, timeout: float, check: Callable[[], bool], poll_s: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"{what} not reached within {timeout:g}s")


def answering(url: str, namespace: str, name: str, requests: int, at_least: int) -> bool:
    """Whether `at_least` of `requests` sent within a second (through the gateway at `url`, or
    to the Service at `url` when `namespace` is empty) answer 200."""
    stats = run_load(url, namespace, name, requests, 1, PAYLOAD, timeout_s=5)
    return stats.by_status.get(200, 0) >= at_least
