"""The operator's watch-fed caches: ModelDeployments, their children and pods (by the
managed-by label), the routes the traffic routers steer (HTTPRoutes, VirtualServices: the
users' own objects, so every one in the watched namespaces), and, when the capacity check is
on, every node and every pod (other tenants' pods take node capacity too). Keyed by owner;
every change that concerns a ModelDeployment calls `wake(namespace, name)`; a cache listing
again after its watch broke calls `on_relist()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.core.resource import Resource
from lightkube.generic_resource import create_global_resource, create_namespaced_resource

from modelrollout.api import GROUP, KIND, PLURAL, VERSION
from modelrollout.api.names import CHILD_KINDS, LABEL_DEPLOYMENT, MANAGED_BY
from modelrollout.k8s.informer import (
    Informer,
    Lister,
    Obj,
    Store,
    Watcher,
    WatchExpiredError,
    slim,
)

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
Wake = Callable[[str, str], None]
# A watch the API server ends after this long is resumed from its last resourceVersion.
WATCH_SECONDS = 300
LIST_CHUNK = 500


def _generic(api_version: str, kind: str, plural: str, namespaced: bool = True) -> type[Resource]:
    """A dict-backed resource class: the cache keeps plain JSON, no typed model to build."""
    group, _, version = api_version.rpartition("/")
    if namespaced:
        return create_namespaced_resource(group, version, kind, plural)
    return create_global_resource(group, version, kind, plural)


_MODEL_DEPLOYMENT = _generic(f"{GROUP}/{VERSION}", KIND, PLURAL)
_CHILDREN = {kind: _generic(api, kind, plural) for api, kind, plural in CHILD_KINDS}
_POD = _generic("v1", "Pod", "pods")
_NODE = _generic("v1", "Node", "nodes", namespaced=False)


@dataclass(frozen=True)
class RouteKind:
    """A route kind a traffic router steers, and the spec.rollout.trafficRouter field that
    names a route of it (which ModelDeployments a change to one concerns)."""

    group: str
    version: str
    kind: str
    plural: str
    router_field: str


def source(
    client: AsyncClient,
    res: Any,
    namespace: str | None,
    labels: dict[str, str] | None = None,
) -> tuple[Lister, Watcher]:
    """LIST and WATCH of one kind through lightkube; namespace None: cluster-scoped kind,
    "*": every namespace."""
    scope: dict[str, Any] = {} if namespace is None else {"namespace": namespace}
    selector: Any = labels

    info = res._api_info.resource
    # A LIST's items carry no apiVersion and kind; its watch events do.
    typed = {
        "apiVersion": f"{info.group}/{info.version}" if info.group else info.version,
        "kind": info.kind,
    }

    async def lister() -> tuple[list[Obj], str]:
        listing = client.list(res, labels=selector, chunk_size=LIST_CHUNK, **scope)
        objects = [typed | dict(o) async for o in listing]
        return objects, str(listing.resourceVersion)

    async def watcher(version: str) -> AsyncIterator[tuple[str, Obj]]:
        stream = client.watch(
            res, labels=selector, resource_version=version, server_timeout=WATCH_SECONDS, **scope
        )
        try:
            async for kind, obj in stream:
                yield kind, dict(obj)
        except ApiError as exc:
            if exc.status.code == 410:
                raise WatchExpiredError(str(exc)) from exc
            raise

    return lister, watcher


def slim_pod(pod: Obj) -> Obj:
    """A pod as the operator reads it: name, labels and deletion (owner index, track label),
    node, containers' names and resources (capacity, memory limits), phase and container
    states (OOM kills, restarts). The rest of a pod (volumes, env, probes, conditions) would be
    most of the cache at scale, where the capacity check keeps every pod of the cluster."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    kept = ("name", "namespace", "uid", "labels", "resourceVersion", "deletionTimestamp")

    def containers(items: list[Obj] | None) -> list[Obj]:
        return [
            {"name": c.get("name", ""), "resources": c.get("resources") or {}} for c in items or []
        ]

    slim_spec: Obj = {
        "containers": containers(spec.get("containers")),
        "initContainers": containers(spec.get("initContainers")),
    }
    if spec.get("nodeName"):
        slim_spec["nodeName"] = spec["nodeName"]
    states = ("name", "restartCount", "state", "lastState")
    return {
        "apiVersion": pod.get("apiVersion", "v1"),
        "kind": pod.get("kind", "Pod"),
        "metadata": {k: meta[k] for k in kept if k in meta},
        "spec": slim_spec,
        "status": {
            "phase": status.get("phase", "Pending"),
            "containerStatuses": [
                {k: c[k] for k in states if k in c} for c in status.get("containerStatuses") or []
            ],
        },
    }


