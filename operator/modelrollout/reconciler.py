"""One reconcile of one ModelDeployment: observe → plan → act → write status once.

Framework-free: handlers.py (the only kopf importer) decides *when* this runs; this module
decides nothing either, it gathers inputs for `plan.reconcile.plan` and carries out its result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError
from pydantic import ValidationError

from modelrollout.api import GROUP
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus, Phase
from modelrollout.api.types import parse_duration
from modelrollout.k8s.cluster import Cluster, observe_deployment
from modelrollout.metrics import PrometheusProvider, QueryTemplates, WindowQuery, sample_tracks
from modelrollout.placement import Blocked, PlacementService, placement_of
from modelrollout.plan import reconcile as planner
from modelrollout.plan.analysis import AnalysisResult, AnalysisThresholds, analyse
from modelrollout.plan.children import Owner
from modelrollout.plan.conditions import (
    DEGRADED,
    PROGRESSING,
    READY,
    ConditionUpdate,
    merge_conditions,
)
from modelrollout.plan.revision import revision_of
from modelrollout.plan.rollout import Action, analysis_due
from modelrollout.routers.base import RouterError, RouteTarget, TrafficRouter
from modelrollout.routers.registry import route_name, router_for
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics

log = logging.getLogger(__name__)

# After a failure the object is looked at again this soon (the resync would be too slow).
RETRY_AFTER_ERROR = 10.0


@dataclass(frozen=True)
class Outcome:
    phase: Phase | None
    requeue_after: float | None


def _now() -> datetime:
    return datetime.now(UTC)


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        parts.append(f"spec.{path}: {err['msg']}" if path else err["msg"])
    return "; ".join(parts)


def _namespace_terminating(exc: ApiError) -> bool:
    details = exc.status.details
    causes = (details.causes if details else None) or []
    return any(c.reason == "NamespaceTerminating" for c in causes)


class Reconciler:
    def __init__(
        self, cluster: Cluster, settings: OperatorSettings, metrics: OperatorMetrics
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.metrics = metrics
        self.placement = PlacementService(settings.hardware, cluster)

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        started = time.perf_counter()
        try:
            return await self._reconcile(namespace, name)
        except ApiError as exc:
            if _namespace_terminating(exc):
                # The namespace is going away with everything in it; nothing to repair.
                return Outcome(None, None)
            self.metrics.reconcile_errors.labels(namespace, "api").inc()
            log.warning("reconcile of %s/%s failed: %s", namespace, name, exc.status.message)
            await self._write_failure(namespace, name, "ApiError", exc.status.message or str(exc))
            return Outcome(None, RETRY_AFTER_ERROR)
        finally:
            self.metrics.reconcile_duration.labels(namespace).observe(time.perf_counter() - started)

    async def _reconcile(self, namespace: str, name: str) -> Outcome:
        obj = await self.cluster.get_model_deployment(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            # Children carry owner references: the garbage collector removes them.
            return Outcome(None, None)
        meta = obj["metadata"]
        previous = self._previous_status(obj)
        try:
            spec = ModelDeploymentSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            # Admission refuses these; an object stored under an older schema can still get here.
            self.metrics.reconcile_errors.labels(namespace, "invalid_spec").inc()
            await self._write_failure(namespace, name, "InvalidSpec", _format_validation(exc), obj)
            return Outcome(Phase.FAILED, None)

        owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
        now = _now()
        image = spec.serving.image or self.settings.serving_image
        revision = revision_of(spec, image)
        hardware = previous.hardware
        blocked: tuple[str, str] | None = None
        if hardware is None or hardware.revision != revision:
            choice = await self.placement.decide(
                spec, revision, namespace, name, previous.stable_revision
            )
            if isinstance(choice, Blocked):
                hardware, blocked = None, (choice.reason, choice.message)
            else:
                hardware = choice
        annotations = meta.get("annotations") or {}
        actions = frozenset(a for a in Action if f"{GROUP}/{a.value}" in annotations)
        live = await self.cluster.children(namespace, name)
        router = router_for(spec.rollout.traffic_router, self.cluster.client)
        target = RouteTarget(
            namespace=namespace,
            route_name=route_name(spec.rollout.traffic_router) or "",
            stable_service=f"{name}-stable",
            canary_service=f"{name}-canary",
            port=spec.serving.port,
        )
        warning: str | None = None
        route_weight: int | None = None
        if router is not None and previous.stable_revision:
            try:
                route_weight = await router.current_weight(target)
            except RouterError as exc:
                warning = f"traffic router: {exc}"
        analysis = None
        if analysis_due(previous, spec.rollout, now):
            analysis = await self._analyse(namespace, name, spec, previous, now)

        result = planner.plan(
            planner.Inputs(
                owner=owner,
                generation=meta.get("generation", 0),
                spec=spec,
                status=previous,
                image=image,
                placement=placement_of(hardware) if hardware else None,
                deployments=tuple(observe_deployment(d) for d in live.deployments()),
                now=now,
                existing=live.keys(),
                route_weight=route_weight,
                analysis=analysis,
                actions=actions,
                blocked=blocked,
                hardware=hardware,
                warning=warning,
            )
        )
        for manifest in result.apply:
            if await self.cluster.apply(
                manifest, live.get(manifest["kind"], manifest["metadata"]["name"])
            ):
                self.metrics.children_applied.labels(manifest["kind"]).inc()
        status = result.status
        if router is not None and result.route_weight is not None:
            status = await self._steer(router, target, result.route_weight, route_weight, status)
        for ref in result.delete:
            await self.cluster.delete(namespace, ref)
        await self.cluster.label_tracks(namespace, name, result.tracks)
        if actions:
            await self.cluster.remove_annotations(
                namespace, name, [f"{GROUP}/{a.value}" for a in actions]
            )

        await self._write_status(namespace, name, previous, status)
        await self.cluster.record_events(
            obj, [(e.type, e.reason, e.message) for e in result.events]
        )
        self._export_phase(namespace, name, status.phase)
        return Outcome(status.phase, result.requeue_after)

    async def _steer(
        self,
        router: TrafficRouter,
        target: RouteTarget,
        weight: int,
        current: int | None,
        status: ModelDeploymentStatus,
    ) -> ModelDeploymentStatus:
        """Set the route's weight and record what it holds afterwards (read back)."""
        try:
            held = current
            if current != weight:
                await router.set_weight(target, weight)
                # Read back what the route holds now (a webhook or a person may differ).
                held = await router.current_weight(target)
        except RouterError as exc:
            self.metrics.reconcile_errors.labels(target.namespace, "router").inc()
            return status.model_copy(
                update={
                    "canary_weight": current or 0,
                    "message": f"{status.message}; traffic router: {exc}",
                }
            )
        if held != weight:
            return status.model_copy(
                update={
                    "canary_weight": held or 0,
                    "message": f"{status.message}; route holds {held}% instead of {weight}%",
                }
            )
        return status

    async def _analyse(
        self,
        namespace: str,
        name: str,
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        now: datetime,
    ) -> AnalysisResult:
        settings = spec.rollout.analysis
        window = parse_duration(settings.interval).total_seconds()
        if status.canary_revision and status.stable_revision:
            canary, stable = status.canary_revision, status.stable_revision
        else:
            # Bake window: the new stable is judged on the absolute limits alone.
            canary, stable = status.stable_revision or "", None
        overrides = settings.queries
        try:
            templates = QueryTemplates(
                **{
                    k: v
                    for k, v in (overrides.model_dump() if overrides else {}).items()
                    if v is not None
                }
            )
        except ValueError as exc:
            return analyse(None, None, provider_error=f"invalid query override: {exc}")
        provider = PrometheusProvider(
            settings.prometheus_url or self.settings.prometheus_url, templates=templates
        )
        at = now.timestamp()
        model = spec.model.name or name
        samples = await sample_tracks(
            provider,
            WindowQuery(canary, window, namespace=namespace, model=model, at=at),
            WindowQuery(stable, window, namespace=namespace, model=model, at=at)
            if stable
            else None,
        )
        thresholds = AnalysisThresholds(
            max_error_rate=settings.max_error_rate,
            max_error_rate_increase=settings.max_error_rate_increase,
            max_p99_ratio=settings.max_latency_ratio,
            min_requests=settings.min_requests,
        )
        result = analyse(samples.canary, samples.stable, thresholds, provider_error=samples.error)
        self.metrics.analyses.labels(namespace, result.verdict.value).inc()
        return result

    def _previous_status(self, obj: dict[str, Any]) -> ModelDeploymentStatus:
        try:
            return ModelDeploymentStatus.model_validate(obj.get("status") or {})
        except ValidationError:
            # A status this version can't read is rebuilt from the cluster, not trusted.
            log.warning("ignoring unreadable status of %s", obj["metadata"]["name"])
            return ModelDeploymentStatus()

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

    async def _write_failure(
        self,
        namespace: str,
        name: str,
        reason: str,
        message: str,
        obj: dict[str, Any] | None = None,
    ) -> None:
        """Record a failure in status, keeping everything else (stable revision, history)."""
        try:
            obj = obj or await self.cluster.get_model_deployment(namespace, name)
            if obj is None:
                return
            previous = self._previous_status(obj)
            generation = obj["metadata"].get("generation", 0)
            now = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
            stable_serving = previous.ready_replicas > 0
            status = previous.model_copy(
                update={
                    "observed_generation": generation,
                    "phase": Phase.FAILED if reason == "InvalidSpec" else Phase.DEGRADED,
                    "message": message,
                    "conditions": merge_conditions(
                        previous.conditions,
                        [
                            ConditionUpdate(
                                READY, "True" if stable_serving else "False", reason, message
                            ),
                            ConditionUpdate(PROGRESSING, "False", reason, message),
                            ConditionUpdate(DEGRADED, "True", reason, message),
                        ],
                        now=now,
                        generation=generation,
                    ),
                }
            )
            await self._write_status(namespace, name, previous, status)
            if status.phase != previous.phase:
                await self.cluster.record_events(obj, [("Warning", reason, message)])
            self._export_phase(namespace, name, status.phase)
        except ApiError as exc:
            log.warning("could not record failure of %s/%s: %s", namespace, name, exc)

    def _export_phase(self, namespace: str, name: str, phase: Phase) -> None:
        for candidate in Phase:
            self.metrics.phase.labels(namespace, name, candidate.value).set(
                1 if candidate == phase else 0
            )

    def forget(self, namespace: str, name: str) -> None:
        for candidate in Phase:
            self.metrics.phase.remove(namespace, name, candidate.value)
