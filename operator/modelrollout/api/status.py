"""ModelDeployment status. All rollout state lives here, never in operator memory, so a
restarted operator resumes where the last one stood."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from modelrollout.api.analysis_status import AnalysisMeasurements as AnalysisMeasurements
from modelrollout.api.analysis_status import AnalysisStatus as AnalysisStatus
from modelrollout.api.analysis_status import AnalysisVerdict as AnalysisVerdict
from modelrollout.api.analysis_status import CounterReadStatus as CounterReadStatus
from modelrollout.api.analysis_status import EvidenceStatus as EvidenceStatus
from modelrollout.api.analysis_status import TrackTotalsStatus as TrackTotalsStatus
from modelrollout.api.hooks import HookRunStatus
from modelrollout.api.notifications import PendingNotification
from modelrollout.api.spec import Toleration
from modelrollout.api.synthetic import SyntheticStatus
from modelrollout.api.types import ApiModel


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    PAUSED = "Paused"
    ROLLED_BACK = "RolledBack"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class Condition(ApiModel):
    """A kstatus-style condition."""

    type: str
    """Ready, Progressing, Degraded or a more specific condition such as HardwareFallback."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""

    reason: str
    """CamelCase reason for the last transition."""

    message: str = ""
    """Human-readable detail."""

    last_transition_time: str
    """When the status last changed (RFC 3339)."""

    observed_generation: int | None = None
    """The generation this condition was computed from."""


class HardwareStatus(ApiModel):
    """The hardware chosen for a revision and why; kept so a restart needs no re-profiling."""

    revision: str
    """The revision this choice was made for."""

    tier: str
    """cpu-small, cpu-large or gpu."""

    reason: str
    """The numbers that decided the tier."""

    parameters: int | None = None
    """Parameter count of the model."""

    gflops_per_sample: float | None = None
    """Estimated GFLOPs for one sample."""

    weight_bytes: int | None = None
    """Bytes of weights."""

    fallback: bool = False
    """True when GPU was preferred but CPU was chosen for lack of capacity."""

    requests: dict[str, str] = Field(default_factory=dict)
    """Container resource requests the revision runs with."""

    limits: dict[str, str] = Field(default_factory=dict)
    """Container resource limits the revision runs with."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector the revision runs with."""

    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations the revision runs with."""

    threads: int = 1
    """onnxruntime intra-op threads."""

    provider: str = "cpu"
    """onnxruntime execution provider: cpu or cuda."""

    scale_down_first: bool = False
    """No room for a surge pod: pods are replaced old-first."""

    borrowed: bool = False
    """The canary runs on a replica taken from the stable (rollout.capacity: borrow): the
    stable's autoscaler is one lower while this revision is the canary."""

    model_sha256: str | None = None
    """sha256 of the model file as the operator read it for this revision. When
    spec.model.sha256 is omitted, every pod of the revision is given this one to verify, so
    they all serve the same bytes."""


class RolloutStatus(ApiModel):
    """Where the current canary stands; everything needed to resume after a restart."""

    step: int = 0
    """Index into spec.rollout.steps of the step being executed."""

    step_started: str | None = None
    """When the current step began."""

    passes: int = 0
    """Passing analysis windows counted for the current analysis step."""

    failures: int = 0
    """Consecutive failed analysis windows."""

    analysis_since: str | None = None
    """Start of the window the next analysis covers."""

    last_analysis: AnalysisStatus | None = None
    """The most recent analysis window."""

    evidence: EvidenceStatus | None = None
    """Sequential analysis: the evidence since the canary got traffic."""

    step_canary_requests: int | None = None
    """Sequential analysis: canary requests counted when the current step began."""

    step_stable_requests: int | None = None
    """Sequential analysis: stable requests counted when the current step began."""

    step_canary_synthetic: int | None = None
    """Sequential analysis: of the canary requests counted when the current step began, those
    synthetic traffic sent (left out of the route's share)."""

    waited_seconds: float = 0.0
    """Time spent at `pause: {}` steps waiting to be resumed, before the current step; it does
    not count against the progress deadline."""

    stable_min_replicas: int | None = None
    """Stable replicas when the rollout began: the stable is not scaled below this while the
    canary is analysed."""


