"""What a notifier receives: the generic webhook's JSON payload, or a Slack incoming-webhook
message. Pure; docs/rollouts.md ("Notifications") documents both."""

from __future__ import annotations

from typing import Any

from modelrollout.api.notifications import NotificationEvent, PendingNotification

__all__ = ["payload", "slack"]

_TITLES = {
    NotificationEvent.STARTED: ":rocket: rollout started",
    NotificationEvent.STEP_ADVANCED: ":arrow_forward: step advanced",
    NotificationEvent.PAUSED: ":double_vertical_bar: paused",
    NotificationEvent.PROMOTED: ":white_check_mark: promoted",
    NotificationEvent.ROLLED_BACK: ":rewind: rolled back",
    NotificationEvent.FAILED: ":x: failed",
}


def payload(namespace: str, name: str, n: PendingNotification) -> dict[str, Any]:
    """The generic webhook's JSON body."""
    return {
        "id": n.id,
        "event": n.event.value,
        "time": n.time,
        "namespace": namespace,
        "name": name,
        "revision": n.revision,
        "stableRevision": n.stable_revision,
        "canaryWeight": n.canary_weight,
        "step": n.step,
        "phase": n.phase,
        "message": n.message,
    }


def slack(namespace: str, name: str, n: PendingNotification) -> dict[str, Any]:
    """A Slack (or Mattermost, Rocket.Chat...) incoming-webhook message."""
    where = f"*{namespace}/{name}*"
    detail = f"revision `{n.revision}`" if n.revision else ""
    if n.event in (NotificationEvent.STARTED, NotificationEvent.STEP_ADVANCED):
        detail += f", {n.canary_weight}% on the canary"
    text = f"{_TITLES[n.event]}: {where} ({detail.lstrip(', ')})"
    if n.message:
        text += f"\n{n.message}"
    return {"text": text}
