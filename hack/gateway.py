"""A local weighted gateway in front of the PodRunner's model servers.

A request to `/<namespace>/<name>/<path>` is forwarded as `/<path>` to one ready model server:

- `name` is a ModelDeployment whose `spec.rollout.trafficRouter` is `gatewayAPI` (`istio`): the
  weights come from that HTTPRoute's backendRefs (VirtualService's http route destinations),
  each a Service whose selector picks the pods;
- `name` is not a ModelDeployment but an HTTPRoute of that name exists: the same, on that route;
- otherwise (replica-ratio router, or a bare Deployment): uniform over the ready pods of the
  Service `<name>`, or, without one, of every pod labelled `modelrollout.io/deployment=<name>`.

Routes are re-read every `refresh_s` (0.5 s), so a weight the operator writes takes effect within
about half a second. Within a route, backends are chosen by deficit against `split_by_weights`,
so any run of requests splits as exactly as whole requests allow. As in Gateway API
implementations, a backend that does not resolve gets 500, one with no ready pods gets 503.
Responses carry `x-modelrollout-revision` and `x-modelrollout-pod`; the gateway counts requests
per route, revision and status code.

A rule with a `RequestMirror` filter (a VirtualService entry with `mirror`) also sends a copy of
every request to a ready pod of the mirror's Service, fire and forget: its answer is dropped and
counted apart (`mirrored`, `/_gateway/mirrored`), never in the answers' counts. At most
`MAX_MIRRORING` copies are in flight; more are dropped, as a proxy sheds mirrored load.

    python -m hack.gateway --kubeconfig .cluster/kubeconfig --registry .cluster/podrunner/pods.json
    curl -s localhost:PORT/_gateway/routes    # current weights
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

import httpx
import orjson
import uvicorn
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Service

from hack.podrunner import PodServer, RegistryFile
from hack.processes import until_signal
from modelrollout.routers.istio import service_of

log = logging.getLogger("gateway")

ModelDeployment = create_namespaced_resource(
    "modelrollout.io", "v1alpha1", "ModelDeployment", "modeldeployments"
)
HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
VirtualService = create_namespaced_resource(
    "networking.istio.io", "v1", "VirtualService", "virtualservices"
)

HEADER_REVISION = "x-modelrollout-revision"
HEADER_POD = "x-modelrollout-pod"
NO_REVISION = "-"  # counted for requests the gateway answers itself (no backend, no pod)
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_MIRRORING = 64
# Per RFC 9110 these describe one connection, not the message, so a proxy never forwards them.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)

K = TypeVar("K", bound=Hashable)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# --- weights ----------------------------------------------------------------------------------


def split_by_weights(weights: Mapping[K, float], total: int) -> dict[K, int]:
    """Apportion `total` requests to keys in proportion to `weights` (largest remainder).

    The shares sum to `total` unless every weight is 0, when every share is 0. Ties go to the
    key listed first, so the result is deterministic.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be >= 0: {dict(weights)}")
    weight_sum = sum(weights.values())
    if weight_sum <= 0 or total == 0:
        return dict.fromkeys(weights, 0)
    exact = {k: total * w / weight_sum for k, w in weights.items()}
    shares = {k: int(v) for k, v in exact.items()}
    left = total - sum(shares.values())
    order = list(weights)
    by_remainder = sorted(order, key=lambda k: (-(exact[k] - shares[k]), order.index(k)))
    for k in by_remainder[:left]:
        shares[k] += 1
    return shares


class WeightedPicker:
    """Picks keys so that after n picks each key has been picked split_by_weights(w, n)[key]
    times, give or take one: the exact split, request by request, with no randomness."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = dict(weights)
        self._sent: Counter[str] = Counter()
        self._cycle = sum(self.weights.values())

    def pick(self) -> str | None:
        if self._cycle <= 0:
            return None
        sent = sum(self._sent.values())
        if sent >= self._cycle:
            # One full cycle is an exact split; starting over keeps the counts small.
            self._sent.clear()
            sent = 0
        target = split_by_weights(self.weights, sent + 1)
        key = max(self.weights, key=lambda k: target[k] - self._sent[k])
        self._sent[key] += 1
        return key


# --- routes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One weighted backendRef. `selector` None: it does not resolve (no such Service, or not a
    Service), so the share of traffic it is given gets 500."""

    service: str
    weight: int
    selector: Mapping[str, str] | None
    problem: str = ""


