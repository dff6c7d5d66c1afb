"""The reconcile planner: observed state in, desired children and the next status out. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import HistoryEntry, ModelDeploymentStatus, Phase
from modelrollout.plan import children
from modelrollout.plan.children import Manifest, Owner, Placement
from modelrollout.plan.conditions import (
    DEGRADED,
    PROGRESSING,
    READY,
    ConditionUpdate,
    merge_conditions,
)
from modelrollout.plan.revision import revision_of

HISTORY_LIMIT = 10
# While something is moving, look again soon; the periodic resync covers the steady state.
REQUEUE_PROGRESSING = 5.0


@dataclass(frozen=True)
class ObservedDeployment:
    name: str
    revision: str
    replicas: int
    ready_replicas: int
    available: bool
    failed_reason: str | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Inputs:
    owner: Owner
    generation: int
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    image: str
    placement: Placement
    deployments: tuple[ObservedDeployment, ...]
    now: datetime


@dataclass(frozen=True)
class Plan:
    revision: str
    apply: list[Manifest]
    delete: list[ChildRef]
    status: ModelDeploymentStatus
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(inputs: Inputs) -> Plan:
    spec, previous, owner = inputs.spec, inputs.status, inputs.owner
    now = _timestamp(inputs.now)
    revision = revision_of(spec, inputs.image)
    observed = {d.revision: d for d in inputs.deployments}
    events: list[Event] = []

    # The stable revision is the last one that became available; None until the first does.
    stable = previous.stable_revision
    if stable is not None and stable != revision and stable not in observed:
        # The stable Deployment is gone (deleted by hand mid-rollout): its pod template went with
        # it, so the current revision takes over directly.
        stable = None
    new = observed.get(revision)
    history = list(previous.history)
    started = (
        previous.rollout_started
        if previous.rollout_started and previous.canary_revision == revision
        else now
    )
    if stable != revision and new is not None and new.available:
        history.insert(
            0,
            HistoryEntry(
                revision=revision,
                model_version=spec.model.version,
                model_uri=spec.model.uri,
                model_sha256=spec.model.sha256,
                image=inputs.image,
                started=started,
                finished=now,
                outcome="Promoted",
                reason=f"replaced revision {stable}" if stable else "first revision",
            ),
        )
        events.append(
            Event("Normal", "Promoted", f"revision {revision} ({spec.model.version}) is serving")
        )
        stable = revision
    rolling = stable is not None and stable != revision
    live = {revision} | ({stable} if stable else set())

    desired: list[Manifest] = [
        children.deployment(owner, spec, revision, inputs.image, inputs.placement),
        children.service(owner, spec),
        children.autoscaler(owner, spec, children.deployment_name(owner, stable or revision)),
        children.disruption_budget(owner),
    ]
    delete = [
        ChildRef("apps/v1", "Deployment", d.name)
        for d in inputs.deployments
        if d.revision not in live
    ]

    stable_obs = observed.get(stable) if stable else None
    stable_ready = stable_obs is not None and stable_obs.available
    failed = next((d for d in inputs.deployments if d.revision in live and d.failed_reason), None)

    updates: list[ConditionUpdate]
    if failed is not None:
        phase = Phase.DEGRADED
        message = f"deployment {failed.name} is not progressing: {failed.failed_reason}"
        updates = [
            ConditionUpdate(
                READY,
                "True" if stable_ready else "False",
                "StableServing" if stable_ready else "DeploymentFailed",
                message,
            ),
            ConditionUpdate(PROGRESSING, "False", "ProgressDeadlineExceeded", message),
            ConditionUpdate(DEGRADED, "True", "DeploymentFailed", message),
        ]
    elif rolling:
        phase = Phase.PROGRESSING
        message = f"waiting for revision {revision} to become available"
        updates = [
            ConditionUpdate(READY, "False", "RevisionProgressing", message),
            ConditionUpdate(PROGRESSING, "True", "NewRevision", message),
            ConditionUpdate(DEGRADED, "False", "Healthy"),
        ]
    elif stable_ready:
        phase = Phase.READY
        message = f"revision {stable} ({spec.model.version}) is serving"
        updates = [
            ConditionUpdate(READY, "True", "Available", message),
            ConditionUpdate(PROGRESSING, "False", "Complete", message),
            ConditionUpdate(DEGRADED, "False", "Healthy"),
        ]
    else:
        phase = Phase.PROGRESSING
        message = (
            f"waiting for deployment {children.deployment_name(owner, revision)} "
            "to become available"
        )
        updates = [
            ConditionUpdate(READY, "False", "DeploymentNotAvailable", message),
            ConditionUpdate(PROGRESSING, "True", "Deploying", message),
            ConditionUpdate(DEGRADED, "False", "Healthy"),
        ]

    live_obs = [d for d in inputs.deployments if d.revision in live]
    status = ModelDeploymentStatus(
        observed_generation=inputs.generation,
        phase=phase,
        message=message,
        conditions=merge_conditions(
            previous.conditions, updates, now=now, generation=inputs.generation
        ),
        replicas=sum(d.replicas for d in live_obs),
        ready_replicas=sum(d.ready_replicas for d in live_obs),
        stable_revision=stable,
        canary_revision=revision if rolling else None,
        rollout_started=started if rolling else None,
        canary_weight=0,
        model_version=spec.model.version if not rolling else previous.model_version,
        hardware=previous.hardware,
        history=history[:HISTORY_LIMIT],
    )
    return Plan(
        revision=revision,
        apply=desired,
        delete=delete,
        status=status,
        events=events,
        requeue_after=None if phase == Phase.READY else REQUEUE_PROGRESSING,
    )
