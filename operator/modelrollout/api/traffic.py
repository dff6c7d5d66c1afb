"""How a ModelDeployment's canary gets its share of the traffic: one model per router type,
selected by `type` (a discriminated union, so an unknown router is a validation error)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from modelrollout.api.types import NAME_PATTERN, ApiModel

__all__ = ["GatewayAPIRouter", "IstioRouter", "ReplicaRatioRouter", "TrafficRouter"]


class GatewayAPIRouter(ApiModel):
    """Weights on a Gateway API HTTPRoute's backendRefs."""

    type: Literal["gatewayAPI"] = "gatewayAPI"
    http_route: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    """Name of the HTTPRoute (same namespace) whose rule the operator owns."""


class IstioRouter(ApiModel):
    """Weights on an Istio VirtualService's routes."""

    type: Literal["istio"] = "istio"
    virtual_service: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    """Name of the VirtualService (same namespace) whose route the operator owns."""


class ReplicaRatioRouter(ApiModel):
    """No mesh or gateway: one Service over both tracks, replicas apportioned by weight.
    Approximate: the split follows the replica ratio, not per-request weights."""

    type: Literal["replicas"] = "replicas"


TrafficRouter = Annotated[
    GatewayAPIRouter | IstioRouter | ReplicaRatioRouter, Field(discriminator="type")
]