def _restarts(pod: Obj) -> list[int]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return [int(c.get("restartCount") or 0) for c in statuses]


def _owner(obj: Obj | None) -> tuple[str, str] | None:
    if obj is None:
        return None
    meta = obj["metadata"]
    owner = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
    return (meta.get("namespace", ""), owner) if owner else None


def _matters(old: Obj, new: Obj) -> bool:
    """Whether a change to a child concerns its owner: its spec, labels or annotations (drift to
    repair), or a Deployment's status (readiness). The status other controllers keep writing on
    autoscalers and disruption budgets does not: waking owners for it would reconcile every
    ModelDeployment every HPA sync period, for nothing."""
    if new.get("kind") == "Deployment" and old.get("status") != new.get("status"):
        return True
    before, after = old["metadata"], new["metadata"]
    return (
        old.get("spec") != new.get("spec")
        or before.get("labels") != after.get("labels")
        or before.get("annotations") != after.get("annotations")
        or before.get("deletionTimestamp") != after.get("deletionTimestamp")
    )


class Caches:
    """Every informer the operator runs, and reads across them."""

    def __init__(
        self,
        client: AsyncClient,
        namespaces: Iterable[str],
        wake: Wake,
        *,
        capacity: bool,
        routes: Iterable[RouteKind] = (),
        on_relist: Callable[[], object] | None = None,
    ) -> None:
        scopes = list(namespaces) or ["*"]
        self.wake = wake
        self.on_relist = on_relist
        self.model_deployments = Store()
        self.children = {kind: Store(LABEL_DEPLOYMENT) for kind in _CHILDREN}
        self.pods = Store(LABEL_DEPLOYMENT)
        self.nodes = Store()
        self.capacity = capacity
        self.informers: list[Informer] = []
        for ns in scopes:
            self._add(
                f"{KIND} in {ns}",
                client,
                _MODEL_DEPLOYMENT,
                ns,
                None,
                self.model_deployments,
                self._on_model_deployment,
            )
            for kind, res in _CHILDREN.items():
                self._add(
                    f"{kind} in {ns}", client, res, ns, MANAGED, self.children[kind], self._on_child
                )
        self.route_kinds = {r.kind: r for r in routes}
        self.routes = {kind: Store() for kind in self.route_kinds}
        self._route_informers: dict[str, list[Informer]] = {}
        for route in self.route_kinds.values():
            res = _generic(f"{route.group}/{route.version}", route.kind, route.plural)
            for ns in scopes:
                self._add(
                    f"{route.kind} in {ns}",
                    client,
                    res,
                    ns,
                    None,
                    self.routes[route.kind],
                    self._on_route,
                    # Its CRD may not be installed: then routes are read from the API server.
                    optional=True,
                )
                self._route_informers.setdefault(route.kind, []).append(self.informers[-1])
        if capacity:
            # Capacity needs every pod on every node, whoever owns it.
            self._add("Pod in *", client, _POD, "*", None, self.pods, self._on_pod, pods=True)
            self._add("Node", client, _NODE, None, None, self.nodes, None)
        else:
            for ns in scopes:
                self._add(
                    f"Pod in {ns}", client, _POD, ns, MANAGED, self.pods, self._on_pod, pods=True
                )
        self._tasks: list[asyncio.Task[None]] = []

    def _add(
        self,
        name: str,
        client: AsyncClient,
        res: type[Resource],
        namespace: str | None,
        labels: dict[str, str] | None,
        store: Store,
        on_change: Callable[[Obj | None, Obj | None], None] | None,
        optional: bool = False,
        pods: bool = False,
    ) -> None:
        lister, watcher = source(client, res, namespace, labels)
        self.informers.append(
            Informer(
                name,
                lister,
                watcher,
                store,
                on_change,
                transform=slim_pod if pods else slim,
                namespace=namespace,
                optional=optional,
                on_relist=self.on_relist,
            )
        )

    # --- events ----------------------------------------------------------------------------

    def _on_model_deployment(self, old: Obj | None, new: Obj | None) -> None:
        meta = (new or old or {}).get("metadata") or {}
        self.wake(meta.get("namespace", ""), meta.get("name", ""))

    def _on_child(self, old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None and not _matters(old, new):
            return
        self._wake_owners(old, new)

    def _wake_owners(self, old: Obj | None, new: Obj | None) -> None:
        for owner in {_owner(old), _owner(new)} - {None}:
            assert owner is not None
            self.wake(*owner)

    def _on_route(self, old: Obj | None, new: Obj | None) -> None:
        """A route made, removed or edited by someone else (the operator's own writes come back
        with a version already stored, and wake nobody): the ModelDeployments that steer it
        look again, to take it up or to put their weights back."""
        if old is not None and new is not None and old.get("spec") == new.get("spec"):
            return  # status a gateway controller writes
        obj = new or old
        assert obj is not None
        route = self.route_kinds.get(obj.get("kind", ""))
        if route is None:
            return
        namespace, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        for md in list(self.model_deployments):
            if md["metadata"].get("namespace") != namespace:
                continue
            rollout = (md.get("spec") or {}).get("rollout") or {}
            if (rollout.get("trafficRouter") or {}).get(route.router_field) == name:
                self.wake(namespace, md["metadata"]["name"])

    def route(self, kind: str, namespace: str, name: str) -> tuple[bool, Obj | None]:
        """(True, the route or None when there is none) from the cache of `kind`; (False, None)
        when that kind is not cached in `namespace` (its CRD not served, or not listable):
        the caller reads the API server."""
        for informer in self._route_informers.get(kind, ()):
            if informer.namespace in ("*", namespace):
                if not informer.served:
                    return False, None
                return True, self.routes[kind].get(namespace, name)
        return False, None

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        # A pod's owner cares when it comes, goes, is relabelled (the track label) or a
        # container restarts (an OOM kill is reported), not about every status change the
        # kubelet reports.
        changed = (
            old is None
            or new is None
            or old["metadata"].get("labels") != new["metadata"].get("labels")
            or _restarts(old) != _restarts(new)
        )
        if changed:
            self._wake_owners(old, new)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(i.run(), name=i.name) for i in self.informers]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    async def wait_synced(self) -> None:
        """Returns once every cache holds its first complete LIST."""
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    def size(self) -> int:
        stores = [
            self.model_deployments,
            self.pods,
            self.nodes,
            *self.children.values(),
            *self.routes.values(),
        ]
        return sum(len(s) for s in stores)

    def put(self, obj: Obj) -> None:
        """Write-through: the object a write returned, into the store of its kind."""
        kind = obj.get("kind", "")
        # Not `a or b`: an empty store is falsy.
        stores = {KIND: self.model_deployments, "Pod": self.pods, **self.children, **self.routes}
        store = stores.get(kind)
        if store is not None:
            store.upsert(slim_pod(obj) if kind == "Pod" else slim(obj))
