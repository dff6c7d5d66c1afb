"""Schedulable capacity: taints, selectors, cordons, readiness, what pods already hold."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest

from modelrollout.api.quantity import Quantity
from modelrollout.hardware.capacity import (
    NodeInfo,
    PodInfo,
    PodShape,
    Taint,
    Toleration,
    compute_capacity,
)

GPU = "nvidia.com/gpu"
GPU_TAINT = Taint(GPU, "NoSchedule")
GPU_TOL = Toleration(key=GPU, operator="Exists", effect="NoSchedule")
GPU_LABELS = {"nvidia.com/gpu.present": "true"}


def gpu_node(name: str, gpus: int = 1, **kw: object) -> NodeInfo:
    alloc: dict[str, Quantity] = {"cpu": "8", "memory": "32Gi", GPU: str(gpus), "pods": "110"}
    node = NodeInfo(name, alloc, GPU_LABELS, (GPU_TAINT,))
    return replace(node, **kw)  # type: ignore[arg-type]


def cpu_node(name: str, cpu: str = "4", memory: str = "16Gi", **kw: object) -> NodeInfo:
    node = NodeInfo(name, {"cpu": cpu, "memory": memory, "pods": "110"})
    return replace(node, **kw)  # type: ignore[arg-type]


def pod(name: str, node: str | None, phase: str = "Running", **requests: Quantity) -> PodInfo:
    reqs: Mapping[str, Quantity] = {
        k.replace("_", "/").replace("nvidia/", "nvidia.com/"): v for k, v in requests.items()
    }
    return PodInfo(name, node, phase, (reqs,))


GPU_SHAPE = PodShape({"cpu": "2", "memory": "4Gi", GPU: "1"}, GPU_LABELS, (GPU_TOL,))
CPU_SHAPE = PodShape({"cpu": "1", "memory": "1Gi"})

CASES = [
    pytest.param([gpu_node("g1"), gpu_node("g2", 2)], [], GPU_SHAPE, 3, True, 3, id="gpus-free"),
    pytest.param(
        [gpu_node("g1")],
        [],
        replace(GPU_SHAPE, tolerations=()),
        1,
        False,
        0,
        id="taint-not-tolerated",
    ),
    pytest.param([gpu_node("g1", unschedulable=True)], [], GPU_SHAPE, 1, False, 0, id="cordoned"),
    pytest.param([gpu_node("g1", ready=False)], [], GPU_SHAPE, 1, False, 0, id="not-ready"),
    pytest.param(
        [gpu_node("g1", 2)],
        [pod("a", "g1", nvidia_gpu="1")],
        GPU_SHAPE,
        2,
        False,
        1,
        id="partly-full",
    ),
    pytest.param(
        [gpu_node("g1")], [pod("a", "g1", nvidia_gpu="1")], GPU_SHAPE, 1, False, 0, id="full"
    ),
    pytest.param(
        [gpu_node("g1")],
        [pod("a", "g1", "Succeeded", nvidia_gpu="1"), pod("b", "g1", "Failed", nvidia_gpu="1")],
        GPU_SHAPE,
        1,
        True,
        1,
        id="terminated-pods-free-their-gpus",
    ),
    pytest.param(
        [gpu_node("g1")],
        [pod("a", None, "Pending", nvidia_gpu="1")],
        GPU_SHAPE,
        1,
        True,
        1,
        id="unbound-pending-pod-holds-nothing",
    ),
    pytest.param([cpu_node("c1")], [], GPU_SHAPE, 1, False, 0, id="cpu-node-no-gpu-label"),
    pytest.param(
        [cpu_node("c1")],
        [],
        replace(GPU_SHAPE, node_selector={}),
        1,
        False,
        0,
        id="cpu-node-no-gpu-resource",
    ),
    pytest.param(
        [gpu_node("g1", labels={"nvidia.com/gpu.present": "false"})],
        [],
        GPU_SHAPE,
        1,
        False,
        0,
        id="selector-value-mismatch",
    ),
    pytest.param(
        [cpu_node("c1", taints=(Taint("dedicated", "PreferNoSchedule"),))],
        [],
        CPU_SHAPE,
        4,
        True,
        4,
        id="prefer-no-schedule-does-not-block",
    ),
    pytest.param(
        [cpu_node("c1", taints=(Taint("maint", "NoExecute"),))],
        [],
        CPU_SHAPE,
        1,
        False,
        0,
        id="no-execute-blocks",
    ),
    pytest.param(
        [cpu_node("c1", taints=(Taint("maint", "NoExecute"),))],
        [],
        replace(CPU_SHAPE, tolerations=(Toleration(operator="Exists"),)),
        1,
        True,
        4,
        id="wildcard-toleration",
    ),
    pytest.param(
        [cpu_node("c1", taints=(Taint("team", "NoSchedule", "a"),))],
        [],
        replace(CPU_SHAPE, tolerations=(Toleration("team", "Equal", "b"),)),
        1,
        False,
        0,
        id="equal-toleration-wrong-value",
    ),
    pytest.param(
        [cpu_node("c1", taints=(Taint("team", "NoSchedule", "a"),))],
        [],
        replace(CPU_SHAPE, tolerations=(Toleration("team", "Equal", "a"),)),
        1,
        True,
        4,
        id="equal-toleration-right-value",
    ),
    pytest.param(
        [cpu_node("c1", cpu="2")],
        [pod("a", "c1", cpu="1200m")],
        PodShape({"cpu": "500m"}),
        2,
        False,
        1,
        id="millicores",
    ),
    pytest.param(
        [cpu_node("c1", memory="4Gi")],
        [pod("a", "c1", memory="2Gi")],
        CPU_SHAPE,
        2,
        True,
        2,
        id="memory-bound",
    ),
    pytest.param(
        [replace(cpu_node("c1"), allocatable={"cpu": "64", "pods": "2"})],
        [pod("a", "c1"), pod("b", "c1")],
        PodShape({"cpu": "1"}),
        1,
        False,
        0,
        id="pod-slots-exhausted",
    ),
    pytest.param(
        [NodeInfo("n", {"cpu": "1"})],
        [],
        PodShape({}),
        50,
        True,
        None,
        id="nothing-requested-is-unbounded",
    ),
    pytest.param([], [], CPU_SHAPE, 1, False, 0, id="no-nodes"),
]


@pytest.mark.parametrize(("nodes", "pods", "shape", "replicas", "fits", "max_replicas"), CASES)
def test_capacity(
    nodes: list[NodeInfo],
    pods: list[PodInfo],
    shape: PodShape,
    replicas: int,
    fits: bool,
    max_replicas: int | None,
) -> None:
    report = compute_capacity(nodes, pods, shape, replicas)
    assert report.fits is fits
    assert report.max_replicas == max_replicas


def test_per_node_detail_and_summary() -> None:
    nodes = [
        gpu_node("g-cordoned", unschedulable=True),
        gpu_node("g-full"),
        gpu_node("g-free", 2),
        cpu_node("cpu"),
    ]
    pods = [pod("x", "g-full", nvidia_gpu="1")]
    report = compute_capacity(nodes, pods, GPU_SHAPE, 3)
    by_name = {n.name: n for n in report.nodes}
    assert by_name["g-cordoned"].reasons == ("cordoned",)
    assert not by_name["g-cordoned"].candidate
    assert by_name["g-full"].candidate
    assert by_name["g-full"].fits == 0
    assert by_name["g-full"].reasons == ("not enough nvidia.com/gpu",)
    assert by_name["g-free"].fits == 2
    assert by_name["cpu"].reasons == ("label nvidia.com/gpu.present=true missing",)
    assert by_name["g-free"].free[GPU] == 2
    summary = report.summary()
    assert summary.startswith("2 of 3 replicas fit (each requests cpu=2, memory=4Gi, nvidia")
    assert "g-cordoned: cordoned" in summary
    assert "g-free: room for 2" in summary


def test_untolerated_taint_is_named() -> None:
    report = compute_capacity([gpu_node("g")], [], replace(GPU_SHAPE, tolerations=()), 1)
    assert report.nodes[0].reasons == ("taint nvidia.com/gpu:NoSchedule not tolerated",)


def test_init_containers_count_as_the_scheduler_does() -> None:
    p = PodInfo(
        "a",
        "c1",
        container_requests=({"cpu": "1"}, {"cpu": "500m"}),
        init_container_requests=({"cpu": "3"},),
    )
    assert p.requests()["cpu"] == 3
    report = compute_capacity([cpu_node("c1")], [p], PodShape({"cpu": "1"}), 1)
    assert report.max_replicas == 1


def test_replacing_old_pods_frees_room_but_not_for_surge() -> None:
    """Two GPUs, both held by the old revision: the new one fits, but only scale-down-first."""
    nodes = [gpu_node("g", 2)]
    old = [
        PodInfo("old-1", "g", container_requests=({GPU: "1"},), namespace="ml"),
        PodInfo("old-2", "g", container_requests=({GPU: "1"},), namespace="ml"),
    ]
    report = compute_capacity(nodes, old, GPU_SHAPE, 2, replacing={"ml/old-1", "ml/old-2"})
    assert report.fits
    assert report.max_replicas == 2
    assert report.surge_room == 0
    assert not report.surge_fits
    without = compute_capacity(nodes, old, GPU_SHAPE, 2)
    assert not without.fits


def test_surge_room_when_spare_gpu() -> None:
    nodes = [gpu_node("g", 3)]
    old = [PodInfo("old", "g", container_requests=({GPU: "1"},))]
    report = compute_capacity(nodes, old, GPU_SHAPE, 1, surge=1, replacing={"default/old"})
    assert report.fits
    assert report.surge_fits
    assert report.surge_room == 2


def test_toleration_to_dict() -> None:
    assert GPU_TOL.to_dict() == {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
    t = Toleration("k", "Equal", "v", "NoExecute", 30)
    assert t.to_dict() == {
        "key": "k",
        "operator": "Equal",
        "value": "v",
        "effect": "NoExecute",
        "tolerationSeconds": 30,
    }
