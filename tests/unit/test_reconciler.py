"""The reconciler pipeline (observe -> plan -> act -> settle -> write) with fakes for the cluster,
the router, the metric provider and the hardware placement. The integration tests run the same
code against the real API server; these pin what each stage hands to the next."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
from lightkube import ApiError
from lightkube.models.meta_v1 import Status
from prometheus_client import CollectorRegistry

from modelrollout.api.names import LABEL_REVISION
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import HardwareStatus
from modelrollout.k8s.cluster import ChildSet
from modelrollout.metrics.base import MetricProvider, WindowQuery
from modelrollout.metrics.registry import ProviderFactory
from modelrollout.placement import Blocked
from modelrollout.plan.evidence import Reading
from modelrollout.plan.samples import TrackSample
from modelrollout.plan.types import ChildRef
from modelrollout.reconciler import RETRY_AFTER_ERROR, Reconciler
from modelrollout.routers.base import RouterError, RouteState, RouteTarget, TrafficRouter
from modelrollout.routers.registry import SpecRouter
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics

NS, NAME = "ml", "iris"


def body(version: str = "v1", router: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "model": {"uri": "file:///models/iris.onnx", "version": version},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "rollout": {
            "trafficRouter": router or {"type": "replicas"},
            "analysis": {"interval": "10s", "failureLimit": 1},
        },
    }


def ready_status() -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "replicas": 1,
        "readyReplicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    }


@dataclass
class FakeCluster:
    """Holds objects in memory; a Deployment is available as soon as it is applied."""

    obj: dict[str, Any]
    client: Any = None
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    status_writes: int = 0
    events: list[tuple[str, str, str]] = field(default_factory=list)
    fail_apply: str | None = None
    pod_list: list[dict[str, Any]] = field(default_factory=list)

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    async def children(self, namespace: str, owner: str) -> ChildSet:
        return ChildSet(copy.deepcopy(self.objects))

    async def apply(self, manifest: dict[str, Any], live: dict[str, Any] | None) -> bool:
        if self.fail_apply:
            raise ApiError(status=Status(code=403, message=self.fail_apply))
        stored = copy.deepcopy(manifest)
        if manifest["kind"] == "Deployment":
            stored["status"] = ready_status()
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = stored
        return True

    async def delete(self, namespace: str, ref: ChildRef) -> None:
        self.objects.pop((ref.kind, ref.name), None)

    async def label_tracks(self, namespace: str, owner: str, tracks: dict[str, str]) -> int:
        return 0

    async def remove_annotations(self, namespace: str, name: str, keys: list[str]) -> None:
        for key in keys:
            self.obj["metadata"].get("annotations", {}).pop(key, None)

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status_writes += 1
        self.obj["status"] = status

    async def record_events(
        self, owner: dict[str, Any], events: list[tuple[str, str, str]]
    ) -> None:
        self.events += events

    async def nodes_and_pods(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return [], []

    async def pods(self, namespace: str, owner: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pod_list)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.obj.get("status") or {})

    def condition(self, kind: str) -> tuple[str, str]:
        c = next(c for c in self.status["conditions"] if c["type"] == kind)
        return c["status"], c["reason"]


@dataclass
class FakeRouter:
    weight: int | None = None
    error: str | None = None
    writes: list[int] = field(default_factory=list)

    mirror: bool = False
    read_cause: Exception | None = None  # the route cannot be read, for this reason

    async def set_weight(
        self, target: RouteTarget, canary_weight: int, mirror: bool = False
    ) -> None:
        if self.error:
            raise RouterError(self.error)
        self.writes.append(canary_weight)
        self.weight, self.mirror = canary_weight, mirror

    async def current_weight(self, target: RouteTarget) -> int | None:
        return (await self.current(target)).weight

    async def current(self, target: RouteTarget) -> RouteState:
        if self.error:
            raise RouterError(self.error)
        if self.read_cause is not None:
            raise RouterError(f"read failed: {self.read_cause}") from self.read_cause
        return RouteState(self.weight, self.mirror)


class FakePlacement:
    def __init__(self) -> None:
        self.blocked: Blocked | None = None

    async def decide(
        self, spec: ModelDeploymentSpec, revision: str, *_: Any
    ) -> HardwareStatus | Blocked:
        if self.blocked:
            return self.blocked
        return HardwareStatus(revision=revision, tier="cpu-small", reason="test")


@dataclass
class FakeProvider:
    """400 requests a window; a third of them fail on the `failing` revision."""

    failing: str | None = None
    queries: list[WindowQuery] = field(default_factory=list)

    totals: dict[str, tuple[int, int]] = field(default_factory=dict)

    async def sample(self, query: WindowQuery) -> TrackSample:
        self.queries.append(query)
        errors = 120 if query.revision == self.failing else 0
        return TrackSample(requests=400, errors=errors, p99_seconds=0.005, window_seconds=10)

    async def counters(self, query: WindowQuery) -> Reading:
        """The same traffic as cumulative counters: 400 more requests at every read."""
        self.queries.append(query)
        requests, errors = self.totals.get(query.revision, (0, 0))
        requests += 400
        errors += 120 if query.revision == self.failing else 0
        self.totals[query.revision] = (requests, errors)
        return Reading(requests, errors)


@dataclass
class Rig:
    cluster: FakeCluster
    router: FakeRouter
    placement: FakePlacement
    provider: FakeProvider
    reconciler: Reconciler
    metrics: OperatorMetrics

    async def cycle(self) -> float | None:
        outcome = await self.reconciler.reconcile(NS, NAME)
        return outcome.requeue_after


@pytest.fixture
def rig() -> Rig:
    obj = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NS, "uid": "uid-1", "generation": 1},
        "spec": body(),
    }
    cluster = FakeCluster(obj)
    router = FakeRouter()
    placement = FakePlacement()
    provider = FakeProvider()
    metrics = OperatorMetrics(CollectorRegistry())

    def router_for(spec_router: SpecRouter, client: Any) -> TrafficRouter:
        return router

    def provider_for(kind: str) -> ProviderFactory:
        assert kind == "prometheus"

        def make(url: str, **_: Any) -> MetricProvider:
            return provider

        return make

    reconciler = Reconciler(
        cluster,
        OperatorSettings(serving_image="modelserver:test"),
        metrics,
        router_for=router_for,
        provider_for=provider_for,
        placement=placement,  # type: ignore[arg-type]
    )
    return Rig(cluster, router, placement, provider, reconciler, metrics)


async def test_first_reconcile_creates_children_and_writes_status_once(rig: Rig) -> None:
    await rig.cycle()
    kinds = sorted(kind for kind, _ in rig.cluster.objects)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    assert rig.cluster.status_writes == 1
    # The Deployment is available by the next look: the first revision is promoted.
    await rig.cycle()
    assert rig.cluster.status["phase"] == "Ready"
    assert rig.cluster.condition("Ready") == ("True", "Available")
    assert rig.cluster.status_writes == 2
    # Nothing changed: nothing is written.
    await rig.cycle()
    assert rig.cluster.status_writes == 2
    assert ("Normal", "Promoted") in {(t, r) for t, r, _ in rig.cluster.events}


async def routed(rig: Rig) -> None:
    rig.cluster.obj["spec"] = body(router={"type": "gatewayAPI", "httpRoute": "web"})
    await rig.cycle()
    await rig.cycle()
    assert rig.cluster.status["phase"] == "Ready"
    rig.cluster.obj["spec"] = body("v2", router={"type": "gatewayAPI", "httpRoute": "web"})


async def test_the_route_is_steered_and_read_back(rig: Rig) -> None:
    await routed(rig)
    await rig.cycle()  # canary Deployment created
    await rig.cycle()  # available: 10%
    assert rig.router.writes[-1] == 10
    assert rig.cluster.status["canaryWeight"] == 10
    assert rig.cluster.condition("Degraded") == ("False", "Healthy")


async def test_a_router_failure_reaches_status_as_degraded_and_stalled(rig: Rig) -> None:
    await routed(rig)
    await rig.cycle()
    rig.router.error = "HTTPRoute ml/web not found: create it"
    await rig.cycle()
    status = rig.cluster.status
    assert status["phase"] == "Degraded"
    assert rig.cluster.condition("Degraded") == ("True", "RouterError")
    assert rig.cluster.condition("Stalled") == ("True", "RouterError")
    assert "traffic router: HTTPRoute ml/web not found" in status["message"]
    errors = rig.metrics.registry.get_sample_value(
        "modelrollout_reconcile_errors_total", {"namespace": NS, "reason": "router"}
    )
    assert errors == 1
    # Fixed route: the rollout goes on and the conditions clear.
    rig.router.error = None
    await rig.cycle()
    assert rig.cluster.status["canaryWeight"] == 10
    assert rig.cluster.condition("Degraded") == ("False", "Healthy")
    assert rig.cluster.condition("Stalled")[0] == "False"


async def test_a_route_the_api_server_cannot_read_now_is_not_taken_for_weight_0(rig: Rig) -> None:
    """After a kube-apiserver restart a route read can meet 503 ("the request has been made
    before all known HTTP paths have been installed"): the reconcile fails and is retried, it
    does not plan on 0% (which the share check then held for good)."""
    await routed(rig)
    await rig.cycle()
    await rig.cycle()
    assert rig.cluster.status["canaryWeight"] == 10
    writes = list(rig.router.writes)
    rig.router.read_cause = ApiError(status=Status(code=503, message="paths not installed"))
    outcome = await rig.reconciler.reconcile(NS, NAME)
    assert (outcome.failed, outcome.unavailable) == (True, True)
    assert rig.router.writes == writes, "a weight was written from an unread route"
    assert rig.cluster.status["canaryWeight"] == 10
    rig.router.read_cause = None
    await rig.cycle()
    assert rig.cluster.status["canaryWeight"] == 10
    assert rig.cluster.condition("Degraded") == ("False", "Healthy")


async def test_an_api_error_while_acting_keeps_the_status_and_retries_soon(rig: Rig) -> None:
    await rig.cycle()
    await rig.cycle()
    stable = rig.cluster.status["stableRevision"]
    rig.cluster.obj["spec"] = body("v2")
    rig.cluster.fail_apply = "deployments.apps is forbidden"
    assert await rig.cycle() == RETRY_AFTER_ERROR
    status = rig.cluster.status
    assert status["stableRevision"] == stable
    assert status["phase"] == "Degraded"
    assert status["message"] == "deployments.apps is forbidden"
    assert rig.cluster.condition("Degraded") == ("True", "ApiError")
    assert rig.cluster.condition("Stalled") == ("True", "ApiError")
    assert rig.cluster.condition("Ready") == ("True", "ApiError")


async def test_an_invalid_stored_spec_is_failed(rig: Rig) -> None:
    rig.cluster.obj["spec"] = {"model": {"version": "v1"}}
    assert await rig.cycle() is None
    assert rig.cluster.status["phase"] == "Failed"
    assert rig.cluster.condition("Stalled") == ("True", "InvalidSpec")
    assert "spec.model.uri" in rig.cluster.status["message"]
    assert rig.cluster.objects == {}


async def test_a_blocked_revision_is_degraded_with_the_stable_serving(rig: Rig) -> None:
    await rig.cycle()
    await rig.cycle()
    rig.placement.blocked = Blocked("ChecksumMismatch", "sha256 differs")
    rig.cluster.obj["spec"] = body("v2")
    await rig.cycle()
    assert rig.cluster.status["phase"] == "Degraded"
    assert rig.cluster.condition("Degraded") == ("True", "ChecksumMismatch")
    assert rig.cluster.condition("Stalled") == ("True", "Degraded")
    revisions = {
        o["metadata"]["labels"][LABEL_REVISION]
        for (kind, _), o in rig.cluster.objects.items()
        if kind == "Deployment"
    }
    assert revisions == {rig.cluster.status["stableRevision"]}


async def test_a_revision_blocked_for_capacity_is_placed_again_within_half_a_minute(
    rig: Rig,
) -> None:
    await rig.cycle()
    await rig.cycle()
    assert await rig.cycle() is None  # Ready: at the resync
    rig.placement.blocked = Blocked("InsufficientCapacity", "0 of 1 replicas fit")
    rig.cluster.obj["spec"] = body("v2")
    assert await rig.cycle() == 30.0
    rig.placement.blocked = Blocked("ChecksumMismatch", "sha256 differs")
    assert await rig.cycle() is None  # a wrong file does not fix itself


async def test_analysis_asks_the_registered_provider_for_both_tracks(rig: Rig) -> None:
    await routed(rig)
    await rig.cycle()
    await rig.cycle()  # 10% on the canary; its first window is due 10 s later
    status = rig.cluster.obj["status"]
    rig.provider.failing = status["canaryRevision"]
    for _ in range(2):  # the first read is where the evidence starts counting from
        rig.cluster.obj["status"]["rollout"]["analysisSince"] = "2026-01-01T00:00:00Z"
        await rig.cycle()
    revisions = {q.revision for q in rig.provider.queries}
    assert revisions == {rig.cluster.status["stableRevision"], status["canaryRevision"]}
    # failureLimit 1: the failed analysis rolls the canary back at once.
    assert rig.cluster.status["phase"] == "RolledBack"
    assert rig.router.writes[-1] == 0


def oom_killed_pod(restarts: int) -> dict[str, Any]:
    terminated = {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-30T08:00:00Z"}
    return {
        "metadata": {"name": "iris-r2-x", "labels": {"modelrollout.io/revision": "r2"}},
        "spec": {"containers": [{"name": "server"}]},
        "status": {
            "containerStatuses": [
                {
                    "name": "server",
                    "restartCount": restarts,
                    "state": {"running": {}},
                    "lastState": {"terminated": terminated},
                }
            ]
        },
    }


async def test_an_oom_killed_container_is_reported_once_per_kill(rig: Rig) -> None:
    await rig.cycle()
    await rig.cycle()
    assert "OOMKilled" not in {c["type"] for c in rig.cluster.status["conditions"]}
    rig.cluster.pod_list = [oom_killed_pod(restarts=1)]
    await rig.cycle()
    await rig.cycle()
    assert rig.cluster.condition("OOMKilled") == ("True", "OOMKilled")
    [message] = [m for _, reason, m in rig.cluster.events if reason == "OOMKilled"]
    assert "pod iris-r2-x" in message
    assert "container server" in message
    assert "restarts 1" in message
    # The kubelet restarts it and it is killed again: one more event.
    rig.cluster.pod_list = [oom_killed_pod(restarts=2)]
    await rig.cycle()
    assert [m for _, r, m in rig.cluster.events if r == "OOMKilled"][-1].endswith("restarts 2")
    # The pod is replaced: the condition clears; the stable served all along.
    rig.cluster.pod_list = []
    await rig.cycle()
    assert rig.cluster.condition("OOMKilled") == ("False", "NoOOMKill")
    assert rig.cluster.condition("Ready") == ("True", "Available")
    assert len([r for _, r, _ in rig.cluster.events if r == "OOMKilled"]) == 2
