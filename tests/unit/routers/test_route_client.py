"""The read → compute → conditional-write loop, against an in-memory stand-in for the API
server: what is written, conflict retries, read-back verification and error messages."""

from __future__ import annotations

import copy
import importlib
from typing import Any, cast

import pytest
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import Status, StatusDetails
from lightkube.types import PatchType

from modelrollout.routers import gateway_api, istio
from modelrollout.routers._route import RouteClient, WeightedRouteRouter, share_percent, spec_patch
from modelrollout.routers.base import RouterError, RouteTarget

# lightkube's HTTP library (httpx or httpx2, depending on its version), whose plain status errors
# it raises for answers that are not a Kubernetes Status.
http: Any = importlib.import_module(ApiError.__bases__[0].__module__.split(".")[0])

T = RouteTarget("ml", "iris", "iris-stable", "iris-canary", 8080)


def api_error(code: int, message: str = "", name: str | None = None) -> ApiError:
    details = StatusDetails(name=name) if name else None
    return ApiError(status=Status(code=code, message=message, details=details))


class FakeServer:
    """Holds one route object; answers get and merge-patch like the API server would, including
    the resourceVersion precondition."""

    def __init__(self, spec: dict[str, Any] | None) -> None:
        self.obj = (
            None
            if spec is None
            else {"metadata": {"name": "iris", "resourceVersion": "1"}, "spec": spec}
        )
        self.gets = 0
        self.patches: list[dict[str, Any]] = []
        self.patch_kwargs: list[dict[str, Any]] = []
        self.get_error: Exception | None = None
        self.patch_error: Exception | None = None
        self.interfere = 0  # bump the resourceVersion after this many further reads
        self.rewrite_canary: int | None = None  # a webhook that sets the canary weight

    async def get(self, res: Any, name: str, *, namespace: str) -> dict[str, Any]:
        self.gets += 1
        if self.get_error is not None:
            raise self.get_error
        if self.obj is None:
            raise api_error(404, f'httproutes "{name}" not found', name)
        seen = copy.deepcopy(self.obj)
        if self.interfere > 0:
            self.interfere -= 1
            self._bump()
        return seen

    async def patch(self, res: Any, name: str, body: dict[str, Any], **kwargs: Any) -> Any:
        self.patches.append(body)
        self.patch_kwargs.append(kwargs)
        if self.patch_error is not None:
            raise self.patch_error
        assert self.obj is not None
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise api_error(409, "the object has been modified")
        for key, value in body["spec"].items():
            if value is None:
                self.obj["spec"].pop(key, None)
            else:
                self.obj["spec"][key] = value
        if self.rewrite_canary is not None:
            self.obj["spec"]["rules"][0]["backendRefs"][1]["weight"] = self.rewrite_canary
        self._bump()
        return copy.deepcopy(self.obj)

    def _bump(self) -> None:
        assert self.obj is not None
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)


def gateway(server: FakeServer, retries: int = 3) -> WeightedRouteRouter:
    routes = RouteClient(
        cast(AsyncClient, server),
        gateway_api.GATEWAY_API,
        conflict_retries=retries,
        backoff_seconds=0,
    )
    return WeightedRouteRouter(
        routes, gateway_api.with_weight, gateway_api.read_weight, gateway_api.read_mirror
    )


def user_route() -> dict[str, Any]:
    return {
        "hostnames": ["iris.example.com"],
        "rules": [{"backendRefs": [{"name": "iris-stable", "port": 8080}]}],
    }


async def test_the_write_is_a_merge_patch_of_rules_under_the_read_resource_version() -> None:
    server = FakeServer(user_route())
    await gateway(server).set_weight(T, 10)
    assert server.patches == [
        {
            "metadata": {"resourceVersion": "1"},
            "spec": {
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "iris-stable", "port": 8080, "weight": 90},
                            {"name": "iris-canary", "port": 8080, "weight": 10},
                        ]
                    }
                ]
            },
        }
    ]
    assert server.patch_kwargs == [
        {"namespace": "ml", "patch_type": PatchType.MERGE, "field_manager": "modelrollout"}
    ]
    assert await gateway(server).current_weight(T) == 10


async def test_no_write_when_the_weights_hold() -> None:
    server = FakeServer(user_route())
    await gateway(server).set_weight(T, 10)
    await gateway(server).set_weight(T, 10)
    assert len(server.patches) == 1


