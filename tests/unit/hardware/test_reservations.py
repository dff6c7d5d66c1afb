"""Concurrent placement decisions account for each other: capacity a decision found is held
until its pods are bound (or the hold times out), so the next decision does not count it free."""

from __future__ import annotations

from typing import Any

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import HardwareStatus
from modelrollout.hardware.capacity import NodeInfo, PodShape, compute_capacity
from modelrollout.hardware.reservations import Ledger, assign
from modelrollout.hardware.thresholds import HardwareThresholds
from modelrollout.placement import Blocked, MarkFirst, PlacementService

GPU_NODE = {
    "metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.present": "true"}},
    "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    "status": {
        "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110", "nvidia.com/gpu": "3"},
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


class Cache:
    """Nodes and pods as the watch-fed caches hold them; no pods until the test binds some."""

    def __init__(self) -> None:
        self.pods: list[dict[str, Any]] = []

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace}, "status": {}}

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        pass

    async def nodes_and_pods(self) -> tuple[list[Any], list[Any]]:
        return [GPU_NODE], self.pods

    def bind(self, namespace: str, owner: str, revision: str, gpus: int = 1) -> None:
        labels = {"modelrollout.io/deployment": owner, "modelrollout.io/revision": revision}
        resources = {"requests": {"nvidia.com/gpu": str(gpus)}}
        self.pods.append(
            {
                "metadata": {"name": f"{owner}-pod", "namespace": namespace, "labels": labels},
                "spec": {"nodeName": "gpu-0", "containers": [{"resources": resources}]},
                "status": {"phase": "Running"},
            }
        )


async def decide(service: PlacementService, owner: str) -> HardwareStatus | Blocked:
    """A decision as two reconciles make it: the model's read marked first, then made."""
    choice = await service.decide(SPEC, "r1", "ns", owner, None)
    if isinstance(choice, MarkFirst):
        choice = await service.decide(SPEC, "r1", "ns", owner, None, choice.mark)
    assert not isinstance(choice, MarkFirst)
    return choice


SPEC = ModelDeploymentSpec.model_validate(
    {
        "model": {"uri": "s3://models/llm.onnx", "version": "v1"},
        "hardware": {"mode": "gpu", "allowCpuFallback": False},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
    }
)


async def test_only_the_decisions_that_fit_get_gpus_when_many_come_at_once() -> None:
    cache = Cache()
    service = PlacementService(HardwareThresholds(), cache)
    choices = [await decide(service, f"m{i}") for i in range(5)]
    placed = [c for c in choices if isinstance(c, HardwareStatus)]
    blocked = [c for c in choices if isinstance(c, Blocked)]
    assert len(placed) == 3
    assert [b.reason for b in blocked] == ["InsufficientCapacity"] * 2
    # Deciding again for an owner replaces its own hold rather than adding a second one.
    again = await decide(service, "m0")
    assert isinstance(again, HardwareStatus)


async def test_bound_pods_end_the_hold_and_count_themselves() -> None:
    cache = Cache()
    service = PlacementService(HardwareThresholds(), cache)
    for i in range(3):
        assert isinstance(await decide(service, f"m{i}"), HardwareStatus)
    for i in range(3):
        cache.bind("ns", f"m{i}", "r1")
    assert isinstance(await decide(service, "m3"), Blocked)
    assert len(service.ledger.holds) == 0  # released: the pods count now, not the holds
    cache.pods.pop()  # one pod went away: its GPU is free again
    assert isinstance(await decide(service, "m3"), HardwareStatus)


def test_holds_expire() -> None:
    node = NodeInfo("n", {"nvidia.com/gpu": "2", "pods": "10"})
    report = compute_capacity([node], [], PodShape({"nvidia.com/gpu": "1"}), 2)
    ledger = Ledger(ttl=60)
    ledger.hold(("ns", "a"), "r1", report, {"nvidia.com/gpu": "1"}, now=0)
    assert [p.node_name for p in ledger.held_pods()] == ["n", "n"]
    assert list(ledger.held_pods(excluding=("ns", "a"))) == []
    ledger.release({}, now=59)
    assert ledger.holds
    ledger.release({}, now=60)
    assert not ledger.holds


def test_assign_fills_nodes_by_their_room() -> None:
    nodes = [NodeInfo("a", {"cpu": "2"}), NodeInfo("b", {"cpu": "4"}), NodeInfo("c", {"x": "1"})]
    report = compute_capacity(nodes, [], PodShape({"cpu": "1"}), 5)
    assert assign(report, 5) == ["a", "a", "b", "b", "b"]
    assert assign(report, 1) == ["a"]
