"""A canary's capacity with the stable's pods busy, and borrowing one of them (table)."""

from __future__ import annotations

import pytest

from modelrollout.hardware.canary import CANARY_REPLICAS, plan_canary
from modelrollout.hardware.capacity import CapacityReport, PodInfo, PodShape, compute_capacity
from modelrollout.hardware.policy import HardwareRequest, ProfileSummary

from .test_capacity import cpu_node, gpu_node, pod

BIG = ProfileSummary(parameter_count=2_000_000_000, weight_bytes=8 << 30, flops_per_sample=10**11)
SMALL = ProfileSummary(parameter_count=1000, weight_bytes=4000, flops_per_sample=2000)
GPU_MODE = HardwareRequest(mode="gpu")


def stable(n: int, node: str = "g1") -> list[PodInfo]:
    return [pod(f"stable-{i}", node, cpu="2", memory="4Gi", nvidia_gpu="1") for i in range(n)]


def plan(
    gpus: int,
    stable_pods: int,
    borrow: bool,
    *,
    others: int = 0,
    request: HardwareRequest = GPU_MODE,
    profile: ProfileSummary = BIG,
) -> tuple[bool, bool, str]:
    """(refused, borrowed, reason) for a canary on one GPU node with `gpus` GPUs, `stable_pods`
    of them the stable's and `others` another team's."""
    nodes = [gpu_node("g1", gpus), cpu_node("c1", cpu="16", memory="64Gi")]
    pods = stable(stable_pods) + [
        pod(f"other-{i}", "g1", cpu="1", memory="1Gi", nvidia_gpu="1") for i in range(others)
    ]
    names = tuple(p.key for p in pods[:stable_pods])

    def capacity(shape: PodShape, gone: tuple[str, ...]) -> CapacityReport:
        return compute_capacity(nodes, pods, shape, CANARY_REPLICAS, replacing=gone)

    placed = plan_canary(profile, None, request, capacity, names, borrow)
    return placed.decision.insufficient_capacity, placed.borrowed, placed.decision.reason


@pytest.mark.parametrize(
    ("gpus", "stable_pods", "others", "borrow", "refused", "borrowed", "said"),
    [
        # A free GPU beside the stable's: the canary takes it, nothing borrowed.
        pytest.param(4, 2, 0, True, False, False, "", id="room-of-its-own"),
        # Full pool: the stable's pods are busy (the old accounting counted them free).
        pytest.param(2, 2, 0, False, True, False, "while the stable keeps its 2 pod(s)", id="full"),
        pytest.param(
            2, 2, 0, False, True, False, "rollout.capacity: borrow would take one", id="hint"
        ),
        pytest.param(2, 2, 0, True, False, True, "borrows one of the stable's 2", id="borrow"),
        # Full with another team's pods: borrowing one stable pod frees one GPU, enough.
        pytest.param(3, 2, 1, True, False, True, "borrows", id="borrow-beside-others"),
        # A single stable pod is never taken.
        pytest.param(1, 1, 0, True, True, False, "cannot borrow: the stable has 1", id="last"),
        # Full of someone else's pods: borrowing the stable's one... there is none to borrow.
        pytest.param(2, 0, 2, True, True, False, "cannot borrow", id="nothing-to-borrow"),
    ],
)
def test_canary_capacity(
    gpus: int,
    stable_pods: int,
    others: int,
    borrow: bool,
    refused: bool,
    borrowed: bool,
    said: str,
) -> None:
    got_refused, got_borrowed, reason = plan(gpus, stable_pods, borrow, others=others)
    assert (got_refused, got_borrowed) == (refused, borrowed), reason
    assert said in reason


def test_cpu_canaries_never_borrow() -> None:
    refused, borrowed, _ = plan(2, 2, True, request=HardwareRequest(mode="cpu"), profile=SMALL)
    assert (refused, borrowed) == (False, False)


def test_auto_mode_borrows_before_falling_back_to_cpu() -> None:
    """In auto mode with CPU fallback allowed, an opted-in borrow keeps the GPU tier."""
    refused, borrowed, _ = plan(2, 2, True, request=HardwareRequest(mode="auto"))
    assert (refused, borrowed) == (False, True)
    refused, borrowed, reason = plan(2, 2, False, request=HardwareRequest(mode="auto"))
    assert (refused, borrowed) == (False, False)
    assert "falling back" in reason
