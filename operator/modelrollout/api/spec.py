"""ModelDeployment spec: the single source of truth for the CRD schema (see crdgen.py).

Validation lives here twice on purpose: pydantic validators guard the operator, and the
`x-kubernetes-validations` CEL rules carried in the JSON schema make the API server refuse the
same bad specs at admission, with messages that name the field.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelrollout.api.hardware import HardwareMode as HardwareMode
from modelrollout.api.hardware import HardwareSpec as HardwareSpec
from modelrollout.api.hardware import Toleration as Toleration
from modelrollout.api.hooks import MAX_HOOKS, HookSpec, unique_names
from modelrollout.api.model import ModelFormat as ModelFormat
from modelrollout.api.model import ModelSpec as ModelSpec
from modelrollout.api.notifications import MAX_NOTIFIERS, NotifierName
from modelrollout.api.pod import PodSettings
from modelrollout.api.predictions import PredictionShiftSpec as PredictionShiftSpec
from modelrollout.api.reference import ReferenceSpec as ReferenceSpec
from modelrollout.api.serving import BatchingSpec as BatchingSpec
from modelrollout.api.serving import EnvVar as EnvVar
from modelrollout.api.serving import Resources as Resources
from modelrollout.api.serving import ServingSpec as ServingSpec
from modelrollout.api.synthetic import SYNTHETIC_NEEDS_ROUTE, SyntheticTrafficSpec
from modelrollout.api.traffic import GatewayAPIRouter as GatewayAPIRouter
from modelrollout.api.traffic import IstioRouter as IstioRouter
from modelrollout.api.traffic import ReplicaRatioRouter as ReplicaRatioRouter
from modelrollout.api.traffic import TrafficRouter as TrafficRouter
from modelrollout.api.types import (
    ApiModel,
    Duration,
)

# --- autoscaling -----------------------------------------------------------------------------


class AutoscalingSpec(ApiModel):
    """Replica bounds and the HorizontalPodAutoscaler targets."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "spec.autoscaling.minReplicas must be less than or equal to "
                    "spec.autoscaling.maxReplicas",
                    "fieldPath": ".minReplicas",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Fewest replicas of the stable revision."""

    max_replicas: int = Field(default=3, ge=1, le=1000)
    """Most replicas of the stable revision."""

    target_cpu_utilization: int | None = Field(default=None, ge=1, le=100)
    """Average CPU utilisation (percent of request) the autoscaler aims for. Defaults to 70 when
    no other target is set."""

    target_requests_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    """Per-pod request rate the autoscaler aims for, read from the `modelserver_requests_per_second`
    Pods metric (needs a custom-metrics adapter such as prometheus-adapter)."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                "spec.autoscaling.minReplicas must be less than or equal to "
                "spec.autoscaling.maxReplicas"
            )
        return self


# --- hardware --------------------------------------------------------------------------------


class PauseStep(ApiModel):
    duration: Duration | None = None
    """How long to pause. Absent: pause until resumed."""


class ShadowStep(ApiModel):
    """Mirror live requests to the canary, whose answers are dropped, and judge it meanwhile."""

    duration: Duration
    """How long to mirror before the next step. The canary's weight is 0 during it."""


class AnalysisStep(ApiModel):
    """Run the analysis for this many intervals before moving on."""

    intervals: int = Field(default=1, ge=1, le=100)
    """Consecutive passing analysis intervals required."""


_ONE_STEP = "each rollout step sets exactly one of setWeight, pause, analysis or shadow"
_NO_MIRROR = (
    "spec.rollout.steps: a shadow step needs a router that can mirror requests "
    "(spec.rollout.trafficRouter.type gatewayAPI or istio); type replicas cannot"
)


class RolloutStep(ApiModel):
    """One step of a canary rollout: exactly one of setWeight, pause, analysis or shadow."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.setWeight), has(self.pause), has(self.analysis), "
                    "has(self.shadow)].filter(x, x).size() == 1",
                    "message": _ONE_STEP,
                }
            ]
        }
    )

    set_weight: int | None = Field(default=None, ge=0, le=100)
    """Percent of traffic sent to the new revision."""

    pause: PauseStep | None = None
    """Hold the current weight."""

    analysis: AnalysisStep | None = None
    """Judge the new revision against the stable one before the next step."""

    shadow: ShadowStep | None = None
    """Mirror live requests to the new revision with no user seeing its answers, judging it
    against the stable one meanwhile (needs a route: trafficRouter gatewayAPI or istio)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> RolloutStep:
        chosen = [self.set_weight, self.pause, self.analysis, self.shadow]
        if len([x for x in chosen if x is not None]) != 1:
            raise ValueError(_ONE_STEP)
        return self


