"""The spec's traffic-router choice maps to a router, or to none for the replica ratio."""

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
from modelrollout.routers.base import TrafficRouter
from modelrollout.routers.gateway_api import HTTPRouteRouter
from modelrollout.routers.istio import VirtualServiceRouter
from modelrollout.routers.registry import route_name, router_for

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


def test_replica_ratio_has_no_route_router() -> None:
    assert router_for(ReplicaRatioRouter(), CLIENT) is None
    assert route_name(ReplicaRatioRouter()) is None


def test_from_the_spec_as_users_write_it() -> None:
    chosen = {"type": "istio", "virtualService": "vs"}
    rollout = RolloutSpec.model_validate({"trafficRouter": chosen})
    assert isinstance(router_for(rollout.traffic_router, CLIENT), VirtualServiceRouter)
    assert route_name(rollout.traffic_router) == "vs"
    assert route_name(GatewayAPIRouter(http_route="web")) == "web"
    assert router_for(RolloutSpec().traffic_router, CLIENT) is None


def test_an_unknown_router_never_reaches_the_registry() -> None:
    with pytest.raises(ValidationError, match="linkerd"):
        RolloutSpec.model_validate({"trafficRouter": {"type": "linkerd"}})
