"""The parts of bench-scale: a local control plane with kwok nodes sized for the pods, the
operator as a subprocess, and the measurements (API server request counts, the operator's
CPU, RSS and its own requests as its client logs them)."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from hack.localcluster import LocalCluster, node_manifest
from tests.integration.kube import OperatorProcess

MDEP = create_namespaced_resource(
    "modelrollout.io", "v1alpha1", "ModelDeployment", "modeldeployments"
)
PODS_PER_NODE = 500
POLL_S = 3.0  # per 1,000 ModelDeployments: a poll LISTs them all
# One line per request the operator's HTTP client sends (httpx logs them at INFO).
REQUEST_LINE = re.compile(r"HTTP Request: (\w+) (\S+)")


def client_for(cluster: LocalCluster) -> Client:
    # A loaded 2-core machine can keep the API server from answering within lightkube's 10 s.
    return Client(
        config=KubeConfig.from_file(cluster.kubeconfig),
        field_manager="bench-scale",
        timeout=httpx.Timeout(120.0),
    )


def retried(call: Callable[[], Any], attempts: int = 5) -> Any:
    """`call`, again after a timeout or a 429/5xx answer (the operator retries the same way)."""
    for attempt in range(attempts):
        try:
            return call()
        except (httpx.TimeoutException, httpx.TransportError):
            if attempt == attempts - 1:
                raise
        except ApiError as exc:
            if exc.status.code not in (429, 500, 503, 504) or attempt == attempts - 1:
                raise
        time.sleep(1 + attempt)


def add_nodes(cluster: LocalCluster, pods: int) -> list[str]:
    """kwok nodes with room for `pods` pods (and a spare node)."""
    names = []
    for i in range(math.ceil(pods / PODS_PER_NODE) + 1):
        node: dict[str, Any] = node_manifest(f"kwok-scale-{i}", gpu=False)
        room = {"cpu": "1000", "memory": "4Ti", "pods": str(PODS_PER_NODE)}
        node["status"]["allocatable"].update(room)
        node["status"]["capacity"].update(room)
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(node))
        names.append(node["metadata"]["name"])
    return names


def scaled(count: int, per_1000: float) -> float:
    """A wait or poll period for `count` ModelDeployments: linear in N, never below N = 1,000's.
    A LIST of N objects costs the API server (and this script) in proportion to N, and so does
    every phase's work, so fixed values would time out at 5,000 or load the API server 5x more
    with polls than at 1,000."""
    return per_1000 * max(1.0, count / 1000)


def create_namespace(client: Client, name: str) -> None:
    client.create(Namespace(metadata=ObjectMeta(name=name)))


def delete_namespace(client: Client, name: str, timeout: float = 900, poll: float = POLL_S) -> None:
    client.delete(Namespace, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [n for n in client.list(Namespace) if n.metadata and n.metadata.name == name]:
            return
        time.sleep(poll)
    raise TimeoutError(f"namespace {name} still there after {timeout}s")


def apply_all(client: Client, manifests: Iterable[dict[str, Any]], threads: int = 16) -> None:
    """Server-side apply, `threads` requests in flight: as fast as the API server takes them."""

    def one(m: dict[str, Any]) -> None:
        res = _resource(m["apiVersion"], m["kind"])
        meta = m["metadata"]
        retried(
            lambda: client.patch(
                res,
                meta["name"],
                m,
                namespace=meta["namespace"],
                patch_type=PatchType.APPLY,
                field_manager="bench-scale",
                force=True,
            )
        )

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(one, m) for m in manifests]:
            future.result()


_RESOURCES: dict[tuple[str, str], Any] = {}


def _resource(api_version: str, kind: str) -> Any:
    key = (api_version, kind)
    if key not in _RESOURCES:
        group, _, version = api_version.rpartition("/")
        plural = {"HorizontalPodAutoscaler": "horizontalpodautoscalers"}.get(
            kind, kind.lower() + "s"
        )
        _RESOURCES[key] = create_namespaced_resource(group, version, kind, plural)
    return _RESOURCES[key]


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = POLL_S) -> float:
    """Seconds until `check` holds."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f}s")
        time.sleep(poll)
    return time.monotonic() - start


def deployments_available(client: Client, namespace: str, expected: int) -> bool:
    res = _resource("apps/v1", "Deployment")
    ready = 0
    for d in client.list(res, namespace=namespace):
        status = d.get("status") or {}
        if status.get("availableReplicas", 0) >= (d["spec"].get("replicas") or 1):
            ready += 1
    return ready >= expected


def model_deployments(client: Client, namespace: str) -> list[dict[str, Any]]:
    return [dict(o) for o in client.list(MDEP, namespace=namespace)]


def is_ready(obj: dict[str, Any], revision: str | None = None) -> bool:
    status = obj.get("status") or {}
    ready = any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )
    current = status.get("observedGeneration") == obj["metadata"].get("generation")
    return ready and current and (revision is None or status.get("stableRevision") == revision)


def apiserver_requests(cluster: LocalCluster) -> float:
    """Requests the API server has served, all clients (apiserver_request_total summed)."""
    text = cluster.kubectl("get", "--raw", "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class ProcSample:
    at: float
    cpu_s: float  # user + system, this process
    rss_mib: float
    hwm_mib: float  # peak RSS so far


def sample(pid: int) -> ProcSample:
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    kib = int(status["VmRSS"].split()[0])
    hwm = int(status["VmHWM"].split()[0])
    return ProcSample(time.monotonic(), cpu, kib / 1024, hwm / 1024)


def operator_requests(log: Path, since: int) -> list[tuple[str, str]]:
    """(verb, url) of every request the operator's client logged after byte `since`."""
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [(m[1], m[2]) for m in REQUEST_LINE.finditer(text)]


def start_operator(cluster: LocalCluster, log: Path, workers: int) -> OperatorProcess:
    operator = OperatorProcess(
        cluster,
        log,
        env={
            # The chart's defaults, not the tests' 5 s resync.
            "MODELROLLOUT_RESYNC_SECONDS": "300",
            "MODELROLLOUT_WORKERS": str(workers),
            # Nothing listens there: analysis stays Inconclusive, which never blocks a step.
            "MODELROLLOUT_PROMETHEUS_URL": "http://127.0.0.1:9",
        },
    )
    operator.start()
    return operator


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]
