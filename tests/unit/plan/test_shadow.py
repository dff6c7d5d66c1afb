"""Shadow steps, cycle by cycle through the pure planner: requests mirrored to the canary at
weight 0, the canary judged meanwhile, the mirror gone after the step or a rollback."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus, Phase, RolloutStatus
from modelrollout.plan.rollout import analysis_due
from modelrollout.plan.steps import shadowing, step_weight
from modelrollout.plan.types import Acted

from .sim import BROKEN, HEALTHY, START, Sim, deployed, spec

SHADOW_FIRST = [{"shadow": {"duration": "30s"}}, {"setWeight": 50}, {"analysis": {}}]


def shadowed(**rollout: Any) -> Sim:
    sim = deployed()
    sim.body = spec("v2", steps=SHADOW_FIRST, **rollout)
    return sim


def test_a_shadow_step_mirrors_at_weight_0_for_its_duration_then_walks_on() -> None:
    sim = shadowed()
    new = sim.revision
    seen: list[tuple[int | None, bool]] = []
    judged_in_shadow = 0
    for _ in range(60):
        due = analysis_due(sim.status, sim.spec.rollout, sim.now)
        in_shadow = sim.status.rollout is not None and sim.status.rollout.step == 0
        judged_in_shadow += due and in_shadow and sim.status.canary_weight == 0
        p = sim.cycle(HEALTHY if due else None)
        seen.append((p.route_weight, p.route_mirror))
        if sim.status.stable_revision == new:
            break
    changes = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    # Mirrored (no user answer from the canary), then 50%, then all, then promoted.
    assert changes == [(0, False), (0, True), (50, False), (100, False), (0, False)]
    mirrored = sum(1 for s in seen if s == (0, True))
    # The step lasted its 30 s from its start (2 s per cycle; the first cycle creates the
    # canary, which is mirrored to once available), and no longer than it needed.
    assert 14 <= mirrored <= 15
    assert judged_in_shadow >= 2  # the canary was judged while only mirrored requests reached it
    assert sim.status.stable_revision == new


def test_a_canary_failing_during_the_shadow_step_is_rolled_back_without_user_traffic() -> None:
    sim = deployed()
    stable = sim.revision
    sim.body = spec("v2", steps=SHADOW_FIRST)
    bad = sim.revision
    weights: list[int | None] = []
    for _ in range(20):
        due = analysis_due(sim.status, sim.spec.rollout, sim.now)
        weights.append(sim.cycle(BROKEN if due else None).route_weight)
        if sim.status.phase == Phase.ROLLED_BACK:
            break
    assert sim.status.phase == Phase.ROLLED_BACK
    assert (sim.status.stable_revision, sim.status.failed_revision) == (stable, bad)
    assert set(weights) == {0}  # no user ever got an answer from it
    assert sim.last is not None
    assert not sim.last.route_mirror
    assert not sim.route_mirror


def test_the_shadow_step_waits_for_the_mirror_to_hold() -> None:
    sim = shadowed()
    sim.cycle()  # the canary Deployment is created
    for _ in range(30):
        # The route never mirrors (a webhook strips the filter): the step does not complete.
        p = sim.cycle(acted=Acted(route_weight=0, route_mirror=False))
        assert p.route_mirror
    assert sim.status.rollout is not None
    assert sim.status.rollout.step == 0
    assert "does not mirror requests" in sim.status.message


def _status(step: int, weight: int) -> ModelDeploymentStatus:
    start = "2026-01-01T00:00:00Z"
    return ModelDeploymentStatus(
        stable_revision="a",
        canary_revision="b",
        canary_weight=weight,
        rollout=RolloutStatus(step=step, step_started=start, analysis_since=start),
    )


@pytest.mark.parametrize(
    ("step", "weight", "due"),
    [
        pytest.param(0, 0, True, id="shadow-step-at-0-is-judged"),
        pytest.param(1, 50, True, id="weighted-step-is-judged"),
        pytest.param(2, 0, False, id="weight-0-without-mirror-is-not"),
    ],
)
def test_analysis_is_due_during_a_shadow_step_at_weight_0(
    step: int, weight: int, due: bool
) -> None:
    steps = [{"shadow": {"duration": "1m"}}, {"setWeight": 50}, {"pause": {}}]
    rollout = ModelDeploymentSpec.model_validate(spec(steps=steps)).rollout
    later = START.replace(minute=5)
    assert analysis_due(_status(step, weight), rollout, later) is due


@pytest.mark.parametrize(
    ("steps", "index", "weight", "mirror"),
    [
        pytest.param(SHADOW_FIRST, 0, 0, True, id="shadow-first"),
        pytest.param(SHADOW_FIRST, 1, 50, False, id="after-shadow"),
        pytest.param(
            [{"setWeight": 20}, {"shadow": {"duration": "1m"}}, {"pause": {}}],
            1,
            0,
            True,
            id="shadow-after-a-weight-takes-users-off",
        ),
        pytest.param(
            [{"setWeight": 20}, {"shadow": {"duration": "1m"}}, {"pause": {}}],
            2,
            20,
            False,
            id="weight-back-after-shadow",
        ),
    ],
)
def test_step_weight_and_mirror(
    steps: list[dict[str, Any]], index: int, weight: int, mirror: bool
) -> None:
    parsed = list(ModelDeploymentSpec.model_validate(spec(steps=steps)).rollout.steps)
    assert (step_weight(parsed, index), shadowing(parsed, index)) == (weight, mirror)
