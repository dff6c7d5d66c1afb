"""The values that travel through one reconcile: what was observed (Inputs), what the planner
wants (Plan), and what acting on it did (Acted). Plain data, no behaviour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelrollout.api.hooks import HookRunStatus
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import (
    HardwareStatus,
    HistoryEntry,
    ModelDeploymentStatus,
    ProfilingMark,
)
from modelrollout.api.synthetic import SyntheticStatus
from modelrollout.plan.analysis import AnalysisResult
from modelrollout.plan.children import Manifest, Owner, Placement
from modelrollout.plan.evidence import Readings
from modelrollout.plan.hooks import HookResult, HookRun
from modelrollout.plan.rollout import Action, Decision
from modelrollout.plan.samples import DriftReading


@dataclass(frozen=True)
class ObservedDeployment:
    name: str
    revision: str
    replicas: int
    ready_replicas: int
    available: bool
    failed_reason: str | None = None
    model_version: str = ""
    model_uri: str = ""
    model_sha256: str | None = None
    image: str = ""
    born_track: str = ""
    # The spec sections the revision was built from (its Deployment's annotation), when known.
    revision_spec: dict[str, Any] | None = None


@dataclass(frozen=True)
class OomKill:
    """A container whose latest termination was an out-of-memory kill (plan/oom.py)."""

    pod: str
    container: str
    revision: str
    restarts: int
    exit_code: int
    finished_at: str
    memory_limit: str  # "" without a limit


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Inputs:
    owner: Owner
    generation: int
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    image: str
    # Hardware for the spec's revision; None when `blocked` says why it has none.
    placement: Placement | None
    deployments: tuple[ObservedDeployment, ...]
    now: datetime
    # Every child that exists now, as (apiVersion, kind, name); unwanted ones are deleted.
    existing: frozenset[tuple[str, str, str]] = frozenset()
    # Canary weight read back from the route this cycle (routed traffic only).
    route_weight: int | None = None
    # Whether the route mirrors requests to the canary Service this cycle (shadow steps).
    route_mirror: bool = False
    analysis: AnalysisResult | None = None
    # The sequential analysis' read of both tracks' counters, when one was due.
    readings: Readings | None = None
    actions: frozenset[Action] = frozenset()
    # Why the spec's revision may not roll out: (condition reason, message).
    blocked: tuple[str, str] | None = None
    hardware: HardwareStatus | None = None
    # The model-read mark status keeps (interrupted reads that refused the model); None clears.
    profiling: ProfilingMark | None = None
    # Hook runs that finished since the last reconcile, by run key (plan/hooks.py).
    hook_results: Mapping[str, HookResult] = field(default_factory=dict)
    # The stable's input counts beside its reference profile (None: no profile).
    drift: DriftReading | None = None
    # Ids of outbox notifications delivered since the last reconcile (plan/notify.py).
    notified: frozenset[str] = frozenset()
    # Containers of the ModelDeployment's pods last terminated by the kernel's OOM killer.
    oom_kills: tuple[OomKill, ...] = ()
    # What the synthetic traffic sent to the canary so far (None: none running).
    synthetic: SyntheticStatus | None = None


@dataclass(frozen=True)
class Plan:
    inputs: Inputs
    decision: Decision
    revision: str
    # Live track of each serving revision, for the pods' modelrollout.io/track label.
    tracks: dict[str, str]
    apply: list[Manifest]
    delete: list[ChildRef]
    # The canary weight the route should hold; None when replica counts carry the weight.
    route_weight: int | None
    # Whether the route should copy every request to the canary (a shadow step).
    route_mirror: bool
    # The status the cycle started from, after forgetting revisions whose Deployment is gone.
    previous: ModelDeploymentStatus
    # History with this cycle's entry first.
    history: tuple[HistoryEntry, ...]
    # Revisions whose Deployments stay.
    keep: frozenset[str]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    # The hook runs for status, and those the runner should be carrying out.
    hooks: tuple[HookRunStatus, ...] = ()
    hook_runs: tuple[HookRun, ...] = ()
    # The canary revision synthetic traffic should go to now (None: none).
    synthetic_revision: str | None = None


@dataclass(frozen=True)
class Failure:
    """Something outside the planner that went wrong this cycle, for status."""

    reason: str  # condition reason: RouterError, ApiError, InvalidSpec
    message: str


@dataclass(frozen=True)
class Acted:
    """What acting on a plan did."""

    # The canary weight the route holds after steering (None: no route, or it could not be
    # read).
    route_weight: int | None = None
    route_mirror: bool = False
    failures: tuple[Failure, ...] = ()
