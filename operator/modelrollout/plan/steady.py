"""The stable revision's side of the rollout state machine (pure): serving steadily, and its
bake window after a promotion, judged on its own until the window ends (plan/rollout.py)."""

from __future__ import annotations

from datetime import datetime

from modelrollout.api.names import format_time, parse_time
from modelrollout.api.spec import RolloutSpec
from modelrollout.api.status import AnalysisStatus, BakeStatus, ModelDeploymentStatus
from modelrollout.plan.analysis import Verdict, next_failure_count, should_rollback
from modelrollout.plan.decision import Action, Decision, EventTuple
from modelrollout.plan.judging import Judged

__all__ = ["analysis_status", "steady"]


def analysis_status(result: Judged, now: datetime) -> AnalysisStatus:
    return AnalysisStatus.model_validate(result.as_status() | {"time": format_time(now)})


def steady(
    revision: str,
    status: ModelDeploymentStatus,
    rollout: RolloutSpec,
    analysis: Judged | None,
    actions: frozenset[Action],
    now: datetime,
) -> Decision:
    events: list[EventTuple] = []
    finished = None
    if status.canary_revision and status.canary_revision != revision:
        # The spec went back to the stable revision mid-rollout.
        finished = (status.canary_revision, "Aborted", "spec returned to the stable revision")
        events.append(
            ("Normal", "Aborted", f"canary {status.canary_revision} abandoned: spec is stable")
        )
    bake = status.bake
    if bake is not None:
        judged = _bake(revision, bake, rollout, analysis, actions, now)
        if isinstance(judged, Decision):
            return judged
        bake = judged
        if bake is not None and now >= parse_time(bake.until):
            events.append(("Normal", "BakeComplete", f"revision {revision} passed its bake window"))
            bake = None
    return Decision.steady(
        revision, failed=status.failed_revision, bake=bake, finished=finished, events=events
    )


def _bake(
    revision: str,
    bake: BakeStatus,
    rollout: RolloutSpec,
    analysis: Judged | None,
    actions: frozenset[Action],
    now: datetime,
) -> BakeStatus | Decision:
    """The bake window: an abort or `failureLimit` failed windows in a row roll back to the
    previous stable; otherwise the window's verdict is counted."""
    if Action.ABORT in actions:
        return Decision.bake_rolled_back(
            revision, bake.previous_revision, "aborted during the bake window"
        )
    if analysis is None:
        return bake
    failures = next_failure_count(bake.failures, analysis.verdict)
    if analysis.verdict == Verdict.FAIL and should_rollback(
        failures, rollout.analysis.failures_to_rollback
    ):
        reason = f"regressed during the bake window: {analysis.reason}"
        return Decision.bake_rolled_back(revision, bake.previous_revision, reason)
    return bake.model_copy(
        update={"failures": failures, "last_analysis": analysis_status(analysis, now)}
    )
