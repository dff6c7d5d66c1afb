"""Which changes in the caches wake a ModelDeployment: its own, its children's specs, labels and
annotations (drift), a Deployment's status (readiness), pods coming, going, relabelled or a
container restarting; not the status other controllers keep writing on autoscalers, budgets
and pods."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from modelrollout.k8s import informer as informer_module
from modelrollout.k8s.caches import Caches, RouteKind, slim_pod
from modelrollout.k8s.informer import Informer
from modelrollout.k8s.workqueue import Key, QueueSettings, Result, WorkQueue
from modelrollout.placement import pod_info
from modelrollout.plan.oom import oom_kills

OWNER = {"modelrollout.io/deployment": "iris"}


def child(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": f"iris-{kind.lower()}", "namespace": "ns", "labels": dict(OWNER)},
        "spec": {"replicas": 1},
        "status": {},
    } | fields


HTTPROUTE = RouteKind("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", "httpRoute")


def caches(capacity: bool = False) -> tuple[Caches, list[tuple[str, str]]]:
    woken: list[tuple[str, str]] = []
    made = Caches(
        object(),  # type: ignore[arg-type]  # no request is made before start()
        ["ns"],
        lambda ns, name: woken.append((ns, name)),
        capacity=capacity,
        routes=[HTTPROUTE],
    )
    return made, woken


def route(name: str = "web", weight: int = 100, **fields: Any) -> dict[str, Any]:
    refs = [{"name": "iris-stable", "weight": weight}]
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "5"},
        "spec": {"rules": [{"backendRefs": refs}]},
    } | fields


def model_deployment(name: str, router: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
        "spec": {"rollout": {"trafficRouter": router}},
    }


def test_status_written_by_other_controllers_wakes_nobody() -> None:
    made, woken = caches()
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        made._on_child(child(kind), child(kind, status={"currentReplicas": 1}))
    made._on_pod(child("Pod"), child("Pod", status={"phase": "Running"}))
    assert woken == []


def test_drift_readiness_and_pods_coming_wake_the_owner() -> None:
    made, woken = caches()
    made._on_child(child("Service"), child("Service", spec={"ports": []}))  # a hand edit
    made._on_child(child("Deployment"), child("Deployment", status={"readyReplicas": 1}))
    made._on_child(child("Deployment"), None)  # deleted
    made._on_pod(None, child("Pod"))
    relabelled = child("Pod")
    relabelled["metadata"]["labels"] = OWNER | {"modelrollout.io/track": "canary"}
    made._on_pod(child("Pod"), relabelled)
    assert woken == [("ns", "iris")] * 5


def test_one_informer_per_kind_and_namespace_and_cluster_wide_pods_for_capacity() -> None:
    made, _ = caches()
    assert sorted(i.name for i in made.informers) == sorted(
        [
            "ModelDeployment in ns",
            "Deployment in ns",
            "Service in ns",
            "HorizontalPodAutoscaler in ns",
            "PodDisruptionBudget in ns",
            "HTTPRoute in ns",
            "Pod in ns",
        ]
    )
    made, _ = caches(capacity=True)
    assert {"Pod in *", "Node"} <= {i.name for i in made.informers}
    assert "Pod in ns" not in {i.name for i in made.informers}
    assert not made.synced()


def test_a_container_restart_wakes_the_owner() -> None:
    """A restart may be an OOM kill, which the ModelDeployment reports (plan/oom.py)."""
    made, woken = caches()

    def pod(restarts: int, ready: bool = True) -> dict[str, Any]:
        statuses = [{"name": "modelserver", "restartCount": restarts, "ready": ready}]
        return child("Pod", status={"phase": "Running", "containerStatuses": statuses})

    made._on_pod(pod(0), pod(0, ready=False))
    assert woken == []
    made._on_pod(pod(0), pod(1))
    assert woken == [("ns", "iris")]


async def test_no_reconcile_starts_before_every_cache_has_listed() -> None:
    """The wiring handlers.py uses: the queue's workers wait for `Caches.wait_synced`, which
    waits for the first LIST of every informer (here one of them is slow)."""
    made, _ = caches()
    slow = asyncio.Event()

    def lister_for(informer: Informer) -> Callable[[], Awaitable[tuple[list[Any], str]]]:
        async def lister() -> tuple[list[Any], str]:
            if informer.name.startswith("Pod"):
                await slow.wait()
            return [], "1"

        return lister

    async def watcher(version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        await asyncio.Event().wait()
        yield "ADDED", {}

    for informer in made.informers:
        informer.lister = lister_for(informer)
        informer.watcher = watcher
    reconciled: list[Key] = []
    unsynced: list[Key] = []  # recorded, not raised: the queue would take a raise as a retry

    async def reconcile(key: Key) -> Result:
        (reconciled if made.synced() else unsynced).append(key)
        return Result()

    queue = WorkQueue(reconcile, QueueSettings(workers=2))
    queue.own(("ns", "iris"))
    made.start()
    worker = asyncio.create_task(queue.run(made.wait_synced))
    await asyncio.sleep(0.05)
    assert not made.synced()
    assert reconciled == unsynced == []
    slow.set()
    async with asyncio.timeout(2):
        while not reconciled:  # noqa: ASYNC110 - polling what the worker records
            await asyncio.sleep(0.01)
    assert reconciled == [("ns", "iris")]
    assert unsynced == [], "a reconcile started from an unsynced cache"
    worker.cancel()
    await made.stop()


def test_a_route_edited_by_someone_wakes_the_model_deployments_that_steer_it() -> None:
    made, woken = caches()
    made.model_deployments.upsert(
        model_deployment("iris", {"type": "gatewayAPI", "httpRoute": "web"})
    )
    made.model_deployments.upsert(
        model_deployment("other", {"type": "gatewayAPI", "httpRoute": "x"})
    )
    made.model_deployments.upsert(model_deployment("plain", {"type": "replicas"}))
    made._on_route(route(), route(status={"parents": []}))  # a gateway controller's status
    assert woken == []
    made._on_route(route(), route(weight=50))  # weights changed by hand
    made._on_route(None, route())  # created after the ModelDeployment
    assert woken == [("ns", "iris")] * 2


async def test_a_route_kind_not_served_is_synced_but_not_cached_and_listed_again(
    monkeypatch: Any,
) -> None:
    """A missing CRD must not hold every reconcile back; once its LIST succeeds (the CRD was
    installed later) the routes are read from the cache."""
    monkeypatch.setattr(informer_module, "OPTIONAL_RETRY_SECONDS", (0.01,))
    made, _ = caches()
    installed = asyncio.Event()

    async def lister() -> tuple[list[Any], str]:
        if not installed.is_set():
            raise RuntimeError("404 page not found")
        return [route()], "7"

    async def empty() -> tuple[list[Any], str]:
        return [], "1"

    async def watcher(version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        await asyncio.Event().wait()
        yield "ADDED", {}

    for informer in made.informers:
        informer.lister = lister if informer.name.startswith("HTTPRoute") else empty
        informer.watcher = watcher
    made.start()
    async with asyncio.timeout(2):
        await made.wait_synced()
    assert made.route("HTTPRoute", "ns", "web") == (False, None)
    installed.set()
    async with asyncio.timeout(2):
        while made.route("HTTPRoute", "ns", "web")[0] is False:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert made.route("HTTPRoute", "ns", "web") == (True, route())
    assert made.route("HTTPRoute", "ns", "absent") == (True, None)


async def test_a_relist_after_an_outage_runs_what_failed_for_the_api_server_at_once() -> None:
    """The wiring handlers.py uses: a reconcile that failed because the API server was down
    has backed off (here 16 s out); a cache listing again after its broken watch (the API server
    is back) puts it to work at once, not at the end of its backoff."""
    reconciled: list[bool] = []  # whether each run found the API server up

    async def reconcile(key: Key) -> Result:
        reconciled.append(up.is_set())
        return Result() if up.is_set() else Result(failed=True, unavailable=True)

    queue = WorkQueue(reconcile, QueueSettings(workers=1, backoff_base=16))
    made = Caches(
        object(),  # type: ignore[arg-type]
        ["ns"],
        lambda ns, name: queue.add((ns, name)),
        capacity=False,
        on_relist=queue.retry_unavailable,
    )
    up = asyncio.Event()
    broken = asyncio.Event()

    async def lister() -> tuple[list[Any], str]:
        return [], "1"

    async def watcher(version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        await broken.wait()  # the first watch breaks with the outage; the next one holds
        broken.clear()
        raise ConnectionError("API server gone")
        yield "ADDED", {}

    for informer in made.informers:
        informer.lister, informer.watcher = lister, watcher
    queue.own(("ns", "iris"))
    made.start()
    worker = asyncio.create_task(queue.run(made.wait_synced))
    async with asyncio.timeout(2):
        while not reconciled:  # noqa: ASYNC110 - polling what the worker records
            await asyncio.sleep(0.01)
    assert reconciled == [False]
    up.set()
    broken.set()  # a watch breaks; its informer lists again within a second
    async with asyncio.timeout(3):
        while reconciled == [False]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert reconciled == [False, True]
    worker.cancel()
    await made.stop()


def test_a_cached_pod_keeps_what_the_operator_reads_of_it() -> None:
    """Placement, OOM reports, the track label and the owner index read the same from a slim
    pod as from the whole one; env, volumes, probes and conditions are not kept."""
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    killed = {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "t"}}
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "iris-abc-1",
            "namespace": "ns",
            "uid": "u1",
            "labels": OWNER | {"modelrollout.io/revision": "abc"},
            "resourceVersion": "9",
            "managedFields": [{"manager": "kubelet"}],
            "ownerReferences": [{"kind": "ReplicaSet", "name": "iris-abc"}],
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "modelserver",
                    "image": "modelserver:1",
                    "env": [{"name": "X", "value": "y" * 1000}],
                    "resources": resources,
                    "readinessProbe": {"httpGet": {"path": "/v2/health/ready"}},
                }
            ],
            "initContainers": [{"name": "fetch", "resources": {"requests": {"cpu": "2"}}}],
            "volumes": [{"name": "model", "emptyDir": {}}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "modelserver", "restartCount": 1, "lastState": killed, "ready": True}
            ],
        },
    }
    slim = slim_pod(copy.deepcopy(pod))
    assert pod_info(slim) == pod_info(pod)
    assert oom_kills([slim]) == oom_kills([pod]) != ()
    assert slim["metadata"]["labels"] == pod["metadata"]["labels"]
    assert slim["spec"]["nodeName"] == "node-1"
    text = json.dumps(slim)
    for dropped in ("env", "volumes", "conditions", "managedFields", "readinessProbe"):
        assert dropped not in text

    made, _ = caches()
    made.put(copy.deepcopy(pod))
    assert made.pods.get("ns", "iris-abc-1") == slim
