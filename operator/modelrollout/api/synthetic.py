"""Synthetic traffic: requests the operator sends to a canary during its analysis, so a model
with little traffic of its own is still judged (spec), and how many it sent (status)."""

from __future__ import annotations

from pydantic import Field

from modelrollout.api.refs import SECRET_PATTERN
from modelrollout.api.types import ApiModel

# The header every synthetic request carries; the model server counts such requests apart.
SYNTHETIC_HEADER = "x-modelrollout-synthetic"
# Only a routed canary has a Service of its own to send to.
SYNTHETIC_NEEDS_ROUTE = (
    "spec.rollout.syntheticTraffic needs a gatewayAPI or istio trafficRouter: with replicas the "
    "canary has no Service of its own"
)


class SampleRequests(ApiModel):
    """Sample inference requests, from a ConfigMap in the ModelDeployment's namespace."""

    config_map: str = Field(min_length=1, max_length=253, pattern=SECRET_PATTERN)
    """The ConfigMap's name."""

    key: str = Field(default="requests.json", min_length=1, max_length=253)
    """Its key holding the samples: one Open Inference Protocol v2 request body (JSON), or a
    list of them, sent in turn."""


class SyntheticTrafficSpec(ApiModel):
    """Requests to the canary's own Service while it has traffic (during its analysis)."""

    rate_per_second: float = Field(default=1.0, gt=0, le=100)
    """Requests per second; the operator's `policy.syntheticMaxRate` caps it."""

    max_requests: int = Field(default=1000, ge=1, le=1_000_000)
    """Requests sent at most for one revision; `policy.syntheticMaxRequests` caps it."""

    samples: SampleRequests
    """What to send. (Inputs drawn from the model's reference profile are not a source yet.)"""


class SyntheticStatus(ApiModel):
    """What the synthetic traffic sent to a canary revision so far (kept across restarts, so
    the total stays bounded)."""

    revision: str
    """The canary revision the requests went to."""

    sent: int = 0
    """Requests sent."""

    errors: int = 0
    """Of those, answered with a 5xx status or not at all."""

    message: str = ""
    """Why it stopped or could not start, if it did."""