class QueryOverrides(ApiModel):
    """PromQL templates replacing the built-in queries. Placeholders: {revision}, {namespace},
    {model}, {window}, and {selector} (all of them as one label selector)."""

    requests: str | None = Field(default=None, max_length=4096)
    """Number of requests of one revision in the window."""

    errors: str | None = Field(default=None, max_length=4096)
    """Number of failed (5xx) requests of one revision in the window."""

    latency_p99: str | None = Field(default=None, max_length=4096)
    """99th percentile request latency in seconds of one revision in the window."""


class AnalysisMethod(StrEnum):
    SEQUENTIAL = "sequential"
    WINDOWS = "windows"


class AnalysisSpec(ApiModel):
    """How a canary is judged against the stable revision."""

    method: AnalysisMethod = AnalysisMethod.SEQUENTIAL
    """sequential: the evidence since the canary started is read every interval and a canary is
    rolled back as soon as it suffices, with at most `significance` probability of ever failing
    a healthy one. windows: each interval is a window judged on its own (the earlier rule)."""

    interval: Duration | None = None
    """sequential: how often the evidence is read (default 5s; reading more often than
    Prometheus scrapes finds nothing new). windows: the length of one window (default 30s)."""

    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    """Highest acceptable canary error rate (fraction of requests answered with 5xx)."""

    max_error_rate_increase: float = Field(default=0.02, ge=0, le=1)
    """Highest acceptable canary error rate above the stable revision's."""

    max_latency_ratio: float = Field(default=1.5, ge=1, le=100)
    """Highest acceptable ratio of canary p99 latency to stable p99 latency."""

    min_requests: int = Field(default=50, ge=1, le=10_000_000)
    """sequential: canary requests a step must serve before its analysis can pass. windows:
    fewer canary requests than this in a window make the verdict Inconclusive."""

    significance: float = Field(default=0.01, gt=0, le=0.2)
    """sequential: the probability, over the whole rollout, of ever rolling back a canary that
    is as good as the stable."""

    failure_limit: int | None = Field(default=None, ge=1, le=100)
    """Failed analyses in a row that trigger a rollback (default 1 for sequential, whose test
    controls false alarms itself; 2 for windows)."""

    prometheus_url: str | None = Field(default=None, pattern=r"^https?://.+")
    """Prometheus to query. Defaults to the operator's configured address."""

    queries: QueryOverrides | None = None
    """Replace the built-in PromQL queries. These are window queries: a spec that sets them is
    judged with the windows method whatever `method` says."""

    prediction_shift: PredictionShiftSpec | None = None
    """Also judge the canary by what it predicts against the stable (off unless set)."""

    @property
    def sequential(self) -> bool:
        """The sequential method is in force (query overrides are window queries, so a spec
        with them is judged in windows)."""
        return self.method is AnalysisMethod.SEQUENTIAL and self.queries is None

    @property
    def every(self) -> str:
        """The interval in force: the given one or the method's default."""
        return self.interval or ("5s" if self.sequential else "30s")

    @property
    def failures_to_rollback(self) -> int:
        return self.failure_limit or (1 if self.sequential else 2)


def _default_steps() -> list[RolloutStep]:
    steps: list[RolloutStep] = []
    for weight in (10, 25, 50):
        steps += [RolloutStep(set_weight=weight), RolloutStep(analysis=AnalysisStep())]
    return steps


class CanaryCapacity(StrEnum):
    FREE = "free"
    BORROW = "borrow"


