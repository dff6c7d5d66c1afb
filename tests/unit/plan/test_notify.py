"""Notifications in the planner: one outbox entry per transition, written with the transition,
kept until delivered, never repeated by later reconciles."""

from __future__ import annotations

from modelrollout.api.notifications import OUTBOX_LIMIT, NotificationEvent
from modelrollout.api.status import Phase
from modelrollout.plan.notify import outbox, transitions
from modelrollout.plan.rollout import Action

from .sim import BROKEN, Sim, deployed, spec

STEPS = [{"setWeight": 20}, {"setWeight": 50}]


def notified(sim: Sim) -> Sim:
    sim.body = sim.body | {"notify": ["team"]}
    return sim


def events(sim: Sim) -> list[NotificationEvent]:
    return [n.event for n in sim.status.notifications]


def test_each_transition_is_one_entry_until_delivered() -> None:
    sim = notified(deployed())
    sim.body = spec("v2", steps=STEPS) | {"notify": ["team"]}
    for _ in range(12):
        sim.cycle()
    assert sim.status.stable_revision == sim.revision
    assert events(sim) == [
        NotificationEvent.STARTED,
        NotificationEvent.STEP_ADVANCED,
        NotificationEvent.PROMOTED,
    ]
    ids = [n.id for n in sim.status.notifications]
    assert len(set(ids)) == 3
    assert sim.status.notifications[1].canary_weight == 50
    # Delivered ones leave the outbox; the rest stay, under the same ids.
    sim.cycle()
    sim.cycle(notified=frozenset(ids[:2]))
    assert [n.id for n in sim.status.notifications] == ids[2:]
    sim.cycle(notified=frozenset(ids[2:]))
    assert sim.status.notifications == []
    for _ in range(3):
        sim.cycle()
    assert sim.status.notifications == []


def test_rolled_back_and_paused() -> None:
    sim = notified(deployed())
    sim.body = spec("v2", steps=STEPS) | {"notify": ["team"], "paused": True}
    sim.cycle()
    sim.cycle()
    assert events(sim)[-1] is NotificationEvent.PAUSED
    assert sim.status.notifications[-1].phase == "Paused"
    sim.body = sim.body | {"paused": False}
    sim.cycle(actions=frozenset({Action.ABORT}))
    assert sim.status.phase == Phase.ROLLED_BACK
    last = sim.status.notifications[-1]
    assert last.event is NotificationEvent.ROLLED_BACK
    assert last.revision == sim.revision
    assert "aborted" in last.message
    count = len(sim.status.notifications)
    sim.cycle(BROKEN)
    assert len(sim.status.notifications) == count, "staying rolled back is no transition"


def test_no_notifier_no_outbox() -> None:
    sim = deployed()
    sim.body = spec("v2", steps=STEPS)
    for _ in range(6):
        sim.cycle()
    assert sim.status.notifications == []


def test_outbox_is_bounded_oldest_first() -> None:
    sim = deployed()
    many = []
    for i in range(OUTBOX_LIMIT + 5):
        step = [("StepAdvanced", f"canary weight to {i}%")]
        many += transitions("uid", sim.status, sim.status, step, f"2026-01-01T00:00:{i:02d}Z")
    assert len({n.id for n in many}) == len(many)
    kept = outbox([], [], many)
    assert len(kept) == OUTBOX_LIMIT
    assert kept[-1] == many[-1]
