"""The children a rollout decision asks for, and how the canary's share of traffic is realised.

Two ways to split traffic, one class each, chosen once from the spec's router: replica counts
(the fallback that needs no mesh or gateway) or a route's weights (Gateway API, Istio). The rest
of the planner asks the split and never looks at the router type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from modelrollout.api.names import (
    CANARY,
    STABLE,
    canary_autoscaler_name,
    parse_time,
)
from modelrollout.api.spec import AutoscalingSpec, ModelDeploymentSpec, ReplicaRatioRouter
from modelrollout.api.status import ModelDeploymentStatus
from modelrollout.plan import children
from modelrollout.plan.children import Manifest, Owner, Placement
from modelrollout.plan.rollout import Decision, Stage, seconds
from modelrollout.plan.scaling import autoscaler, disruption_budget
from modelrollout.plan.types import Inputs, ObservedDeployment


def canary_replicas_for_ratio(base: int, weight: int) -> int:
    """Replica-ratio routing: canary pods so that canary/(canary+stable) approximates weight."""
    if weight <= 0:
        return 0
    if weight >= 100:
        return base
    return max(1, round(base * weight / (100 - weight)))


@dataclass(frozen=True)
class ReplicaSplit:
    """The canary's share is its share of the pods behind the one Service."""

    # A finished canary's pods would keep answering through the one Service: they go at once
    # and drain on SIGTERM, instead of lingering for the scale-down delay.
    lingers_after_rollback = False

    def weight_in_place(
        self, status: ModelDeploymentStatus, canary: ObservedDeployment, route_weight: int | None
    ) -> int:
        return status.canary_weight if canary.available else 0

    def route_weight(self, weight: int) -> int | None:
        return None  # nothing to steer: the canary's replica count carries the weight

    def services(
        self, owner: Owner, spec: ModelDeploymentSpec, stable: str, canary: str | None
    ) -> list[Manifest]:
        # The one Service spans every revision, so pods split the traffic.
        return [children.service(owner, spec, revision=None)]

    def canary_replicas(
        self, scaling: AutoscalingSpec, weight: int, stable_min: int, stable_replicas: int
    ) -> tuple[int, int]:
        n = max(1, canary_replicas_for_ratio(max(stable_min, stable_replicas), weight))
        return n, n


@dataclass(frozen=True)
class RouteSplit:
    """A route (HTTPRoute, VirtualService) splits requests between two track Services."""

    # At weight 0 a finished canary gets no new requests; it stays so those in flight finish.
    lingers_after_rollback = True

    def weight_in_place(
        self, status: ModelDeploymentStatus, canary: ObservedDeployment, route_weight: int | None
    ) -> int:
        return route_weight or 0

    def route_weight(self, weight: int) -> int | None:
        return weight

    def services(
        self, owner: Owner, spec: ModelDeploymentSpec, stable: str, canary: str | None
    ) -> list[Manifest]:
        # The main Service stays on the stable revision; the route splits between the tracks.
        return [
            children.service(owner, spec, revision=stable),
            children.track_service(owner, spec, STABLE, stable),
            children.track_service(owner, spec, CANARY, canary or stable),
        ]

    def canary_replicas(
        self, scaling: AutoscalingSpec, weight: int, stable_min: int, stable_replicas: int
    ) -> tuple[int, int]:
        low = max(1, math.ceil(scaling.min_replicas * weight / 100))
        return low, max(low, scaling.max_replicas)


TrafficSplit = ReplicaSplit | RouteSplit


def split_for(spec: ModelDeploymentSpec) -> TrafficSplit:
    if isinstance(spec.rollout.traffic_router, ReplicaRatioRouter):
        return ReplicaSplit()
    return RouteSplit()


