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
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError
from pydantic import ValidationError

from modelrollout.api import GROUP
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus, Phase
from modelrollout.companions import Companions
from modelrollout.k8s.errors import api_unavailable, format_validation, namespace_terminating
from modelrollout.metrics import registry as providers
from modelrollout.observe import (
    ClusterIO,
    Observed,
    Observer,
    RouterFor,
    now_utc,
    previous_status,
)
from modelrollout.placement import MarkFirst, PlacementService, requeue_after
from modelrollout.plan import reconcile as planner
from modelrollout.plan.settle import settle, settle_marked, settle_unplanned
from modelrollout.plan.types import Acted, Failure, Plan
from modelrollout.routers import registry as routers
from modelrollout.routers.base import RouterError, RouteState
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics

__all__ = ["RETRY_AFTER_ERROR", "ClusterIO", "Outcome", "Reconciler"]

log = logging.getLogger(__name__)

# After a failure the object is looked at again this soon (the resync would be too slow).
RETRY_AFTER_ERROR = 10.0
# A model-read mark stored, the read starts in the reconcile queued this soon after.
READ_AFTER_MARK = 0.0


def _drifted(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> bool | None:
    if spec.model.reference is None:
        return None
    return any(c.type == "DataDrift" and c.status == "True" for c in status.conditions)


@dataclass(frozen=True)
class Outcome:
    phase: Phase | None
    requeue_after: float | None
    failed: bool = False  # the work queue backs the key off
    unavailable: bool = False  # failed only because the API server could not serve


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
        self.companions = companions or Companions.configured(cluster.client, settings, metrics)
        self.observer = Observer(
            cluster,
            settings,
            metrics,
            router_for,
            provider_for,
            placement or PlacementService(settings.hardware, cluster, settings.policy),
            self.companions,
        )

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
            return Outcome(None, RETRY_AFTER_ERROR, failed=True, unavailable=api_unavailable(exc))
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

        seen = await self.observer.observe(obj, spec)
        if isinstance(seen, MarkFirst):
            # The mark is stored before the read starts: this reconcile's one status write.
            previous = previous_status(obj)
            await self._write_status(namespace, name, previous, settle_marked(previous, seen.mark))
            return Outcome(previous.phase, READ_AFTER_MARK)
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
            previous = previous_status(obj)
            generation = obj["metadata"].get("generation", 0)
            status = settle_unplanned(previous, generation, now_utc(), failure)
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
        self.observer.placement.forget(namespace, name)
        for candidate in Phase:
            self.metrics.phase.remove(namespace, name, candidate.value)
        self.metrics.export_drift(namespace, name, [])
