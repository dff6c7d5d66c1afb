"""Capacity for a canary: the stable keeps its pods while the canary runs. Pure.

A canary runs beside the stable revision through its steps, analysis and bake, so the stable's
pods are busy for the canary's whole life: they are not counted as free (a first revision
has no stable and is checked for its full replica count). With no room on the chosen tier,
`rollout.capacity: borrow` takes one replica from the stable for the canary, on a GPU tier,
when the stable has more than one and whichever stable pod goes, the canary fits; otherwise
the revision is refused (InsufficientCapacity, naming what is missing) before anything is
created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .capacity import CapacityReport, PodShape
from .policy import HardwareDecision, HardwareRequest, ModelComplexity, plan_hardware
from .thresholds import HardwareThresholds

# Capacity of a shape when the named pods ("namespace/name") are gone.
CapacityWithout = Callable[[PodShape, tuple[str, ...]], CapacityReport]

CANARY_REPLICAS = 1  # what a canary needs to start: one pod


@dataclass(frozen=True)
class CanaryPlacement:
    decision: HardwareDecision
    borrowed: bool = False


def plan_canary(
    profile: ModelComplexity,
    thresholds: HardwareThresholds | None,
    request: HardwareRequest | None,
    capacity: CapacityWithout,
    stable_pods: Sequence[str],
    borrow: bool,
) -> CanaryPlacement:
    """The canary's hardware with every stable pod busy; borrowing one when allowed and
    needed. `capacity` is checked for CANARY_REPLICAS pods."""
    own = plan_hardware(profile, thresholds, request, lambda shape: capacity(shape, ()))
    wanted_gpu = own.auto_tier == "gpu" or own.tier == "gpu" or own.fallback
    if not (own.insufficient_capacity or own.fallback) or not wanted_gpu:
        return CanaryPlacement(own)
    if not borrow:
        hint = " (rollout.capacity: borrow would take one from the stable)"
        more = hint if len(stable_pods) > 1 else ""
        return CanaryPlacement(_busy(own, stable_pods, more))
    if len(stable_pods) < 2:
        note = f"; cannot borrow: the stable has {len(stable_pods)} pod(s) and keeps at least one"
        return CanaryPlacement(_busy(own, stable_pods, note))
    borrowed = [
        plan_hardware(profile, thresholds, request, _without(capacity, pod)) for pod in stable_pods
    ]
    if all(d.tier == "gpu" and not d.insufficient_capacity and not d.fallback for d in borrowed):
        decision = borrowed[0]
        reason = f"{decision.reason}; borrows one of the stable's {len(stable_pods)} replicas"
        # The borrowed pod goes before the canary's arrives.
        return CanaryPlacement(replace(decision, reason=reason, scale_down_first=True), True)
    return CanaryPlacement(_busy(own, stable_pods, "; borrowing one stable pod would not fit"))


def _without(capacity: CapacityWithout, pod: str) -> Callable[[PodShape], CapacityReport]:
    return lambda shape: capacity(shape, (pod,))


def _busy(decision: HardwareDecision, stable_pods: Sequence[str], note: str) -> HardwareDecision:
    if not decision.insufficient_capacity:
        return decision  # a CPU fallback the policy allows
    busy = f" while the stable keeps its {len(stable_pods)} pod(s)"
    return replace(decision, reason=f"{decision.reason}{busy}{note}")