@dataclass(frozen=True)
class Route:
    namespace: str
    name: str
    # "httpRoute/<name>", "virtualService/<name>": weighted backends; "service/<name>": one
    # backend, uniform over its pods; "replicas": uniform over the pods labelled with the name.
    router: str
    backends: tuple[Backend, ...] = ()
    error: str = ""
    # The Service every request is copied to (RequestMirror, Istio mirror), if any.
    mirror: Backend | None = None

    @property
    def weighted(self) -> bool:
        return self.router != "replicas" and not self.router.startswith("service/")

    def endpoints(self, servers: Sequence[PodServer], backend: Backend | None) -> list[PodServer]:
        """Servers of `backend` (or of the whole route when it is not weighted)."""
        if self.router == "replicas":
            return [
                s for s in servers if s.namespace == self.namespace and s.deployment == self.name
            ]
        if backend is None:
            if not self.backends:
                return []
            backend = self.backends[0]
        selector = backend.selector
        if selector is None:
            return []
        return [s for s in servers if s.namespace == self.namespace and matches(selector, s.labels)]


class PodSource(Protocol):
    def servers(self, **filters: Any) -> list[PodServer]: ...


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    # A Service without a selector gets no endpoints from pods.
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _as_dict(obj: object) -> dict[str, Any]:
    # lightkube's generic resources are dicts of plain JSON values.
    return cast(dict[str, Any], dict(cast(Mapping[str, Any], obj)))


