"""A canary on a full GPU pool (kwok GPU node, 4 nvidia.com/gpu): the stable keeps its pods, so
without a free GPU the new revision is refused with InsufficientCapacity before anything is
created; with rollout.capacity: borrow it takes one of the stable's replicas and is promoted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hack.localcluster import GPU_NODES

from .conftest import Models
from .kube import Kube, OperatorProcess, condition, model_deployment, revision, wait_for

pytestmark = pytest.mark.integration

GPU = "nvidia.com/gpu"
STABLE_PODS = 2


def free_gpus(kube: Kube) -> int:
    pods = json.loads(kube.run("get", "pods", "-A", "-o", "json"))["items"]
    used = sum(
        int(c.get("resources", {}).get("requests", {}).get(GPU, 0))
        for p in pods
        if p["spec"].get("nodeName") in GPU_NODES
        and p["status"].get("phase") not in ("Succeeded", "Failed")
        for c in p["spec"]["containers"]
    )
    return 4 * len(GPU_NODES) - used


@pytest.fixture
def filler(kube: Kube) -> Iterator[None]:
    """Pods of another team on every GPU but the stable's two."""
    count = free_gpus(kube) - STABLE_PODS
    assert count >= 0, "another test holds GPUs"
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "other-team"},
        "spec": {
            "replicas": count,
            "selector": {"matchLabels": {"app": "other-team"}},
            "template": {
                "metadata": {"labels": {"app": "other-team"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [{"key": GPU, "operator": "Exists"}],
                    "containers": [
                        {
                            "name": "train",
                            "image": "trainer:1",
                            "resources": {"requests": {GPU: "1"}, "limits": {GPU: "1"}},
                        }
                    ],
                },
            },
        },
    }
    assert kube.apply(deployment).returncode == 0
    wait_for(
        lambda: (
            len([p for p in kube.list("pods", "app=other-team") if p["spec"].get("nodeName")])
            == count
        ),
        what="the other team's pods placed",
    )
    yield
    kube.delete("deployment", "other-team")


def spec(models: Models, version: str, capacity: str) -> dict[str, Any]:
    return {
        "model": {"uri": models.small.uri, "sha256": models.small.sha256, "version": version},
        "hardware": {"mode": "gpu", "allowCpuFallback": False},
        "autoscaling": {"minReplicas": STABLE_PODS, "maxReplicas": STABLE_PODS},
        "rollout": {
            "steps": [{"setWeight": 50}],
            "bakeTime": "0s",
            "scaleDownDelay": "1s",
            "capacity": capacity,
        },
    }


def status(kube: Kube) -> dict[str, Any]:
    return dict((kube.get("mdep", "scarce") or {}).get("status") or {})


def hpa_bounds(kube: Kube, name: str) -> tuple[int, int] | None:
    hpa = kube.get("hpa", name)
    return (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) if hpa else None


def test_full_gpu_pool_refuses_then_borrows(
    kube: Kube, operator: OperatorProcess, models: Models, filler: None
) -> None:
    v1 = model_deployment("scarce", spec(models, "v1", "free"))
    assert kube.apply(v1).returncode == 0
    # Up to the placement ledger's hold time (120 s) when another test's GPU decision is still
    # held (hardware/reservations.py).
    wait_for(lambda: status(kube).get("phase") == "Ready", timeout=200, what="v1 Ready")
    wait_for(lambda: free_gpus(kube) == 0, what="the pool full")

    # No free GPU and borrowing off: refused before anything is created, naming what is missing.
    v2 = model_deployment("scarce", spec(models, "v2", "free"))
    assert kube.apply(v2).returncode == 0
    wait_for(
        lambda: (
            condition(kube.get("mdep", "scarce"), "InsufficientCapacity").get("status") == "True"
        ),
        what="InsufficientCapacity",
    )
    message = condition(kube.get("mdep", "scarce"), "InsufficientCapacity")["message"]
    assert "nvidia.com/gpu" in message
    assert f"while the stable keeps its {STABLE_PODS} pod(s)" in message
    assert "rollout.capacity: borrow" in message
    assert kube.get("deployment", f"scarce-{revision(v2)}") is None

    # Borrowing on: the stable's autoscaler gives one replica to the canary, which is promoted,
    # and the stable's bounds come back.
    borrowing = model_deployment("scarce", spec(models, "v2", "borrow"))
    assert revision(borrowing) == revision(v2)  # a rollout setting: the same revision
    assert kube.apply(borrowing).returncode == 0
    wait_for(lambda: status(kube).get("canaryRevision") == revision(v2), what="the canary started")
    assert status(kube)["hardware"]["borrowed"] is True
    wait_for(lambda: hpa_bounds(kube, "scarce") == (1, 1), what="the stable lent a replica")
    wait_for(
        lambda: (
            status(kube).get("stableRevision") == revision(v2)
            and status(kube).get("phase") == "Ready"
        ),
        timeout=120,
        what="v2 promoted",
    )
    assert status(kube)["history"][0]["outcome"] == "Promoted"
    wait_for(
        lambda: hpa_bounds(kube, "scarce") == (STABLE_PODS, STABLE_PODS),
        what="the stable's bounds restored",
    )
