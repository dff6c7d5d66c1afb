"""HTTPRoute and VirtualService routers against the real API server, with the project's stand-in
CRDs (hack/crds): weights written and read back, the rest of the user's route untouched,
concurrent edits kept, and errors that tell the user what to do."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from hack.localcluster import LocalCluster
from modelrollout.api import spec
from modelrollout.api.names import FIELD_MANAGER
from modelrollout.routers.base import RouterError, RouteState, RouteTarget, TrafficRouter
from modelrollout.routers.gateway_api import HTTPRouteRouter
from modelrollout.routers.istio import VirtualServiceRouter
from modelrollout.routers.registry import router_for

from .conftest import Models
from .kube import Kube, OperatorProcess, model_deployment, wait_for

pytestmark = pytest.mark.integration

HTTPROUTES = "httproutes.gateway.networking.k8s.io"
VIRTUALSERVICES = "virtualservices.networking.istio.io"
HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")

RouterFactory = Callable[..., TrafficRouter]


def http_route(name: str) -> dict[str, Any]:
    """An HTTPRoute as a user writes it: the stable Service on the inference paths, and a rule
    for something else that the operator must leave alone."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
            "hostnames": ["iris.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]},
                        }
                    ],
                    "backendRefs": [{"name": "iris-stable", "port": 8080}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                    "backendRefs": [{"name": "docs", "port": 80}],
                },
            ],
        },
    }


def virtual_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {
            "hosts": ["iris.example.com"],
            "gateways": ["istio-system/public"],
            "http": [
                {
                    "name": "docs",
                    "match": [{"uri": {"prefix": "/docs"}}],
                    "route": [{"destination": {"host": "docs"}}],
                },
                {
                    "name": "inference",
                    "match": [{"uri": {"prefix": "/v2"}}],
                    "retries": {"attempts": 2},
                    "route": [{"destination": {"host": "iris-stable", "port": {"number": 8080}}}],
                },
            ],
        },
    }


@pytest.fixture
def routes(router_crds: LocalCluster, kube: Kube) -> Kube:
    """A fresh namespace on a cluster that serves HTTPRoute and VirtualService."""
    return kube


@pytest_asyncio.fixture(loop_scope="function")
async def client(cluster: LocalCluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        config=KubeConfig.from_file(cluster.kubeconfig), field_manager=FIELD_MANAGER
    ) as c:
        yield c


def target(kube: Kube, route: str) -> RouteTarget:
    return RouteTarget(kube.namespace, route, "iris-stable", "iris-canary", 8080)


def created(kube: Kube, manifest: dict[str, Any]) -> None:
    result = kube.apply(manifest)
    assert result.returncode == 0, result.stderr


# --- HTTPRoute ------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [10, 50, 100, 0])
async def test_http_route_weights_are_set_and_read_back(
    routes: Kube, client: AsyncClient, weight: int
) -> None:
    created(routes, http_route("iris"))
    before = routes.must(HTTPROUTES, "iris")["spec"]
    router = HTTPRouteRouter(client)
    t = target(routes, "iris")
    assert await router.current_weight(t) is None  # only the stable Service so far

    await router.set_weight(t, weight)

    obj = routes.must(HTTPROUTES, "iris")
    inference, docs = obj["spec"]["rules"]
    assert [(r["name"], r["port"], r["weight"]) for r in inference["backendRefs"]] == [
        ("iris-stable", 8080, 100 - weight),
        ("iris-canary", 8080, weight),
    ]
    assert await router.current_weight(t) == weight
    # What the user owns is as they wrote it.
    assert inference["matches"] == before["rules"][0]["matches"]
    assert inference["filters"] == before["rules"][0]["filters"]
    assert docs == before["rules"][1]
    assert obj["spec"]["hostnames"] == before["hostnames"]
    assert obj["spec"]["parentRefs"] == before["parentRefs"]
    shown = routes.run(
        "-n", routes.namespace, "get", HTTPROUTES, "iris", "-o", "json", "--show-managed-fields"
    )
    managers = {m["manager"] for m in json.loads(shown)["metadata"]["managedFields"]}
    assert FIELD_MANAGER in managers


