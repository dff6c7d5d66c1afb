"""The rollout state machine with the sequential analysis: counters read at every interval,
evidence carried in status, verdicts on it; and pauses that wait for a person."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelrollout.api.status import Phase
from modelrollout.plan.evidence import Reading, Readings
from modelrollout.plan.rollout import Action, analysis_due

from .sim import Sim, deployed


def spec(version: str, **rollout: Any) -> dict[str, Any]:
    """The sequential method (the default), read every 2 s."""
    return {
        "model": {"uri": "file:///m.onnx", "version": version},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
        "rollout": {
            "trafficRouter": {"type": "gatewayAPI", "httpRoute": "web"},
            "analysis": {"interval": "2s", "minRequests": 20},
            "steps": [{"setWeight": 20}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}],
            "bakeTime": "30s",
            "scaleDownDelay": "10s",
        }
        | rollout,
    }


@dataclass
class Traffic:
    """40 requests a read, split by the canary weight; error rates per track."""

    canary_error: float = 0.0
    stable_error: float = 0.0
    canary: tuple[int, int] = (0, 0)
    stable: tuple[int, int] = (5000, 10)

    def read(self, weight: int, bake: bool = False) -> Readings:
        n_c = 40 if bake else 40 * weight // 100
        n_s = 40 - n_c
        self.canary = (self.canary[0] + n_c, self.canary[1] + round(n_c * self.canary_error))
        self.stable = (self.stable[0] + n_s, self.stable[1] + round(n_s * self.stable_error))
        stable = None if bake else Reading(*self.stable)
        return Readings(Reading(*self.canary), stable)


def run(sim: Sim, traffic: Traffic, cycles: int, actions: frozenset[Action] = frozenset()) -> None:
    for _ in range(cycles):
        due = analysis_due(sim.status, sim.spec.rollout, sim.now)
        bake = sim.status.bake is not None and sim.status.canary_revision is None
        readings = traffic.read(sim.status.canary_weight, bake) if due else None
        sim.cycle(readings=readings, actions=actions)


def test_healthy_canary_is_promoted_once_each_step_has_its_exposure() -> None:
    sim = deployed()
    sim.body = spec("v2")
    run(sim, Traffic(), 40)
    assert sim.status.stable_revision == sim.revision
    assert sim.status.history[0].outcome == "Promoted"


def test_evidence_and_its_threshold_are_in_status_while_the_canary_runs() -> None:
    sim = deployed()
    sim.body = spec("v2")
    run(sim, Traffic(), 6)
    rollout = sim.status.rollout
    assert rollout is not None
    assert rollout.evidence is not None
    assert rollout.evidence.reads >= 2
    assert rollout.evidence.canary.requests > 0
    last = rollout.last_analysis
    assert last is not None
    # significance 0.01, all of it for errors: these counters carry no latency histogram.
    assert last.error_threshold == 100
    assert last.error_evalue is not None


def test_broken_canary_is_rolled_back_on_the_first_failing_read_with_the_numbers() -> None:
    sim = deployed()
    sim.body = spec("v2")
    run(sim, Traffic(canary_error=0.3), 12)
    assert sim.status.phase == Phase.ROLLED_BACK
    reason = sim.status.history[0].reason
    assert reason.startswith("analysis failed: canary error rate 2")
    assert "e-value" in reason
    assert "fails at 100" in reason


def test_a_pause_waiting_for_a_person_does_not_count_against_the_progress_deadline() -> None:
    sim = deployed()
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"analysis": {}}]
    sim.body = spec("v2", steps=steps, progressDeadline="30s")
    run(sim, Traffic(), 40)  # 80 s, most of it waiting at the pause
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.status.canary_weight == 20
    run(sim, Traffic(), 1, frozenset({Action.RESUME}))
    run(sim, Traffic(), 20)
    assert sim.status.stable_revision == sim.revision


def test_the_approval_deadline_rolls_back_an_unresumed_pause() -> None:
    sim = deployed()
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]
    sim.body = spec("v2", steps=steps, approvalDeadline="20s")
    run(sim, Traffic(), 20)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert "not resumed within the approval deadline 20s" in sim.status.history[0].reason


def test_regression_in_the_bake_window_is_judged_against_the_limit() -> None:
    sim = deployed()
    sim.body = spec("v2")
    traffic = Traffic()
    for _ in range(40):
        run(sim, traffic, 1)
        if sim.status.stable_revision == sim.revision:
            break
    assert sim.status.bake is not None
    traffic.canary_error = 0.4  # the new stable starts failing while it bakes
    run(sim, traffic, 10)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert "bake window" in sim.status.history[0].reason


@dataclass
class IgnoredRoute(Traffic):
    """A gateway that ignores the route's weights: the canary gets almost nothing."""

    def read(self, weight: int, bake: bool = False) -> Readings:
        return super().read(1 if weight else 0, bake)


def test_a_route_not_honoured_holds_the_step_with_a_condition() -> None:
    sim = deployed()
    sim.body = spec("v2", steps=[{"setWeight": 50}, {"pause": {"duration": "10s"}}])
    run(sim, IgnoredRoute(), 30)
    assert sim.status.stable_revision != sim.revision
    assert sim.status.canary_weight == 50
    assert sim.condition("RouteNotHonoured") == ("True", "ShareOff")
    assert "the route is not honoured" in sim.status.message


def test_an_honoured_route_says_so() -> None:
    sim = deployed()
    sim.body = spec("v2", steps=[{"setWeight": 50}, {"pause": {"duration": "60s"}}])
    run(sim, Traffic(), 12)
    assert sim.condition("RouteNotHonoured") == ("False", "Honoured")


@dataclass
class SyntheticOnly(Traffic):
    """No users: the stable serves nothing, the canary only the operator's synthetic requests
    (which reach it through its own Service, not the route)."""

    synthetic: int = 0

    def read(self, weight: int, bake: bool = False) -> Readings:
        self.canary = (self.canary[0] + 10, self.canary[1])
        self.synthetic += 10
        stable = None if bake else Reading(*self.stable)
        return Readings(Reading(*self.canary, synthetic=self.synthetic), stable)


def test_synthetic_requests_are_not_a_share_of_the_route() -> None:
    sim = deployed()
    sim.body = spec("v2", steps=[{"setWeight": 50}, {"pause": {"duration": "60s"}}])
    run(sim, SyntheticOnly(), 40)
    # Counted as requests, the canary would have 100% of them against a weight of 50%.
    assert sim.condition("RouteNotHonoured") != ("True", "ShareOff")
    assert "not honoured" not in sim.status.message
    assert sim.status.stable_revision == sim.revision


@dataclass
class IgnoredRouteWithSynthetic(IgnoredRoute):
    """A gateway that ignores the weights, and synthetic requests on the canary besides."""

    synthetic: int = 0

    def read(self, weight: int, bake: bool = False) -> Readings:
        readings = super().read(weight, bake)
        assert readings.canary is not None
        self.synthetic += 20
        self.canary = (self.canary[0] + 20, self.canary[1])
        return Readings(Reading(*self.canary, synthetic=self.synthetic), readings.stable)


def test_synthetic_requests_do_not_hide_a_route_not_honoured() -> None:
    sim = deployed()
    sim.body = spec("v2", steps=[{"setWeight": 50}, {"pause": {"duration": "10s"}}])
    run(sim, IgnoredRouteWithSynthetic(), 30)
    assert sim.status.stable_revision != sim.revision
    assert sim.condition("RouteNotHonoured") == ("True", "ShareOff")
