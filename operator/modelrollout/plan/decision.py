"""Where a rollout stands after one reconcile (a Decision), the stages it can be in, and the
one-shot actions a user can ask for. One constructor per kind of outcome, so each transition in
plan/rollout.py names what it decides instead of spelling out every field."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from modelrollout.api.status import BakeStatus, ModelDeploymentStatus, RolloutStatus
from modelrollout.plan.share import ShareCheck

__all__ = ["Action", "Decision", "EventTuple", "Stage"]

EventTuple = tuple[str, str, str]  # (type, reason, message)


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


@dataclass(frozen=True)
class Decision:
    """Where the rollout stands after this reconcile. Built only through the constructors
    below, one for each kind of outcome."""

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
    events: list[EventTuple] = field(default_factory=list)
    # The traffic share check of this cycle, when it ran (routed canaries, sequential method).
    route_check: ShareCheck | None = None
    # Copy every request to the canary, its answers dropped (a shadow step; weight is 0).
    mirror: bool = False

    @classmethod
    def waiting(cls, revision: str, started: str) -> Decision:
        """No stable yet; the first revision is not available."""
        message = f"waiting for revision {revision} to become available"
        return cls(Stage.INITIAL, None, None, 0, None, None, None, started, message=message)

    @classmethod
    def first_promoted(cls, revision: str) -> Decision:
        message = f"revision {revision} is serving"
        return cls(
            Stage.PROMOTED, revision, None, 0, None, None, None, None,
            finished=(revision, "Promoted", "first revision"),
            message=message,
            events=[("Normal", "Promoted", message)],
        )  # fmt: skip

    @classmethod
    def steady(
        cls,
        revision: str,
        *,
        failed: str | None,
        bake: BakeStatus | None,
        finished: tuple[str, str, str] | None,
        events: list[EventTuple],
    ) -> Decision:
        message = f"revision {revision} is serving" + (
            f"; baking until {bake.until}" if bake else ""
        )
        return cls(
            Stage.STEADY, revision, None, 0, None, bake, failed, None,
            finished=finished, message=message, events=events,
        )  # fmt: skip

    @classmethod
    def blocked(
        cls, revision: str, status: ModelDeploymentStatus, reason: str, why: str
    ) -> Decision:
        """The spec's revision may not roll out; the stable (if any) keeps serving."""
        stable = status.stable_revision
        serving = f"; revision {stable} keeps serving" if stable else ""
        return cls(
            Stage.BLOCKED, stable, None, 0, None, status.bake, status.failed_revision, None,
            message=f"revision {revision} cannot roll out ({reason}): {why}{serving}",
        )  # fmt: skip

    @classmethod
    def not_retried(cls, revision: str, stable: str, failed: str) -> Decision:
        """The spec still names a revision that was rolled back: it is not tried again."""
        return cls(
            Stage.ROLLED_BACK, stable, None, 0, None, None, failed, None,
            message=f"revision {revision} was rolled back; change the spec or set the "
            "modelrollout.io/retry annotation to try again",
        )  # fmt: skip

    @classmethod
    def rolled_back(
        cls, revision: str, stable: str, reason: str, outcome: str, events: list[EventTuple]
    ) -> Decision:
        """The canary leaves; all traffic back on the stable."""
        return cls(
            Stage.ROLLED_BACK, stable, None, 0, None, None, revision, None,
            finished=(revision, outcome, reason),
            message=f"revision {revision} {outcome.lower()}: {reason}",
            events=[*events, ("Warning", outcome, f"revision {revision}: {reason}")],
        )  # fmt: skip

    @classmethod
    def bake_rolled_back(cls, revision: str, previous: str, reason: str) -> Decision:
        """The new stable regressed (or was aborted) in its bake window: back to the previous."""
        return cls(
            Stage.BAKE_ROLLED_BACK, previous, None, 0, None, None, revision, None,
            finished=(revision, "RolledBack", reason),
            message=f"revision {revision} rolled back to {previous}: {reason}",
            events=[("Warning", "RolledBack", f"revision {revision} {reason}")],
        )  # fmt: skip

    @classmethod
    def promoted(
        cls, revision: str, previous: str, bake_until: str, reason: str, events: list[EventTuple]
    ) -> Decision:
        """The canary becomes the stable; the previous one is kept through the bake window."""
        bake = BakeStatus(previous_revision=previous, until=bake_until)
        return cls(
            Stage.PROMOTED, revision, None, 0, None, bake, None, None,
            finished=(revision, "Promoted", f"replaced revision {previous}: {reason}"),
            message=f"revision {revision} promoted ({reason})",
            events=[*events, ("Normal", "Promoted", f"revision {revision}: {reason}")],
        )  # fmt: skip

    @classmethod
    def canary_at(
        cls,
        revision: str,
        stable: str,
        weight: int,
        state: RolloutStatus,
        started: str,
        finished: tuple[str, str, str] | None,
        message: str,
        events: list[EventTuple],
        route_check: ShareCheck | None = None,
        mirror: bool = False,
    ) -> Decision:
        """The canary runs on, `weight` percent of the traffic wanted on it, and with `mirror`
        a copy of every request."""
        return cls(
            Stage.CANARY, stable, revision, weight, state, None, None, started,
            finished=finished, message=message, events=events, route_check=route_check,
            mirror=mirror,
        )  # fmt: skip
