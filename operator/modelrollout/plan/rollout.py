"""The rollout state machine (pure): where a revision stands, and what happens next.

States, all kept in status so a restarted operator resumes where the last one stood:

- **initial**: no stable yet; the first revision is promoted as soon as it is available.
- **canary**: a new revision runs beside the stable one and walks `spec.rollout.steps`:
  `setWeight` moves traffic and completes once the weight is in place, `pause` waits (for its
  duration, or for a resume), `analysis` needs passing windows, `shadow` takes the canary's
  weight to 0 and mirrors every request to it for its duration. Analysis also runs in the
  background at every interval while the canary has traffic or mirrored requests;
  `failureLimit` consecutive Fail verdicts roll it back. After the last step it is promoted.
- **bake**: after promotion the new stable is judged on its own (absolute limits) until the bake
  window ends; a regression rolls back to the previous stable, which is kept until then.
- **rolled back**: the failed revision is recorded and never retried in a loop; a new spec
  change or the retry action starts a fresh rollout.

Transitions, one function each (docs/rollouts.md, "The life of a revision"):

| from | to | function |
| --- | --- | --- |
| initial | initial, promoted | `_initial` |
| steady | steady (bake judged, bake complete), bake rolled back | `steady` (plan/steady.py) |
| canary | rolled back (abort, failed Deployment, deadline) | `_stop_reason` |
| canary | rolled back (failed analysis windows) | `_judge` |
| canary | canary (held, paused, next steps) | `_hold`, `_walk_steps`, `_step_done` |
| canary | canary (waiting for hooks), rolled back (a failed hook) | `_gated` (plan/hooks.py) |
| canary | promoted, or shifted to 100% first | `_finish` |
| rolled back | rolled back (the same revision is not retried) | `Decision.not_retried` |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from modelrollout.api.hooks import HookPoint
from modelrollout.api.names import format_time, parse_time
from modelrollout.api.spec import RolloutSpec, RolloutStep
from modelrollout.api.status import ModelDeploymentStatus, RolloutStatus
from modelrollout.plan.analysis import Verdict, next_failure_count, should_rollback
from modelrollout.plan.decision import Action, Decision, EventTuple, Stage
from modelrollout.plan.evidence import Readings
from modelrollout.plan.hooks import Gate, HookBook, canary_gate
from modelrollout.plan.judging import Judged, judge_reading, step_marks
from modelrollout.plan.share import ShareCheck, check_share
from modelrollout.plan.steady import analysis_status, steady
from modelrollout.plan.steps import (
    CanaryView,
    analysis_due,
    bake_seconds,
    current_step,
    describe_step,
    seconds,
    shadowing,
    step_weight,
)

__all__ = [
    "Action",
    "CanaryView",
    "Decision",
    "Stage",
    "analysis_due",
    "current_step",
    "decide",
    "seconds",
    "step_weight",
]


def decide(
    *,
    revision: str,
    status: ModelDeploymentStatus,
    rollout: RolloutSpec,
    paused: bool,
    canary: CanaryView | None,
    stable_available: bool,
    analysis: Judged | None,
    actions: frozenset[Action],
    now: datetime,
    readings: Readings | None = None,
    hooks: HookBook | None = None,
) -> Decision:
    """Next rollout state. `canary` describes the Deployment of `revision` when it differs
    from the stable one (or, initially, the only one)."""
    stable = status.stable_revision
    if stable is None:
        return _initial(revision, status, canary, now)
    if revision == stable:
        if readings is not None and status.bake is not None:
            bake, analysis = judge_reading(status.bake, rollout.analysis, readings)
            status = status.model_copy(update={"bake": bake})
        return steady(revision, status, rollout, analysis, actions, now)
    if revision == status.failed_revision and Action.RETRY not in actions:
        return Decision.not_retried(revision, stable, revision)
    walk = _start(revision, stable, status, rollout, canary, actions, now)
    walk.hooks = hooks
    if readings is not None:
        walk.state, analysis = judge_reading(walk.state, rollout.analysis, readings)
    return _canary(walk, paused, stable_available, analysis)


def _initial(
    revision: str, status: ModelDeploymentStatus, canary: CanaryView | None, now: datetime
) -> Decision:
    if canary is not None and canary.available:
        return Decision.first_promoted(revision)
    return Decision.waiting(revision, status.rollout_started or format_time(now))


@dataclass
class _Walk:
    """One reconcile of a running canary: what is known, and what was decided so far."""

    revision: str
    stable: str
    rollout: RolloutSpec
    canary: CanaryView | None
    actions: frozenset[Action]
    now: datetime
    state: RolloutStatus
    started: str
    finished: tuple[str, str, str] | None
    events: list[EventTuple]
    route_check: ShareCheck | None = None
    hooks: HookBook | None = None

    @property
    def weight(self) -> int:
        """The weight in place now."""
        return self.canary.weight if self.canary else 0

    @property
    def exposed(self) -> bool:
        """Does the canary answer requests now: a share of them, or mirrored copies?"""
        return self.weight > 0 or (self.canary is not None and self.canary.mirror)

    @property
    def now_s(self) -> str:
        return format_time(self.now)

    def update(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)

    def rollback(self, reason: str, outcome: str = "RolledBack") -> Decision:
        return Decision.rolled_back(self.revision, self.stable, reason, outcome, self.events)

    def at(self, weight: int, message: str) -> Decision:
        # No copies before the canary is up, as no traffic is.
        up = self.canary is not None and self.canary.available
        mirror = up and shadowing(list(self.rollout.steps), self.state.step)
        return Decision.canary_at(
            self.revision, self.stable, weight, self.state, self.started, self.finished,
            message, self.events, self.route_check, mirror,
        )  # fmt: skip


def _start(
    revision: str,
    stable: str,
    status: ModelDeploymentStatus,
    rollout: RolloutSpec,
    canary: CanaryView | None,
    actions: frozenset[Action],
    now: datetime,
) -> _Walk:
    """Resume the canary's rollout from status, or start it (superseding an older canary)."""
    now_s = format_time(now)
    walk = _Walk(revision, stable, rollout, canary, actions, now,
                 state=RolloutStatus(step=0, step_started=now_s), started=now_s,
                 finished=None, events=[])  # fmt: skip
    if status.canary_revision == revision and status.rollout is not None:
        walk.state = status.rollout
        walk.started = status.rollout_started or now_s
        return walk
    if status.canary_revision and status.canary_revision != revision:
        walk.finished = (status.canary_revision, "Superseded", f"replaced by revision {revision}")
    walk.events.append(("Normal", "RolloutStarted", f"canary revision {revision} started"))
    return walk