def kept_revisions(
    inputs: Inputs,
    revision: str,
    decision: Decision,
    status: ModelDeploymentStatus,
    observed: dict[str, ObservedDeployment],
    split: TrafficSplit,
) -> set[str]:
    """Revisions whose Deployments stay: stable, canary, the bake's previous stable, and (behind
    a route) a rolled-back or aborted canary for the scale-down delay (in-flight requests finish
    after its weight went to 0)."""
    if decision.stage == Stage.BLOCKED and decision.stable is None:
        return set()
    keep = {decision.stable or revision}
    if decision.canary:
        keep.add(decision.canary)
    if decision.bake is not None:
        keep.add(decision.bake.previous_revision)
    if not split.lingers_after_rollback:
        return keep
    delay = timedelta(seconds=seconds(inputs.spec.rollout.scale_down_delay))
    candidates: list[tuple[str, str, datetime]] = []
    if decision.finished is not None:
        candidates.append((decision.finished[0], decision.finished[1], inputs.now + delay))
    if status.history:
        last = status.history[0]
        ended = parse_time(last.finished) if last.finished else inputs.now
        candidates.append((last.revision, last.outcome, ended + delay))
    for fin_rev, outcome, until in candidates:
        if outcome in ("RolledBack", "Aborted") and fin_rev in observed and inputs.now < until:
            keep.add(fin_rev)
    return keep


def pinned(placement: Placement, inputs: Inputs, seen: ObservedDeployment | None) -> Placement:
    """The placement with the bytes the revision's pods already verify: a re-read (status
    lost, an undo back to it) must not move a running revision to a changed file."""
    if inputs.spec.model.sha256 or seen is None or not seen.model_sha256:
        return placement
    return replace(placement, model_sha256=seen.model_sha256)


def desired_children(
    inputs: Inputs,
    revision: str,
    decision: Decision,
    observed: dict[str, ObservedDeployment],
    split: TrafficSplit,
) -> list[Manifest]:
    """Manifests to apply: the spec's Deployment, Services, autoscalers and the budget."""
    spec, owner = inputs.spec, inputs.owner
    if decision.stage == Stage.BLOCKED and decision.stable is None:
        return []
    stable = decision.stable or revision
    canary = decision.canary
    manifests: list[Manifest] = []
    # Only the spec's revision has a known pod template; other kept revisions stay as they are.
    if revision in (stable, canary) and inputs.placement is not None:
        seen = observed.get(revision)
        placement = pinned(inputs.placement, inputs, seen)
        born = seen.born_track if seen and seen.born_track else (CANARY if canary else STABLE)
        manifests.append(children.deployment(owner, spec, revision, inputs.image, placement, born))
    manifests += split.services(owner, spec, stable, canary)
    scaling = spec.autoscaling
    stable_min = scaling.min_replicas
    if canary and decision.rollout and decision.rollout.stable_min_replicas:
        stable_min = max(stable_min, decision.rollout.stable_min_replicas)
    borrowed = bool(canary and inputs.placement and inputs.placement.borrowed)
    stable_max: int | None = None
    if borrowed:
        # One of the stable's replicas is the canary's while it runs: the stable's autoscaler
        # is held one lower (min and max, so the pod is really given back), and restored when
        # the canary is promoted or rolled back.
        stable_min = stable_max = max(1, stable_min - 1)
    manifests.append(
        autoscaler(
            owner,
            spec,
            children.deployment_name(owner, stable),
            min_replicas=min(stable_min, scaling.max_replicas),
            max_replicas=stable_max,
        )
    )
    if canary:
        stable_replicas = observed[stable].replicas if stable in observed else 0
        low, high = split.canary_replicas(scaling, decision.weight, stable_min, stable_replicas)
        if borrowed:
            low = high = 1  # the borrowed replica, all a full pool has for the canary
        manifests.append(
            autoscaler(
                owner,
                spec,
                children.deployment_name(owner, canary),
                min_replicas=low,
                max_replicas=high,
                name=canary_autoscaler_name(owner.name),
            )
        )
    manifests.append(disruption_budget(owner))
    return manifests
