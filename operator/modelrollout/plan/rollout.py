"""The rollout state machine (pure): where a revision stands, and what happens next.

States, all kept in status so a restarted operator resumes where the last one stood:

- **initial**: no stable yet; the first revision is promoted as soon as it is available.
- **canary**: a new revision runs beside the stable one and walks `spec.rollout.steps`:
  `setWeight` moves traffic and completes once the weight is in place, `pause` waits (for its
  duration, or for a resume), `analysis` needs passing windows. Analysis also runs in the
  background at every interval while the canary has traffic; `failureLimit` consecutive Fail
  verdicts roll it back. After the last step it is promoted.
- **bake**: after promotion the new stable is judged on its own (absolute limits) until the bake
  window ends; a regression rolls back to the previous stable, which is kept until then.
- **rolled back**: the failed revision is recorded and never retried in a loop; a new spec
  change or the retry action starts a fresh rollout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from modelrollout.api.spec import RolloutSpec, RolloutStep
from modelrollout.api.status import (
    AnalysisStatus,
    BakeStatus,
    ModelDeploymentStatus,
    RolloutStatus,
)
from modelrollout.api.types import parse_duration
from modelrollout.plan.analysis import AnalysisResult, Verdict


class Action(StrEnum):
    """One-shot commands, set as annotations `modelrollout.io/<action>`. Each is consumed by the
    next reconcile whether or not it applied, so a stale one never fires later."""

    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"
    RESUME = "resume"


class Stage(StrEnum):
    INITIAL = "Initial"
    STEADY = "Steady"
    CANARY = "Canary"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    BAKE_ROLLED_BACK = "BakeRolledBack"
    # The spec's revision cannot roll out (bad model file, no capacity); stable keeps serving.
    BLOCKED = "Blocked"


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def fmt(t: datetime) -> str:
    return t.strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def seconds(duration: str) -> float:
    return parse_duration(duration).total_seconds()


@dataclass(frozen=True)
class CanaryView:
    """What the state machine needs to know about the canary's pods and route."""

    available: bool
    failed_reason: str | None
    # The weight actually in place: read back from the route, or realised by replica counts.
    weight: int


@dataclass(frozen=True)
class Decision:
    stage: Stage
    stable: str | None
    canary: str | None
    weight: int
    rollout: RolloutStatus | None
    bake: BakeStatus | None
    failed_revision: str | None
    rollout_started: str | None
    # Revision that left service this cycle and why (for history and events).
    finished: tuple[str, str, str] | None = None  # (revision, outcome, reason)
    message: str = ""
    events: list[tuple[str, str, str]] = field(default_factory=list)


def current_step(steps: list[RolloutStep], index: int) -> RolloutStep | None:
    return steps[index] if index < len(steps) else None


def step_weight(steps: list[RolloutStep], index: int) -> int:
    """The weight in force at step `index`: the last setWeight at or before it."""
    weight = 0
    for step in steps[: index + 1]:
        if step.set_weight is not None:
            weight = step.set_weight
    return weight


def analysis_due(status: ModelDeploymentStatus, rollout: RolloutSpec, now: datetime) -> bool:
    """Is a window of metrics ready to judge? Only while a canary has traffic or a bake runs."""
    interval = seconds(rollout.analysis.interval)
    since: str | None = None
    if status.canary_revision and status.rollout and status.canary_weight > 0:
        since = status.rollout.analysis_since
    elif status.bake is not None:
        since = status.bake.last_analysis.time if status.bake.last_analysis else None
        if since is None:
            since = fmt(parse_time(status.bake.until) - timedelta(seconds=_bake_seconds(rollout)))
    return since is not None and (now - parse_time(since)).total_seconds() >= interval


def _bake_seconds(rollout: RolloutSpec) -> float:
    return max(seconds(rollout.bake_time), seconds(rollout.scale_down_delay))


def _analysis_status(result: AnalysisResult, now: datetime) -> AnalysisStatus:
    return AnalysisStatus.model_validate(result.as_status() | {"time": fmt(now)})


def decide(
    *,
    revision: str,
    status: ModelDeploymentStatus,
    rollout: RolloutSpec,
    paused: bool,
    canary: CanaryView | None,
    stable_available: bool,
    analysis: AnalysisResult | None,
    actions: frozenset[Action],
    now: datetime,
) -> Decision:
    """Next rollout state. `canary` describes the Deployment of `revision` when it differs
    from the stable one (or, initially, the only one)."""
    stable = status.stable_revision
    now_s = fmt(now)

    if stable is None:
        return _initial(revision, status, canary, now_s)

    if revision == stable:
        return _steady(revision, status, rollout, analysis, actions, now, now_s)

    failed = status.failed_revision
    if revision == failed and Action.RETRY not in actions:
        return Decision(
            stage=Stage.ROLLED_BACK,
            stable=stable,
            canary=None,
            weight=0,
            rollout=None,
            bake=None,
            failed_revision=failed,
            rollout_started=None,
            message=f"revision {revision} was rolled back; change the spec or set the "
            "modelrollout.io/retry annotation to try again",
        )
    return _canary(
        revision, status, rollout, paused, canary, stable_available, analysis, actions, now
    )


