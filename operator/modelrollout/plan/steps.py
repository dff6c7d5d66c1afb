"""Where a rollout stands in its steps, and when its analysis is due: small pure helpers the
state machine (plan/rollout.py) and the planner share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from modelrollout.api.names import format_time, parse_time
from modelrollout.api.spec import RolloutSpec, RolloutStep
from modelrollout.api.status import ModelDeploymentStatus, RolloutStatus
from modelrollout.api.types import parse_duration


def seconds(duration: str) -> float:
    return parse_duration(duration).total_seconds()


@dataclass(frozen=True)
class CanaryView:
    """What the state machine needs to know about the canary's pods and route."""

    available: bool
    failed_reason: str | None
    # The weight actually in place: read back from the route, or realised by replica counts.
    weight: int
    # The route copies every request to the canary (read back; shadow steps).
    mirror: bool = False


def current_step(steps: list[RolloutStep], index: int) -> RolloutStep | None:
    return steps[index] if index < len(steps) else None


def shadowing(steps: list[RolloutStep], index: int) -> bool:
    """Is step `index` a shadow step (requests mirrored to the canary, weight 0)?"""
    step = current_step(steps, index)
    return step is not None and step.shadow is not None


def step_weight(steps: list[RolloutStep], index: int) -> int:
    """The weight in force at step `index`: the last setWeight at or before it, 0 during a
    shadow step (no user sees the canary's answers)."""
    if shadowing(steps, index):
        return 0
    weight = 0
    for step in steps[: index + 1]:
        if step.set_weight is not None:
            weight = step.set_weight
    return weight


def analysis_due(status: ModelDeploymentStatus, rollout: RolloutSpec, now: datetime) -> bool:
    """Is a window of metrics ready to judge? Only while a canary has traffic (its share, or
    mirrored requests in a shadow step) or a bake runs."""
    interval = seconds(rollout.analysis.every)
    since: str | None = None
    if (
        status.canary_revision
        and status.rollout
        and (status.canary_weight > 0 or shadowing(list(rollout.steps), status.rollout.step))
    ):
        since = status.rollout.analysis_since
    elif status.bake is not None:
        since = status.bake.last_analysis.time if status.bake.last_analysis else None
        if since is None:
            bake_start = parse_time(status.bake.until) - timedelta(seconds=bake_seconds(rollout))
            since = format_time(bake_start)
    return since is not None and (now - parse_time(since)).total_seconds() >= interval


def bake_seconds(rollout: RolloutSpec) -> float:
    return max(seconds(rollout.bake_time), seconds(rollout.scale_down_delay))


def describe_step(step: RolloutStep, state: RolloutStatus, weight: int, target: int) -> str:
    where = f"step {state.step}"
    if step.set_weight is not None:
        return f"{where}: moving canary weight {weight}% -> {target}%"
    if step.pause is not None:
        until = f"for {step.pause.duration}" if step.pause.duration else "until resumed"
        return f"{where}: paused {until} at {weight}%"
    if step.shadow is not None:
        verdict = state.last_analysis.verdict if state.last_analysis else "pending"
        return (
            f"{where}: shadowing for {step.shadow.duration}, requests mirrored to the canary "
            f"with its answers dropped (last analysis {verdict})"
        )
    verdict = state.last_analysis.verdict if state.last_analysis else "pending"
    intervals = step.analysis.intervals if step.analysis else 1
    return (
        f"{where}: analysing at {weight}% ({state.passes}/{intervals} windows passed, "
        f"last {verdict})"
    )
