"""kopf wiring: the only module that imports kopf.

Each ModelDeployment gets one daemon that runs the level-based reconcile in a loop, sleeping
until its requeue time or until something wakes it: a spec change, or an event on one of its
children (which is how a child deleted or edited by hand is put back within seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from typing import Any

import kopf
from prometheus_client import CollectorRegistry, start_http_server

from modelrollout.api import GROUP, PLURAL, VERSION
from modelrollout.api.names import CHILD_KINDS, LABEL_DEPLOYMENT, MANAGED_BY
from modelrollout.k8s.cluster import Cluster, make_client
from modelrollout.reconciler import Reconciler
from modelrollout.settings import OperatorSettings
from modelrollout.telemetry import OperatorMetrics

log = logging.getLogger(__name__)

Key = tuple[str, str]
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorSettings()
    # Keep kopf's bookkeeping under this project's API group, not kopf's own.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # The reconciler records its own, meaningful events; kopf's per-handler ones are noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]
    if config.peering:
        # kopf pauses every operator that sees a peer of equal priority: distinct priorities
        # make exactly one replica active, and a standby takes over when its peer goes away.
        settings.peering.priority = (
            config.peering_priority
            if config.peering_priority is not None
            else secrets.randbelow(2**31 - 1) + 1
        )

    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.bind_address, registry=registry)
    memo.config = config
    memo.metrics = metrics
    memo.reconciler = Reconciler(Cluster(make_client(config.kubeconfig)), config, metrics)
    memo.wakeups = {}


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    await reconciler.cluster.client.close()


def _wake(memo: kopf.Memo, namespace: str | None, name: str | None) -> None:
    if namespace and name:
        wakeups: dict[Key, asyncio.Event] = memo.wakeups
        event = wakeups.get((namespace, name))
        if event is not None:
            event.set()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)  # type: ignore[arg-type]
async def reconcile_loop(
    name: str, namespace: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    reconciler: Reconciler = memo.reconciler
    config: OperatorSettings = memo.config
    wakeups: dict[Key, asyncio.Event] = memo.wakeups
    key = (namespace, name)
    wake = wakeups.setdefault(key, asyncio.Event())
    # Leave the loop as soon as kopf asks (object deleted, operator stopping) instead of
    # waiting to be cancelled.
    stop = asyncio.ensure_future(stopped.wait())
    memo.metrics.managed.inc()
    try:
        while not stopped:
            wake.clear()
            outcome = await reconciler.reconcile(namespace, name)
            delay = outcome.requeue_after or config.resync_seconds
            woken = asyncio.ensure_future(wake.wait())
            await asyncio.wait({woken, stop}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
    finally:
        stop.cancel()
        wakeups.pop(key, None)
        memo.metrics.managed.dec()
        reconciler.forget(namespace, name)


@kopf.on.update(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
async def on_update(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    _wake(memo, namespace, name)


async def on_child_event(
    labels: dict[str, str], namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    _wake(memo, namespace, labels.get(LABEL_DEPLOYMENT))


for _api_version, _kind, _plural in CHILD_KINDS:
    _group, _, _version = _api_version.rpartition("/")
    kopf.on.event(_group, _version, _plural, labels=MANAGED)(on_child_event)  # type: ignore[arg-type]


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
