"""kopf wiring: the only module that imports kopf.

The work is done by a queue of ModelDeployment keys (k8s/workqueue.py) fed by watch-fed caches
(k8s/caches.py): a change to an object, or to one of its children or pods, queues its key;
workers reconcile keys from memory, a bounded number at a time, and write through the API.

kopf still runs one daemon per ModelDeployment, but the daemon does no work: it is this
replica's claim on the key. kopf starts it when it sees the object (in this replica's shard),
and stops it when the object is deleted (then removes its finalizer) or when peering pauses
this replica for a peer of higher priority; the queue works only on claimed keys.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import secrets
from typing import Any

import kopf
from prometheus_client import CollectorRegistry, start_http_server

from modelrollout.api import GROUP, PLURAL, VERSION
from modelrollout.k8s.caches import Caches, RouteKind
from modelrollout.k8s.cluster import Cluster, make_client
from modelrollout.k8s.errors import api_unavailable
from modelrollout.k8s.workqueue import QueueSettings, Result, WorkQueue, in_shard
from modelrollout.reconciler import Reconciler
from modelrollout.routers.registry import route_apis, router_for
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics

log = logging.getLogger(__name__)

Key = tuple[str, str]
API_BACKOFFS_S = (1.0, 2.0, 3.0, *(5.0,) * 18)


def _configure_kopf(settings: kopf.OperatorSettings, config: OperatorSettings) -> None:
    # Keep kopf's bookkeeping under this project's API group, not kopf's own.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # The reconciler records its own, meaningful events; kopf's per-handler ones are noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    # kopf gives up on a request after its last back-off, and a watch that gives up stops the
    # operator: 18 s of retries ended it when kube-apiserver restarted. About 95 s now, in
    # steps of at most 5 s so the operator is back within seconds of the API server.
    settings.networking.error_backoffs = API_BACKOFFS_S
    if config.peering:
        # kopf pauses every operator that sees a peer of equal priority: distinct priorities
        # make exactly one replica active, and a standby takes over when its peer goes away.
        settings.peering.priority = (
            config.peering_priority
            if config.peering_priority is not None
            else secrets.randbelow(2**31 - 1) + 1
        )
        settings.peering.lifetime = config.peering_lifetime_seconds


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorSettings()
    _configure_kopf(settings, config)
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.bind_address, registry=registry)
    client = make_client(config.kubeconfig)

    async def work(key: Key) -> Result:
        try:
            outcome = await reconciler.reconcile(*key)
        except Exception as exc:
            if not api_unavailable(exc):
                raise
            # No connection to the API server: retried once a cache lists again (one line,
            # not a traceback per key and retry through an outage).
            log.warning("reconcile of %s/%s: API server unreachable (%r)", *key, exc)
            return Result(failed=True, unavailable=True)
        return Result(outcome.requeue_after, outcome.failed, outcome.unavailable)

    queue = WorkQueue(
        work,
        QueueSettings(workers=config.workers, resync_seconds=config.resync_seconds),
        on_run=metrics.observe_run,
    )
    caches = Caches(
        client,
        config.namespaces,
        lambda namespace, name: queue.add((namespace, name)),
        capacity=config.hardware.capacity_check,
        routes=[
            RouteKind(api.group, api.version, api.kind, api.plural, field)
            for field, api in route_apis().items()
        ],
        # The API server answers again after an outage: what failed for it runs now.
        on_relist=queue.retry_unavailable,
    )
    reconciler = Reconciler(
        Cluster(client, caches),
        config,
        metrics,
        router_for=functools.partial(router_for, cache=caches),
    )
    metrics.watch_queue(queue, caches)
    caches.start()
    memo.config = config
    memo.metrics = metrics
    memo.caches = caches
    memo.queue = queue
    memo.reconciler = reconciler
    memo.worker = asyncio.create_task(queue.run(caches.wait_synced), name="workqueue")
    # A finished hook puts its ModelDeployment back on the queue instead of waiting for a requeue.
    reconciler.companions.set_wake(lambda namespace, name: queue.add((namespace, name)))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.worker.cancel()
    await asyncio.gather(memo.worker, return_exceptions=True)
    await memo.caches.stop()
    reconciler: Reconciler = memo.reconciler
    await reconciler.companions.close()
    await reconciler.cluster.client.close()


@functools.cache
def _shard() -> tuple[int, int]:
    config = OperatorSettings()
    return config.shard_index, config.shard_count


def _mine(name: str, namespace: str, **_: Any) -> bool:
    """In this replica's shard (shard_index of shard_count, by a hash of namespace/name)."""
    return in_shard(namespace, name, *_shard())


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10, when=_mine)  # type: ignore[arg-type]
async def claim(
    name: str, namespace: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    queue: WorkQueue = memo.queue
    key = (namespace, name)
    queue.own(key)
    memo.metrics.managed.inc()
    try:
        await stopped.wait()
    finally:
        queue.disown(key)
        memo.metrics.managed.dec()
        memo.reconciler.forget(namespace, name)


PLAIN_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the exception, if any),
    encoded by json.dumps, so quotes and newlines in a message stay valid JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: str) -> None:
    """Plain text or JSON lines on stderr, at INFO, for the operator and kopf alike."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(PLAIN_LOG_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run() -> None:
    """Entry point: run the operator with settings from the environment."""
    config = OperatorSettings()
    configure_logging(config.log_format)
    if config.kubeconfig:
        # kopf's own login reads $KUBECONFIG; point it at the same file the client uses.
        os.environ["KUBECONFIG"] = str(config.kubeconfig)
    liveness = (
        f"http://{config.bind_address}:{config.health_port}/healthz" if config.health_port else None
    )
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=config.peering is None,
        peering_name=config.peering,
        liveness_endpoint=liveness,
    )
