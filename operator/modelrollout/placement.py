"""Hardware for a revision: profile the model, apply the policy, check cluster capacity.

This is the I/O around the pure pieces in hardware/ (profiler parsing, policy, capacity): it
reads the model (in a worker thread, with bounded memory) and the cluster's nodes and pods.
The result is remembered in status per revision, so a model is profiled once per rollout.
What the model URI may reach is the platform's policy (tenancy.TenantPolicy). A read is marked
in status before it starts and unmarked after, so a model whose reads stopped the operator
(twice) is refused instead of being read again at every restart. The mark goes out in the
status write of the reconcile before the read (`MarkFirst`), the unmarking in that of the
reconcile that reads: one status write per reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from modelrollout.api.spec import CanaryCapacity, ModelDeploymentSpec, Toleration
from modelrollout.api.status import HardwareStatus, ProfilingMark
from modelrollout.hardware import capacity as cap
from modelrollout.hardware.canary import CANARY_REPLICAS, plan_canary
from modelrollout.hardware.errors import (
    ChecksumMismatchError,
    CorruptModelError,
    ProfileError,
    ProfileInterruptedError,
)
from modelrollout.hardware.fetch import StoreAccess, profile_uri
from modelrollout.hardware.policy import (
    HardwareDecision,
    HardwareRequest,
    ProfileSummary,
    choose_hardware,
    plan_hardware,
)
from modelrollout.hardware.profiler import DEFAULT_CACHE, ModelProfile
from modelrollout.hardware.reservations import Ledger
from modelrollout.hardware.thresholds import HardwareThresholds
from modelrollout.plan.children import LABEL_DEPLOYMENT, LABEL_REVISION, Placement
from modelrollout.tenancy import TenantPolicy

log = logging.getLogger(__name__)

# Reads of one revision's model that may stop unfinished before it is refused: one allows for
# an ordinary restart (an upgrade) in the middle of a read.
MAX_PROFILE_ATTEMPTS = 2


# A revision held back for capacity is placed again this soon: freed capacity (a pod or node
# elsewhere) wakes no ModelDeployment by itself, and the resync is a safety net of minutes.
RETRY_BLOCKED = 30.0


def requeue_after(
    after: float | None, blocked: tuple[str, str] | None, resync: float
) -> float | None:
    """The planner's requeue; while the revision waits for capacity, at most RETRY_BLOCKED
    (or the resync, if that is sooner)."""
    if blocked is not None and blocked[0] == "InsufficientCapacity":
        return min(after or RETRY_BLOCKED, RETRY_BLOCKED, resync)
    return after


@dataclass(frozen=True)
class MarkFirst:
    """The model must be read: this mark goes into status first, and the read starts in the
    next reconcile, once the mark is stored (a crash during the read then leaves it behind)."""

    mark: ProfilingMark


@dataclass(frozen=True)
class Blocked:
    """The revision must not roll out; the stable one keeps serving."""

    reason: str  # condition reason, e.g. ChecksumMismatch or InsufficientCapacity
    message: str
    # The read mark status keeps: the interrupted reads that refused the model.
    mark: ProfilingMark | None = None


def request_from_spec(spec: ModelDeploymentSpec) -> HardwareRequest:
    hw, resources = spec.hardware, spec.serving.resources
    mode: Literal["auto", "cpu", "gpu"] = hw.mode.value
    return HardwareRequest(
        mode=mode,
        requests=dict(resources.requests or {}) if resources else {},
        limits=dict(resources.limits or {}) if resources else {},
        node_selector=dict(hw.node_selector or {}),
        tolerations=tuple(
            cap.Toleration(
                key=t.key or "", operator=t.operator, value=t.value or "", effect=t.effect or ""
            )
            for t in hw.tolerations or ()
        ),
        allow_cpu_fallback=hw.allow_cpu_fallback,
    )


def placement_of(status: HardwareStatus) -> Placement:
    return Placement(
        tier=status.tier,
        requests=dict(status.requests),
        limits=dict(status.limits),
        node_selector=dict(status.node_selector),
        tolerations=tuple(t.wire() for t in status.tolerations),
        threads=status.threads,
        provider=status.provider,
        scale_down_first=status.scale_down_first,
        model_sha256=status.model_sha256,
        borrowed=status.borrowed,
    )


def _status(
    revision: str,
    decision: HardwareDecision,
    summary: ProfileSummary | None,
    note: str = "",
    sha256: str | None = None,
    borrowed: bool = False,
) -> HardwareStatus:
    return HardwareStatus(
        revision=revision,
        tier=decision.tier,
        reason=f"{decision.reason}{note}",
        parameters=summary.parameter_count if summary else None,
        gflops_per_sample=round(summary.flops_per_sample / 1e9, 4) if summary else None,
        weight_bytes=summary.weight_bytes if summary else None,
        fallback=decision.fallback,
        requests=dict(decision.requests),
        limits=dict(decision.limits),
        node_selector=dict(decision.node_selector),
        tolerations=[
            Toleration.model_validate(
                {k: v for k, v in t.to_dict().items() if k != "tolerationSeconds"}
            )
            for t in decision.tolerations
        ],
        threads=decision.intra_op_threads,
        provider=decision.execution_provider,
        scale_down_first=decision.scale_down_first,
        model_sha256=sha256 or None,
        borrowed=borrowed,
    )


def node_info(node: dict[str, Any]) -> cap.NodeInfo:
    meta, spec, status = node["metadata"], node.get("spec") or {}, node.get("status") or {}
    conditions = {c["type"]: c.get("status") for c in status.get("conditions") or []}
    return cap.NodeInfo(
        name=meta["name"],
        allocatable=dict(status.get("allocatable") or {}),
        labels=dict(meta.get("labels") or {}),
        taints=tuple(
            cap.Taint(key=t["key"], effect=t["effect"], value=t.get("value", ""))
            for t in spec.get("taints") or []
        ),
        unschedulable=bool(spec.get("unschedulable")),
        ready=conditions.get("Ready") == "True",
    )


def _bound(pods: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """Pods with a node, by (namespace, ModelDeployment, revision)."""
    counts: dict[tuple[str, str, str], int] = {}
    for pod in pods:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        owner, revision = labels.get(LABEL_DEPLOYMENT), labels.get(LABEL_REVISION)
        if owner and revision and (pod.get("spec") or {}).get("nodeName"):
            key = (meta.get("namespace", ""), owner, revision)
            counts[key] = counts.get(key, 0) + 1
    return counts


def pod_info(pod: dict[str, Any]) -> cap.PodInfo:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}

    def requests(containers: Sequence[dict[str, Any]] | None) -> tuple[dict[str, str], ...]:
        return tuple(
            dict((c.get("resources") or {}).get("requests") or {}) for c in containers or []
        )

    return cap.PodInfo(
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        node_name=spec.get("nodeName") or "",
        phase=status.get("phase", "Pending"),
        container_requests=requests(spec.get("containers")),
        init_container_requests=requests(spec.get("initContainers")),
    )


class PlacementService:
    """Decides a revision's hardware; `nodes_and_pods` reads the cluster when GPU is in play."""

    def __init__(
        self, thresholds: HardwareThresholds, cluster: Any, policy: TenantPolicy | None = None
    ) -> None:
        self.thresholds = thresholds
        self.cluster = cluster
        self.policy = policy or TenantPolicy()
        self.ledger = Ledger()
        # The mark this process asked each ModelDeployment's status to hold before its read.
        self._marks: dict[tuple[str, str], ProfilingMark] = {}

    async def _profile(
        self,
        spec: ModelDeploymentSpec,
        revision: str,
        key: tuple[str, str],
        stored: ProfilingMark | None,
    ) -> ModelProfile | MarkFirst:
        """Read the model under the policy, once `stored` (the mark in status) is the one this
        process asked to store for the read; until then, the mark to store."""
        uri, sha = spec.model.uri, spec.model.sha256
        uncached = sha is None or DEFAULT_CACHE.get(sha) is None
        if uncached and (stored is None or self._marks.get(key) != stored):
            return self._mark(revision, key, stored)
        # Read now (or the profile is cached by another's read meanwhile): the mark is done.
        self._marks.pop(key, None)
        store = await self._store(spec, key[0])
        return await asyncio.to_thread(profile_uri, uri, sha, policy=self.policy, store=store)

    def _mark(self, revision: str, key: tuple[str, str], stored: ProfilingMark | None) -> MarkFirst:
        """The mark to store before the read. `stored` was not stored by this process: it is a
        read that never finished (the operator stopped during it), and counts as one."""
        attempts = stored.attempts if stored and stored.revision == revision else 0
        if attempts >= MAX_PROFILE_ATTEMPTS:
            raise ProfileInterruptedError(
                f"{attempts} reads of this model stopped the operator before they finished; it "
                "is not read again (change spec.model, or ask the platform team about the "
                "profiler's limits)"
            )
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mark = ProfilingMark(revision=revision, attempts=attempts + 1, started_at=now)
        self._marks[key] = mark
        return MarkFirst(mark)

    def forget(self, namespace: str, name: str) -> None:
        self._marks.pop((namespace, name), None)

    async def _store(self, spec: ModelDeploymentSpec, namespace: str) -> StoreAccess:
        """The spec's endpoint and region, and its Secret's values when the policy lets the
        operator read them (the tenant's own Secret, in its own namespace, sent only to the
        store the spec names, as its pods would)."""
        model = spec.model
        credentials: dict[str, str] = {}
        if model.credentials_secret and self.policy.read_model_credentials:
            credentials = await self.cluster.read_secret(namespace, model.credentials_secret)
        return StoreAccess(model.endpoint, model.region, credentials)

    async def decide(
        self,
        spec: ModelDeploymentSpec,
        revision: str,
        namespace: str,
        owner: str,
        stable_revision: str | None,
        mark: ProfilingMark | None = None,
    ) -> HardwareStatus | Blocked | MarkFirst:
        """The revision's hardware, or why it has none. `mark`: status.profiling as stored."""
        request = request_from_spec(spec)
        summary: ProfileSummary | None = None
        note, sha256 = "", None
        try:
            profile = await self._profile(spec, revision, (namespace, owner), mark)
            if isinstance(profile, MarkFirst):
                return profile
            summary = ProfileSummary(
                profile.parameter_count, profile.weight_bytes, profile.flops_per_sample
            )
            sha256 = profile.sha256
        except (ChecksumMismatchError, CorruptModelError) as exc:
            # A file that is wrong is never rolled out, whatever the hardware mode.
            return Blocked(exc.reason, str(exc))
        except ProfileError as exc:
            if request.mode == "auto":
                kept = mark if isinstance(exc, ProfileInterruptedError) else None
                return Blocked(exc.reason, f"{exc}; cannot choose hardware in auto mode", kept)
            # An explicit mode needs no profile: the pods verify the model themselves.
            note = f" (model not profiled: {exc})"
            log.info("placing %s without a profile: %s", revision, exc)
        complexity = summary or ProfileSummary(0, 0, 0)
        first = choose_hardware(complexity, self.thresholds, request)
        if first.gpu_count == 0 and first.auto_tier != "gpu":
            return _status(revision, first, summary, note, sha256)
        if not self.thresholds.capacity_check:
            # The platform does not let the operator read the cluster's nodes and pods.
            return _status(revision, first, summary, f"{note} (capacity not checked)", sha256)
        nodes, pods = await self.cluster.nodes_and_pods()
        infos = [node_info(n) for n in nodes]
        key = (namespace, owner)
        self.ledger.release(_bound(pods), time.monotonic())
        # Decisions whose pods are not bound yet hold their capacity (hardware/reservations).
        pod_infos = [pod_info(p) for p in pods] + list(self.ledger.held_pods(excluding=key))

        def pods_of(rev: str | None) -> tuple[str, ...]:
            return tuple(
                f"{namespace}/{p['metadata']['name']}"
                for p in pods
                if p["metadata"].get("namespace") == namespace
                and (p["metadata"].get("labels") or {}).get(LABEL_DEPLOYMENT) == owner
                and (p["metadata"].get("labels") or {}).get(LABEL_REVISION) == rev
            )

        stable_pods = pods_of(stable_revision)
        # Pods of this very revision (a decision made again: status lost) are its own to reuse.
        own = pods_of(revision)
        canary = stable_revision is not None and stable_revision != revision
        # A canary starts with one pod beside every stable pod (hardware/canary.py); a first
        # revision (or the stable's own, re-decided) needs its full count, its own pods free.
        replicas = CANARY_REPLICAS if canary else spec.autoscaling.min_replicas

        def without(shape: cap.PodShape, gone: tuple[str, ...]) -> cap.CapacityReport:
            return cap.compute_capacity(infos, pod_infos, shape, replicas, replacing=gone + own)

        borrowed = False
        if canary:
            borrow = spec.rollout.capacity == CanaryCapacity.BORROW
            placed = plan_canary(complexity, self.thresholds, request, without, stable_pods, borrow)
            decision, borrowed = placed.decision, placed.borrowed
        else:
            decision = plan_hardware(
                complexity, self.thresholds, request, lambda shape: without(shape, stable_pods)
            )
        if decision.insufficient_capacity:
            return Blocked("InsufficientCapacity", decision.reason)
        # Decisions whose pods are not bound yet hold their capacity (hardware/reservations).
        gone = stable_pods if not canary else stable_pods[:1] if borrowed else ()
        report = without(decision.pod_shape(), gone)
        self.ledger.hold(key, revision, report, decision.requests, time.monotonic())
        return _status(revision, decision, summary, note, sha256, borrowed)
