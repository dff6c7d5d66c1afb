"""A tiny fake cluster for driving the pure planner cycle by cycle: the children a plan asks for
are taken as created, the weight it asks for as set (unless a test says what acting did), and
analysis verdicts come from the real analysis."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from modelrollout.api.names import LABEL_REVISION
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus, Phase
from modelrollout.api.synthetic import SyntheticStatus
from modelrollout.plan.analysis import AnalysisResult, analyse
from modelrollout.plan.children import Owner, Placement
from modelrollout.plan.evidence import Readings
from modelrollout.plan.hooks import HookResult
from modelrollout.plan.reconcile import plan
from modelrollout.plan.revision import revision_of
from modelrollout.plan.rollout import Action, analysis_due
from modelrollout.plan.samples import TrackSample
from modelrollout.plan.settle import settle
from modelrollout.plan.types import Acted, Inputs, ObservedDeployment, Plan

IMAGE = "modelserver:test"
START = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = Owner("m", "ns", "uid-1")
PLACEMENT = Placement(tier="cpu-small", requests={"cpu": "1"})


def window(requests: int, errors: int, p99: float = 0.02) -> TrackSample:
    return TrackSample(requests=requests, errors=errors, p99_seconds=p99, window_seconds=10)


HEALTHY = analyse(window(400, 2), window(1200, 5))
BROKEN = analyse(window(400, 100), window(1200, 5))
QUIET = analyse(window(3, 0), window(1200, 5))
assert (HEALTHY.verdict, BROKEN.verdict, QUIET.verdict) == ("Pass", "Fail", "Inconclusive")


def spec(version: str = "v1", **rollout: Any) -> dict[str, Any]:
    return {
        "model": {"uri": "file:///m.onnx", "version": version},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
        "rollout": {
            "trafficRouter": {"type": "gatewayAPI", "httpRoute": "web"},
            "analysis": {"interval": "10s", "failureLimit": 2},
            "bakeTime": "60s",
            "scaleDownDelay": "20s",
        }
        | rollout,
    }


@dataclass
class Sim:
    """A tiny fake cluster that does exactly what each plan asks."""

    body: dict[str, Any]
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    deployments: dict[str, ObservedDeployment] = field(default_factory=dict)
    existing: set[tuple[str, str, str]] = field(default_factory=set)
    route_weight: int | None = None
    route_mirror: bool = False
    now: datetime = START
    available: bool = True
    last: Plan | None = None

    @property
    def spec(self) -> ModelDeploymentSpec:
        return ModelDeploymentSpec.model_validate(self.body)

    @property
    def revision(self) -> str:
        return revision_of(self.spec, IMAGE)

    def cycle(
        self,
        analysis: AnalysisResult | None = None,
        actions: frozenset[Action] = frozenset(),
        seconds: float = 2,
        acted: Acted | None = None,
        readings: Readings | None = None,
        hook_results: dict[str, HookResult] | None = None,
        notified: frozenset[str] = frozenset(),
        synthetic: SyntheticStatus | None = None,
    ) -> Plan:
        # Pods become ready (or not) between cycles, as the sim is told.
        self.deployments = {
            r: replace(d, available=self.available, ready_replicas=2 if self.available else 0)
            for r, d in self.deployments.items()
        }
        result = plan(
            Inputs(
                owner=OWNER,
                generation=1,
                spec=self.spec,
                status=self.status,
                image=IMAGE,
                placement=PLACEMENT,
                deployments=tuple(self.deployments.values()),
                now=self.now,
                existing=frozenset(self.existing),
                route_weight=self.route_weight,
                route_mirror=self.route_mirror,
                analysis=analysis,
                readings=readings,
                actions=actions,
                hook_results=hook_results or {},
                notified=notified,
                synthetic=synthetic,
            )
        )
        for m in result.apply:
            key = (m["apiVersion"], m["kind"], m["metadata"]["name"])
            self.existing.add(key)
            if m["kind"] == "Deployment":
                rev = m["metadata"]["labels"][LABEL_REVISION]
                env = {
                    e["name"]: e["value"]
                    for e in m["spec"]["template"]["spec"]["containers"][0]["env"]
                }
                self.deployments[rev] = ObservedDeployment(
                    born_track=env["MODELSERVER_TRACK"],
                    name=m["metadata"]["name"],
                    revision=rev,
                    replicas=2,
                    ready_replicas=2 if self.available else 0,
                    available=self.available,
                    model_version=self.body["model"]["version"],
                )
        for ref in result.delete:
            self.existing.discard((ref.api_version, ref.kind, ref.name))
            if ref.kind == "Deployment":
                self.deployments = {r: d for r, d in self.deployments.items() if d.name != ref.name}
        # Unless told otherwise, the route holds what was asked of it.
        acted = acted or Acted(route_weight=result.route_weight, route_mirror=result.route_mirror)
        self.route_weight = acted.route_weight
        self.route_mirror = acted.route_mirror
        status = settle(result, acted)
        # Status goes through its wire form, as it does through the API server.
        self.status = ModelDeploymentStatus.model_validate(
            status.model_dump(by_alias=True, mode="json")
        )
        self.now += timedelta(seconds=seconds)
        self.last = result
        return result

    def run(self, verdict: AnalysisResult, cycles: int) -> list[int]:
        """Run cycles, judging a window whenever one is due; the weights seen."""
        weights = []
        for _ in range(cycles):
            due = analysis_due(self.status, self.spec.rollout, self.now)
            self.cycle(verdict if due else None)
            weights.append(self.status.canary_weight)
        return weights

    def hpa(self, name: str) -> dict[str, Any]:
        assert self.last is not None
        return next(
            m
            for m in self.last.apply
            if m["kind"] == "HorizontalPodAutoscaler" and m["metadata"]["name"] == name
        )

    def condition(self, kind: str) -> tuple[str, str]:
        c = next(c for c in self.status.conditions if c.type == kind)
        return c.status, c.reason


def deployed() -> Sim:
    sim = Sim(spec())
    sim.cycle()
    sim.cycle()
    assert sim.status.phase == Phase.READY
    return sim


def phase(sim: Sim) -> Phase:
    return sim.status.phase
