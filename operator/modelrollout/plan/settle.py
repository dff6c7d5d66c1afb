"""Settle (pure): the one place a ModelDeployment's status is built.

`settle` turns a plan plus what acting on it did into the next status; `settle_unplanned` keeps
the previous status when nothing of a plan took effect (an invalid spec, an API error) and
records why. Both go through the same conditions: a failure met this cycle always sets
`Degraded` and `Stalled` with its reason, whatever the rollout stage says.
"""

from __future__ import annotations

from datetime import datetime

from modelrollout.api.names import format_time
from modelrollout.api.status import ModelDeploymentStatus, Phase, ProfilingMark, RolloutStatus
from modelrollout.api.synthetic import SyntheticStatus
from modelrollout.plan.conditions import (
    DEGRADED,
    PROGRESSING,
    READY,
    RECONCILING,
    ROUTE_NOT_HONOURED,
    STALLED,
    ConditionUpdate,
    Status,
    merge_conditions,
)
from modelrollout.plan.drift import drift_status
from modelrollout.plan.notify import outbox, transitions
from modelrollout.plan.oom import oom_condition
from modelrollout.plan.rollout import Decision, Stage
from modelrollout.plan.types import Acted, Failure, Inputs, ObservedDeployment, Plan

__all__ = ["HISTORY_LIMIT", "settle", "settle_marked", "settle_unplanned"]

HISTORY_LIMIT = 10
# A failure makes these phases Degraded; the others already say something is wrong.
_HEALTHY_PHASES = (Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED, Phase.READY)


def settle(plan: Plan, acted: Acted) -> ModelDeploymentStatus:
    """The status after this cycle: the rollout decision, the weight the route really holds,
    and the failures met while acting."""
    inputs, decision = plan.inputs, plan.decision
    observed = {d.revision: d for d in inputs.deployments}
    phase, updates, message = _stage_conditions(plan, observed)
    weight = decision.weight
    if plan.route_weight is not None and acted.route_weight != plan.route_weight:
        weight = acted.route_weight or 0
        if not acted.failures:
            # A webhook or a person changed it after us: the step waits until it holds.
            message += f"; route holds {acted.route_weight}% instead of {plan.route_weight}%"
    if plan.route_mirror and not acted.route_mirror and not acted.failures:
        message += "; route does not mirror requests to the canary yet"
    phase, updates, message = _with_failures(phase, updates, message, acted.failures)
    cause = acted.failures[0].reason if acted.failures else None
    updates += _kstatus_conditions(phase, decision.bake is not None, message, cause)
    updates += _hardware_conditions(inputs)
    drift, drift_update = drift_status(inputs)
    if drift_update is not None:
        updates.append(drift_update)
    updates += oom_condition(inputs.oom_kills, plan.previous.conditions)
    if decision.route_check is not None:
        check = decision.route_check
        status: Status = "False" if check.honoured else "True"
        reason = "Honoured" if check.honoured else "ShareOff"
        updates.append(ConditionUpdate(ROUTE_NOT_HONOURED, status, reason, check.message))
    stable_obs = observed.get(decision.stable) if decision.stable else None
    live = [d for r, d in observed.items() if r in plan.keep]
    version = (
        stable_obs.model_version
        if stable_obs and stable_obs.model_version
        else (inputs.spec.model.version if decision.stable else None)
    )
    settled = ModelDeploymentStatus(
        observed_generation=inputs.generation,
        phase=phase,
        message=message,
        conditions=merge_conditions(
            plan.previous.conditions,
            updates,
            now=format_time(inputs.now),
            generation=inputs.generation,
        ),
        replicas=sum(d.replicas for d in live),
        ready_replicas=sum(d.ready_replicas for d in live),
        stable_revision=decision.stable,
        canary_revision=decision.canary,
        canary_weight=weight,
        rollout_started=decision.rollout_started,
        rollout=_with_stable_min(decision, stable_obs, inputs),
        bake=decision.bake,
        failed_revision=decision.failed_revision,
        model_version=version,
        hardware=inputs.hardware or plan.previous.hardware,
        history=list(plan.history[:HISTORY_LIMIT]),
        hooks=list(plan.hooks),
        synthetic=_synthetic(plan),
        drift=drift,
        profiling=inputs.profiling,
    )
    return _with_notifications(plan, settled)


def _synthetic(plan: Plan) -> SyntheticStatus | None:
    """What synthetic traffic sent to the canary: the generator's count, else the last one
    recorded while the same canary runs."""
    canary = plan.decision.canary
    for known in (plan.inputs.synthetic, plan.previous.synthetic):
        if known is not None and canary is not None and known.revision == canary:
            return known
    return None


def _with_notifications(plan: Plan, status: ModelDeploymentStatus) -> ModelDeploymentStatus:
    """The outbox (plan/notify.py): what the notifiers were not told yet, with this cycle's
    transitions; empty when the spec selects no notifier."""
    inputs = plan.inputs
    if not inputs.spec.notify:
        return status
    events = [(e.reason, e.message) for e in plan.events]
    new = transitions(inputs.owner.uid, plan.previous, status, events, format_time(inputs.now))
    pending = outbox(plan.previous.notifications, inputs.notified, new)
    return status.model_copy(update={"notifications": pending})