def _canary(walk: _Walk, paused: bool, stable_available: bool, analysis: Judged | None) -> Decision:
    stopped = _stop_reason(walk)
    if stopped is not None:
        return walk.rollback(*stopped)
    if analysis is not None and (failed := _judge(walk, analysis)) is not None:
        return failed
    if walk.exposed and walk.state.analysis_since is None:
        walk.update(analysis_since=walk.now_s)
    if not walk.exposed and walk.state.analysis_since is not None and walk.state.step == 0:
        walk.update(analysis_since=None)
    promote_now = Action.PROMOTE in walk.actions
    ready = walk.canary is not None and walk.canary.available and stable_available
    walk.route_check = _route_share(walk)
    held = None if promote_now else _hold(walk, ready, paused)
    if held is not None:
        return walk.at(walk.weight, held)
    if not promote_now:
        step = current_step(list(walk.rollout.steps), walk.state.step)
        gate = canary_gate(walk.hooks, walk.revision, walk.weight, step, walk.state.step)
        if (gated := _gated(walk, gate)) is not None:
            return gated
        _walk_steps(walk)
    return _finish(walk, promote_now)


def _stop_reason(walk: _Walk) -> tuple[str, str] | None:
    """(reason, outcome) when the canary ends now whatever its metrics say."""
    if Action.ABORT in walk.actions:
        return "aborted by request", "Aborted"
    if walk.canary is not None and walk.canary.failed_reason:
        return f"deployment failed: {walk.canary.failed_reason}", "RolledBack"
    waiting = _waiting_for_resume(walk)
    elapsed = (walk.now - parse_time(walk.started)).total_seconds()
    deadline = walk.rollout.progress_deadline
    if elapsed - walk.state.waited_seconds - waiting > seconds(deadline):
        return f"progress deadline {deadline} exceeded", "RolledBack"
    approval = walk.rollout.approval_deadline
    if approval is not None and waiting > seconds(approval):
        return f"not resumed within the approval deadline {approval}", "RolledBack"
    return None


def _waiting_for_resume(walk: _Walk) -> float:
    """Seconds the canary has waited at the current `pause: {}` step for a person."""
    step = current_step(list(walk.rollout.steps), walk.state.step)
    if step is None or step.pause is None or step.pause.duration is not None:
        return 0.0
    if walk.state.step_started is None:
        return 0.0
    return max(0.0, (walk.now - parse_time(walk.state.step_started)).total_seconds())


def _judge(walk: _Walk, analysis: Judged) -> Decision | None:
    """Background analysis: every window with canary traffic counts toward the failure limit."""
    failures = next_failure_count(walk.state.failures, analysis.verdict)
    passes = walk.state.passes + (analysis.verdict == Verdict.PASS)
    if analysis.verdict == Verdict.FAIL:
        walk.events.append(("Warning", "AnalysisFailed", analysis.reason))
    walk.update(
        failures=failures,
        passes=passes,
        analysis_since=walk.now_s,
        last_analysis=analysis_status(analysis, walk.now),
    )
    limit = walk.rollout.analysis.failures_to_rollback
    if should_rollback(failures, limit):
        if limit == 1:
            return walk.rollback(f"analysis failed: {analysis.reason}")
        return walk.rollback(f"{failures} failed analysis windows in a row: {analysis.reason}")
    return None


