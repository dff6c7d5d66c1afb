"""Routes read from the operator's watch-fed cache: no GET while the cache holds the route's
kind, every write still to the API server (and its answer back into the cache), a fresh GET
after a write lost to a newer version, and the API server read when the kind is not cached."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from lightkube import AsyncClient

from modelrollout.routers import gateway_api
from modelrollout.routers._route import RouteClient, WeightedRouteRouter
from modelrollout.routers.base import RouterError

from .test_route_client import FakeServer, T, user_route


class FakeCache:
    """What k8s/caches.py offers the routers: one kind's routes, or that kind not cached."""

    def __init__(self, served: bool = True) -> None:
        self.served = served
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def route(self, kind: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        assert kind == "HTTPRoute"
        if not self.served:
            return False, None
        return True, self.objects.get((namespace, name))

    def put(self, obj: dict[str, Any]) -> None:
        self.objects[(obj["metadata"].get("namespace", "ml"), obj["metadata"]["name"])] = obj


def router(server: FakeServer, cache: FakeCache) -> WeightedRouteRouter:
    routes = RouteClient(
        cast(AsyncClient, server), gateway_api.GATEWAY_API, backoff_seconds=0, cache=cache
    )
    return WeightedRouteRouter(
        routes, gateway_api.with_weight, gateway_api.read_weight, gateway_api.read_mirror
    )


def cached(server: FakeServer) -> FakeCache:
    cache = FakeCache()
    assert server.obj is not None
    cache.put(copy.deepcopy(server.obj))
    return cache


async def test_reads_come_from_the_cache_and_writes_go_back_into_it() -> None:
    server = FakeServer(user_route())
    cache = cached(server)
    steer = router(server, cache)
    assert await steer.current_weight(T) is None
    await steer.set_weight(T, 20)
    assert await steer.current_weight(T) == 20
    assert server.gets == 0
    assert [p["metadata"]["resourceVersion"] for p in server.patches] == ["1"]
    # The answer to the write is what the cache holds now, so the next read sees it.
    assert cache.objects[("ml", "iris")]["metadata"]["resourceVersion"] == "2"


async def test_a_cached_copy_is_not_changed_by_its_reader() -> None:
    server = FakeServer(user_route())
    cache = cached(server)
    before = copy.deepcopy(cache.objects)
    spec = (await router(server, cache).routes.get(T))["spec"]
    spec["rules"].clear()
    assert cache.objects == before


async def test_a_write_from_a_stale_cache_is_recomputed_from_the_api_server() -> None:
    server = FakeServer(user_route())
    cache = cached(server)
    server._bump()  # someone else wrote; the watch event has not arrived yet
    await router(server, cache).set_weight(T, 30)
    assert [p["metadata"]["resourceVersion"] for p in server.patches] == ["1", "2"]
    assert server.gets == 1
    assert cache.objects[("ml", "iris")]["metadata"]["resourceVersion"] == "3"


async def test_a_route_the_cache_does_not_hold_is_missing_without_a_get() -> None:
    server = FakeServer(user_route())
    with pytest.raises(RouterError, match="HTTPRoute ml/iris not found: create it"):
        await router(server, FakeCache()).current_weight(T)
    assert server.gets == 0


async def test_a_kind_not_cached_is_read_from_the_api_server() -> None:
    server = FakeServer(user_route())
    cache = FakeCache(served=False)
    steer = router(server, cache)
    await steer.set_weight(T, 10)
    assert await steer.current_weight(T) == 10
    assert server.gets == 2