def _initial(
    revision: str, status: ModelDeploymentStatus, canary: CanaryView | None, now_s: str
) -> Decision:
    if canary is not None and canary.available:
        return Decision(
            stage=Stage.PROMOTED,
            stable=revision,
            canary=None,
            weight=0,
            rollout=None,
            bake=None,
            failed_revision=None,
            rollout_started=None,
            finished=(revision, "Promoted", "first revision"),
            message=f"revision {revision} is serving",
            events=[("Normal", "Promoted", f"revision {revision} is serving")],
        )
    return Decision(
        stage=Stage.INITIAL,
        stable=None,
        canary=None,
        weight=0,
        rollout=None,
        bake=None,
        failed_revision=None,
        rollout_started=status.rollout_started or now_s,
        message=f"waiting for revision {revision} to become available",
    )


def _steady(
    revision: str,
    status: ModelDeploymentStatus,
    rollout: RolloutSpec,
    analysis: AnalysisResult | None,
    actions: frozenset[Action],
    now: datetime,
    now_s: str,
) -> Decision:
    events: list[tuple[str, str, str]] = []
    finished = None
    if status.canary_revision and status.canary_revision != revision:
        # The spec went back to the stable revision mid-rollout.
        finished = (status.canary_revision, "Aborted", "spec returned to the stable revision")
        events.append(
            ("Normal", "Aborted", f"canary {status.canary_revision} abandoned: spec is stable")
        )
    bake = status.bake
    if bake is not None:
        if Action.ABORT in actions or (
            analysis is not None
            and analysis.verdict == Verdict.FAIL
            and bake.failures + 1 >= rollout.analysis.failure_limit
        ):
            reason = (
                "aborted during the bake window"
                if Action.ABORT in actions
                else f"regressed during the bake window: {analysis.reason if analysis else ''}"
            )
            return Decision(
                stage=Stage.BAKE_ROLLED_BACK,
                stable=bake.previous_revision,
                canary=None,
                weight=0,
                rollout=None,
                bake=None,
                failed_revision=revision,
                rollout_started=None,
                finished=(revision, "RolledBack", reason),
                message=f"revision {revision} rolled back to {bake.previous_revision}: {reason}",
                events=[("Warning", "RolledBack", f"revision {revision} {reason}")],
            )
        if analysis is not None:
            failures = (
                bake.failures + 1
                if analysis.verdict == Verdict.FAIL
                else (0 if analysis.verdict == Verdict.PASS else bake.failures)
            )
            bake = bake.model_copy(
                update={"failures": failures, "last_analysis": _analysis_status(analysis, now)}
            )
        if now >= parse_time(bake.until):
            events.append(("Normal", "BakeComplete", f"revision {revision} passed its bake window"))
            bake = None
    return Decision(
        stage=Stage.STEADY,
        stable=revision,
        canary=None,
        weight=0,
        rollout=None,
        bake=bake,
        failed_revision=status.failed_revision,
        rollout_started=None,
        finished=finished,
        message=(
            f"revision {revision} is serving; baking until {bake.until}"
            if bake
            else f"revision {revision} is serving"
        ),
        events=events,
    )


