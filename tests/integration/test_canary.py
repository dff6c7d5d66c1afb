"""Progressive delivery end to end, with real parts: the local control plane and the operator,
`modelserver` processes standing in for each pod (started with the env the operator put in
the Deployment), Debian's Prometheus scraping them, a gateway splitting live traffic by the
weights in the HTTPRoute, and the operator's analysis judging the canary from Prometheus."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from hack.gateway import NO_REVISION, Gateway
from hack.loadgen import LoadStats, infer_payload, run_load
from hack.localcluster import LocalCluster
from hack.podrunner import PodRunner
from hack.prometheus import Prometheus
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.plan.revision import revision_of

from .conftest import Models
from .grpcload import grpc_load, with_grpc
from .kube import Kube, OperatorProcess, wait_for

pytestmark = pytest.mark.integration

IMAGE = "modelrollout/modelserver:test"
ROUTE = "web"


@pytest.fixture
def rig(
    kube: Kube,
    operator: OperatorProcess,
    router_crds: LocalCluster,
    modelservers: PodRunner,
    prometheus: Prometheus,
    gateway: Gateway,
    models: Models,
) -> Rig:
    kube.apply(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": ROUTE},
            "spec": {
                "parentRefs": [{"name": "public-gateway"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": "iris-stable", "port": 8080, "weight": 100}],
                    }
                ],
            },
        }
    )
    return Rig(kube, operator, gateway, prometheus, models)


class Rig:
    def __init__(
        self,
        kube: Kube,
        operator: OperatorProcess,
        gateway: Gateway,
        prometheus: Prometheus,
        models: Models,
    ) -> None:
        self.kube, self.operator, self.gateway = kube, operator, gateway
        self.prometheus, self.models = prometheus, models

    def manifest(
        self,
        version: str,
        env: dict[str, str] | None = None,
        steps: list[dict[str, Any]] | None = None,
        bake: str = "5s",
    ) -> dict[str, Any]:
        return {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {
                "model": {
                    "uri": self.models.small.uri,
                    "sha256": self.models.small.sha256,
                    "version": version,
                },
                "serving": {"env": [{"name": k, "value": v} for k, v in (env or {}).items()]},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
                "rollout": {
                    "steps": steps
                    or [
                        {"setWeight": 20},
                        {"analysis": {}},
                        {"setWeight": 50},
                        {"analysis": {}},
                    ],
                    "analysis": {
                        # The sequential analysis (the default) reads the evidence every 2 s.
                        "interval": "2s",
                        "minRequests": 20,
                        # Every process of the test shares two cores, so tail latency is
                        # scheduling noise here; latency verdicts are covered by unit tests.
                        "maxLatencyRatio": 3,
                        "prometheusUrl": self.prometheus.url,
                    },
                    "trafficRouter": {"type": "gatewayAPI", "httpRoute": ROUTE},
                    "bakeTime": bake,
                    "scaleDownDelay": "2s",
                    "progressDeadline": "5m",
                },
            },
        }

    def status(self) -> dict[str, Any]:
        return dict((self.kube.get("mdep", "iris") or {}).get("status") or {})

    def deploy(self, m: dict[str, Any]) -> str:
        result = self.kube.apply(m)
        assert result.returncode == 0, result.stderr
        return revision_of(ModelDeploymentSpec.model_validate(m["spec"]), IMAGE)

    def ready_stable(self, version: str = "v1") -> str:
        rev = self.deploy(self.manifest(version))
        wait_for(
            lambda: (
                self.status().get("stableRevision") == rev and self.status().get("phase") == "Ready"
            ),
            what="v1 stable",
            timeout=60,
        )
        # Traffic flows only once the stand-in process of a stable pod answers.
        wait_for(lambda: self._answers(), what="stable answering", timeout=60)
        return rev

    def _answers(self) -> bool:
        stats = self.load(rate=5, seconds=1)
        return stats.by_status.get(200, 0) > 0

    def load(self, rate: float, seconds: float) -> LoadStats:
        return run_load(
            self.gateway.url,
            self.kube.namespace,
            "iris",
            rate,
            seconds,
            infer_payload(4, input_name="input"),
            timeout_s=5,
        )

    @contextmanager
    def steady_load(self, rate: float = 40) -> Iterator[list[LoadStats]]:
        """Live traffic in 2-second bounded slices until the block ends."""
        stop = threading.Event()
        slices: list[LoadStats] = []

        def run() -> None:
            while not stop.is_set():
                slices.append(self.load(rate, 2))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield slices
        finally:
            stop.set()
            thread.join(timeout=20)

    def route_weights(self) -> dict[str, int]:
        route = self.kube.must("httproute", ROUTE)
        refs = route["spec"]["rules"][0]["backendRefs"]
        return {r["name"]: r.get("weight", 1) for r in refs}


def watch(rig: Rig, until: Any, timeout: float, what: str) -> list[dict[str, Any]]:
    """Status snapshots every half second until `until(status)` holds."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = rig.status()
        status["_t"] = time.monotonic()
        seen.append(status)
        if until(status):
            return seen
        time.sleep(0.5)
    last = {k: seen[-1].get(k) for k in ("phase", "message", "canaryWeight", "rollout", "history")}
    raise AssertionError(f"timed out waiting for {what}; last status {last}")


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