async def test_a_conflict_is_recomputed_from_a_fresh_read() -> None:
    server = FakeServer(user_route())
    server.interfere = 2
    await gateway(server).set_weight(T, 30)
    assert [p["metadata"]["resourceVersion"] for p in server.patches] == ["1", "2", "3"]
    assert server.gets == 3
    assert await gateway(server).current_weight(T) == 30


async def test_endless_conflicts_give_up_with_a_router_error() -> None:
    server = FakeServer(user_route())
    server.interfere = 100
    with pytest.raises(RouterError, match=r"HTTPRoute ml/iris kept changing .* \(4 conflicting"):
        await gateway(server, retries=3).set_weight(T, 30)
    assert len(server.patches) == 4


async def test_a_weight_rewritten_by_someone_else_is_reported() -> None:
    server = FakeServer(user_route())
    server.rewrite_canary = 0
    with pytest.raises(RouterError, match="holds canary weight 0 after the operator set 10"):
        await gateway(server).set_weight(T, 10)


async def test_missing_route() -> None:
    with pytest.raises(RouterError) as raised:
        await gateway(FakeServer(None)).current_weight(T)
    assert str(raised.value) == (
        "HTTPRoute ml/iris not found: create it with a parentRef to your Gateway; the operator "
        "only sets backendRefs weights"
    )


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            api_error(404, "the server could not find the requested resource"),
            "HTTPRoute ml/iris: this cluster does not serve "
            "httproutes.gateway.networking.k8s.io/v1: install the Gateway API CRDs",
        ),
        (
            http.HTTPStatusError(
                "404",
                request=http.Request("GET", "https://k8s/apis"),
                response=http.Response(404, text="404 page not found"),
            ),
            "HTTPRoute ml/iris: this cluster does not serve",
        ),
        (
            api_error(403, "forbidden"),
            "HTTPRoute ml/iris: the operator may not read it: grant get and patch on "
            "httproutes.gateway.networking.k8s.io (forbidden)",
        ),
        (api_error(500, "etcd timeout"), "HTTPRoute ml/iris: read failed with HTTP 500: etcd"),
    ],
)
async def test_read_errors(error: Exception, message: str) -> None:
    server = FakeServer(user_route())
    server.get_error = error
    with pytest.raises(RouterError) as raised:
        await gateway(server).set_weight(T, 10)
    assert str(raised.value).startswith(message)


async def test_a_rejected_write() -> None:
    server = FakeServer(user_route())
    server.patch_error = api_error(422, "spec.rules[0].backendRefs[1].port: Invalid value")
    with pytest.raises(
        RouterError, match=r"HTTPRoute ml/iris: the API server rejected the new weights: spec"
    ):
        await gateway(server).set_weight(T, 10)


async def test_malformed_spec_field() -> None:
    server = FakeServer(user_route())
    assert server.obj is not None
    server.obj["spec"] = cast(Any, ["not", "an", "object"])
    with pytest.raises(RouterError, match="HTTPRoute ml/iris: spec must be an object"):
        await gateway(server).set_weight(T, 10)


async def test_the_same_service_for_both_tracks_is_a_caller_bug() -> None:
    same = RouteTarget("ml", "iris", "iris", "iris", 8080)
    with pytest.raises(ValueError, match="must differ"):
        await gateway(FakeServer(user_route())).set_weight(same, 10)


def test_istio_router_defaults() -> None:
    router = istio.VirtualServiceRouter(cast(AsyncClient, object()), api_version="v1beta1")
    assert router.routes.api.version == "v1beta1"
    assert router.routes.resource._api_info.plural == "virtualservices"


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({"a": 1, "b": [1]}, {"a": 1, "b": [2]}, {"b": [2]}),
        ({"a": 1}, {"a": 1, "c": 3}, {"c": 3}),
        ({"a": 1, "d": 4}, {"a": 1}, {"d": None}),
        ({"a": 1}, {"a": 1}, {}),
    ],
)
def test_spec_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert spec_patch(old, new) == patch


@pytest.mark.parametrize(
    ("part", "total", "expected"),
    [(0, 100, 0), (100, 100, 100), (1, 8, 13), (1, 3, 33), (2, 3, 67), (1, 200, 1), (0, 0, None)],
)
def test_share_percent(part: int, total: int, expected: int | None) -> None:
    assert share_percent(part, total) == expected
