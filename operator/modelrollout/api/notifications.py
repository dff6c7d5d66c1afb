"""Notifications of rollout transitions: the names a spec selects (notifiers are configured in
the operator, never in the spec), and the outbox in status that makes each transition's
notification survive an operator restart."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from modelrollout.api.types import NAME_PATTERN, ApiModel

NotifierName = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
MAX_NOTIFIERS = 8
# Notifications kept in the outbox; the oldest undelivered ones are dropped past it.
OUTBOX_LIMIT = 20


class NotificationEvent(StrEnum):
    STARTED = "RolloutStarted"
    STEP_ADVANCED = "StepAdvanced"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class PendingNotification(ApiModel):
    """A transition to tell the ModelDeployment's notifiers about, until they were told."""

    id: str
    """Dedup key, the same in every delivery of this notification (also after a restart)."""

    event: NotificationEvent
    """RolloutStarted, StepAdvanced, Paused, Promoted, RolledBack or Failed."""

    time: str
    """When the transition happened."""

    revision: str | None = None
    """The canary (or, once promoted or rolled back to, the stable) revision it concerns."""

    stable_revision: str | None = None
    """The stable revision after the transition."""

    canary_weight: int = 0
    """Percent of traffic on the canary after the transition."""

    step: int | None = None
    """The rollout step after the transition, while a canary runs."""

    phase: str
    """The phase after the transition."""

    message: str = ""
    """What happened, in words."""
