"""Synthetic traffic in the planner: wanted for a canary while it has traffic, and its count
kept in status for that canary only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.synthetic import SyntheticStatus
from modelrollout.plan.rollout import Action

from .sim import Sim, deployed, spec

TRAFFIC = {"ratePerSecond": 5, "maxRequests": 100, "samples": {"configMap": "samples"}}


def canary() -> Sim:
    sim = deployed()
    sim.body = spec("v2", steps=[{"setWeight": 20}, {"pause": {}}], syntheticTraffic=TRAFFIC)
    return sim


def test_wanted_only_while_the_canary_has_traffic() -> None:
    sim = canary()
    sim.cycle()
    assert sim.last is not None
    assert sim.last.synthetic_revision is None, "no traffic on the canary yet"
    for _ in range(3):
        sim.cycle()
    assert sim.status.canary_weight == 20
    assert sim.last.synthetic_revision == sim.revision
    sim.cycle(actions=frozenset({Action.ABORT}))
    assert sim.last.synthetic_revision is None


def test_not_wanted_without_the_spec() -> None:
    sim = deployed()
    sim.body = spec("v2", steps=[{"setWeight": 20}, {"pause": {}}])
    for _ in range(4):
        sim.cycle()
    assert sim.status.canary_weight == 20
    assert sim.last is not None
    assert sim.last.synthetic_revision is None


def test_the_count_is_kept_for_its_canary() -> None:
    sim = canary()
    for _ in range(4):
        sim.cycle()
    sent = SyntheticStatus(revision=sim.revision, sent=42, errors=1)
    sim.cycle(synthetic=sent)
    assert sim.status.synthetic == sent
    sim.cycle()
    assert sim.status.synthetic == sent, "kept from status when the generator has no news"
    other = SyntheticStatus(revision="0123456789", sent=7)
    sim.cycle(synthetic=other)
    assert sim.status.synthetic == sent, "another revision's count is not this canary's"
    sim.cycle(actions=frozenset({Action.ABORT}))
    assert sim.status.synthetic is None


def test_a_replica_ratio_canary_has_no_service_to_send_to() -> None:
    body = spec("v2", syntheticTraffic=TRAFFIC, trafficRouter={"type": "replicas"})
    with pytest.raises(ValidationError, match="needs a gatewayAPI or istio trafficRouter"):
        ModelDeploymentSpec.model_validate(body)