async def test_http_route_steps_and_no_write_when_weights_hold(
    routes: Kube, client: AsyncClient
) -> None:
    created(routes, http_route("iris"))
    router = HTTPRouteRouter(client)
    t = target(routes, "iris")
    for weight in (10, 25, 50, 100):
        await router.set_weight(t, weight)
        assert await router.current_weight(t) == weight

    before = routes.must(HTTPROUTES, "iris")["metadata"]["resourceVersion"]
    await router.set_weight(t, 100)
    assert routes.must(HTTPROUTES, "iris")["metadata"]["resourceVersion"] == before


async def test_http_route_served_as_v1beta1_too(routes: Kube, client: AsyncClient) -> None:
    created(routes, http_route("iris"))
    await HTTPRouteRouter(client, api_version="v1beta1").set_weight(target(routes, "iris"), 30)
    assert await HTTPRouteRouter(client).current_weight(target(routes, "iris")) == 30


# --- VirtualService -------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [10, 50, 100, 0])
async def test_virtual_service_weights_are_set_and_read_back(
    routes: Kube, client: AsyncClient, weight: int
) -> None:
    created(routes, virtual_service("iris"))
    router = VirtualServiceRouter(client)
    t = target(routes, "iris")
    assert await router.current_weight(t) is None

    await router.set_weight(t, weight)

    obj = routes.must(VIRTUALSERVICES, "iris")
    docs, inference = obj["spec"]["http"]
    assert inference["route"] == [
        {
            "destination": {"host": "iris-stable", "port": {"number": 8080}},
            "weight": 100 - weight,
        },
        {
            "destination": {"host": "iris-canary", "port": {"number": 8080}},
            "weight": weight,
        },
    ]
    original = virtual_service("iris")["spec"]
    assert docs == original["http"][0]
    assert inference["retries"] == {"attempts": 2}
    assert inference["match"] == original["http"][1]["match"]
    assert (obj["spec"]["hosts"], obj["spec"]["gateways"]) == (
        original["hosts"],
        original["gateways"],
    )
    assert await router.current_weight(t) == weight
    # The same object through the other served version.
    beta = routes.must(f"{VIRTUALSERVICES.replace('.', '.v1beta1.', 1)}", "iris")
    assert beta["apiVersion"] == "networking.istio.io/v1beta1"
    assert beta["spec"]["http"][1]["route"][1]["weight"] == weight


async def test_virtual_service_no_write_when_weights_hold(
    routes: Kube, client: AsyncClient
) -> None:
    created(routes, virtual_service("iris"))
    router = VirtualServiceRouter(client)
    t = target(routes, "iris")
    await router.set_weight(t, 25)
    before = routes.must(VIRTUALSERVICES, "iris")["metadata"]["resourceVersion"]
    await router.set_weight(t, 25)
    assert routes.must(VIRTUALSERVICES, "iris")["metadata"]["resourceVersion"] == before
    assert await router.current_weight(t) == 25


# --- the registry -------------------------------------------------------------------------


async def test_registry_routers_steer_real_routes(routes: Kube, client: AsyncClient) -> None:
    created(routes, http_route("iris"))
    created(routes, virtual_service("iris"))
    gateway = router_for(spec.GatewayAPIRouter(http_route="iris"), client)
    istio = router_for(spec.IstioRouter(virtual_service="iris"), client)
    assert gateway is not None
    assert istio is not None
    await gateway.set_weight(target(routes, "iris"), 40)
    await istio.set_weight(target(routes, "iris"), 60)
    assert routes.must(HTTPROUTES, "iris")["spec"]["rules"][0]["backendRefs"][1]["weight"] == 40
    assert routes.must(VIRTUALSERVICES, "iris")["spec"]["http"][1]["route"][1]["weight"] == 60


# --- concurrent edits ---------------------------------------------------------------------


