"""The rollout, cycle by cycle, through the pure planner and settle (tests/unit/plan/sim.py)."""

from __future__ import annotations

import pytest

from modelrollout.api.names import LABEL_REVISION
from modelrollout.api.status import Phase
from modelrollout.plan.analysis import AnalysisThresholds
from modelrollout.plan.desired import canary_replicas_for_ratio
from modelrollout.plan.rollout import Action, analysis_due

from .sim import BROKEN, HEALTHY, QUIET, Sim, deployed, phase, spec


def test_first_revision_is_promoted_when_available() -> None:
    sim = Sim(spec(), available=False)
    sim.cycle()
    assert phase(sim) == Phase.PROGRESSING
    assert sim.status.stable_revision is None
    assert sim.condition("Ready") == ("False", "DeploymentNotAvailable")
    sim.available = True
    sim.cycle()
    assert sim.status.phase == Phase.READY
    assert sim.status.stable_revision == sim.revision
    assert sim.status.history[0].outcome == "Promoted"
    assert sim.status.history[0].reason == "first revision"
    assert sim.condition("Ready") == ("True", "Available")


def test_healthy_canary_walks_every_step_and_is_promoted() -> None:
    sim = deployed()
    old = sim.revision
    sim.body = spec("v2")
    new = sim.revision
    weights = sim.run(HEALTHY, 80)
    # Default steps: 10, analysis, 25, analysis, 50, analysis, then everything, then promotion.
    seen = [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]]
    # The first cycle creates the canary Deployment; traffic moves once it is available.
    assert seen == [0, 10, 25, 50, 100, 0]
    assert sim.status.stable_revision == new
    assert sim.status.canary_revision is None
    assert [h.outcome for h in sim.status.history[:2]] == ["Promoted", "Promoted"]
    assert sim.status.history[0].revision == new
    assert sim.status.history[0].model_version == "v2"
    # The previous stable is kept through the bake window, then removed.
    assert sim.status.bake is None
    assert old not in sim.deployments
    # Promotion changed no pod template: the revision born as canary keeps saying so.
    assert sim.last is not None
    (dep,) = [m for m in sim.last.apply if m["kind"] == "Deployment"]
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELSERVER_TRACK"] == "canary"
    assert sim.last.tracks == {new: "stable"}
    assert sim.status.phase == Phase.READY


def test_stable_hpa_is_held_and_canary_hpa_follows_weight() -> None:
    sim = deployed()
    sim.body = spec("v2")
    sim.cycle()  # the canary Deployment is created
    sim.cycle()  # and gets 10%
    assert sim.status.canary_weight == 10
    assert sim.hpa("m")["spec"]["minReplicas"] == 2
    assert sim.hpa("m-canary")["spec"]["minReplicas"] == 1
    sim.run(HEALTHY, 12)
    assert sim.status.canary_weight == 50
    assert sim.hpa("m-canary")["spec"]["minReplicas"] == 1
    assert sim.hpa("m")["spec"]["scaleTargetRef"]["name"] == f"m-{sim.status.stable_revision}"


def test_failing_canary_is_rolled_back_and_not_retried() -> None:
    sim = deployed()
    stable = sim.revision
    sim.body = spec("v2")
    bad = sim.revision
    sim.run(BROKEN, 20)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert sim.status.canary_weight == 0
    assert sim.status.stable_revision == stable
    assert sim.status.failed_revision == bad
    entry = sim.status.history[0]
    assert (entry.revision, entry.outcome) == (bad, "RolledBack")
    assert "25.0%" in entry.reason
    assert "(100/400)" in entry.reason
    assert sim.condition("Degraded")[0] == "True"
    assert sim.condition("Ready") == ("False", "RolledBack")
    # The bad canary's pods go after the scale-down delay; no new attempt in a loop.
    sim.run(HEALTHY, 15)
    assert bad not in sim.deployments
    assert sim.status.phase == Phase.ROLLED_BACK
    assert sim.status.canary_revision is None

    sim.cycle(actions=frozenset({Action.RETRY}))
    assert sim.status.canary_revision == bad
    assert sim.status.phase == Phase.PROGRESSING