def _canary(
    revision: str,
    status: ModelDeploymentStatus,
    rollout: RolloutSpec,
    paused: bool,
    canary: CanaryView | None,
    stable_available: bool,
    analysis: AnalysisResult | None,
    actions: frozenset[Action],
    now: datetime,
) -> Decision:
    stable = status.stable_revision
    assert stable is not None
    now_s = fmt(now)
    events: list[tuple[str, str, str]] = []
    finished = None
    fresh = status.canary_revision != revision or status.rollout is None
    if fresh:
        if status.canary_revision and status.canary_revision != revision:
            finished = (status.canary_revision, "Superseded", f"replaced by revision {revision}")
        events.append(("Normal", "RolloutStarted", f"canary revision {revision} started"))
        state = RolloutStatus(step=0, step_started=now_s)
        started = now_s
    else:
        assert status.rollout is not None
        state = status.rollout
        started = status.rollout_started or now_s
    steps = list(rollout.steps)
    weight_in_place = canary.weight if canary else 0

    def rollback(reason: str, outcome: str = "RolledBack") -> Decision:
        return Decision(
            stage=Stage.ROLLED_BACK,
            stable=stable,
            canary=None,
            weight=0,
            rollout=None,
            bake=None,
            failed_revision=revision,
            rollout_started=None,
            finished=(revision, outcome, reason),
            message=f"revision {revision} {outcome.lower()}: {reason}",
            events=[*events, ("Warning", outcome, f"revision {revision}: {reason}")],
        )

    if Action.ABORT in actions:
        return rollback("aborted by request", "Aborted")
    if canary is not None and canary.failed_reason:
        return rollback(f"deployment failed: {canary.failed_reason}")
    elapsed = (now - parse_time(started)).total_seconds()
    if elapsed > seconds(rollout.progress_deadline):
        return rollback(f"progress deadline {rollout.progress_deadline} exceeded")

    # Background analysis: every window with canary traffic counts toward the failure limit.
    if analysis is not None:
        failures = state.failures
        passes = state.passes
        if analysis.verdict == Verdict.FAIL:
            failures += 1
            events.append(("Warning", "AnalysisFailed", analysis.reason))
        elif analysis.verdict == Verdict.PASS:
            failures = 0
            passes += 1
        state = state.model_copy(
            update={
                "failures": failures,
                "passes": passes,
                "analysis_since": now_s,
                "last_analysis": _analysis_status(analysis, now),
            }
        )
        if failures >= rollout.analysis.failure_limit:
            return rollback(f"{failures} failed analysis windows in a row: {analysis.reason}")
    if weight_in_place > 0 and state.analysis_since is None:
        state = state.model_copy(update={"analysis_since": now_s})
    if weight_in_place == 0 and state.analysis_since is not None and state.step == 0:
        state = state.model_copy(update={"analysis_since": None})

    promote_now = Action.PROMOTE in actions
    step = current_step(steps, state.step)
    ready = canary is not None and canary.available and stable_available

    if not ready and not promote_now:
        # Hold: no traffic before the canary is up, and no step forward while it is degraded.
        target = weight_in_place
        message = f"waiting for canary revision {revision} to become available"
    elif paused and not promote_now:
        target = weight_in_place
        message = f"paused at step {state.step} with {weight_in_place}% on the canary"
    else:
        advanced = True
        while advanced and step is not None and not promote_now:
            advanced = False
            if step.set_weight is not None:
                if weight_in_place == step.set_weight:
                    advanced = True
            elif step.pause is not None:
                if step.pause.duration is not None and state.step_started is not None:
                    waited = (now - parse_time(state.step_started)).total_seconds()
                    advanced = waited >= seconds(step.pause.duration)
                elif Action.RESUME in actions:
                    advanced = True
            elif step.analysis is not None and state.passes >= step.analysis.intervals:
                advanced = True
            if advanced:
                state = state.model_copy(
                    update={"step": state.step + 1, "step_started": now_s, "passes": 0}
                )
                step = current_step(steps, state.step)
                if step is not None and step.set_weight is not None:
                    events.append(
                        ("Normal", "StepAdvanced", f"canary weight to {step.set_weight}%")
                    )
        if step is None or promote_now:
            if weight_in_place < 100 and not promote_now:
                target = 100
                message = f"shifting all traffic to revision {revision}"
            else:
                reason = "promoted by request" if promote_now else "all steps passed"
                return Decision(
                    stage=Stage.PROMOTED,
                    stable=revision,
                    canary=None,
                    weight=0,
                    rollout=None,
                    bake=BakeStatus(
                        previous_revision=stable,
                        until=fmt(now + timedelta(seconds=_bake_seconds(rollout))),
                    ),
                    failed_revision=None,
                    rollout_started=None,
                    finished=(revision, "Promoted", f"replaced revision {stable}: {reason}"),
                    message=f"revision {revision} promoted ({reason})",
                    events=[*events, ("Normal", "Promoted", f"revision {revision}: {reason}")],
                )
        else:
            target = step_weight(steps, state.step)
            message = _describe(step, state, weight_in_place, target)
    return Decision(
        stage=Stage.CANARY,
        stable=stable,
        canary=revision,
        weight=target,
        rollout=state,
        bake=None,
        failed_revision=None,
        rollout_started=started,
        finished=finished,
        message=message,
        events=events,
    )


def _describe(step: RolloutStep, state: RolloutStatus, weight: int, target: int) -> str:
    where = f"step {state.step}"
    if step.set_weight is not None:
        return f"{where}: moving canary weight {weight}% -> {target}%"
    if step.pause is not None:
        until = f"for {step.pause.duration}" if step.pause.duration else "until resumed"
        return f"{where}: paused {until} at {weight}%"
    verdict = state.last_analysis.verdict if state.last_analysis else "pending"
    intervals = step.analysis.intervals if step.analysis else 1
    return (
        f"{where}: analysing at {weight}% ({state.passes}/{intervals} windows passed, "
        f"last {verdict})"
    )
