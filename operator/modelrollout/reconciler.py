"""One reconcile of one ModelDeployment, as a fixed pipeline:

    observe  everything read, in one value (`Observed`)
    plan     pure: children, deletions, route weight, rollout decision (plan/reconcile.py)
    act      apply, steer, delete, relabel; returns what happened (`Acted`)
    settle   pure: the plan plus what happened become the one next status (plan/settle.py)
    write    the status, once, and the events

Framework-free: handlers.py (the only kopf importer) decides *when* this runs; this module
decides nothing either, it gathers inputs for the planner and carries out its result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from lightkube import ApiError, AsyncClient
from pydantic import ValidationError

from modelrollout.api import GROUP
from modelrollout.api.names import CANARY, STABLE, track_service_name
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import HardwareStatus, ModelDeploymentStatus, Phase
from modelrollout.companions import Companions
from modelrollout.hardware.reference import ReferenceCache, ReferenceError, read_reference
from modelrollout.k8s.cluster import ChildSet, observe_deployment
from modelrollout.k8s.errors import format_validation, namespace_terminating
from modelrollout.metrics import registry as providers
from modelrollout.metrics.analysis import analyse_window, read_counters
from modelrollout.metrics.drift import read_drift
from modelrollout.placement import Blocked, PlacementService, placement_of, requeue_after
from modelrollout.plan import reconcile as planner
from modelrollout.plan.children import Owner
from modelrollout.plan.oom import oom_kills
from modelrollout.plan.revision import revision_of
from modelrollout.plan.rollout import Action, analysis_due
from modelrollout.plan.samples import DriftReading
from modelrollout.plan.settle import settle, settle_unplanned
from modelrollout.plan.types import Acted, ChildRef, Failure, Inputs, Plan
from modelrollout.routers import registry as routers
from modelrollout.routers.base import RouterError, RouteState, RouteTarget, TrafficRouter
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics

log = logging.getLogger(__name__)

# After a failure the object is looked at again this soon (the resync would be too slow).
RETRY_AFTER_ERROR = 10.0

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
class Outcome:
    phase: Phase | None
    requeue_after: float | None
    failed: bool = False  # the work queue backs the key off


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


def _now() -> datetime:
    return datetime.now(UTC)


def _drifted(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> bool | None:
    if spec.model.reference is None:
        return None
    return any(c.type == "DataDrift" and c.status == "True" for c in status.conditions)


def _previous_status(obj: dict[str, Any]) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        # A status this version can't read is rebuilt from the cluster, not trusted.
        log.warning("ignoring unreadable status of %s", obj["metadata"]["name"])
        return ModelDeploymentStatus()


class Reconciler:
    def __init__(
        self,
        cluster: ClusterIO,
        settings: OperatorSettings,
        metrics: OperatorMetrics,
        *,
        router_for: RouterFor = routers.router_for,
        provider_for: providers.ProviderLookup = providers.get,
        placement: PlacementService | None = None,
        companions: Companions | None = None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.metrics = metrics
        self.router_for = router_for
        self.provider_for = provider_for
        self.placement = placement or PlacementService(settings.hardware, cluster, settings.policy)
        self.companions = companions or Companions.configured(cluster.client, settings, metrics)
        self.references = ReferenceCache()

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        started = time.perf_counter()
        try:
            return await self._reconcile(namespace, name)
        except ApiError as exc:
            if namespace_terminating(exc):
                # The namespace is going away with everything in it; nothing to repair.
                return Outcome(None, None)
            self.metrics.reconcile_errors.labels(namespace, "api").inc()
            log.warning("reconcile of %s/%s failed: %s", namespace, name, exc.status.message)
            failure = Failure("ApiError", exc.status.message or str(exc))
            await self._record_failure(namespace, name, failure)
            return Outcome(None, RETRY_AFTER_ERROR, failed=True)
        finally:
            self.metrics.reconcile_duration.labels(namespace).observe(time.perf_counter() - started)

    async def _reconcile(self, namespace: str, name: str) -> Outcome:
        obj = await self.cluster.get_model_deployment(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            # Children carry owner references: the garbage collector removes them.
            return Outcome(None, None)
        try:
            spec = ModelDeploymentSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            # Admission refuses these; an object stored under an older schema can still get here.
            self.metrics.reconcile_errors.labels(namespace, "invalid_spec").inc()
            failure = Failure("InvalidSpec", format_validation(exc))
            await self._record_failure(namespace, name, failure, obj)
            return Outcome(Phase.FAILED, None)

        seen = await self.observe(obj, spec)
        plan = planner.plan(seen.inputs)
        acted = await self.act(seen, plan)
        status = settle(plan, acted)
        await self._write_status(namespace, name, seen.inputs.status, status)
        self.companions.written(seen.inputs, spec, status)
        await self.cluster.record_events(obj, [(e.type, e.reason, e.message) for e in plan.events])
        self._export_phase(namespace, name, status.phase)
        self.metrics.export_drift(namespace, name, status.drift, _drifted(spec, status))
        after = requeue_after(plan.requeue_after, seen.inputs.blocked, self.settings.resync_seconds)
        return Outcome(status.phase, after)

    # --- observe ---------------------------------------------------------------------------

    async def observe(self, obj: dict[str, Any], spec: ModelDeploymentSpec) -> Observed:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        previous = _previous_status(obj)
        now = _now()
        image = spec.serving.image or self.settings.serving_image
        # The GPU tier's image is not part of the revision: a new one is applied to the GPU
        # revisions' Deployments in place, as a rolling update (docs/hardware.md).
        gpu_image = None if spec.serving.image else self.settings.serving_image_gpu
        hardware, blocked = await self._hardware(spec, revision_of(spec, image), obj, previous)
        annotations = meta.get("annotations") or {}
        actions = frozenset(a for a in Action if f"{GROUP}/{a.value}" in annotations)
        live = await self.cluster.children(namespace, name)
        pods = await self.cluster.pods(namespace, name)
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
                # Steering tries again this cycle; its outcome is what status reports.
                log.info("reading the route of %s/%s: %s", namespace, name, exc)
        analysis = None
        readings = None
        if analysis_due(previous, spec.rollout, now):
            default_url = self.settings.prometheus_url
            args = (spec, namespace, name, previous, now, default_url, self.settings.policy)
            token = self.settings.prometheus_token_file
            if spec.rollout.analysis.sequential:
                readings = await read_counters(self.provider_for, *args, token)
            else:
                analysis = await analyse_window(self.provider_for, *args, token)
                self.metrics.analyses.labels(namespace, analysis.verdict.value).inc()
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
            **self.companions.inputs(namespace, name),
            drift=await self._drift(spec, namespace, name, previous, now),
            oom_kills=oom_kills(pods),
        )
        if inputs.drift is not None and inputs.drift.error is not None:
            log.info("input drift of %s/%s not scored: %s", namespace, name, inputs.drift.error)
        return Observed(obj, live, router, target, inputs)

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
    ) -> tuple[HardwareStatus | None, tuple[str, str] | None]:
        """The revision's hardware: remembered in status, decided once per revision."""
        hardware = previous.hardware
        if hardware is not None and hardware.revision == revision:
            return hardware, None
        meta = obj["metadata"]
        choice = await self.placement.decide(
            spec, revision, meta["namespace"], meta["name"], previous.stable_revision
        )
        if isinstance(choice, Blocked):
            return None, (choice.reason, choice.message)
        return choice, None

    # --- act -------------------------------------------------------------------------------

    async def act(self, seen: Observed, plan: Plan) -> Acted:
        """Carry out the plan; an API error propagates (nothing of the plan reaches status),
        a router error is what happened (it reaches status through settle)."""
        namespace = seen.namespace

        async def apply(m: dict[str, Any]) -> None:
            if await self.cluster.apply(m, seen.live.get(m["kind"], m["metadata"]["name"])):
                self.metrics.children_applied.labels(m["kind"]).inc()

        # Side by side: in sequence they would wait on the API server's latency, one by one.
        await asyncio.gather(*(apply(m) for m in plan.apply))
        acted = await self._steer(seen, plan.route_weight, plan.route_mirror)
        for ref in plan.delete:
            await self.cluster.delete(namespace, ref)
        await self.cluster.label_tracks(namespace, seen.name, plan.tracks)
        if seen.inputs.actions:
            keys = [f"{GROUP}/{a.value}" for a in seen.inputs.actions]
            await self.cluster.remove_annotations(namespace, seen.name, keys)
        self.companions.act(plan, seen.target.canary_service, seen.target.port)
        return acted

    async def _steer(self, seen: Observed, weight: int | None, mirror: bool) -> Acted:
        """Set the route's weight and mirroring and read back what it holds (a webhook or a
        person may differ). `weight` None: replica counts carry the weight, nothing to steer."""
        held = RouteState(seen.inputs.route_weight, seen.inputs.route_mirror)
        failures: tuple[Failure, ...] = ()
        if weight is not None and held != RouteState(weight, mirror):
            try:
                await seen.router.set_weight(seen.target, weight, mirror)
                held = await seen.router.current(seen.target)
            except RouterError as exc:
                self.metrics.reconcile_errors.labels(seen.namespace, "router").inc()
                failures = (Failure("RouterError", f"traffic router: {exc}"),)
        return Acted(route_weight=held.weight, route_mirror=held.mirror, failures=failures)

    # --- write -----------------------------------------------------------------------------

    async def _write_status(
        self,
        namespace: str,
        name: str,
        previous: ModelDeploymentStatus,
        status: ModelDeploymentStatus,
    ) -> None:
        if status == previous:
            return
        body = status.model_dump(by_alias=True, mode="json")
        await self.cluster.write_status(namespace, name, body)

    async def _record_failure(
        self, namespace: str, name: str, failure: Failure, obj: dict[str, Any] | None = None
    ) -> None:
        """Nothing of this cycle took effect: settle the failure over the stored status."""
        try:
            obj = obj or await self.cluster.get_model_deployment(namespace, name)
            if obj is None:
                return
            previous = _previous_status(obj)
            generation = obj["metadata"].get("generation", 0)
            status = settle_unplanned(previous, generation, _now(), failure)
            await self._write_status(namespace, name, previous, status)
            if status.phase != previous.phase:
                await self.cluster.record_events(
                    obj, [("Warning", failure.reason, failure.message)]
                )
            self._export_phase(namespace, name, status.phase)
        except ApiError as exc:
            log.warning("could not record failure of %s/%s: %s", namespace, name, exc)

    def _export_phase(self, namespace: str, name: str, phase: Phase) -> None:
        for candidate in Phase:
            self.metrics.phase.labels(namespace, name, candidate.value).set(
                1 if candidate == phase else 0
            )

    def forget(self, namespace: str, name: str) -> None:
        self.companions.forget(namespace, name)
        for candidate in Phase:
            self.metrics.phase.remove(namespace, name, candidate.value)
        self.metrics.export_drift(namespace, name, [])