async def _get_or_none(client: AsyncClient, res: Any, name: str, namespace: str) -> Any:
    try:
        return await client.get(res, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    except Exception as exc:
        # A kind the API server does not serve (CRD not installed) is a bare 404 that lightkube
        # raises from its HTTP stack rather than as ApiError: the object does not exist either.
        response = getattr(exc, "response", None)
        if getattr(response, "status_code", None) == 404:
            return None
        raise


def _pick_rule(rules: Sequence[Mapping[str, Any]], preferred: set[str]) -> Mapping[str, Any]:
    """The rule that points at the ModelDeployment's track Services, else the first one."""
    with_refs = [r for r in rules if r.get("backendRefs")]
    for rule in with_refs:
        if any(ref.get("name") in preferred for ref in rule["backendRefs"]):
            return rule
    return with_refs[0] if with_refs else {}


async def resolve_route(client: AsyncClient, namespace: str, name: str) -> Route:
    """Read how traffic for `namespace/name` is split right now."""
    md = await _get_or_none(client, ModelDeployment, name, namespace)
    if md is None:
        # No ModelDeployment: an HTTPRoute of that name, if any, else its pods.
        route = await _get_or_none(client, HTTPRoute, name, namespace)
        if route is not None:
            return await _from_http_route(client, namespace, name, name, route)
        return await _replicas(client, namespace, name)
    router = _as_dict(md).get("spec", {}).get("rollout", {}).get("trafficRouter") or {}
    kind = router.get("type", "replicas")
    if kind == "gatewayAPI":
        route_name = str(router.get("httpRoute", ""))
        route = await _get_or_none(client, HTTPRoute, route_name, namespace)
        if route is None:
            return Route(namespace, name, f"httpRoute/{route_name}", error="HTTPRoute not found")
        return await _from_http_route(client, namespace, name, route_name, route)
    if kind == "istio":
        vs_name = str(router.get("virtualService", ""))
        vs = await _get_or_none(client, VirtualService, vs_name, namespace)
        if vs is None:
            return Route(
                namespace, name, f"virtualService/{vs_name}", error="VirtualService not found"
            )
        return await _from_virtual_service(client, namespace, name, vs_name, vs)
    return await _replicas(client, namespace, name)


async def _replicas(client: AsyncClient, namespace: str, name: str) -> Route:
    """Replica-ratio router: the ModelDeployment's own Service spreads requests over its pods;
    without one (a bare Deployment), every pod labelled with the name."""
    svc = await _get_or_none(client, Service, name, namespace)
    if svc is None:
        return Route(namespace, name, "replicas")
    selector = dict((svc.spec.selector if svc.spec else None) or {})
    return Route(namespace, name, f"service/{name}", (Backend(name, 1, selector),))


async def _from_http_route(
    client: AsyncClient, namespace: str, name: str, route_name: str, route: object
) -> Route:
    spec = _as_dict(route).get("spec", {})
    rule = _pick_rule(spec.get("rules") or [], {f"{name}-stable", f"{name}-canary"})
    backends = []
    for ref in rule.get("backendRefs") or []:
        backends.append(await _backend(client, namespace, ref))
    mirror = None
    for f in rule.get("filters") or []:
        if f.get("type") == "RequestMirror":
            ref = (f.get("requestMirror") or {}).get("backendRef") or {}
            mirror = await _backend(client, namespace, {**ref, "weight": 0})
    return Route(namespace, name, f"httpRoute/{route_name}", tuple(backends), mirror=mirror)


async def _from_virtual_service(
    client: AsyncClient, namespace: str, name: str, vs_name: str, vs: object
) -> Route:
    ours = {f"{name}-stable", f"{name}-canary"}
    entries = [e for e in _as_dict(vs).get("spec", {}).get("http") or [] if e.get("route")]
    entry = next(
        (
            e
            for e in entries
            if any(
                service_of(str(r.get("destination", {}).get("host", "")), namespace) in ours
                for r in e["route"]
            )
        ),
        entries[0] if entries else {},
    )
    routes = entry.get("route") or []
    backends = []
    for r in routes:
        host = str(r.get("destination", {}).get("host", ""))
        # Istio: a lone destination takes all traffic; among several, an absent weight is 0.
        weight = int(r.get("weight", 100 if len(routes) == 1 else 0))
        service = service_of(host, namespace)
        if service is None:
            backends.append(Backend(host, weight, None, "host outside the namespace"))
        else:
            backends.append(await _backend(client, namespace, {"name": service, "weight": weight}))
    mirror = None
    mirror_host = service_of(str((entry.get("mirror") or {}).get("host", "")), namespace)
    if mirror_host:
        mirror = await _backend(client, namespace, {"name": mirror_host, "weight": 0})
    return Route(namespace, name, f"virtualService/{vs_name}", tuple(backends), mirror=mirror)


async def _backend(client: AsyncClient, namespace: str, ref: Mapping[str, Any]) -> Backend:
    service = str(ref.get("name", ""))
    weight = int(ref.get("weight", 1))  # Gateway API's default weight
    if ref.get("group", "") not in ("", "core") or ref.get("kind", "Service") != "Service":
        return Backend(service, weight, None, "not a Service")
    if ref.get("namespace", namespace) != namespace:
        return Backend(service, weight, None, "other namespaces are not resolved")
    svc = await _get_or_none(client, Service, service, namespace)
    if svc is None:
        return Backend(service, weight, None, "Service not found")
    selector = dict((svc.spec.selector if svc.spec else None) or {})
    return Backend(service, weight, selector)


# --- the gateway ------------------------------------------------------------------------------


@dataclass
class _Table:
    route: Route
    picker: WeightedPicker | None
    next_endpoint: Counter[str] = field(default_factory=Counter)
    last_used: float = 0.0


class Gateway:
    """The proxy and its route refresher, served by uvicorn in a background thread."""

    def __init__(
        self,
        kubeconfig: Path,
        pods: PodSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refresh_s: float = 0.5,
        upstream_timeout_s: float = 30.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.pods = pods
        self.host = host
        self.port = port
        self.refresh_s = refresh_s
        self.upstream_timeout_s = upstream_timeout_s
        self._tables: dict[tuple[str, str], _Table] = {}
        self._counts: Counter[tuple[str, str, str, int]] = Counter()
        self._mirrored: Counter[tuple[str, str, str, int]] = Counter()
        self._mirroring: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kube: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._first: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Gateway:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self, log_config=None, access_log=False, lifespan="off", server_header=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._thread_main, args=(sock,), name="gateway", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._failure is not None or not self._thread.is_alive():
                raise RuntimeError(f"gateway failed to start: {self._failure!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("gateway did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _thread_main(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(sock))
        except BaseException as exc:
            self._failure = exc
            log.exception("gateway stopped")

    async def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        self._loop = asyncio.get_running_loop()
        self._kube = AsyncClient(config=KubeConfig.from_file(self.kubeconfig))
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.upstream_timeout_s, connect=2.0),
            # Idle connections are dropped before the model server's own keep-alive timeout
            # (uvicorn's 5 s, httpx's default too) ends them: at equal timeouts a request could
            # go out on a connection the server was closing, and come back 502 (`make chaos`).
            limits=httpx.Limits(
                max_connections=256, max_keepalive_connections=64, keepalive_expiry=2.0
            ),
            trust_env=False,
        )
        refresher = asyncio.create_task(self._refresh_forever())
        try:
            await self._server.serve(sockets=[sock])
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await self._http.aclose()
            await self._kube.close()
            sock.close()

    # --- what tests and the demo read ---------------------------------------------------------

    def counts(
        self, namespace: str | None = None, name: str | None = None
    ) -> dict[tuple[str, int], int]:
        """(revision, status code) -> requests answered, for one route or all."""
        out: Counter[tuple[str, int]] = Counter()
        with self._lock:
            for (ns, n, revision, code), count in self._counts.items():
                if (namespace is None or ns == namespace) and (name is None or n == name):
                    out[(revision, code)] += count
        return dict(out)

    def mirrored(self, namespace: str, name: str) -> dict[tuple[str, int], int]:
        """(revision, status code) -> mirrored copies answered (answers dropped)."""
        out: Counter[tuple[str, int]] = Counter()
        with self._lock:
            for (ns, n, revision, code), count in self._mirrored.items():
                if ns == namespace and n == name:
                    out[(revision, code)] += count
        return dict(out)

    def counts_by_revision(self, namespace: str, name: str) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (revision, _code), count in self.counts(namespace, name).items():
            out[revision] += count
        return dict(out)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._mirrored.clear()

    def route(self, namespace: str, name: str) -> Route | None:
        table = self._tables.get((namespace, name))
        return table.route if table else None

    def watch(self, namespace: str, name: str, timeout: float = 10.0) -> Route:
        """Start refreshing a route before its first request; its first reading."""
        if self._loop is None:
            raise RuntimeError("gateway not started")
        future = asyncio.run_coroutine_threadsafe(self._ensure(namespace, name), self._loop)
        return future.result(timeout)

    def weights_by_revision(self, namespace: str, name: str) -> dict[str, int]:
        """Current weight per revision, as the route spreads it over ready pods."""
        table = self._tables.get((namespace, name))
        if table is None:
            return {}
        return _revision_weights(table.route, self.pods.servers(namespace=namespace))

    # --- routing ------------------------------------------------------------------------------

    async def _ensure(self, namespace: str, name: str) -> Route:
        key = (namespace, name)
        table = self._tables.get(key)
        if table is None:
            first = self._first.get(key)
            if first is None:
                first = asyncio.get_running_loop().create_future()
                self._first[key] = first
                try:
                    await self._refresh(key)
                finally:
                    first.set_result(None)
                    del self._first[key]
            else:
                await first
            table = self._tables[key]
        table.last_used = time.monotonic()
        return table.route

    async def _refresh(self, key: tuple[str, str]) -> None:
        assert self._kube is not None
        old = self._tables.get(key)
        try:
            route = await resolve_route(self._kube, *key)
        except Exception as exc:
            # Keep routing by the last known weights while the API server is unreachable.
            message = f"reading the route failed: {type(exc).__name__}: {exc}"
            route = (
                Route(key[0], key[1], old.route.router, old.route.backends, message)
                if old
                else Route(key[0], key[1], "replicas", error=message)
            )
        weights = {b.service: b.weight for b in route.backends} if route.weighted else None
        if old is not None and old.picker is not None and weights == old.picker.weights:
            picker: WeightedPicker | None = old.picker
        else:
            picker = WeightedPicker(weights) if weights is not None else None
        if old is not None and route.router != old.route.router:
            log.info("%s/%s: now routed by %s", *key, route.router)
        if old is None or old.picker is None or weights != old.picker.weights:
            log.info("%s/%s: %s weights %s", *key, route.router, weights)
        table = _Table(route, picker, old.next_endpoint if old else Counter())
        table.last_used = old.last_used if old else time.monotonic()
        self._tables[key] = table

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            now = time.monotonic()
            for key, table in list(self._tables.items()):
                if now - table.last_used > 600:
                    del self._tables[key]  # nobody asked for ten minutes
                    continue
                await self._refresh(key)

    def _choose(self, key: tuple[str, str]) -> tuple[PodServer | None, int, str]:
        """The server for the next request, or (None, status, reason)."""
        table = self._tables[key]
        route, namespace = table.route, key[0]
        ready = self.pods.servers(namespace=namespace, ready=True)
        if not route.weighted:
            return _round_robin(table, "", route.endpoints(ready, None), "no ready pods")
        assert table.picker is not None
        if not route.backends:
            return None, 500, f"{route.router}: {route.error or 'no backends'}"
        service = table.picker.pick()
        if service is None:
            return None, 500, f"{route.router}: every backend has weight 0"
        backend = next(b for b in route.backends if b.service == service)
        if backend.selector is None:
            return None, 500, f"{route.router}: backend {service}: {backend.problem}"
        endpoints = route.endpoints(ready, backend)
        return _round_robin(table, service, endpoints, f"Service {service} has no ready pods")

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        parts = path.lstrip("/").split("/", 2)
        if parts[0] == "_gateway":
            await self._control(parts[1] if len(parts) > 1 else "", send)
            return
        if len(parts) < 2 or not parts[0] or not parts[1]:
            await _reply(send, 404, {"error": "use /<namespace>/<name>/<path>"})
            return
        key = (parts[0], parts[1])
        rest = parts[2] if len(parts) > 2 else ""
        body = await _read_body(receive)
        if body is None:
            await _reply(send, 413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            return
        await self._ensure(*key)
        self._mirror(key, scope, rest, body)
        server, status, reason = self._choose(key)
        if server is None:
            self._count(key, NO_REVISION, status)
            await _reply(send, status, {"error": reason})
            return
        await self._forward(key, server, scope, rest, body, send)

    async def _forward(
        self,
        key: tuple[str, str],
        server: PodServer,
        scope: Scope,
        rest: str,
        body: bytes,
        send: Send,
    ) -> None:
        assert self._http is not None
        url = f"{server.url}/{rest}"
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        extra = [
            (HEADER_REVISION.encode(), server.revision.encode()),
            (HEADER_POD.encode(), server.pod.encode()),
        ]
        try:
            resp = await self._http.request(scope["method"], url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            self._count(key, server.revision, 504)
            await _reply(send, 504, {"error": f"upstream timeout: {exc}"}, extra)
            return
        except httpx.HTTPError as exc:
            # The process died or is restarting: what a pod whose container crashed gives.
            self._count(key, server.revision, 502)
            await _reply(send, 502, {"error": f"upstream: {type(exc).__name__}: {exc}"}, extra)
            return
        self._count(key, server.revision, resp.status_code)
        # httpx has already decoded any content-encoding.
        skip = HOP_BY_HOP | {b"content-encoding"}
        out = [(k, v) for k, v in resp.headers.raw if k.lower() not in skip]
        out += [*extra, (b"content-length", str(len(resp.content)).encode())]
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    def _mirror(self, key: tuple[str, str], scope: Scope, rest: str, body: bytes) -> None:
        """Copy the request to the route's mirror Service, if any; nobody waits for it."""
        table = self._tables[key]
        mirror = table.route.mirror
        if mirror is None or len(self._mirroring) >= MAX_MIRRORING:
            return
        ready = table.route.endpoints(self.pods.servers(namespace=key[0], ready=True), mirror)
        server, _, _ = _round_robin(table, f"mirror:{mirror.service}", ready, "")
        if server is None:
            return
        task = asyncio.create_task(self._send_copy(key, server, scope, rest, body))
        self._mirroring.add(task)
        task.add_done_callback(self._mirroring.discard)

    async def _send_copy(
        self, key: tuple[str, str], server: PodServer, scope: Scope, rest: str, body: bytes
    ) -> None:
        assert self._http is not None
        url = f"{server.url}/{rest}"
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        try:
            resp = await self._http.request(scope["method"], url, content=body, headers=headers)
            code = resp.status_code
        except httpx.HTTPError:
            code = 502
        with self._lock:
            self._mirrored[(key[0], key[1], server.revision, code)] += 1

    def _count(self, key: tuple[str, str], revision: str, status: int) -> None:
        with self._lock:
            self._counts[(key[0], key[1], revision, status)] += 1

    async def _control(self, what: str, send: Send) -> None:
        if what == "routes":
            doc: Any = [
                {
                    "namespace": t.route.namespace,
                    "name": t.route.name,
                    "router": t.route.router,
                    "error": t.route.error,
                    "backends": [
                        {"service": b.service, "weight": b.weight, "problem": b.problem}
                        for b in t.route.backends
                    ],
                    "revisionWeights": _revision_weights(
                        t.route, self.pods.servers(namespace=t.route.namespace)
                    ),
                }
                for t in list(self._tables.values())
            ]
        elif what == "counts":
            with self._lock:
                items = list(self._counts.items())
            doc = [
                {"namespace": ns, "name": n, "revision": rev, "code": code, "count": count}
                for (ns, n, rev, code), count in items
            ]
        elif what == "mirrored":
            with self._lock:
                items = list(self._mirrored.items())
            doc = [
                {"namespace": ns, "name": n, "revision": rev, "code": code, "count": count}
                for (ns, n, rev, code), count in items
            ]
        elif what == "healthz":
            doc = {"ok": True}
        else:
            await _reply(send, 404, {"error": "try /_gateway/routes, counts, mirrored or healthz"})
            return
        await _reply(send, 200, doc)


def _round_robin(
    table: _Table, slot: str, ready: list[PodServer], reason: str
) -> tuple[PodServer | None, int, str]:
    if not ready:
        return None, 503, reason
    i = table.next_endpoint[slot] % len(ready)
    table.next_endpoint[slot] = i + 1
    return ready[i], 200, ""


def _revision_weights(route: Route, servers: Sequence[PodServer]) -> dict[str, int]:
    """Weight per revision: a backend's weight goes to the revisions of its pods; without
    weights, each ready pod counts one."""
    if not route.weighted:
        ready = [s for s in route.endpoints(servers, None) if s.ready]
        return dict(Counter(s.revision for s in ready))
    out: Counter[str] = Counter()
    for backend in route.backends:
        for revision in {s.revision for s in route.endpoints(servers, backend)}:
            out[revision] += backend.weight
    return dict(out)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _reply(
    send: Send, status: int, doc: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = orjson.dumps(doc)
    out = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


# --- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.gateway", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--registry", type=Path, required=True, help="a PodRunner's pods.json")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # Our own messages only: the HTTP clients log every request at INFO.
    logging.basicConfig(level=logging.WARNING, format="[gateway] %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    gateway = Gateway(args.kubeconfig, RegistryFile(args.registry), port=args.port)
    with until_signal() as stop, gateway:
        log.info("listening on %s", gateway.url)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