class EditingClient(AsyncClient):
    """A client during whose reads someone else edits the route: the read it returns is stale
    by the time the router writes, as when a user or GitOps sync races the operator."""

    def __init__(self, cluster: LocalCluster, kube: Kube, edits: int) -> None:
        super().__init__(
            config=KubeConfig.from_file(cluster.kubeconfig), field_manager=FIELD_MANAGER
        )
        self.kube = kube
        self.edits_left = edits
        self.conflicts = 0

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        obj = await super().get(*args, **kwargs)
        if self.edits_left > 0:
            self.edits_left -= 1
            hostnames = [f"edit-{self.edits_left}.example.com", "iris.example.com"]
            await asyncio.to_thread(
                self.kube.patch, HTTPROUTES, "iris", {"spec": {"hostnames": hostnames}}
            )
        return obj

    async def patch(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().patch(*args, **kwargs)
        except ApiError as exc:
            self.conflicts += exc.status.code == 409
            raise


async def test_a_concurrent_edit_is_kept_and_the_write_retried(
    routes: Kube, cluster: LocalCluster
) -> None:
    created(routes, http_route("iris"))
    racing = EditingClient(cluster, routes, edits=1)
    try:
        await HTTPRouteRouter(racing).set_weight(target(routes, "iris"), 20)
    finally:
        await racing.close()
    assert racing.conflicts == 1

    obj = routes.must(HTTPROUTES, "iris")
    assert obj["spec"]["hostnames"] == ["edit-0.example.com", "iris.example.com"]
    assert obj["spec"]["rules"][0]["backendRefs"][1]["weight"] == 20


async def test_a_route_that_keeps_changing_is_a_router_error(
    routes: Kube, cluster: LocalCluster
) -> None:
    created(routes, http_route("iris"))
    racing = EditingClient(cluster, routes, edits=10)
    router = HTTPRouteRouter(racing, conflict_retries=2)
    try:
        with pytest.raises(RouterError, match=r"kept changing .* \(3 conflicting writes\)"):
            await router.set_weight(target(routes, "iris"), 20)
    finally:
        await racing.close()
    assert racing.conflicts == 3
    # Nothing half-written: the weights are still the user's.
    assert routes.must(HTTPROUTES, "iris")["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "iris-stable", "port": 8080, "weight": 1}
    ]


async def test_racing_writers_converge(routes: Kube, client: AsyncClient) -> None:
    """Routers and a user editing at the same time: every write lands, none is lost."""
    created(routes, http_route("iris"))
    t = target(routes, "iris")

    async def user_edits() -> None:
        for i in range(5):
            await client.patch(
                HTTPRoute,
                "iris",
                {"metadata": {"labels": {f"edit-{i}": "yes"}}},
                namespace=routes.namespace,
                patch_type=PatchType.MERGE,
                field_manager="someone-else",
            )

    await asyncio.gather(
        user_edits(),
        *(HTTPRouteRouter(client, conflict_retries=10).set_weight(t, 35) for _ in "abc"),
    )
    obj = routes.must(HTTPROUTES, "iris")
    assert set(obj["metadata"]["labels"]) == {f"edit-{i}" for i in range(5)}
    assert await HTTPRouteRouter(client).current_weight(t) == 35


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            HTTPRouteRouter,
            "HTTPRoute {ns}/iris not found: create it with a parentRef to your Gateway; "
            "the operator only sets backendRefs weights",
        ),
        (
            VirtualServiceRouter,
            "VirtualService {ns}/iris not found: create it with your hosts (and gateways, for "
            "ingress traffic); the operator only sets http route weights",
        ),
    ],
)
async def test_a_missing_route_says_how_to_create_it(
    routes: Kube, client: AsyncClient, make: RouterFactory, message: str
) -> None:
    router = make(client)
    expected = message.format(ns=routes.namespace)
    with pytest.raises(RouterError) as raised:
        await router.set_weight(target(routes, "iris"), 10)
    assert str(raised.value) == expected
    with pytest.raises(RouterError) as raised:
        await router.current_weight(target(routes, "iris"))
    assert str(raised.value) == expected


async def test_an_api_the_cluster_does_not_serve_says_what_to_install(
    routes: Kube, client: AsyncClient
) -> None:
    router = HTTPRouteRouter(client, api_version="v1alpha9")
    with pytest.raises(RouterError, match=r"does not serve httproutes\..*/v1alpha9: install the"):
        await router.current_weight(target(routes, "iris"))


async def test_a_write_the_api_server_rejects_is_a_router_error(
    routes: Kube, client: AsyncClient
) -> None:
    created(routes, http_route("iris"))
    bad_port = RouteTarget(routes.namespace, "iris", "iris-stable", "iris-canary", 0)
    with pytest.raises(RouterError, match="rejected the new weights"):
        await HTTPRouteRouter(client).set_weight(bad_port, 10)