def _hold(walk: _Walk, ready: bool, paused: bool) -> str | None:
    """Why the canary stays where it is, if it does."""
    if not ready:
        # No traffic before the canary is up, and no step forward while it is degraded.
        return f"waiting for canary revision {walk.revision} to become available"
    if paused:
        return f"paused at step {walk.state.step} with {walk.weight}% on the canary"
    if walk.route_check is not None and not walk.route_check.honoured:
        return f"step {walk.state.step} held: {walk.route_check.message}"
    return None


def _gated(walk: _Walk, gate: Gate | None) -> Decision | None:
    """None when the gate's hooks passed; else the canary holds or rolls back."""
    if gate is None or gate.passed:
        return None
    return walk.rollback(gate.message) if gate.rollback else walk.at(walk.weight, gate.message)


def _route_share(walk: _Walk) -> ShareCheck | None:
    """The canary's share of the requests served since its weight was in place, against the
    weight; only for routes (replica counts split connections, not requests) and only once a
    step after the weight change has counted them (sequential evidence)."""
    state = walk.state
    if walk.rollout.traffic_router.type == "replicas" or state.evidence is None:
        return None
    step = current_step(list(walk.rollout.steps), state.step)
    if step is None or step.set_weight is not None or state.step_canary_requests is None:
        return None
    if step.shadow is not None:
        return None  # mirrored copies, not a share of the users' requests
    # Synthetic traffic reaches the canary through its own Service, not the route: only the
    # routed requests are a share of the split.
    canary, stable = state.evidence.canary, state.evidence.stable
    if state.step_canary_synthetic is None and canary.synthetic:
        return None  # the step began before synthetic requests were counted apart
    canary_routed = canary.requests - canary.synthetic
    canary_since = canary_routed - (state.step_canary_requests - (state.step_canary_synthetic or 0))
    stable_since = stable.requests - (state.step_stable_requests or 0)
    return check_share(max(0, canary_since), max(0, stable_since), walk.weight)


def _walk_steps(walk: _Walk) -> None:
    """Complete every step that is done, in order, stopping at the first that is not."""
    steps = list(walk.rollout.steps)
    step = current_step(steps, walk.state.step)
    while step is not None and _step_done(walk, step):
        waited = walk.state.waited_seconds + _waiting_for_resume(walk)
        walk.update(
            step=walk.state.step + 1,
            step_started=walk.now_s,
            passes=0,
            waited_seconds=waited,
            **step_marks(walk.state),
        )
        step = current_step(steps, walk.state.step)
        if step is not None and step.set_weight is not None:
            walk.events.append(("Normal", "StepAdvanced", f"canary weight to {step.set_weight}%"))
        if step is not None and step.shadow is not None:
            message = f"requests mirrored to the canary for {step.shadow.duration}"
            walk.events.append(("Normal", "StepAdvanced", message))


def _step_done(walk: _Walk, step: RolloutStep) -> bool:
    if step.set_weight is not None:
        return walk.weight == step.set_weight
    if step.pause is not None:
        if step.pause.duration is not None and walk.state.step_started is not None:
            waited = (walk.now - parse_time(walk.state.step_started)).total_seconds()
            return waited >= seconds(step.pause.duration)
        return Action.RESUME in walk.actions
    if step.shadow is not None:
        # The window runs from the step's start; the mirror is in place a reconcile later.
        mirrored = walk.canary is not None and walk.canary.mirror
        return mirrored and _waited(walk) >= seconds(step.shadow.duration)
    return step.analysis is not None and walk.state.passes >= step.analysis.intervals


def _waited(walk: _Walk) -> float:
    if walk.state.step_started is None:
        return 0.0
    return (walk.now - parse_time(walk.state.step_started)).total_seconds()


def _finish(walk: _Walk, promote_now: bool) -> Decision:
    """After the steps (or on request): all traffic to the canary, then promotion. Before
    that: the weight the current step asks for."""
    steps = list(walk.rollout.steps)
    step = current_step(steps, walk.state.step)
    if step is not None and not promote_now:
        target = step_weight(steps, walk.state.step)
        return walk.at(target, describe_step(step, walk.state, walk.weight, target))
    if walk.weight < 100 and not promote_now:
        return walk.at(100, f"shifting all traffic to revision {walk.revision}")
    if walk.hooks is not None and not promote_now:
        gate = walk.hooks.gate(HookPoint.PRE_PROMOTION, walk.revision)
        if (gated := _gated(walk, gate)) is not None:
            return gated
    reason = "promoted by request" if promote_now else "all steps passed"
    until = format_time(walk.now + timedelta(seconds=bake_seconds(walk.rollout)))
    return Decision.promoted(walk.revision, walk.stable, until, reason, walk.events)