class BakeStatus(ApiModel):
    """After promotion, the new stable is watched until `until`; the previous one is kept."""

    previous_revision: str
    """The revision a regression during the bake window rolls back to."""

    until: str
    """When the bake window ends and the previous revision's pods are removed."""

    failures: int = 0
    """Consecutive failed analysis windows of the new stable."""

    last_analysis: AnalysisStatus | None = None
    """The most recent bake analysis window."""

    evidence: EvidenceStatus | None = None
    """Sequential analysis: the evidence since the bake window began."""


class HistoryEntry(ApiModel):
    """One finished (or abandoned) revision."""

    revision: str
    """The revision hash."""

    model_version: str
    """spec.model.version of the revision."""

    model_uri: str
    """spec.model.uri of the revision."""

    model_sha256: str | None = None
    """sha256 of the model bytes the revision served: spec.model.sha256, or the one the
    operator resolved when the spec gave none."""

    image: str
    """Model server image of the revision."""

    started: str
    """When its rollout began."""

    finished: str | None = None
    """When it was promoted, rolled back, aborted or superseded."""

    outcome: Literal["Promoted", "RolledBack", "Aborted", "Superseded"]
    """Promoted, RolledBack, Aborted or Superseded (a newer spec replaced it mid-rollout)."""

    reason: str = ""
    """Why, with the measured values for a rollback."""

    spec: dict[str, Any] | None = None
    """The revision's spec.model, spec.serving, spec.hardware and spec.pod as they ran, so
    `kubectl modelrollout undo` restores exactly that revision. Absent in entries written by
    older operators and for a revision whose settings exceed 32 KiB."""


class ProfilingMark(ApiModel):
    """A model the operator has started reading and not finished."""

    revision: str
    """The revision whose model is being read."""

    attempts: int = Field(ge=1)
    """Reads of it started so far."""

    started_at: str
    """When the latest read started."""


class FeatureDriftStatus(ApiModel):
    """How far one input feature's traffic moved from the reference profile."""

    input: str
    """The model input."""

    feature: str
    """The feature (its name in the profile, or its column)."""

    score: float
    """Population stability index of the window's values against the profile."""

    values: int
    """Values of the feature in the window."""


class ModelDeploymentStatus(ApiModel):
    """Observed state of a ModelDeployment."""

    observed_generation: int | None = None
    """The metadata.generation this status describes."""

    phase: Phase = Phase.PENDING
    """Pending, Progressing, Ready, Paused, RolledBack, Degraded or Failed."""

    message: str = ""
    """What the operator is doing or waiting for."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing and Degraded, kstatus-compatible."""

    replicas: int = 0
    """Pods of all live revisions."""

    ready_replicas: int = 0
    """Ready pods of all live revisions."""

    stable_revision: str | None = None
    """Revision serving the bulk of the traffic."""

    canary_revision: str | None = None
    """Revision being rolled out, if any."""

    rollout_started: str | None = None
    """When the current revision started rolling out."""

    rollout: RolloutStatus | None = None
    """Progress of the canary, while there is one."""

    bake: BakeStatus | None = None
    """The bake window after a promotion, while it lasts."""

    failed_revision: str | None = None
    """A revision that was rolled back or aborted. It is not retried until the spec changes or
    the `modelrollout.io/retry` annotation is set."""

    canary_weight: int = 0
    """Percent of traffic on the canary revision."""

    model_version: str | None = None
    """Model version of the stable revision."""

    hardware: HardwareStatus | None = None
    """Hardware chosen for the current revision."""

    history: list[HistoryEntry] = Field(default_factory=list)
    """Most recent revisions first."""

    hooks: list[HookRunStatus] = Field(default_factory=list)
    """Hook runs of the revisions in play (docs/rollouts.md, "Hooks")."""
    drift: list[FeatureDriftStatus] = Field(default_factory=list)
    """Input drift of the stable's traffic against spec.model.reference, per profiled feature,
    worst first (the DataDrift condition says whether any is over maxDrift)."""

    notifications: list[PendingNotification] = Field(default_factory=list)
    """Transitions not yet delivered to the notifiers `spec.notify` names (the outbox)."""

    synthetic: SyntheticStatus | None = None
    """Synthetic traffic sent to the current canary revision."""

    profiling: ProfilingMark | None = None
    """Set while the operator reads the model, removed when done. Left behind when the operator
    stopped mid-read; after two such reads the model is refused (ProfileInterrupted) rather
    than read again."""
