"""OOM kills read from pod statuses, reported as the OOMKilled condition and Warning events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modelrollout.api.status import Condition
from modelrollout.plan.oom import LISTED, describe, oom_condition, oom_events, oom_kills
from modelrollout.plan.types import OomKill

KILLED = {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-30T08:00:00Z"}
ERROR = {"reason": "Error", "exitCode": 1, "finishedAt": "2026-11-30T08:00:00Z"}
KILL = OomKill("md-abc-1", "server", "r2", 1, 137, "2026-11-30T08:00:00Z", "32Mi")


def pod(
    state: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    restarts: int = 1,
    deleting: bool = False,
    limit: str | None = "32Mi",
) -> dict[str, Any]:
    resources = {"limits": {"memory": limit}} if limit else {}
    meta: dict[str, Any] = {"name": "md-abc-1", "labels": {"modelrollout.io/revision": "r2"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T08:01:00Z"
    status = {"name": "server", "restartCount": restarts, "state": state or {"running": {}}}
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "server", "resources": resources}]},
        "status": {"containerStatuses": [status | {"lastState": last or {}}]},
    }


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([], ()),
        ([pod()], ()),  # never terminated
        ([pod(last={"terminated": KILLED})], (KILL,)),  # restarted after the kill
        # Killed and waiting to be restarted.
        ([pod(state={"terminated": KILLED}, restarts=0)], (replace(KILL, restarts=0),)),
        # The latest termination decides: killed earlier, then exited with an error.
        ([pod(state={"terminated": ERROR}, last={"terminated": KILLED})], ()),
        ([pod(last={"terminated": ERROR})], ()),
        ([pod(last={"terminated": KILLED}, deleting=True)], ()),  # going away
        ([pod(last={"terminated": KILLED}, limit=None)], (replace(KILL, memory_limit=""),)),
        ([{"metadata": {"name": "p"}}], ()),  # no status yet
    ],
)
def test_kills_read_from_container_statuses(
    pods: list[dict[str, Any]], expected: tuple[OomKill, ...]
) -> None:
    assert oom_kills(pods) == expected


def test_the_kill_is_described_with_pod_container_limit_and_restarts() -> None:
    assert describe(KILL) == (
        "container server of pod md-abc-1 (revision r2) OOMKilled at 2026-11-30T08:00:00Z "
        "(exit code 137, memory limit 32Mi), restarts 1"
    )


def condition(status: str, message: str = "") -> Condition:
    return Condition(
        type="OOMKilled",
        status=status,
        reason="OOMKilled" if status == "True" else "NoOOMKill",
        message=message,
        last_transition_time="2026-11-30T08:00:00Z",
    )


AGAIN = replace(KILL, restarts=2, finished_at="2026-11-30T08:00:30Z")
OTHER = replace(KILL, pod="md-abc-2")


@pytest.mark.parametrize(
    ("kills", "previous", "expected"),
    [
        # Never killed, never set: no condition at all.
        ((), [], []),
        ((KILL,), [], [("True", "OOMKilled", describe(KILL))]),
        # The kills are gone (pods replaced): it turns False.
        ((), [condition("True", describe(KILL))], [("False", "NoOOMKill", "")]),
        ((), [condition("False")], [("False", "NoOOMKill", "")]),
        (
            (KILL, OTHER),
            [],
            [("True", "OOMKilled", f"{describe(KILL)}; {describe(OTHER)}")],
        ),
    ],
)
def test_condition(
    kills: tuple[OomKill, ...], previous: list[Condition], expected: list[tuple[str, str, str]]
) -> None:
    got = oom_condition(kills, previous)
    assert [(u.status, u.reason, u.message) for u in got] == expected
    assert all(u.type == "OOMKilled" for u in got)


def test_condition_names_a_few_kills_and_counts_the_rest() -> None:
    kills = tuple(replace(KILL, pod=f"md-abc-{i}") for i in range(LISTED + 2))
    [update] = oom_condition(kills, [])
    assert update.message.count("OOMKilled at") == LISTED
    assert update.message.endswith("; and 2 more")


@pytest.mark.parametrize(
    ("kills", "previous", "events"),
    [
        ((), [], []),
        ((KILL,), [], [describe(KILL)]),  # first seen
        ((KILL,), [condition("True", describe(KILL))], []),  # already reported
        ((AGAIN,), [condition("True", describe(KILL))], [describe(AGAIN)]),  # killed again
        ((KILL, OTHER), [condition("True", describe(KILL))], [describe(OTHER)]),  # a new pod
        # Reported, cleared, then the same text again is a new report.
        ((KILL,), [condition("False", describe(KILL))], [describe(KILL)]),
    ],
)
def test_events_for_kills_not_yet_reported(
    kills: tuple[OomKill, ...], previous: list[Condition], events: list[str]
) -> None:
    got = oom_events(kills, previous)
    assert [(e.type, e.reason, e.message) for e in got] == [
        ("Warning", "OOMKilled", m) for m in events
    ]
