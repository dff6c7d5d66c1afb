"""Placement without the capacity check: where the platform grants no cluster-wide reads of
nodes and pods, a GPU revision is placed without reading them (and says so)."""

from __future__ import annotations

from typing import Any

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import HardwareStatus
from modelrollout.hardware.thresholds import HardwareThresholds
from modelrollout.placement import MarkFirst, PlacementService


class NoClusterReads:
    """The operator's view of a cluster where it may read only its own objects."""

    def __init__(self) -> None:
        self.status_writes: list[dict[str, Any]] = []

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace}, "status": {}}

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status_writes.append(status)

    async def nodes_and_pods(self) -> tuple[list[Any], list[Any]]:
        raise AssertionError("nodes and pods read although the capacity check is off")


async def test_gpu_revision_placed_unchecked() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "s3://models/llm.onnx", "version": "v1"},
            "hardware": {"mode": "gpu"},
        }
    )
    cluster = NoClusterReads()
    service = PlacementService(HardwareThresholds(capacity_check=False), cluster)
    # The read is marked first (in the reconcile's status write), then made.
    first = await service.decide(spec, "rev1", "team-a", "llm", None)
    assert isinstance(first, MarkFirst)
    choice = await service.decide(spec, "rev1", "team-a", "llm", None, first.mark)
    assert isinstance(choice, HardwareStatus)
    assert choice.tier == "gpu"
    assert choice.reason.endswith("(capacity not checked)")
    assert cluster.status_writes == []
