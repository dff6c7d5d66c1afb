"""Helpers for the tests on the real node: the images built here, models served over HTTP at the
node address (pods cannot read the test's files), and pods placed on the real node."""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from hack import kubeproxy, realnode
from hack.images import Image

from .kube import Kube, wait_for

# What a ModelDeployment needs to land on the real node; kwok's nodes take everything else.
PLACEMENT = {
    "mode": "cpu",
    "nodeSelector": {realnode.LABEL[0]: realnode.LABEL[1]},
    "tolerations": [{"key": realnode.LABEL[0], "operator": "Exists"}],
}
# Small requests so several pods fit on a 2-core machine; the limit is a real cgroup limit.
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "768Mi"}}


class ModelHost:
    """Serves a directory over HTTP on the node address, where pods can reach it."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer((realnode.NODE_IP, 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: Path) -> str:
        return f"http://{realnode.NODE_IP}:{self.port}/{path.name}"

    def __enter__(self) -> ModelHost:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def spec(uri: str, sha256: str, image: Image, replicas: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "model": {"uri": uri, "sha256": sha256, "version": "v1"},
        "serving": {"image": image.ref, "resources": RESOURCES},
        "hardware": PLACEMENT,
        "autoscaling": {"minReplicas": replicas, "maxReplicas": replicas},
        **extra,
    }


def ready_pods(kube: Kube, selector: str) -> list[dict[str, Any]]:
    pods = kube.list("pods", selector)
    return [p for p in pods if _ready(p) and p["metadata"].get("deletionTimestamp") is None]


def routed_service(kube: Kube, name: str, port: int = 8080) -> str:
    """The Service's cluster IP, once kube-proxy sends it to exactly its Ready pods: a pod's
    Ready condition reaches kube-proxy's rules through its EndpointSlice a moment later, and a
    request in between is refused."""
    service = kube.must("service", name)
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())

    cluster_ip: str = service["spec"]["clusterIP"]
    started = time.monotonic()
    first = kubeproxy.routed(cluster_ip, port)
    routed = kubeproxy.wait_routed(
        cluster_ip, port, lambda: kubeproxy.ready_ips(kube.list("pods", selector))
    )
    print(
        f"service {name}: kube-proxy routed {len(first)} of the {len(routed)} ready pods when "
        f"looked at, all {time.monotonic() - started:.1f}s later",
        file=sys.stderr,
    )
    return cluster_ip


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ready_latency(pod: dict[str, Any]) -> float:
    """Seconds from the pod's creation to its Ready condition (API timestamps: 1 s steps)."""
    created = _ts(pod["metadata"]["creationTimestamp"])
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return (_ts(ready["lastTransitionTime"]) - created).total_seconds()


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def infer(url: str, features: int = 4, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    body = {
        "inputs": [
            {"name": "input", "shape": [1, features], "datatype": "FP32", "data": [0.1] * features}
        ]
    }
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


def run_pod(kube: Kube, name: str, image: Image, script: str, timeout: float = 90) -> str:
    """Run `python3 -c script` in a pod on the real node; return its log once it succeeded."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": PLACEMENT["nodeSelector"],
            "tolerations": PLACEMENT["tolerations"],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "client", "image": image.ref, "command": ["python3", "-c", script]}
            ],
        },
    }
    result = kube.apply(pod)
    assert result.returncode == 0, result.stderr

    def finished() -> str | None:
        phase = (kube.must("pod", name).get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(finished, timeout=timeout, what=f"pod {name} to finish")
    logs = kube.run("-n", kube.namespace, "logs", name)
    assert phase == "Succeeded", f"pod {name} {phase}:\n{logs}"
    return logs


def watch(seconds: float) -> Iterator[float]:
    """Yield the elapsed time every half second for `seconds`."""
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        yield elapsed
        time.sleep(0.5)
