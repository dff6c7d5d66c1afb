"""The chaos campaign's checks, table-tested on recorded runs (bench/chaos/checks.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.chaos import checks
from bench.chaos.checks import Snapshot
from hack.loadgen import Answer

OWNER = "uid-1"


def snaps(*statuses: dict[str, Any]) -> list[Snapshot]:
    return [Snapshot(float(i), s) for i, s in enumerate(statuses)]


PROGRESSING = {"phase": "Progressing", "stableRevision": "v1", "canaryRevision": "v2"}
PROMOTED = {"phase": "Ready", "stableRevision": "v2", "history": [{"revision": "v2"}]}
ROLLED_BACK = {
    "phase": "RolledBack",
    "stableRevision": "v1",
    "failedRevision": "v2",
    "history": [{"revision": "v2", "outcome": "RolledBack"}, {"revision": "v1"}],
}


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([PROGRESSING], "Undecided"),
        ([PROGRESSING, PROMOTED], "Promoted"),
        # Promoted but still baking: not decided yet.
        ([PROGRESSING, PROMOTED | {"bake": {"previousRevision": "v1"}}], "Undecided"),
        ([PROGRESSING, ROLLED_BACK], "RolledBack"),
        # A bake-window rollback after promotion is a rollback.
        ([PROMOTED | {"bake": {"x": 1}}, ROLLED_BACK], "RolledBack"),
    ],
)
def test_outcome(statuses: list[dict[str, Any]], expected: str) -> None:
    assert checks.outcome(snaps(*statuses), "v2") == expected


def test_a_bad_canary_ever_stable_is_a_wrong_promotion() -> None:
    # Rolled back in its bake window in the end, but it was promoted on the way.
    run = snaps(PROGRESSING, PROMOTED | {"bake": {"x": 1}}, ROLLED_BACK)
    assert checks.wrong_outcome("bad", run, "v2") == "bad canary promoted"
    assert checks.wrong_outcome("bad", snaps(PROGRESSING, ROLLED_BACK), "v2") == ""


def test_a_healthy_canary_rolled_back_is_wrong() -> None:
    assert checks.wrong_outcome("healthy", snaps(ROLLED_BACK), "v2") == "healthy canary rolled back"
    assert checks.wrong_outcome("healthy", snaps(PROGRESSING, PROMOTED), "v2") == ""


def test_unready_answers_need_a_ready_moment_while_the_request_was_out() -> None:
    ready = {"a": [(10.0, 20.0)], "b": [(0.0, 5.0), (8.0, 30.0)]}
    requests = [
        Answer(11, 12, "a", "v1", 200),  # ready throughout
        Answer(9.9, 10.1, "a", "v1", 200),  # became ready while out: fine
        Answer(20.5, 21, "a", "v1", 200),  # after its last ready moment
        Answer(6, 7, "b", "v1", 200),  # between its two ready spans
        Answer(6, 7, "c", "v1", 200),  # never ready
        Answer(6, 7, "", "-", 503),  # no pod answered: not this check's business
    ]
    assert checks.unready_answers(requests, ready) == 3


def test_stable_failures_count_non_2xx_of_the_stable_only() -> None:
    requests = [
        Answer(0, 1, "a", "v1", 200),
        Answer(0, 1, "a", "v1", 502),
        Answer(0, 1, "a", "v1", 0),
        Answer(0, 1, "b", "v2", 500),  # the canary's
        Answer(0, 1, "", "-", 503),
    ]
    assert checks.stable_failures(requests, "v1") == 2


def test_recovery_is_the_first_move_after_the_fault() -> None:
    step1 = PROGRESSING | {"canaryWeight": 20, "rollout": {"step": 1}}
    step2 = PROGRESSING | {"canaryWeight": 50, "rollout": {"step": 2}}
    run = [Snapshot(0, step1), Snapshot(5, step1), Snapshot(12, step1), Snapshot(14.5, step2)]
    assert checks.recovery_s(run, fault_end=10, canary="v2") == 4.5
    # Never moved again.
    assert checks.recovery_s(run[:3], fault_end=10, canary="v2") is None
    # Decided before the fault ended: nothing to recover.
    decided = [Snapshot(0, step1), Snapshot(3, PROMOTED), Snapshot(12, PROMOTED)]
    assert checks.recovery_s(decided, fault_end=10, canary="v2") == 0.0


def child(kind: str, name: str, revision: str = "", owner: str = OWNER) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "ownerReferences": [{"uid": owner}] if owner else []}
    if revision:
        meta["labels"] = {"modelrollout.io/revision": revision}
    return {"kind": kind, "metadata": meta}


def test_children_owned_once_per_live_revision() -> None:
    good = [child("Deployment", "iris-v2", "v2"), child("Service", "iris-stable")]
    assert checks.child_problems(good, OWNER, {"v2"}) == []
    bad = [
        child("Deployment", "iris-v2", "v2"),
        child("Deployment", "iris-v2-dup", "v2"),
        child("Deployment", "iris-v1", "v1"),
        child("Service", "iris-canary", owner=""),
    ]
    problems = checks.child_problems(bad, OWNER, {"v2"})
    assert any("duplicates" in p for p in problems)
    assert any("iris-v1 left" in p for p in problems)
    assert any("iris-canary is not owned" in p for p in problems)


def test_history_loses_no_revision() -> None:
    good = snaps(
        {"history": [{"revision": "v1"}]},
        {"history": [{"revision": "v2", "outcome": "Promoted"}, {"revision": "v1"}]},
    )
    assert checks.history_problems(good, "v2", "Promoted") == []
    lost = snaps(
        {"history": [{"revision": "v1"}]},
        {"history": [{"revision": "v2", "outcome": "Promoted"}]},
    )
    assert checks.history_problems(lost, "v2", "Promoted") == ["history lost ['v1']"]
    repeated = snaps({"history": [{"revision": "v2", "outcome": "RolledBack"}] * 2})
    assert "history repeats ['v2']" in checks.history_problems(repeated, "v2", "RolledBack")
    wrong = snaps({"history": [{"revision": "v2", "outcome": "Promoted"}]})
    assert checks.history_problems(wrong, "v2", "RolledBack") == [
        "canary history says Promoted, not RolledBack"
    ]
