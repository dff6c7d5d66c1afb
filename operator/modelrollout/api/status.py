"""ModelDeployment status. All rollout state lives here, never in operator memory, so a
restarted operator resumes where the last one stood."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

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
    """The hardware the operator chose and why."""

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


class HistoryEntry(ApiModel):
    """One finished (or abandoned) revision."""

    revision: str
    model_version: str
    model_uri: str
    model_sha256: str | None = None
    image: str
    started: str
    finished: str | None = None
    outcome: Literal["Promoted", "RolledBack", "Aborted", "Superseded"]
    reason: str = ""


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

    canary_weight: int = 0
    """Percent of traffic on the canary revision."""

    model_version: str | None = None
    """Model version of the stable revision."""

    hardware: HardwareStatus | None = None
    """Hardware chosen for the current revision."""

    history: list[HistoryEntry] = Field(default_factory=list)
    """Most recent revisions first."""
