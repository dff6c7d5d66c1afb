"""Out-of-memory kills of a ModelDeployment's pods (pure).

The kernel kills a container that exceeds its memory limit; the kubelet restarts it and keeps
the kill in the container's `lastState` (reason OOMKilled, exit code 137) with a restart count.
Nothing else reaches the ModelDeployment: a canary that is killed over and over just never turns
Ready. `oom_kills` reads the kills from the pods the reconcile observed; `oom_condition` makes
the `OOMKilled` condition of them and `oom_events` one Warning event per kill not yet reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from modelrollout.api.names import LABEL_REVISION
from modelrollout.api.status import Condition
from modelrollout.plan.conditions import ConditionUpdate
from modelrollout.plan.types import Event, OomKill

OOM_KILLED = "OOMKilled"
# The condition names this many kills; the rest are counted.
LISTED = 3


def describe(kill: OomKill) -> str:
    limit = f", memory limit {kill.memory_limit}" if kill.memory_limit else ""
    return (
        f"container {kill.container} of pod {kill.pod} (revision {kill.revision}) "
        f"OOMKilled at {kill.finished_at} (exit code {kill.exit_code}{limit}), "
        f"restarts {kill.restarts}"
    )


def _limits(pod: dict[str, Any]) -> dict[str, str]:
    containers = (pod.get("spec") or {}).get("containers") or []
    return {
        c.get("name", ""): str(((c.get("resources") or {}).get("limits") or {}).get("memory", ""))
        for c in containers
    }


def _kill(pod: dict[str, Any], status: dict[str, Any]) -> OomKill | None:
    """The container's latest termination, when it was an OOM kill: the current state while it
    waits to restart, else the last state."""
    for state in (status.get("state"), status.get("lastState")):
        terminated = (state or {}).get("terminated")
        if terminated:
            if terminated.get("reason") != OOM_KILLED:
                return None
            meta = pod.get("metadata") or {}
            name = status.get("name", "")
            return OomKill(
                pod=meta.get("name", ""),
                container=name,
                revision=(meta.get("labels") or {}).get(LABEL_REVISION, ""),
                restarts=int(status.get("restartCount") or 0),
                exit_code=int(terminated.get("exitCode") or 0),
                finished_at=str(terminated.get("finishedAt") or ""),
                memory_limit=_limits(pod).get(name, ""),
            )
    return None


def oom_kills(pods: Iterable[dict[str, Any]]) -> tuple[OomKill, ...]:
    """Every container of `pods` whose latest termination was an OOM kill, by pod and name.
    Pods being deleted are left out: they are going away with what happened to them."""
    kills = [
        kill
        for pod in pods
        if not (pod.get("metadata") or {}).get("deletionTimestamp")
        for status in (pod.get("status") or {}).get("containerStatuses") or []
        if (kill := _kill(pod, status)) is not None
    ]
    return tuple(sorted(kills, key=lambda k: (k.pod, k.container)))


def _previous(conditions: Sequence[Condition]) -> Condition | None:
    return next((c for c in conditions if c.type == OOM_KILLED), None)


def oom_condition(kills: Sequence[OomKill], previous: Sequence[Condition]) -> list[ConditionUpdate]:
    """`OOMKilled=True` naming the kills while a pod's latest termination was one; `False` once
    none is (only when it was ever set: a model that never ran out of memory has none)."""
    if not kills:
        if _previous(previous) is None:
            return []
        return [ConditionUpdate(OOM_KILLED, "False", "NoOOMKill")]
    message = "; ".join(describe(k) for k in kills[:LISTED])
    if len(kills) > LISTED:
        message += f"; and {len(kills) - LISTED} more"
    return [ConditionUpdate(OOM_KILLED, "True", OOM_KILLED, message)]


def oom_events(kills: Sequence[OomKill], previous: Sequence[Condition]) -> list[Event]:
    """A Warning event for each kill the condition names that the previous one did not (a new
    pod, or a new kill of the same container: its restart count moved)."""
    before = _previous(previous)
    reported = before.message if before is not None and before.status == "True" else ""
    texts = [describe(k) for k in kills[:LISTED]]
    return [Event("Warning", OOM_KILLED, text) for text in texts if text not in reported]