def settle_unplanned(
    previous: ModelDeploymentStatus, generation: int, now: datetime, failure: Failure
) -> ModelDeploymentStatus:
    """Nothing of this cycle's plan took effect: keep what the status says (stable revision,
    rollout, history) and record the failure. An invalid spec is Failed; anything else is
    Degraded, with Ready as long as the stable still has ready pods."""
    invalid = failure.reason == "InvalidSpec"
    serving = previous.ready_replicas > 0
    phase = Phase.FAILED if invalid else Phase.DEGRADED
    updates = [ConditionUpdate(READY, "True" if serving else "False", failure.reason)]
    phase, updates, message = _with_failures(phase, updates, "", (failure,))
    updates += _kstatus_conditions(phase, False, message, failure.reason)
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "message": message,
            "conditions": merge_conditions(
                previous.conditions, updates, now=format_time(now), generation=generation
            ),
        }
    )


def settle_marked(previous: ModelDeploymentStatus, mark: ProfilingMark) -> ModelDeploymentStatus:
    """The model is about to be read: the status as it was, with the read marked. The mark is
    stored before the read starts (the next reconcile reads), so a read that stops the operator
    leaves it behind; observedGeneration stays, as nothing of the new spec is done yet."""
    return previous.model_copy(update={"profiling": mark})


def _with_failures(
    phase: Phase, updates: list[ConditionUpdate], message: str, failures: tuple[Failure, ...]
) -> tuple[Phase, list[ConditionUpdate], str]:
    """Failures met this cycle: Degraded (and, through the phase, Stalled) with the first
    one's reason; every message is kept."""
    if not failures:
        return phase, updates, message
    text = "; ".join(f.message for f in failures)
    message = f"{message}; {text}" if message else text
    reason = failures[0].reason
    if phase in _HEALTHY_PHASES:
        phase = Phase.DEGRADED
    kept = [u for u in updates if u.type == READY]
    ready = [ConditionUpdate(READY, u.status, u.reason, message) for u in kept]
    return (
        phase,
        [
            *ready,
            ConditionUpdate(PROGRESSING, "False", reason, message),
            ConditionUpdate(DEGRADED, "True", reason, message),
        ],
        message,
    )


def _stage_conditions(
    plan: Plan, observed: dict[str, ObservedDeployment]
) -> tuple[Phase, list[ConditionUpdate], str]:
    """Phase, Ready/Progressing/Degraded and the message, from the rollout decision alone."""
    inputs, decision = plan.inputs, plan.decision
    stage, message = decision.stage, decision.message
    failed = next(
        (d for r, d in observed.items() if r == decision.stable and d.failed_reason), None
    )
    if stage == Stage.BLOCKED:
        reason = inputs.blocked[0] if inputs.blocked else "Blocked"
        phase = Phase.DEGRADED if decision.stable is not None else Phase.FAILED
        return phase, _unhealthy(reason, reason, reason, message), message
    if stage in (Stage.ROLLED_BACK, Stage.BAKE_ROLLED_BACK):
        why = plan.history[0].reason if plan.history else message
        updates = _unhealthy("RolledBack", "RolledBack", "RolledBack", message)
        updates[2] = ConditionUpdate(DEGRADED, "True", "RolledBack", why)
        return Phase.ROLLED_BACK, updates, message
    if failed is not None:
        message = f"deployment {failed.name} is not progressing: {failed.failed_reason}"
        updates = _unhealthy(
            "DeploymentFailed", "ProgressDeadlineExceeded", "DeploymentFailed", message
        )
        return Phase.DEGRADED, updates, message
    if stage == Stage.CANARY:
        paused = inputs.spec.paused
        reason = "Paused" if paused else "Canary"
        phase = Phase.PAUSED if paused else Phase.PROGRESSING
        return phase, _healthy(("False", reason), ("True", reason), message), message
    if stage == Stage.INITIAL:
        updates = _healthy(("False", "DeploymentNotAvailable"), ("True", "Deploying"), message)
        return Phase.PROGRESSING, updates, message
    baking = decision.bake is not None
    progressing: tuple[Status, str] = ("True", "Baking") if baking else ("False", "Complete")
    return Phase.READY, _healthy(("True", "Available"), progressing, message), message


def _unhealthy(ready: str, progressing: str, degraded: str, message: str) -> list[ConditionUpdate]:
    return [
        ConditionUpdate(READY, "False", ready, message),
        ConditionUpdate(PROGRESSING, "False", progressing, message),
        ConditionUpdate(DEGRADED, "True", degraded, message),
    ]


def _healthy(
    ready: tuple[Status, str], progressing: tuple[Status, str], message: str
) -> list[ConditionUpdate]:
    return [
        ConditionUpdate(READY, *ready, message),
        ConditionUpdate(PROGRESSING, *progressing, message),
        ConditionUpdate(DEGRADED, "False", "Healthy"),
    ]


def _kstatus_conditions(
    phase: Phase, baking: bool, message: str, cause: str | None = None
) -> list[ConditionUpdate]:
    """Reconciling and Stalled, the abnormal-true conditions kstatus (Flux, kpt, cli-utils)
    reads: in progress while a rollout or bake runs, stalled when it cannot go on by itself
    (with the failure met this cycle as the reason, else the phase)."""
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
            (cause or phase.value) if stalled else "Progressing",
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
