"""Settle: the one status of a cycle, from the plan and what acting on it did. Failures met while
acting (a route that cannot be steered) and failures before anything took effect (an API error,
an invalid spec) set Degraded and Stalled with their reason."""

from __future__ import annotations

from datetime import UTC, datetime

from modelrollout.api.status import ModelDeploymentStatus, Phase
from modelrollout.plan.settle import settle_unplanned
from modelrollout.plan.types import Acted, Failure

from .sim import BROKEN, HEALTHY, Sim, deployed, spec

ROUTE_MISSING = Failure("RouterError", "traffic router: HTTPRoute ns/web not found")


def conditions(status: ModelDeploymentStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def canary_at_ten() -> Sim:
    sim = deployed()
    sim.body = spec("v2")
    sim.cycle()  # the canary Deployment is created
    sim.cycle()  # and gets 10%
    assert sim.status.canary_weight == 10
    return sim


def test_a_route_that_cannot_be_steered_is_degraded_and_stalled() -> None:
    sim = canary_at_ten()
    sim.run(HEALTHY, 6)  # analysis passes: the next step wants 25%
    assert sim.last is not None
    assert sim.last.route_weight == 25
    held = sim.status.canary_weight
    sim.cycle(acted=Acted(route_weight=held, failures=(ROUTE_MISSING,)))
    got = conditions(sim.status)
    assert sim.status.phase == Phase.DEGRADED
    assert got["Degraded"] == ("True", "RouterError")
    assert got["Stalled"] == ("True", "RouterError")
    assert got["Progressing"] == ("False", "RouterError")
    assert got["Reconciling"][0] == "False"
    # The stable still serves; the status says what the route holds, not what was wanted.
    assert got["Ready"][0] == "False"  # a canary is in progress, as before the failure
    assert sim.status.canary_weight == held
    assert "traffic router: HTTPRoute ns/web not found" in sim.status.message
    degraded = next(c for c in sim.status.conditions if c.type == "Degraded")
    assert "not found" in degraded.message

    # Once the route can be steered again the rollout carries on, and the conditions clear.
    sim.run(HEALTHY, 40)
    got = conditions(sim.status)
    assert sim.status.stable_revision == sim.revision
    assert got["Degraded"] == ("False", "Healthy")
    assert got["Stalled"][0] == "False"


def test_a_router_failure_while_steady_keeps_ready() -> None:
    sim = deployed()
    sim.cycle(acted=Acted(route_weight=None, failures=(ROUTE_MISSING,)))
    got = conditions(sim.status)
    assert sim.status.phase == Phase.DEGRADED
    assert got["Ready"] == ("True", "Available")
    assert got["Degraded"] == ("True", "RouterError")
    assert got["Stalled"] == ("True", "RouterError")


def test_a_router_failure_during_a_rollback_keeps_the_rolled_back_phase() -> None:
    sim = canary_at_ten()
    for _ in range(20):
        if sim.status.phase == Phase.ROLLED_BACK:
            break
        sim.run(BROKEN, 1)
    # The rollback is decided; the route refuses the 0% this time.
    assert sim.status.phase == Phase.ROLLED_BACK
    sim.cycle(acted=Acted(route_weight=10, failures=(ROUTE_MISSING,)))
    got = conditions(sim.status)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert got["Degraded"] == ("True", "RouterError")
    assert got["Stalled"] == ("True", "RouterError")
    # The status does not pretend the traffic left the canary.
    assert sim.status.canary_weight == 10


def test_a_route_holding_another_weight_holds_the_step_without_degrading() -> None:
    sim = canary_at_ten()
    sim.run(HEALTHY, 6)
    assert sim.last is not None
    assert sim.last.route_weight == 25
    sim.cycle(acted=Acted(route_weight=15))
    got = conditions(sim.status)
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.status.canary_weight == 15
    assert "route holds 15% instead of 25%" in sim.status.message
    assert got["Degraded"] == ("False", "Healthy")
    assert got["Stalled"][0] == "False"


def test_a_rollback_is_stalled_until_someone_acts() -> None:
    sim = canary_at_ten()
    sim.run(BROKEN, 20)
    got = conditions(sim.status)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert got["Stalled"] == ("True", "RolledBack")
    assert got["Reconciling"][0] == "False"


NOW = datetime(2026, 2, 1, tzinfo=UTC)


def test_an_api_error_keeps_the_status_and_records_the_failure() -> None:
    sim = deployed()
    before = sim.status
    status = settle_unplanned(before, 3, NOW, Failure("ApiError", "admission webhook denied"))
    got = conditions(status)
    assert status.phase == Phase.DEGRADED
    assert status.message == "admission webhook denied"
    assert status.observed_generation == 3
    # What the rollout knows is kept: stable revision, history, hardware.
    assert status.stable_revision == before.stable_revision
    assert status.history == before.history
    assert got["Ready"] == ("True", "ApiError")  # the stable still has ready pods
    assert got["Degraded"] == ("True", "ApiError")
    assert got["Stalled"] == ("True", "ApiError")
    assert got["Progressing"] == ("False", "ApiError")


def test_an_invalid_spec_is_failed_and_stalled() -> None:
    status = settle_unplanned(
        ModelDeploymentStatus(), 1, NOW, Failure("InvalidSpec", "spec.model.uri: required")
    )
    got = conditions(status)
    assert status.phase == Phase.FAILED
    assert got["Ready"] == ("False", "InvalidSpec")
    assert got["Degraded"] == ("True", "InvalidSpec")
    assert got["Stalled"] == ("True", "InvalidSpec")
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.last_transition_time == "2026-02-01T00:00:00Z"