class RolloutSpec(ApiModel):
    """How a new revision replaces the stable one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.steps) || "
                    "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
                    "message": "spec.rollout.steps setWeight values must be ascending",
                    "fieldPath": ".steps",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!has(self.syntheticTraffic) || "
                    "(has(self.trafficRouter) && self.trafficRouter.type != 'replicas')",
                    "message": SYNTHETIC_NEEDS_ROUTE,
                    "fieldPath": ".syntheticTraffic",
                    "reason": "FieldValueInvalid",
                },
                {
                    # An absent router is the replica ratio (the default).
                    "rule": "!has(self.steps) || !self.steps.exists(s, has(s.shadow)) || "
                    "(has(self.trafficRouter) && self.trafficRouter.type != 'replicas')",
                    "message": _NO_MIRROR,
                    "fieldPath": ".steps",
                    "reason": "FieldValueInvalid",
                },
            ]
        }
    )

    steps: list[RolloutStep] = Field(default_factory=_default_steps, max_length=64)
    """Steps from 0% to 100%. Default: 10%, 25%, 50% with an analysis after each, then 100%."""

    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    """Canary analysis settings used by analysis steps and the bake window."""

    traffic_router: TrafficRouter = Field(default_factory=ReplicaRatioRouter)
    """How traffic is split between revisions."""

    progress_deadline: Duration = "15m"
    """A rollout that has not finished in this time is aborted and rolled back. Time spent
    waiting at a `pause: {}` step for someone to resume it does not count."""

    approval_deadline: Duration | None = None
    """Roll back a canary left waiting at a `pause: {}` step longer than this (unset: it waits
    as long as it takes)."""

    bake_time: Duration = "5m"
    """After promotion, keep watching the new stable this long and roll back on regression."""

    scale_down_delay: Duration = "30s"
    """How long an old revision keeps its pods after traffic left it."""

    capacity: CanaryCapacity = CanaryCapacity.FREE
    """Where a canary's pods go when its tier has no room beside the stable's pods (which stay
    through the analysis and bake). `free`: the canary needs capacity of its own, else the
    revision is refused with InsufficientCapacity naming what is missing, before anything is
    created. `borrow`: on a GPU tier, take one replica from the stable for the canary (the
    stable's autoscaler lowered by one while the canary runs, restored on promotion or
    rollback); the canary then runs one pod."""

    hooks: list[HookSpec] = Field(default_factory=list, max_length=MAX_HOOKS)
    """The tenant's own checks at named points of the rollout (docs/rollouts.md, "Hooks")."""

    synthetic_traffic: SyntheticTrafficSpec | None = None
    """Requests the operator sends to the canary while it has traffic, so a model with little
    traffic of its own is judged (docs/rollouts.md, "Synthetic traffic")."""

    @field_validator("hooks")
    @classmethod
    def _unique_hooks(cls, hooks: list[HookSpec]) -> list[HookSpec]:
        return unique_names(hooks)

    @model_validator(mode="after")
    def _ascending(self) -> RolloutSpec:
        weights = [s.set_weight for s in self.steps if s.set_weight is not None]
        if weights != sorted(weights):
            raise ValueError("spec.rollout.steps setWeight values must be ascending")
        if self.synthetic_traffic and isinstance(self.traffic_router, ReplicaRatioRouter):
            raise ValueError(SYNTHETIC_NEEDS_ROUTE)
        shadow = any(s.shadow is not None for s in self.steps)
        if shadow and isinstance(self.traffic_router, ReplicaRatioRouter):
            raise ValueError(_NO_MIRROR)
        return self


# --- the whole spec --------------------------------------------------------------------------


class ModelDeploymentSpec(ApiModel):
    """Desired state of a ModelDeployment: a model served by an autoscaled, observable service
    that moves to new versions step by step."""

    model: ModelSpec
    """The model to serve."""

    serving: ServingSpec = Field(default_factory=ServingSpec)
    """The model server container."""

    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    """Replica bounds and autoscaling targets."""

    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    """CPU or GPU placement."""

    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    """Canary strategy for new revisions."""

    pod: PodSettings = Field(default_factory=PodSettings)
    """Settings merged into the model server's pods (ServiceAccount, pull secrets, affinity,
    priority, extra volumes, labels). A change starts a new revision."""

    paused: bool = False
    """Hold any rollout in progress at its current step."""

    notify: list[NotifierName] = Field(default_factory=list, max_length=MAX_NOTIFIERS)
    """Notifiers to tell about this ModelDeployment's rollouts (started, step advanced, paused,
    promoted, rolled back, failed), by the names the operator is configured with
    (docs/rollouts.md, "Notifications")."""
