"""The traffic router a ModelDeployment's spec selects.

The spec's discriminated union already refuses unknown router types, so this is a total match
over its members rather than a name lookup.
"""

from __future__ import annotations

from typing import assert_never

from lightkube import AsyncClient

from modelrollout.api import spec
from modelrollout.routers.base import TrafficRouter
from modelrollout.routers.gateway_api import HTTPRouteRouter
from modelrollout.routers.istio import VirtualServiceRouter

__all__ = ["route_name", "router_for"]


def router_for(
    spec_router: spec.GatewayAPIRouter | spec.IstioRouter | spec.ReplicaRatioRouter,
    client: AsyncClient,
) -> TrafficRouter | None:
    """The router that steers weights on a route object, or None for the replica-ratio fallback
    (it has no route: the planner realises its weight through replica counts)."""
    match spec_router:
        case spec.GatewayAPIRouter():
            return HTTPRouteRouter(client)
        case spec.IstioRouter():
            return VirtualServiceRouter(client)
        case spec.ReplicaRatioRouter():
            return None
        case _:
            assert_never(spec_router)


def route_name(
    spec_router: spec.GatewayAPIRouter | spec.IstioRouter | spec.ReplicaRatioRouter,
) -> str | None:
    """Name of the route object the spec points at (same namespace), None for replica ratio."""
    match spec_router:
        case spec.GatewayAPIRouter():
            return spec_router.http_route
        case spec.IstioRouter():
            return spec_router.virtual_service
        case spec.ReplicaRatioRouter():
            return None
        case _:
            assert_never(spec_router)
