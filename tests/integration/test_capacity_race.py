"""More ModelDeployments at once than the nodes can hold: the operator's placement decisions,
made from its caches by concurrent workers, account for each other, so only those that fit get
a Deployment and the others report InsufficientCapacity (no Pending pods)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hack.localcluster import LocalCluster, node_manifest

from .conftest import Models
from .kube import Kube, OperatorProcess, condition, model_deployment, wait_for

pytestmark = pytest.mark.integration

GPUS = 3
MODELS = 6


@pytest.fixture
def gpu_pool(cluster: LocalCluster, kube: Kube) -> Iterator[str]:
    """A kwok GPU node of its own (3 GPUs), labelled and tainted for this test alone."""
    pool = kube.namespace
    node: dict[str, Any] = node_manifest(f"kwok-pool-{pool}", gpu=True)
    node["metadata"]["labels"]["modelrollout.io/test-pool"] = pool
    node["spec"]["taints"].append(
        {"key": "modelrollout.io/test-pool", "value": pool, "effect": "NoSchedule"}
    )
    for field in ("allocatable", "capacity"):
        node["status"][field]["nvidia.com/gpu"] = str(GPUS)
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(node))
    name = node["metadata"]["name"]
    wait_for(
        lambda: (
            "True"
            in cluster.kubectl(
                "get",
                "node",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            )
        ),
        what=f"node {name} Ready",
    )
    yield pool
    cluster.kubectl("delete", "node", name, "--wait=false")


def test_only_the_model_deployments_that_fit_get_deployments(
    kube: Kube, operator: OperatorProcess, models: Models, gpu_pool: str
) -> None:
    hardware = {
        "mode": "gpu",
        "allowCpuFallback": False,
        "nodeSelector": {"modelrollout.io/test-pool": gpu_pool},
        "tolerations": [
            {"key": "modelrollout.io/test-pool", "value": gpu_pool, "effect": "NoSchedule"}
        ],
    }
    model = {"uri": models.large.uri, "sha256": models.large.sha256, "version": "v1"}
    spec = {"model": model, "hardware": hardware, "autoscaling": {"minReplicas": 1}}
    names = [f"llm-{i}" for i in range(MODELS)]
    # All at once, in one request: the operator sees them together.
    items = [model_deployment(n, spec) for n in names]
    result = kube.apply({"apiVersion": "v1", "kind": "List", "items": items})
    assert result.returncode == 0, result.stderr

    def decided() -> dict[str, str] | None:
        verdicts = {}
        for n in names:
            obj = kube.get("mdep", n) or {}
            if condition(obj, "InsufficientCapacity").get("status") == "True":
                verdicts[n] = "blocked"
            elif (obj.get("status") or {}).get("phase") == "Ready":
                verdicts[n] = "ready"
        return verdicts if len(verdicts) == MODELS else None

    verdicts = wait_for(decided, timeout=90, what="every ModelDeployment Ready or blocked")
    ready = sorted(n for n, v in verdicts.items() if v == "ready")
    assert len(ready) == GPUS, verdicts
    owners = {d["metadata"]["labels"]["modelrollout.io/deployment"] for d in kube.list("deploy")}
    assert sorted(owners) == ready
    pods = kube.list("pods")
    assert len(pods) == GPUS
    assert all(p["status"].get("phase") == "Running" for p in pods), "a pod waits for a GPU"
    blocked = next(n for n, v in verdicts.items() if v == "blocked")
    message = condition(kube.must("mdep", blocked), "InsufficientCapacity")["message"]
    assert "nvidia.com/gpu" in message
