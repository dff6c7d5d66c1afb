"""Traffic routers by the `type` a ModelDeployment's spec selects them with.

The spec's discriminated union already refuses unknown router types; the registry maps each
member to the router that carries out its weights, and is where a new router is added.
"""

from __future__ import annotations

from typing import Protocol, assert_never

from lightkube import AsyncClient

from modelrollout.api import spec
from modelrollout.routers._route import RouteAPI
from modelrollout.routers.base import RouteCache, TrafficRouter
from modelrollout.routers.gateway_api import GATEWAY_API, HTTPRouteRouter
from modelrollout.routers.istio import ISTIO, VirtualServiceRouter
from modelrollout.routers.replica_ratio import ReplicaRatioRouter

__all__ = ["RouterFactory", "kinds", "register", "route_apis", "route_name", "router_for"]

SpecRouter = spec.GatewayAPIRouter | spec.IstioRouter | spec.ReplicaRatioRouter


class RouterFactory(Protocol):
    def __call__(
        self, client: AsyncClient, /, *, cache: RouteCache | None = None
    ) -> TrafficRouter: ...


def _replicas(_client: AsyncClient, /, *, cache: RouteCache | None = None) -> TrafficRouter:
    return ReplicaRatioRouter()


_FACTORIES: dict[str, RouterFactory] = {
    "gatewayAPI": HTTPRouteRouter,
    "istio": VirtualServiceRouter,
    "replicas": _replicas,
}
# The route kinds the routers steer, by the spec.rollout.trafficRouter field naming one.
_ROUTES = {"httpRoute": GATEWAY_API, "virtualService": ISTIO}


def register(kind: str, factory: RouterFactory) -> None:
    """Add a router; registering a taken type is an error so one cannot shadow another."""
    if kind in _FACTORIES:
        raise ValueError(f"traffic router {kind!r} is already registered")
    _FACTORIES[kind] = factory


def kinds() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def router_for(
    spec_router: SpecRouter, client: AsyncClient, cache: RouteCache | None = None
) -> TrafficRouter:
    """The router that carries out the spec's choice (a null object for the replica ratio),
    reading routes from `cache` where it holds them."""
    try:
        factory = _FACTORIES[spec_router.type]
    except KeyError:
        raise ValueError(f"no traffic router registered for {spec_router.type!r}") from None
    return factory(client, cache=cache)


def route_apis() -> dict[str, RouteAPI]:
    """The route kinds to keep by a watch, by the trafficRouter field that names a route."""
    return dict(_ROUTES)


def route_name(spec_router: SpecRouter) -> str | None:
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
