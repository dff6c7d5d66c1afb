"""Rollout hooks: the tenant's own checks at named points of a rollout (spec), and what became
of each run (status). A hook is an HTTP call to a URL the platform allows, or a Kubernetes Job
built from a small container template in the ModelDeployment's namespace."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from modelrollout.api.refs import SECRET_PATTERN
from modelrollout.api.serving import EnvVar
from modelrollout.api.types import NAME_PATTERN, ApiModel, Duration, Quantity, parse_duration

MAX_TIMEOUT = timedelta(minutes=10)


class HookPoint(StrEnum):
    """Where in a rollout a hook runs."""

    # Gates: the rollout waits for them.
    PRE_ROLLOUT = "preRollout"
    ANALYSIS = "analysis"
    PRE_PROMOTION = "prePromotion"
    # After the fact: their result is recorded, the rollout does not wait.
    POST_PROMOTION = "postPromotion"
    ROLLBACK = "rollback"


GATES = (HookPoint.PRE_ROLLOUT, HookPoint.ANALYSIS, HookPoint.PRE_PROMOTION)


class HookFailurePolicy(StrEnum):
    ROLLBACK = "rollback"
    HOLD = "hold"


class HttpHook(ApiModel):
    """An HTTP call: any 2xx answer passes."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.url.matches('^https?://[^/?#@]+([/?].*)?$')",
                    "message": "spec.rollout.hooks[].http.url must be an http(s):// URL without "
                    "credentials",
                    "fieldPath": ".url",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^/?#@]+([/?].*)?$")
    """The URL to call. It must match one of the operator's `policy.hookUrls` patterns, and its
    host must resolve to a public address or one inside `policy.allowedNetworks`."""

    method: Literal["GET", "POST", "PUT"] = "POST"
    """HTTP method. POST and PUT send the hook's JSON payload (docs/rollouts.md)."""

    headers_secret: str | None = Field(default=None, max_length=253, pattern=SECRET_PATTERN)
    """A Secret in the ModelDeployment's namespace whose keys and values are sent as request
    headers (e.g. `Authorization`). Read at each call; never written to status."""


class JobContainer(ApiModel):
    """The one container of a Job hook. The operator adds a restricted security context, no
    ServiceAccount token, and the canary's address in `MODELROLLOUT_CANARY_URL`."""

    image: str = Field(min_length=1, max_length=512)
    """Container image."""

    command: list[str] = Field(default_factory=list, max_length=64)
    """Entrypoint."""

    args: list[str] = Field(default_factory=list, max_length=256)
    """Arguments."""

    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Environment variables (values, or keys of Secrets and ConfigMaps in the namespace)."""

    cpu: Quantity = "100m"
    """CPU request and limit."""

    memory: Quantity = "128Mi"
    """Memory request and limit."""


class JobHook(ApiModel):
    """A Kubernetes Job in the ModelDeployment's namespace: passes when it succeeds."""

    container: JobContainer
    """What the Job runs."""


class HookSpec(ApiModel):
    """One hook: exactly one of http or job."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.http) != has(self.job)",
                    "message": "each hook sets exactly one of http or job",
                },
                {
                    "rule": "!has(self.timeout) || duration(self.timeout) <= duration('10m')",
                    "message": "spec.rollout.hooks[].timeout must be at most 10m",
                    "fieldPath": ".timeout",
                    "reason": "FieldValueInvalid",
                },
            ]
        }
    )

    name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN)
    """Name of the hook, unique in the list; it names the hook in status, events and Jobs."""

    at: HookPoint
    """preRollout (the canary is up, before it gets traffic), analysis (at each analysis step:
    the step passes only when the hook passed too), prePromotion (all traffic on the canary,
    before it is promoted): the rollout waits for these. postPromotion and rollback run after
    the fact; their result is recorded, nothing waits."""

    on_failure: HookFailurePolicy = HookFailurePolicy.ROLLBACK
    """What a failed gate hook does: `rollback` the canary, or `hold` it where it is (the
    progress deadline still runs; the `modelrollout.io/retry` annotation runs it again)."""

    timeout: Duration = "30s"
    """Time one attempt may take (the whole Job, for a Job hook). At most 10m."""

    retries: int = Field(default=0, ge=0, le=5)
    """Further attempts after a failed one (HTTP), or the Job's backoffLimit."""

    http: HttpHook | None = None
    """Call a URL."""

    job: JobHook | None = None
    """Run a Job."""

    @model_validator(mode="after")
    def _exactly_one(self) -> HookSpec:
        if (self.http is None) == (self.job is None):
            raise ValueError("each hook sets exactly one of http or job")
        if parse_duration(self.timeout) > MAX_TIMEOUT:
            raise ValueError("spec.rollout.hooks[].timeout must be at most 10m")
        return self


MAX_HOOKS = 16


def unique_names(hooks: list[HookSpec]) -> list[HookSpec]:
    names = [h.name for h in hooks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"spec.rollout.hooks names must be unique: {', '.join(duplicates)}")
    return hooks


# --- status -------------------------------------------------------------------------------------


class HookPhase(StrEnum):
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"


class HookRunStatus(ApiModel):
    """One run of a hook, for one revision at one point (and step): the record that keeps a
    passed hook from running again after an operator restart."""

    hook: str
    """The hook's name."""

    at: HookPoint
    """The point it ran at."""

    revision: str
    """The revision it ran for."""

    step: int = -1
    """The analysis step it ran at; -1 for the other points."""

    phase: HookPhase = HookPhase.RUNNING
    """Running, Passed or Failed."""

    message: str = ""
    """For a failure: the HTTP status and the first line of the answer (redacted, at most 200
    characters), the Job's condition, or the error met."""

    started: str
    """When it started."""

    finished: str | None = None
    """When it passed or failed."""