async def test_a_rule_with_another_backend_is_refused_not_rewritten(
    routes: Kube, client: AsyncClient
) -> None:
    manifest = http_route("iris")
    manifest["spec"]["rules"][0]["backendRefs"].append({"name": "legacy", "port": 8080})
    created(routes, manifest)
    with pytest.raises(RouterError, match=r"spec.rules\[0\].backendRefs sends traffic to legacy"):
        await HTTPRouteRouter(client).set_weight(target(routes, "iris"), 10)
    refs = routes.must(HTTPROUTES, "iris")["spec"]["rules"][0]["backendRefs"]
    assert [r["name"] for r in refs] == ["iris-stable", "legacy"]


# --- shadow steps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "factory"),
    [(http_route, HTTPRouteRouter), (virtual_service, VirtualServiceRouter)],
    ids=["httproute", "virtualservice"],
)
async def test_mirroring_is_written_read_back_and_removed(
    routes: Kube, client: AsyncClient, make: Callable[[str], dict[str, Any]], factory: Any
) -> None:
    created(routes, make("iris"))
    router = factory(client)
    t = target(routes, "iris")
    await router.set_weight(t, 0, mirror=True)
    assert await router.current(t) == RouteState(0, True)
    await router.set_weight(t, 20)
    assert await router.current(t) == RouteState(20, False)


# --- the running operator: routes from its watch-fed cache -------------------------------------


def _route_weights(kube: Kube, name: str) -> dict[str, int]:
    refs = kube.must("httproute", name)["spec"]["rules"][0]["backendRefs"]
    return {r["name"]: r.get("weight", 1) for r in refs}


def _reconciles(operator: OperatorProcess, namespace: str) -> float:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    prefix = f'modelrollout_reconcile_duration_seconds_count{{namespace="{namespace}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def _requests_since(operator: OperatorProcess, offset: int) -> list[str]:
    """The operator's HTTP requests its client logged after byte `offset` (method and URL)."""
    with operator.log_path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return re.findall(r"HTTP Request: (\w+ \S+)", text)


def test_a_reconcile_reads_its_route_from_the_cache_and_a_hand_edit_is_put_back(
    routes: Kube, operator: OperatorProcess, models: Models
) -> None:
    kube = routes
    route = http_route("web")
    route["spec"]["rules"] = route["spec"]["rules"][:1]
    created(kube, route)
    m = model_deployment(
        "iris",
        {
            "model": {"uri": models.small.uri, "sha256": models.small.sha256, "version": "v1"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            "rollout": {
                "steps": [{"setWeight": 100}],
                "trafficRouter": {"type": "gatewayAPI", "httpRoute": "web"},
            },
        },
    )
    created(kube, m)
    stable = {"iris-stable": 100, "iris-canary": 0}
    wait_for(lambda: _route_weights(kube, "web") == stable, timeout=90, what="stable weights")
    # The CRDs may have come after the operator started: it lists routes again every 30 s.
    listed = re.compile(r'GET \S+/httproutes\?\S* "HTTP/1.1 200')
    wait_for(
        lambda: listed.search(operator.log_path.read_text(errors="replace")),
        timeout=45,
        what="the operator's LIST of HTTPRoutes",
    )
    offset = operator.log_path.stat().st_size
    before = _reconciles(operator, kube.namespace)
    # Resyncs every 5 s in the tests: a few reconciles of the route-steered object.
    wait_for(
        lambda: _reconciles(operator, kube.namespace) >= before + 2,
        timeout=30,
        what="two more reconciles",
    )
    # A hand edit of the weights wakes the ModelDeployment through the route's watch.
    kube.run(
        "-n",
        kube.namespace,
        "patch",
        "httproute",
        "web",
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50}]),
    )
    wait_for(lambda: _route_weights(kube, "web") == stable, timeout=15, what="weights put back")
    path = f"/namespaces/{kube.namespace}/httproutes/web"
    mine = [r.split("?")[0] for r in _requests_since(operator, offset)]
    mine = [r.split()[0] for r in mine if r.endswith(path)]
    # Read from memory at every reconcile; written through the API server.
    assert "GET" not in mine
    assert "PATCH" in mine
