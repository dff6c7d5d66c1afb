"""The reconcile planner: observed state in, desired children and the next status out. No I/O.

The rollout state machine (plan/rollout.py) decides which revisions serve and at what weight;
this module turns that into children (Deployments, Services, HPAs, PDB), deletions, the
route weight to set, and the status to write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from modelrollout.api.spec import ModelDeploymentSpec, ReplicaRatioRouter
from modelrollout.api.status import (
    HardwareStatus,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    RolloutStatus,
)
from modelrollout.plan import children
from modelrollout.plan.analysis import AnalysisResult
from modelrollout.plan.children import Manifest, Owner, Placement
from modelrollout.plan.conditions import (
    DEGRADED,
    PROGRESSING,
    READY,
    RECONCILING,
    STALLED,
    ConditionUpdate,
    merge_conditions,
)
from modelrollout.plan.revision import revision_of
from modelrollout.plan.rollout import (
    Action,
    CanaryView,
    Decision,
    Stage,
    decide,
    fmt,
    parse_time,
    seconds,
)

HISTORY_LIMIT = 10
# While something moves, look again soon; the periodic resync covers the steady state.
REQUEUE_PROGRESSING = 5.0


@dataclass(frozen=True)
class ObservedDeployment:
    name: str
    revision: str
    replicas: int
    ready_replicas: int
    available: bool
    failed_reason: str | None = None
    model_version: str = ""
    model_uri: str = ""
    model_sha256: str | None = None
    image: str = ""
    born_track: str = ""


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
    # Hardware for the spec's revision; None when `blocked` says why it has none.
    placement: Placement | None
    deployments: tuple[ObservedDeployment, ...]
    now: datetime
    # Every child that exists now, as (apiVersion, kind, name); unwanted ones are deleted.
    existing: frozenset[tuple[str, str, str]] = frozenset()
    # Canary weight read back from the route this cycle (routed traffic only).
    route_weight: int | None = None
    analysis: AnalysisResult | None = None
    actions: frozenset[Action] = frozenset()
    # A problem outside the planner's control this cycle (router or metrics), for status.
    warning: str | None = None
    # Why the spec's revision may not roll out: (condition reason, message).
    blocked: tuple[str, str] | None = None
    hardware: HardwareStatus | None = None


@dataclass(frozen=True)
class Plan:
    revision: str
    # Live track of each serving revision, for the pods' modelrollout.io/track label.
    tracks: dict[str, str]
    apply: list[Manifest]
    delete: list[ChildRef]
    status: ModelDeploymentStatus
    # The canary weight the route should hold; None for the replica-ratio router.
    route_weight: int | None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def canary_replicas_for_ratio(base: int, weight: int) -> int:
    """Replica-ratio routing: canary pods so that canary/(canary+stable) approximates weight."""
    if weight <= 0:
        return 0
    if weight >= 100:
        return base
    return max(1, round(base * weight / (100 - weight)))


def _sanitise(
    status: ModelDeploymentStatus, observed: dict[str, ObservedDeployment], revision: str
) -> ModelDeploymentStatus:
    """Forget revisions whose Deployment is gone (deleted by hand): their pod template went
    with them, so the current revision takes over directly."""
    update: dict[str, object] = {}
    if (
        status.stable_revision
        and status.stable_revision != revision
        and (status.stable_revision not in observed)
    ):
        update |= {
            "stable_revision": None,
            "canary_revision": None,
            "rollout": None,
            "canary_weight": 0,
        }
    if status.bake and status.bake.previous_revision not in observed:
        update["bake"] = None
    return status.model_copy(update=update) if update else status


def plan(inputs: Inputs) -> Plan:
    spec, owner, now = inputs.spec, inputs.owner, inputs.now
    revision = revision_of(spec, inputs.image)
    observed = {d.revision: d for d in inputs.deployments}
    previous = inputs.status
    status = _sanitise(previous, observed, revision)
    replicas_router = isinstance(spec.rollout.traffic_router, ReplicaRatioRouter)

    new = observed.get(revision)
    stable_obs = observed.get(status.stable_revision) if status.stable_revision else None
    canary_view = None
    if new is not None and revision != status.stable_revision:
        if replicas_router:
            realised = status.canary_weight if new.available else 0
        else:
            realised = inputs.route_weight or 0
        canary_view = CanaryView(new.available, new.failed_reason, realised)

    if inputs.blocked is not None and revision != status.stable_revision:
        reason, why = inputs.blocked
        serving = (
            f"; revision {status.stable_revision} keeps serving" if status.stable_revision else ""
        )
        decision = Decision(
            stage=Stage.BLOCKED,
            stable=status.stable_revision,
            canary=None,
            weight=0,
            rollout=None,
            bake=status.bake,
            failed_revision=status.failed_revision,
            rollout_started=None,
            message=f"revision {revision} cannot roll out ({reason}): {why}{serving}",
        )
    else:
        decision = decide(
            revision=revision,
            status=status,
            rollout=spec.rollout,
            paused=spec.paused,
            canary=canary_view,
            stable_available=stable_obs is not None and stable_obs.available,
            analysis=inputs.analysis,
            actions=inputs.actions,
            now=now,
        )

    desired, keep = _children(inputs, revision, decision, status, observed, replicas_router)
    wanted = {(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in desired}
    wanted |= {("apps/v1", "Deployment", children.deployment_name(owner, r)) for r in keep}
    delete = [ChildRef(*key) for key in sorted(inputs.existing - wanted)]

    history = list(status.history)
    if decision.finished is not None:
        history.insert(0, _history_entry(inputs, revision, decision, observed))
    new_status = _status(inputs, decision, status, history, observed, keep)
    events = [Event(*e) for e in decision.events]
    moving = decision.stage in (Stage.INITIAL, Stage.CANARY) or decision.bake is not None
    lingering = len(keep) > len({decision.stable, decision.canary} - {None})
    requeue = None
    if moving or lingering or decision.stage == Stage.PROMOTED:
        requeue = min(REQUEUE_PROGRESSING, max(1.0, seconds(spec.rollout.analysis.interval) / 5))
    tracks = {r: "stable" for r in keep}
    if decision.canary:
        tracks[decision.canary] = "canary"
    return Plan(
        revision=revision,
        tracks=tracks,
        apply=desired,
        delete=delete,
        status=new_status,
        route_weight=None if replicas_router else decision.weight,
        events=events,
        requeue_after=requeue,
    )


def _children(
    inputs: Inputs,
    revision: str,
    decision: Decision,
    status: ModelDeploymentStatus,
    observed: dict[str, ObservedDeployment],
    replicas_router: bool,
) -> tuple[list[Manifest], set[str]]:
    """Manifests to apply, and the revisions whose Deployments stay."""
    spec, owner = inputs.spec, inputs.owner
    if decision.stage == Stage.BLOCKED and decision.stable is None:
        return [], set()
    stable = decision.stable or revision
    canary = decision.canary
    keep: set[str] = {stable} | ({canary} if canary else set())
    if decision.bake is not None:
        keep.add(decision.bake.previous_revision)
    # A rolled-back or aborted canary keeps its pods for the scale-down delay: in-flight
    # requests finish after the weight went to 0.
    delay = timedelta(seconds=seconds(spec.rollout.scale_down_delay))
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

    manifests: list[Manifest] = []
    # Only the spec's revision has a known pod template; other kept revisions stay as they are.
    if revision in (stable, canary) and inputs.placement is not None:
        seen = observed.get(revision)
        born = seen.born_track if seen and seen.born_track else ("canary" if canary else "stable")
        manifests.append(
            children.deployment(owner, spec, revision, inputs.image, inputs.placement, born)
        )
    # Replica ratio: the one Service spans every revision, so pods split the traffic. Routed:
    # the main Service stays on the stable revision and the route splits between track Services.
    manifests.append(children.service(owner, spec, revision=None if replicas_router else stable))
    if not replicas_router:
        manifests.append(children.track_service(owner, spec, "stable", stable))
        manifests.append(children.track_service(owner, spec, "canary", canary or stable))

    scaling = spec.autoscaling
    stable_min = scaling.min_replicas
    if canary and decision.rollout and decision.rollout.stable_min_replicas:
        stable_min = max(stable_min, decision.rollout.stable_min_replicas)
    manifests.append(
        children.autoscaler(
            owner,
            spec,
            children.deployment_name(owner, stable),
            min_replicas=min(stable_min, scaling.max_replicas),
        )
    )
    if canary:
        if replicas_router:
            base = max(stable_min, (observed[stable].replicas if stable in observed else 0))
            n = max(1, canary_replicas_for_ratio(base, decision.weight))
            low, high = n, n
        else:
            low = max(1, math.ceil(scaling.min_replicas * decision.weight / 100))
            high = max(low, scaling.max_replicas)
        manifests.append(
            children.autoscaler(
                owner,
                spec,
                children.deployment_name(owner, canary),
                min_replicas=low,
                max_replicas=high,
                name=f"{owner.name}-canary",
            )
        )
    manifests.append(children.disruption_budget(owner))
    return manifests, keep


def _history_entry(
    inputs: Inputs, revision: str, decision: Decision, observed: dict[str, ObservedDeployment]
) -> HistoryEntry:
    assert decision.finished is not None
    fin_rev, outcome, reason = decision.finished
    now = fmt(inputs.now)
    if fin_rev == revision:
        model = inputs.spec.model
        version, uri, sha, image = model.version, model.uri, model.sha256, inputs.image
    else:
        seen = observed.get(fin_rev)
        version = seen.model_version if seen else ""
        uri = seen.model_uri if seen else ""
        sha = seen.model_sha256 if seen else None
        image = seen.image if seen else ""
    return HistoryEntry(
        revision=fin_rev,
        model_version=version,
        model_uri=uri,
        model_sha256=sha,
        image=image,
        started=inputs.status.rollout_started or now,
        finished=now,
        outcome=outcome,
        reason=reason,
    )


def _status(
    inputs: Inputs,
    decision: Decision,
    status: ModelDeploymentStatus,
    history: list[HistoryEntry],
    observed: dict[str, ObservedDeployment],
    keep: set[str],
) -> ModelDeploymentStatus:
    stage = decision.stage
    message = decision.message
    failed = next(
        (d for r, d in observed.items() if r in (decision.stable,) and d.failed_reason), None
    )
    if inputs.warning:
        message = f"{message}; {inputs.warning}"
    updates: list[ConditionUpdate]
    phase: Phase
    if stage == Stage.BLOCKED:
        reason = inputs.blocked[0] if inputs.blocked else "Blocked"
        serving = decision.stable is not None
        phase = Phase.DEGRADED if serving else Phase.FAILED
        updates = [
            ConditionUpdate(READY, "False", reason, message),
            ConditionUpdate(PROGRESSING, "False", reason, message),
            ConditionUpdate(DEGRADED, "True", reason, message),
        ]
    elif stage in (Stage.ROLLED_BACK, Stage.BAKE_ROLLED_BACK):
        phase = Phase.ROLLED_BACK
        reason_text = history[0].reason if history else message
        updates = [
            ConditionUpdate(READY, "False", "RolledBack", message),
            ConditionUpdate(PROGRESSING, "False", "RolledBack", message),
            ConditionUpdate(DEGRADED, "True", "RolledBack", reason_text),
        ]
    elif failed is not None:
        phase = Phase.DEGRADED
        message = f"deployment {failed.name} is not progressing: {failed.failed_reason}"
        updates = [
            ConditionUpdate(READY, "False", "DeploymentFailed", message),
            ConditionUpdate(PROGRESSING, "False", "ProgressDeadlineExceeded", message),
            ConditionUpdate(DEGRADED, "True", "DeploymentFailed", message),
        ]
    elif stage == Stage.CANARY:
        phase = Phase.PAUSED if inputs.spec.paused else Phase.PROGRESSING
        reason = "Paused" if inputs.spec.paused else "Canary"
        updates = [
            ConditionUpdate(READY, "False", reason, message),
            ConditionUpdate(PROGRESSING, "True", reason, message),
            ConditionUpdate(DEGRADED, "False", "Healthy"),
        ]
    elif stage == Stage.INITIAL:
        phase = Phase.PROGRESSING
        updates = [
            ConditionUpdate(READY, "False", "DeploymentNotAvailable", message),
            ConditionUpdate(PROGRESSING, "True", "Deploying", message),
            ConditionUpdate(DEGRADED, "False", "Healthy"),
        ]
    else:
        phase = Phase.READY
        baking = decision.bake is not None
        updates = [
            ConditionUpdate(READY, "True", "Available", message),
            ConditionUpdate(
                PROGRESSING,
                "True" if baking else "False",
                "Baking" if baking else "Complete",
                message,
            ),
            ConditionUpdate(DEGRADED, "False", "Healthy"),
        ]
    updates += _kstatus_conditions(phase, bool(decision.bake), message)
    updates += _hardware_conditions(inputs)
    stable_obs = observed.get(decision.stable) if decision.stable else None
    live = [d for r, d in observed.items() if r in keep]
    version = (
        stable_obs.model_version
        if stable_obs and stable_obs.model_version
        else (inputs.spec.model.version if decision.stable else None)
    )
    return ModelDeploymentStatus(
        observed_generation=inputs.generation,
        phase=phase,
        message=message,
        conditions=merge_conditions(
            status.conditions, updates, now=fmt(inputs.now), generation=inputs.generation
        ),
        replicas=sum(d.replicas for d in live),
        ready_replicas=sum(d.ready_replicas for d in live),
        stable_revision=decision.stable,
        canary_revision=decision.canary,
        canary_weight=decision.weight,
        rollout_started=decision.rollout_started,
        rollout=_with_stable_min(decision, stable_obs, inputs),
        bake=decision.bake,
        failed_revision=decision.failed_revision,
        model_version=version,
        hardware=inputs.hardware or status.hardware,
        history=history[:HISTORY_LIMIT],
    )


def _kstatus_conditions(phase: Phase, baking: bool, message: str) -> list[ConditionUpdate]:
    """Reconciling and Stalled, the abnormal-true conditions kstatus (Flux, kpt, cli-utils)
    reads: in progress while a rollout or bake runs, stalled when it cannot go on by itself."""
    reconciling = phase in (Phase.PROGRESSING, Phase.PAUSED) or baking
    stalled = phase in (Phase.ROLLED_BACK, Phase.DEGRADED, Phase.FAILED)
    return [
        ConditionUpdate(
            RECONCILING,
            "True" if reconciling else "False",
            phase.value if reconciling and not baking else ("Baking" if baking else "Idle"),
            message if reconciling else "",
        ),
        ConditionUpdate(
            STALLED,
            "True" if stalled else "False",
            phase.value if stalled else "Progressing",
            message if stalled else "",
        ),
    ]


def _hardware_conditions(inputs: Inputs) -> list[ConditionUpdate]:
    """HardwareFallback and InsufficientCapacity, once hardware has been decided (or refused)."""
    hw, blocked = inputs.hardware, inputs.blocked
    if hw is None and blocked is None:
        return []
    short = blocked is not None and blocked[0] == "InsufficientCapacity"
    fallback = hw is not None and hw.fallback
    return [
        ConditionUpdate(
            "HardwareFallback",
            "True" if fallback else "False",
            "HardwareFallback" if fallback else "PreferredTier",
            hw.reason if hw and fallback else "",
        ),
        ConditionUpdate(
            "InsufficientCapacity",
            "True" if short else "False",
            "InsufficientCapacity" if short else "Schedulable",
            blocked[1] if blocked and short else "",
        ),
    ]


def _with_stable_min(
    decision: Decision, stable_obs: ObservedDeployment | None, inputs: Inputs
) -> RolloutStatus | None:
    rollout = decision.rollout
    if rollout is None or rollout.stable_min_replicas is not None:
        return rollout
    # Remember how many stable pods served when the canary began: the stable keeps them.
    current = stable_obs.replicas if stable_obs else inputs.spec.autoscaling.min_replicas
    return rollout.model_copy(update={"stable_min_replicas": max(1, current)})
