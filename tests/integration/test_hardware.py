"""Hardware chosen from the model, checked against what the real scheduler can place on the
kwok nodes (two CPU nodes, one GPU node with 4 nvidia.com/gpu and the usual taint)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hack.localcluster import GPU_NODES, LocalCluster
from hack.podrunner import PodRunner

from .conftest import ModelFile, Models
from .kube import (
    GPU_IMAGE,
    IMAGE,
    Kube,
    OperatorProcess,
    condition,
    model_deployment,
    revision,
    wait_for,
)

pytestmark = pytest.mark.integration


def manifest(name: str, model: ModelFile | dict[str, str], **spec: Any) -> dict[str, Any]:
    if isinstance(model, ModelFile):
        model = {"uri": model.uri, "sha256": model.sha256, "version": "v1"}
    body: dict[str, Any] = {
        "model": model,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "rollout": {"steps": [{"setWeight": 50}], "bakeTime": "0s", "scaleDownDelay": "2s"},
    }
    body.update(spec)
    return model_deployment(name, body)


def status_of(kube: Kube, name: str) -> dict[str, Any]:
    return dict((kube.get("mdep", name) or {}).get("status") or {})


def pods_of(kube: Kube, rev: str) -> list[dict[str, Any]]:
    return kube.list("pods", f"modelrollout.io/revision={rev}")


@pytest.fixture
def cordoned_gpu(cluster: LocalCluster) -> Iterator[None]:
    for node in GPU_NODES:
        cluster.kubectl("cordon", node)
    try:
        yield
    finally:
        for node in GPU_NODES:
            cluster.kubectl("uncordon", node)


def test_small_model_runs_on_cpu_nodes(
    kube: Kube, operator: OperatorProcess, models: Models
) -> None:
    m = manifest("tabular", models.small)
    kube.apply(m)
    rev = revision(m)
    wait_for(lambda: status_of(kube, "tabular").get("phase") == "Ready", what="Ready")
    hw = status_of(kube, "tabular")["hardware"]
    assert hw["tier"] == "cpu-small"
    assert hw["parameters"] == 4 * 16 + 16 + 16 * 3 + 3
    assert "cpu-small" in hw["reason"]
    pods = wait_for(lambda: pods_of(kube, rev), what="pods")
    assert all(p["spec"]["nodeName"].startswith("kwok-cpu-") for p in pods)
    (container,) = pods[0]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert container["image"] == IMAGE  # the GPU image is for the GPU tier only
    # The printer column shows the tier.
    assert "cpu-small" in kube.run("-n", kube.namespace, "get", "mdep", "tabular")


def test_large_model_is_scheduled_on_the_gpu_node(
    kube: Kube, operator: OperatorProcess, models: Models
) -> None:
    m = manifest("transformer", models.large, autoscaling={"minReplicas": 2, "maxReplicas": 2})
    kube.apply(m)
    rev = revision(m)
    wait_for(lambda: status_of(kube, "transformer").get("phase") == "Ready", what="Ready")
    hw = status_of(kube, "transformer")["hardware"]
    assert hw["tier"] == "gpu"
    assert hw["provider"] == "cuda"
    assert hw["fallback"] is False

    def two_pods() -> list[dict[str, Any]] | None:
        pods = pods_of(kube, rev)
        return pods if len(pods) == 2 else None

    pods = wait_for(two_pods, what="2 pods")
    # The real scheduler honoured the GPU request, the node selector and the toleration.
    assert {p["spec"]["nodeName"] for p in pods} <= set(GPU_NODES)
    (container,) = pods[0]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELSERVER_EXECUTION_PROVIDER"] == "cuda"
    assert container["image"] == GPU_IMAGE  # the GPU tier runs the GPU image
    dep = kube.must("deployment", f"transformer-{rev}")
    # Two of four GPUs taken: there is room for a surge pod, so no scale-down-first.
    assert hw["scaleDownFirst"] is False
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"


def test_a_gpu_pod_without_cuda_never_becomes_ready(
    kube: Kube, operator: OperatorProcess, models: Models, modelservers: PodRunner
) -> None:
    """The pod's server (a local process with the pod's env, onnxruntime without CUDA, as in the
    CPU image) refuses readiness and says why, instead of serving on CPU beside a GPU."""
    m = manifest("needs-cuda", models.small, hardware={"mode": "gpu"})
    kube.apply(m)
    (server,) = modelservers.wait_for_servers(kube.namespace, deployment="needs-cuda", ready=False)

    def refusal() -> str | None:
        try:
            answer = httpx.get(f"{server.url}/v2/health/ready", timeout=2)
        except httpx.HTTPError:
            return None  # still starting
        return str(answer.json().get("error")) if answer.status_code == 503 else None

    reason = wait_for(lambda: "CUDA" in (refusal() or "") and refusal(), what="the refusal")
    assert "no CUDAExecutionProvider" in str(reason)


def test_without_gpu_capacity_auto_falls_back_to_cpu(
    kube: Kube, operator: OperatorProcess, models: Models, cordoned_gpu: None
) -> None:
    m = manifest("fallback", models.large)
    kube.apply(m)
    rev = revision(m)
    wait_for(lambda: status_of(kube, "fallback").get("phase") == "Ready", what="Ready")
    obj = kube.get("mdep", "fallback")
    assert status_of(kube, "fallback")["hardware"]["fallback"] is True
    assert status_of(kube, "fallback")["hardware"]["tier"] != "gpu"
    assert condition(obj, "HardwareFallback")["status"] == "True"
    pods = pods_of(kube, rev)
    assert pods
    assert all(p["spec"]["nodeName"].startswith("kwok-cpu-") for p in pods)
    assert_no_gpu(kube.must("deployment", f"fallback-{rev}"))


def test_explicit_gpu_falls_back_without_its_gpu_selector_and_toleration(
    kube: Kube, operator: OperatorProcess, models: Models, cordoned_gpu: None
) -> None:
    """What the spec asked of a GPU node goes with the GPU; its other choices stay."""
    hardware = {
        "mode": "gpu",
        "allowCpuFallback": True,
        "nodeSelector": {"nvidia.com/gpu.product": "A100"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        ],
    }
    m = manifest("gpu-or-cpu", models.large, hardware=hardware)
    kube.apply(m)
    rev = revision(m)
    wait_for(lambda: status_of(kube, "gpu-or-cpu").get("phase") == "Ready", what="Ready")
    assert status_of(kube, "gpu-or-cpu")["hardware"]["fallback"] is True
    template = assert_no_gpu(kube.must("deployment", f"gpu-or-cpu-{rev}"))
    assert [t["key"] for t in template["tolerations"]] == ["dedicated"]
    pods = wait_for(lambda: pods_of(kube, rev), what="pods")
    assert all(p["spec"]["nodeName"].startswith("kwok-cpu-") for p in pods)


def assert_no_gpu(deployment: dict[str, Any]) -> dict[str, Any]:
    """A fallen-back Deployment asks for no GPU and is neither pinned to nor let onto a GPU
    node; returns its pod spec."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    resources = container["resources"]
    assert not any("gpu" in k for k in (*resources.get("limits", {}), *resources["requests"]))
    assert not any(k.startswith("nvidia.com/gpu") for k in pod.get("nodeSelector", {}))
    assert all(t.get("key") != "nvidia.com/gpu" for t in pod.get("tolerations", []))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELSERVER_EXECUTION_PROVIDER"] == "cpu"
    assert container["image"] == IMAGE
    return dict(pod)


