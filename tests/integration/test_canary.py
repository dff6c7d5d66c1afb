"""Progressive delivery end to end, with real parts: the local control plane and the operator,
`modelserver` processes standing in for each pod (started with the env the operator put in
the Deployment), Debian's Prometheus scraping them, a gateway splitting live traffic by the
weights in the HTTPRoute, and the operator's analysis judging the canary from Prometheus."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hack.gateway import NO_REVISION
from hack.podrunner import PodRunner

from .grpcload import grpc_load, with_grpc
from .kube import wait_for
from .rig import Rig, watch

pytestmark = pytest.mark.integration


def test_healthy_version_is_promoted_step_by_step(rig: Rig) -> None:
    stable = rig.ready_stable()
    with rig.steady_load() as slices:
        canary = rig.deploy(rig.manifest("v2"))
        seen = watch(
            rig,
            lambda s: s.get("stableRevision") == canary,
            timeout=150,
            what="promotion",
        )
    weights = [s.get("canaryWeight", 0) for s in seen]
    assert 20 in weights
    assert 50 in weights
    assert weights.index(20) < weights.index(50)
    passes = [
        s["rollout"]["lastAnalysis"] for s in seen if (s.get("rollout") or {}).get("lastAnalysis")
    ]
    assert passes
    assert all(a["verdict"] != "Fail" for a in passes)
    assert any(a["verdict"] == "Pass" and a["canaryRequests"] >= 20 for a in passes)
    final = rig.status()
    assert final["history"][0]["revision"] == canary
    assert final["history"][0]["outcome"] == "Promoted"
    assert final["history"][1]["revision"] == stable
    # The canary really served live traffic through the route, and no request failed.
    served = {rev for st in slices for rev in st.by_revision}
    assert canary in served
    assert stable in served
    # No model server answered with an error. (The gateway's own answers while a stand-in
    # process starts or stops carry no revision: a kubelet's readiness probe would hide those.)
    server_errors = sum(
        n
        for st in slices
        for (rev, code), n in st.by_revision_status.items()
        if rev != NO_REVISION and code >= 500
    )
    assert server_errors == 0
    # After promotion the route sends everything to the stable Service, now the new revision.
    wait_for(lambda: rig.route_weights() == {"iris-stable": 100, "iris-canary": 0}, what="0/100")
    svc = rig.kube.must("service", "iris-stable")
    assert svc["spec"]["selector"]["modelrollout.io/revision"] == canary


def test_failing_version_is_rolled_back_by_itself(rig: Rig, record_property: Any) -> None:
    stable = rig.ready_stable()
    with rig.steady_load():
        bad = rig.deploy(rig.manifest("v2", env={"MODELSERVER_FAULT_ERROR_RATIO": "0.3"}))
        seen = watch(rig, lambda s: s.get("phase") == "RolledBack", timeout=120, what="rollback")
    onset = next(s["_t"] for s in seen if s.get("canaryWeight", 0) > 0)
    back = next(s["_t"] for s in seen if s.get("phase") == "RolledBack")
    detection = back - onset
    record_property("rollback_seconds_from_first_canary_traffic", round(detection, 1))
    print(f"\nrollback {detection:.1f}s after the faulty canary first had traffic")
    # A few reads of overwhelming evidence, plus scrape and reconcile delays.
    assert detection < 30
    status = rig.status()
    assert status["stableRevision"] == stable
    assert status["failedRevision"] == bad
    assert status["canaryWeight"] == 0
    assert rig.route_weights()["iris-canary"] == 0
    entry = status["history"][0]
    assert (entry["revision"], entry["outcome"]) == (bad, "RolledBack")
    assert "error rate" in entry["reason"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    events = [e for e in rig.kube.list("events") if e["reason"] == "RolledBack"]
    assert events
    assert events[0]["type"] == "Warning"
    # The spec still names the bad version; it is not retried in a loop.
    time.sleep(12)
    again = rig.status()
    assert again["phase"] == "RolledBack"
    assert again.get("canaryRevision") is None
    assert [h["outcome"] for h in again["history"]].count("RolledBack") == 1


def test_canary_failing_its_grpc_callers_is_rolled_back(rig: Rig, modelservers: PodRunner) -> None:
    # gRPC traffic only: without its errors in the analysis the canary would hold Inconclusive.
    stable = rig.deploy(with_grpc(rig.manifest("v1")))
    ns = rig.kube.namespace
    wait_for(lambda: rig.status().get("stableRevision") == stable, what="v1 stable", timeout=60)
    wait_for(
        lambda: any(s.grpc_target for s in modelservers.servers(namespace=ns, ready=True)),
        what="a stable pod serving gRPC",
        timeout=60,
    )
    bad = rig.deploy(with_grpc(rig.manifest("v2", env={"MODELSERVER_FAULT_ERROR_RATIO": "0.3"})))
    weight = lambda: rig.route_weights().get("iris-canary", 0)  # noqa: E731
    with grpc_load(modelservers, ns, bad, weight) as seen:
        watch(rig, lambda s: s.get("phase") == "RolledBack", timeout=120, what="rollback")
    status = rig.status()
    assert (status["stableRevision"], status["failedRevision"]) == (stable, bad)
    entry = status["history"][0]
    assert (entry["revision"], entry["outcome"]) == (bad, "RolledBack")
    assert "error rate" in entry["reason"]
    # The canary answered INTERNAL to some gRPC calls; the stable failed none.
    assert seen[bad, "StatusCode.INTERNAL"] > 0
    assert seen[stable, "OK"] > 0
    assert not [k for k in seen if k[0] == stable and k[1] != "OK"]


def test_canary_without_traffic_holds_inconclusive(rig: Rig) -> None:
    rig.ready_stable()
    canary = rig.deploy(rig.manifest("v2"))
    seen = watch(
        rig,
        lambda s: (
            ((s.get("rollout") or {}).get("lastAnalysis") or {}).get("verdict") == "Inconclusive"
        ),
        timeout=60,
        what="an Inconclusive window",
    )
    time.sleep(15)
    status = rig.status()
    assert status["stableRevision"] != canary
    assert status["canaryRevision"] == canary
    assert status["canaryWeight"] == 20
    assert status["rollout"]["step"] == 1
    assert status["rollout"]["lastAnalysis"]["verdict"] == "Inconclusive"
    assert "minimum" in status["rollout"]["lastAnalysis"]["reason"] or (
        "requests" in status["rollout"]["lastAnalysis"]["reason"]
    )
    assert all(s.get("stableRevision") != canary for s in seen)


def test_operator_restart_mid_rollout_continues_from_the_same_step(rig: Rig) -> None:
    rig.ready_stable()
    with rig.steady_load():
        canary = rig.deploy(rig.manifest("v2"))
        watch(rig, lambda s: s.get("canaryWeight") == 50, timeout=90, what="weight 50")
        rig.operator.kill()
        frozen = rig.status()
        time.sleep(4)
        assert rig.status()["rollout"] == frozen["rollout"], "nothing moves without the operator"
        rig.operator.start()
        seen = watch(
            rig, lambda s: s.get("stableRevision") == canary, timeout=120, what="promotion"
        )
    steps = [s["rollout"]["step"] for s in seen if s.get("rollout")]
    assert steps
    assert min(steps) >= frozen["rollout"]["step"], "the rollout went back to an earlier step"
    assert all(s.get("canaryWeight", 0) >= 50 or s.get("stableRevision") == canary for s in seen)


def test_regression_during_bake_rolls_back_to_previous_stable(rig: Rig) -> None:
    stable = rig.ready_stable()
    with rig.steady_load():
        # Healthy through its canary, failing 30 s after start: after promotion, while baking.
        late = rig.manifest(
            "v2",
            env={"MODELSERVER_FAULT_ERROR_RATIO": "0.5", "MODELSERVER_FAULT_AFTER_S": "30"},
            steps=[{"setWeight": 50}, {"analysis": {}}],
            bake="2m",
        )
        bad = rig.deploy(late)
        watch(rig, lambda s: s.get("stableRevision") == bad, timeout=90, what="promotion")
        assert rig.status().get("bake"), "promoted into a bake window"
        watch(rig, lambda s: s.get("stableRevision") == stable, timeout=120, what="bake rollback")
    status = rig.status()
    assert status["phase"] == "RolledBack"
    assert status["failedRevision"] == bad
    assert status["history"][0]["outcome"] == "RolledBack"
    assert "bake window" in status["history"][0]["reason"]
    svc = rig.kube.must("service", "iris-stable")
    assert svc["spec"]["selector"]["modelrollout.io/revision"] == stable