@pytest.mark.parametrize(
    ("router", "lingers"),
    [
        pytest.param({"type": "gatewayAPI", "httpRoute": "web"}, True, id="route-at-weight-0"),
        pytest.param({"type": "replicas"}, False, id="replicas-share-one-service"),
    ],
)
def test_rolled_back_canary_lingers_only_where_it_no_longer_gets_requests(
    router: dict[str, str], lingers: bool
) -> None:
    """Behind a route the rolled-back canary keeps its pods for the scale-down delay (it gets
    no new requests at weight 0). With the replica ratio its pods sit behind the one Service,
    so they would keep answering: its Deployment goes at once."""
    body = spec("v1", trafficRouter=router)
    sim = Sim(body)
    sim.cycle()
    sim.cycle()
    sim.body = spec("v2", trafficRouter=router)
    bad = sim.revision
    for _ in range(40):
        due = analysis_due(sim.status, sim.spec.rollout, sim.now)
        sim.cycle(BROKEN if due else None)
        if sim.status.phase == Phase.ROLLED_BACK:
            break
    assert sim.status.phase == Phase.ROLLED_BACK
    assert (bad in sim.deployments) is lingers
    sim.run(HEALTHY, 15)  # past the 20 s scale-down delay
    assert bad not in sim.deployments


def test_rollback_emits_a_warning_event_with_the_numbers() -> None:
    sim = deployed()
    sim.body = spec("v2")
    events = []
    for _ in range(20):
        due = analysis_due(sim.status, sim.spec.rollout, sim.now)
        result = sim.cycle(BROKEN if due else None)
        events += result.events
    rolled = [e for e in events if e.reason == "RolledBack"]
    assert len(rolled) == 1
    assert rolled[0].type == "Warning"
    assert "failed analysis windows" in rolled[0].message


def test_quiet_canary_holds_inconclusive_and_is_never_promoted() -> None:
    sim = deployed()
    stable = sim.revision
    sim.body = spec("v2")
    weights = sim.run(QUIET, 60)
    assert weights[0] == 0
    assert set(weights[1:]) == {10}
    assert sim.status.stable_revision == stable
    assert sim.status.rollout is not None
    assert sim.status.rollout.step == 1
    assert sim.status.rollout.last_analysis is not None
    assert sim.status.rollout.last_analysis.verdict == "Inconclusive"
    assert sim.status.phase == Phase.PROGRESSING


def test_progress_deadline_rolls_back_a_stuck_canary() -> None:
    sim = deployed()
    sim.body = spec("v2", progressDeadline="30s")
    sim.run(QUIET, 20)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert "progress deadline" in sim.status.history[0].reason


def test_abort_and_promote_actions() -> None:
    sim = deployed()
    sim.body = spec("v2")
    sim.cycle()
    sim.cycle(actions=frozenset({Action.ABORT}))
    assert sim.status.phase == Phase.ROLLED_BACK
    assert sim.status.history[0].outcome == "Aborted"

    sim.body = spec("v3")
    sim.cycle()
    sim.cycle()
    assert sim.status.canary_weight == 10
    sim.cycle(actions=frozenset({Action.PROMOTE}))
    assert sim.status.stable_revision == sim.revision
    assert "promoted by request" in sim.status.history[0].reason


def test_paused_spec_holds_the_weight() -> None:
    sim = deployed()
    sim.body = spec("v2")
    sim.run(HEALTHY, 4)
    held = sim.status.canary_weight
    sim.body = {**spec("v2"), "paused": True}
    weights = sim.run(HEALTHY, 30)
    assert set(weights) == {held}
    assert sim.status.phase == Phase.PAUSED
    sim.body = spec("v2")
    sim.run(HEALTHY, 40)
    assert sim.status.stable_revision == sim.revision


def test_pause_step_without_duration_waits_for_resume() -> None:
    sim = deployed()
    sim.body = spec("v2", steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}])
    weights = sim.run(HEALTHY, 10)
    assert set(weights[1:]) == {20}
    sim.cycle(actions=frozenset({Action.RESUME}))
    sim.run(HEALTHY, 6)
    assert sim.status.stable_revision == sim.revision


def test_timed_pause_step() -> None:
    sim = deployed()
    sim.body = spec("v2", steps=[{"setWeight": 30}, {"pause": {"duration": "20s"}}])
    weights = sim.run(HEALTHY, 20)
    assert weights.count(30) >= 10  # 20 s at 2 s a cycle
    assert sim.status.stable_revision == sim.revision