def test_without_gpu_capacity_and_no_fallback_reports_insufficient_capacity(
    kube: Kube, operator: OperatorProcess, models: Models, cluster: LocalCluster
) -> None:
    m = manifest("strict", models.large, hardware={"mode": "gpu", "allowCpuFallback": False})
    for node in GPU_NODES:
        cluster.kubectl("cordon", node)
    try:
        kube.apply(m)
        wait_for(
            lambda: (
                condition(kube.get("mdep", "strict"), "InsufficientCapacity").get("status")
                == "True"
            ),
            what="InsufficientCapacity",
        )
        status = status_of(kube, "strict")
        assert status["phase"] == "Failed"
        assert "nvidia.com/gpu" in condition(kube.get("mdep", "strict"), "Degraded")["message"]
        # Never a Pending pod without a condition: no Deployment was created at all.
        assert kube.list("deployments") == []
    finally:
        for node in GPU_NODES:
            cluster.kubectl("uncordon", node)
    # Capacity came back: the next resync rolls it out.
    wait_for(lambda: status_of(kube, "strict").get("phase") == "Ready", what="Ready after uncordon")
    assert condition(kube.get("mdep", "strict"), "InsufficientCapacity")["status"] == "False"


def test_checksum_mismatch_never_rolls_out_and_stable_keeps_serving(
    kube: Kube, operator: OperatorProcess, models: Models
) -> None:
    m = manifest("guarded", models.small)
    kube.apply(m)
    stable = revision(m)
    wait_for(lambda: status_of(kube, "guarded").get("phase") == "Ready", what="Ready")

    m["spec"]["model"] = {"uri": models.small.uri, "sha256": "0" * 64, "version": "v2"}
    kube.apply(m)
    wait_for(
        lambda: (
            condition(kube.get("mdep", "guarded"), "Degraded").get("reason") == "ChecksumMismatch"
        ),
        what="ChecksumMismatch",
    )
    status = status_of(kube, "guarded")
    assert status["phase"] == "Degraded"
    assert status["stableRevision"] == stable
    assert "keeps serving" in status["message"]
    assert [d["metadata"]["name"] for d in kube.list("deployments")] == [f"guarded-{stable}"]


