"""Observe, the first stage of a reconcile: everything it reads, in one value (`Observed`).

The object's previous status, its children and pods (from the watch-fed caches), the hardware
for the spec's revision (decided once per revision, placement.py), the route's weight, and the
metrics when an analysis or a drift reading is due. Nothing here writes to the cluster except
what deciding hardware needs (placement.py); acting on what was seen is the reconciler's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from lightkube import AsyncClient
from pydantic import ValidationError

from modelrollout.api import GROUP
from modelrollout.api.names import CANARY, STABLE, track_service_name
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import HardwareStatus, ModelDeploymentStatus
from modelrollout.companions import Companions
from modelrollout.hardware.reference import ReferenceCache, ReferenceError, read_reference
from modelrollout.k8s.cluster import ChildSet, observe_deployment
from modelrollout.k8s.errors import api_unavailable
from modelrollout.metrics import registry as providers
from modelrollout.metrics.analysis import analyse_window, read_counters
from modelrollout.metrics.drift import read_drift
from modelrollout.placement import Blocked, MarkFirst, PlacementService, placement_of
from modelrollout.plan.analysis import AnalysisResult
from modelrollout.plan.children import Owner
from modelrollout.plan.evidence import Readings
from modelrollout.plan.oom import oom_kills
from modelrollout.plan.revision import revision_of
from modelrollout.plan.rollout import Action, analysis_due
from modelrollout.plan.samples import DriftReading
from modelrollout.plan.types import ChildRef, Inputs
from modelrollout.routers import registry as routers
from modelrollout.routers.base import RouterError, RouteState, RouteTarget, TrafficRouter
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics

log = logging.getLogger(__name__)

RouterFor = Callable[[routers.SpecRouter, AsyncClient], TrafficRouter]


class ClusterIO(Protocol):
    """What the reconciler needs from the API server (k8s/cluster.py in production)."""

    client: AsyncClient

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def children(self, namespace: str, owner: str) -> ChildSet: ...
    async def apply(self, manifest: dict[str, Any], live: dict[str, Any] | None) -> bool: ...
    async def delete(self, namespace: str, ref: ChildRef) -> None: ...
    async def label_tracks(self, namespace: str, owner: str, tracks: dict[str, str]) -> int: ...
    async def remove_annotations(self, namespace: str, name: str, keys: list[str]) -> None: ...
    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    async def record_events(
        self, owner: dict[str, Any], events: list[tuple[str, str, str]]
    ) -> None: ...
    async def nodes_and_pods(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...
    async def pods(self, namespace: str, owner: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile read: the object, its children, the route and the metrics,
    shaped as the planner's inputs."""

    obj: dict[str, Any]
    live: ChildSet
    router: TrafficRouter
    target: RouteTarget
    inputs: Inputs

    @property
    def namespace(self) -> str:
        return self.inputs.owner.namespace

    @property
    def name(self) -> str:
        return self.inputs.owner.name


def now_utc() -> datetime:
    return datetime.now(UTC)


def previous_status(obj: dict[str, Any]) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        # A status this version can't read is rebuilt from the cluster, not trusted.
        log.warning("ignoring unreadable status of %s", obj["metadata"]["name"])
        return ModelDeploymentStatus()


