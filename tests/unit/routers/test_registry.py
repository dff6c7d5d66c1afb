"""The spec's traffic-router choice maps to a router through the registry; the replica ratio
maps to a null object that writes and reads nothing."""

from __future__ import annotations

from typing import cast

import pytest
from lightkube import AsyncClient
from pydantic import ValidationError

from modelrollout.api.spec import (
    GatewayAPIRouter,
    IstioRouter,
    ReplicaRatioRouter,
    RolloutSpec,
)
from modelrollout.routers import registry
from modelrollout.routers.base import RouterError, RouteTarget, TrafficRouter
from modelrollout.routers.gateway_api import HTTPRouteRouter
from modelrollout.routers.istio import VirtualServiceRouter
from modelrollout.routers.registry import route_name, router_for
from modelrollout.routers.replica_ratio import ReplicaRatioRouter as NullRouter

# The factories only keep the client; nothing here talks to it.
CLIENT = cast(AsyncClient, object())


def test_gateway_api() -> None:
    router = router_for(GatewayAPIRouter(http_route="iris"), CLIENT)
    assert isinstance(router, HTTPRouteRouter)
    assert isinstance(router, TrafficRouter)
    assert router.routes.client is CLIENT
    assert router.routes.api.kind == "HTTPRoute"


def test_istio() -> None:
    router = router_for(IstioRouter(virtual_service="iris"), CLIENT)
    assert isinstance(router, VirtualServiceRouter)
    assert isinstance(router, TrafficRouter)
    assert router.routes.api.kind == "VirtualService"


async def test_replica_ratio_is_a_null_router() -> None:
    router = router_for(ReplicaRatioRouter(), CLIENT)
    assert isinstance(router, NullRouter)
    assert isinstance(router, TrafficRouter)
    target = RouteTarget("ns", "", "m-stable", "m-canary", 8080)
    await router.set_weight(target, 30)
    assert await router.current_weight(target) is None
    assert route_name(ReplicaRatioRouter()) is None
    # Pods behind one Service cannot copy requests to each other.
    with pytest.raises(RouterError, match="cannot mirror"):
        await router.set_weight(target, 0, mirror=True)


def test_registering_a_taken_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    assert registry.kinds() == ("gatewayAPI", "istio", "replicas")
    with pytest.raises(ValueError, match="'istio' is already registered"):
        registry.register("istio", VirtualServiceRouter)
    registry.register("linkerd", VirtualServiceRouter)
    assert "linkerd" in registry.kinds()


def test_from_the_spec_as_users_write_it() -> None:
    chosen = {"type": "istio", "virtualService": "vs"}
    rollout = RolloutSpec.model_validate({"trafficRouter": chosen})
    assert isinstance(router_for(rollout.traffic_router, CLIENT), VirtualServiceRouter)
    assert route_name(rollout.traffic_router) == "vs"
    assert route_name(GatewayAPIRouter(http_route="web")) == "web"
    assert isinstance(router_for(RolloutSpec().traffic_router, CLIENT), NullRouter)


def test_an_unknown_router_never_reaches_the_registry() -> None:
    with pytest.raises(ValidationError, match="linkerd"):
        RolloutSpec.model_validate({"trafficRouter": {"type": "linkerd"}})
