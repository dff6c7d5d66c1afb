"""`make demo` on the local real node: the examples' model servers are real pods of the serving
image built here, Prometheus finds them through the API server, and the live show's traffic
goes through the model's Service (kube-proxy), split by the replica-ratio router.

hack/demo.py decides the mode (`mode_reason`) and calls in here for what differs from the
kwok-only mode, where model servers are local processes behind a weighted gateway.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hack import kubeproxy, realnode
from hack.images import Builder
from hack.processes import free_port

Spawn = Callable[..., None]
# Small requests so every example fits on one 2-core node; the limit is enforced by the kernel.
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "768Mi"}}


def mode_reason(kwok_only: bool) -> str | None:
    """Why the demo runs kwok-only, or None when it runs on the real node."""
    return "--kwok-only was given" if kwok_only else realnode.unavailable()


def start_helpers(directory: Path, spawn: Spawn) -> tuple[str, dict[str, str]]:
    """Start Prometheus with Kubernetes service discovery. Returns the Prometheus URL and the
    operator's extra environment. (The models are in the demo's S3-compatible store, which
    listens at the node address so the pods reach it.)"""
    images = Builder().all()  # built and imported by the node already: cache hits
    prom_port = free_port()
    spawn(
        directory,
        "prometheus",
        [
            "hack.prometheus",
            "--dir",
            str(directory / "prometheus"),
            "--port",
            str(prom_port),
            "--kubeconfig",
            str(directory / "kubeconfig"),
        ],
    )
    return f"http://127.0.0.1:{prom_port}", {
        "MODELROLLOUT_SERVING_IMAGE": images["modelserver"].ref
    }


def policy(real: bool, prometheus: str) -> dict[str, Any]:
    """The operator's tenant policy for the demo: its S3-compatible store (on loopback, or at
    the node address), whose Secret the operator reads to profile the models, and its
    Prometheus. Its endpoint speaks plain http, which the policy must allow too."""
    return {
        "modelUriSchemes": ["s3", "http"],
        "allowedNetworks": [f"{realnode.NODE_IP}/32" if real else "127.0.0.0/8"],
        "readModelCredentials": True,
        "prometheusUrls": [prometheus],
    }


def place(doc: dict[str, Any]) -> None:
    """Put one ModelDeployment's pods on the real node (the kwok nodes cannot run them)."""
    spec = doc["spec"]
    spec["hardware"] = {
        **spec.get("hardware", {}),
        "mode": "cpu",
        "nodeSelector": {realnode.LABEL[0]: realnode.LABEL[1]},
        "tolerations": [{"key": realnode.LABEL[0], "operator": "Exists"}],
    }
    spec.setdefault("serving", {})["resources"] = RESOURCES


def service_url(kubectl: Callable[..., str], name: str) -> str:
    """The model's Service, once kube-proxy sends it to the model's Ready pods (a request
    before that would be refused)."""
    service = json.loads(kubectl("get", "service", name, "-o", "json"))
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())

    def ready() -> set[str]:
        return kubeproxy.ready_ips(
            json.loads(kubectl("get", "pods", "-l", selector, "-o", "json"))["items"]
        )

    cluster_ip = service["spec"]["clusterIP"]
    kubeproxy.wait_routed(cluster_ip, 8080, ready)
    return f"http://{cluster_ip}:8080"