@pytest.mark.parametrize("mode", ["auto", "cpu"])
def test_corrupt_model_is_refused_with_a_clear_reason(
    kube: Kube, operator: OperatorProcess, models: Models, mode: str
) -> None:
    m = manifest("broken", models.corrupt, hardware={"mode": mode})
    kube.apply(m)
    wait_for(
        lambda: condition(kube.get("mdep", "broken"), "Degraded").get("status") == "True",
        what="Degraded",
    )
    degraded = condition(kube.get("mdep", "broken"), "Degraded")
    assert degraded["reason"] in ("CorruptModel", "NotOnnxModel")
    assert "corrupt.onnx" in degraded["message"] or "ONNX" in degraded["message"]
    assert status_of(kube, "broken")["phase"] == "Failed"
    assert kube.list("deployments") == []


def test_unreachable_model_in_explicit_cpu_mode_still_deploys(
    kube: Kube, operator: OperatorProcess
) -> None:
    m = manifest(
        "remote",
        {"uri": "http://127.0.0.1:9/absent.onnx", "version": "v1"},
        hardware={"mode": "cpu"},
    )
    kube.apply(m)
    wait_for(lambda: status_of(kube, "remote").get("phase") == "Ready", what="Ready")
    hw = status_of(kube, "remote")["hardware"]
    assert hw["tier"] == "cpu-small"
    assert "not profiled" in hw["reason"]


def test_unreachable_model_in_auto_mode_is_refused(kube: Kube, operator: OperatorProcess) -> None:
    m = manifest(
        "unreachable",
        {"uri": "http://127.0.0.1:9/absent.onnx", "version": "v1"},
    )
    kube.apply(m)
    wait_for(
        lambda: (
            condition(kube.get("mdep", "unreachable"), "Degraded").get("reason")
            == "ModelUnreachable"
        ),
        what="ModelUnreachable",
    )
    assert kube.list("deployments") == []