def test_regression_during_bake_rolls_back_to_previous_stable() -> None:
    sim = deployed()
    first = sim.revision
    sim.body = spec("v2")
    sim.run(HEALTHY, 40)
    # Promoted but still baking? run until promotion, then fail the bake.
    sim2 = deployed()
    sim2.body = spec("v2")
    for _ in range(40):
        due = analysis_due(sim2.status, sim2.spec.rollout, sim2.now)
        sim2.cycle(HEALTHY if due else None)
        if sim2.status.bake is not None:
            break
    assert sim2.status.bake is not None
    promoted = sim2.status.stable_revision
    sim2.run(BROKEN, 15)
    assert sim2.status.stable_revision == first
    assert sim2.status.failed_revision == promoted
    assert sim2.status.phase == Phase.ROLLED_BACK
    assert sim2.status.history[0].outcome == "RolledBack"
    assert "bake window" in sim2.status.history[0].reason
    assert sim.status.stable_revision == promoted  # the healthy twin kept it


def test_spec_back_to_stable_aborts_the_canary() -> None:
    sim = deployed()
    stable = sim.revision
    sim.body = spec("v2")
    sim.run(HEALTHY, 3)
    canary = sim.status.canary_revision
    sim.body = spec("v1")
    sim.cycle()
    assert sim.status.canary_revision is None
    assert sim.status.stable_revision == stable
    assert sim.status.history[0].revision == canary
    assert sim.status.history[0].outcome == "Aborted"
    assert sim.status.phase == Phase.READY


def test_new_version_mid_rollout_supersedes_the_canary() -> None:
    sim = deployed()
    sim.body = spec("v2")
    sim.run(HEALTHY, 3)
    v2 = sim.status.canary_revision
    sim.body = spec("v3")
    sim.cycle()
    assert sim.status.canary_revision == sim.revision
    assert sim.status.history[0].revision == v2
    assert sim.status.history[0].outcome == "Superseded"
    assert v2 not in sim.deployments
    sim.cycle()
    assert sim.status.canary_weight == 10


def test_replica_ratio_router_sizes_the_canary() -> None:
    body = spec("v1")
    body["rollout"]["trafficRouter"] = {"type": "replicas"}
    sim = Sim(body)
    sim.cycle()
    sim.cycle()
    body2 = spec("v2")
    body2["rollout"]["trafficRouter"] = {"type": "replicas"}
    sim.body = body2
    result = sim.cycle()
    assert result.route_weight is None
    canary_hpa = sim.hpa("m-canary")["spec"]
    assert canary_hpa["minReplicas"] == canary_hpa["maxReplicas"] == 1
    assert not any(m["metadata"]["name"] == "m-stable" for m in result.apply)
    service = next(m for m in result.apply if m["kind"] == "Service")
    assert LABEL_REVISION not in service["spec"]["selector"]
    sim.run(HEALTHY, 60)
    assert sim.status.stable_revision == sim.revision


def test_status_survives_a_restart_mid_rollout() -> None:
    """State is only in status: a second planner fed the stored status continues the walk."""
    sim = deployed()
    sim.body = spec("v2")
    sim.run(HEALTHY, 7)
    step = sim.status.rollout.step if sim.status.rollout else None
    restarted = Sim(
        sim.body,
        status=sim.status,
        deployments=dict(sim.deployments),
        existing=set(sim.existing),
        route_weight=sim.route_weight,
        now=sim.now,
    )
    restarted.cycle()
    assert restarted.status.rollout is not None
    assert restarted.status.rollout.step >= (step or 0)
    assert restarted.status.canary_weight == sim.status.canary_weight


@pytest.mark.parametrize(
    ("weight", "base", "expected"), [(0, 4, 0), (10, 4, 1), (50, 4, 4), (25, 6, 2), (100, 3, 3)]
)
def test_canary_replicas_for_ratio(weight: int, base: int, expected: int) -> None:
    assert canary_replicas_for_ratio(base, weight) == expected


def test_thresholds_type_is_used() -> None:
    assert AnalysisThresholds().min_requests == 50


def test_history_keeps_no_signed_url_secret() -> None:
    body = spec()
    body["model"]["uri"] = "https://models.example/m.onnx?X-Amz-Signature=abc123&X-Amz-Expires=60"
    sim = Sim(body)
    sim.cycle()
    sim.cycle()
    (entry,) = sim.status.history
    assert entry.model_uri == (
        "https://models.example/m.onnx?X-Amz-Signature=REDACTED&X-Amz-Expires=REDACTED"
    )