class Observer:
    """Reads what one reconcile plans from."""

    def __init__(
        self,
        cluster: ClusterIO,
        settings: OperatorSettings,
        metrics: OperatorMetrics,
        router_for: RouterFor,
        provider_for: providers.ProviderLookup,
        placement: PlacementService,
        companions: Companions,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.metrics = metrics
        self.router_for = router_for
        self.provider_for = provider_for
        self.placement = placement
        self.companions = companions
        self.references = ReferenceCache()

    async def observe(self, obj: dict[str, Any], spec: ModelDeploymentSpec) -> Observed | MarkFirst:
        """What this reconcile plans from; or, when the model must be read first, the mark to
        store before the read (the read comes in the next reconcile)."""
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        previous = previous_status(obj)
        now = now_utc()
        image = spec.serving.image or self.settings.serving_image
        # The GPU tier's image is not part of the revision: a new one is applied to the GPU
        # revisions' Deployments in place, as a rolling update (docs/hardware.md).
        gpu_image = None if spec.serving.image else self.settings.serving_image_gpu
        decided = await self._hardware(spec, revision_of(spec, image), obj, previous)
        if isinstance(decided, MarkFirst):
            return decided  # nothing else is read before the mark is stored
        hardware = decided if isinstance(decided, HardwareStatus) else None
        blocked = (decided.reason, decided.message) if isinstance(decided, Blocked) else None
        annotations = meta.get("annotations") or {}
        actions = frozenset(a for a in Action if f"{GROUP}/{a.value}" in annotations)
        live = await self.cluster.children(namespace, name)
        pods = await self.cluster.pods(namespace, name)
        router, target, route = await self._route(spec, namespace, name, previous)
        analysis, readings = await self._analysis(spec, namespace, name, previous, now)
        inputs = Inputs(
            owner=Owner(name=name, namespace=namespace, uid=meta["uid"]),
            generation=meta.get("generation", 0),
            spec=spec,
            status=previous,
            image=image,
            placement=(
                replace(
                    placement_of(hardware),
                    image_volumes=self.settings.image_volumes,
                    image=gpu_image if hardware.provider == "cuda" else None,
                )
                if hardware
                else None
            ),
            deployments=tuple(observe_deployment(d) for d in live.deployments()),
            now=now,
            existing=live.keys(),
            route_weight=route.weight,
            route_mirror=route.mirror,
            analysis=analysis,
            readings=readings,
            actions=actions,
            blocked=blocked,
            hardware=hardware,
            profiling=decided.mark if isinstance(decided, Blocked) else None,
            **self.companions.inputs(namespace, name),
            drift=await self._drift(spec, namespace, name, previous, now),
            oom_kills=oom_kills(pods),
        )
        if inputs.drift is not None and inputs.drift.error is not None:
            log.info("input drift of %s/%s not scored: %s", namespace, name, inputs.drift.error)
        return Observed(obj, live, router, target, inputs)

    async def _route(
        self, spec: ModelDeploymentSpec, namespace: str, name: str, previous: ModelDeploymentStatus
    ) -> tuple[TrafficRouter, RouteTarget, RouteState]:
        """The router the spec selects, what it steers, and what the route holds now (nothing
        before the first revision is serving: there is no weight to keep yet)."""
        router = self.router_for(spec.rollout.traffic_router, self.cluster.client)
        target = RouteTarget(
            namespace=namespace,
            route_name=routers.route_name(spec.rollout.traffic_router) or "",
            stable_service=track_service_name(name, STABLE),
            canary_service=track_service_name(name, CANARY),
            port=spec.serving.port,
        )
        route = RouteState(None)
        if previous.stable_revision:
            try:
                route = await router.current(target)
            except RouterError as exc:
                if exc.__cause__ is not None and api_unavailable(exc.__cause__):
                    # Unread is not 0%: planning on it would hold the canary at 0 for good.
                    raise exc.__cause__ from exc
                # Steering tries again this cycle; its outcome is what status reports.
                log.info("reading the route of %s/%s: %s", namespace, name, exc)
        return router, target, route

    async def _analysis(
        self,
        spec: ModelDeploymentSpec,
        namespace: str,
        name: str,
        previous: ModelDeploymentStatus,
        now: datetime,
    ) -> tuple[AnalysisResult | None, Readings | None]:
        """The canary's and the stable's metrics, when an analysis is due: a window's verdict,
        or the counters the sequential test reads."""
        if not analysis_due(previous, spec.rollout, now):
            return None, None
        default_url = self.settings.prometheus_url
        args = (spec, namespace, name, previous, now, default_url, self.settings.policy)
        token = self.settings.prometheus_token_file
        if spec.rollout.analysis.sequential:
            return None, await read_counters(self.provider_for, *args, token)
        analysis = await analyse_window(self.provider_for, *args, token)
        self.metrics.analyses.labels(namespace, analysis.verdict.value).inc()
        return analysis, None

    async def _drift(
        self,
        spec: ModelDeploymentSpec,
        namespace: str,
        name: str,
        previous: ModelDeploymentStatus,
        now: datetime,
    ) -> DriftReading | None:
        """The stable's input counts over the drift window beside its reference profile."""
        ref = spec.model.reference
        if ref is None or not previous.stable_revision:
            return None
        features = self.references.get(ref.sha256)
        if features is None:
            try:
                policy = self.settings.policy
                features = await asyncio.to_thread(read_reference, ref.uri, ref.sha256, policy)
            except ReferenceError as exc:
                return DriftReading(threshold=ref.max_drift, error=str(exc))
            self.references.put(ref.sha256, features)
        return await read_drift(
            self.provider_for,
            spec,
            namespace,
            name,
            previous.stable_revision,
            now,
            self.settings.prometheus_url,
            self.settings.policy,
            features,
            self.settings.prometheus_token_file,
        )

    async def _hardware(
        self,
        spec: ModelDeploymentSpec,
        revision: str,
        obj: dict[str, Any],
        previous: ModelDeploymentStatus,
    ) -> HardwareStatus | Blocked | MarkFirst:
        """The revision's hardware: remembered in status, decided once per revision."""
        hardware = previous.hardware
        if hardware is not None and hardware.revision == revision:
            return hardware
        meta = obj["metadata"]
        return await self.placement.decide(
            spec,
            revision,
            meta["namespace"],
            meta["name"],
            previous.stable_revision,
            previous.profiling,
        )
