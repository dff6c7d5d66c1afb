"""Notifications (pure): which transitions a reconcile made, as outbox entries in status.

settle derives them from what changed between the previous and the next status (and the
decision's events), so each transition yields exactly one entry, created in the same status
write as the transition itself. The operator delivers the outbox in the background and the
next reconcile drops what was delivered; an entry left when an operator stops is delivered by
the next one, under the same `id`, which a receiver can use to drop a rare repeat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from modelrollout.api.notifications import OUTBOX_LIMIT, NotificationEvent, PendingNotification
from modelrollout.api.status import ModelDeploymentStatus, Phase

__all__ = ["outbox", "transitions"]

_FROM_EVENTS = {
    "RolloutStarted": NotificationEvent.STARTED,
    "StepAdvanced": NotificationEvent.STEP_ADVANCED,
    "Promoted": NotificationEvent.PROMOTED,
}
_FAILED = (Phase.FAILED, Phase.DEGRADED)


def transitions(
    uid: str,
    previous: ModelDeploymentStatus,
    status: ModelDeploymentStatus,
    events: Iterable[tuple[str, str]],
    now: str,
) -> list[PendingNotification]:
    """The notifications of one reconcile: from its events (started, step advanced, promoted)
    and from phase changes (paused, rolled back, failed). `events` are (reason, message)."""
    found: list[tuple[NotificationEvent, str]] = [
        (_FROM_EVENTS[reason], message) for reason, message in events if reason in _FROM_EVENTS
    ]
    if status.phase != previous.phase:
        if status.phase == Phase.PAUSED:
            found.append((NotificationEvent.PAUSED, status.message))
        elif status.phase == Phase.ROLLED_BACK:
            found.append((NotificationEvent.ROLLED_BACK, status.message))
        elif status.phase in _FAILED and previous.phase not in _FAILED:
            found.append((NotificationEvent.FAILED, status.message))
    revision = status.canary_revision or (
        status.failed_revision if status.phase == Phase.ROLLED_BACK else status.stable_revision
    )
    step = status.rollout.step if status.rollout else None
    return [
        PendingNotification(
            id=_key(uid, revision, event, step, now, i),
            event=event,
            time=now,
            revision=revision,
            stable_revision=status.stable_revision,
            canary_weight=status.canary_weight,
            step=step,
            phase=status.phase.value,
            message=message,
        )
        for i, (event, message) in enumerate(found)
    ]


def outbox(
    pending: Iterable[PendingNotification],
    delivered: Iterable[str],
    new: Iterable[PendingNotification],
) -> list[PendingNotification]:
    """What stays to deliver: the pending entries not delivered yet, then the new ones; the
    oldest go first when there are more than OUTBOX_LIMIT."""
    done = set(delivered)
    kept = [p for p in pending if p.id not in done] + list(new)
    return kept[-OUTBOX_LIMIT:]


def _key(
    uid: str, revision: str | None, event: NotificationEvent, step: int | None, now: str, i: int
) -> str:
    """Unique per transition: the object, the revision, the event, the step and the time."""
    material = f"{uid}/{revision}/{event.value}/{step}/{now}/{i}"
    return hashlib.sha256(material.encode()).hexdigest()[:20]
