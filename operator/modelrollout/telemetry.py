"""The operator's own Prometheus metrics, on an injected registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelrollout.api.status import FeatureDriftStatus

if TYPE_CHECKING:
    from modelrollout.k8s.caches import Caches
    from modelrollout.k8s.workqueue import Key, Result, WorkQueue


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reconcile_duration = Histogram(
            "modelrollout_reconcile_duration_seconds",
            "Time to reconcile one ModelDeployment.",
            ["namespace"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.reconcile_errors = Counter(
            "modelrollout_reconcile_errors_total",
            "Reconciles that failed, by the kind of failure.",
            ["namespace", "reason"],
            registry=registry,
        )
        self.children_applied = Counter(
            "modelrollout_children_applied_total",
            "Child objects patched because they differed from the desired state.",
            ["kind"],
            registry=registry,
        )
        self.analyses = Counter(
            "modelrollout_analysis_total",
            "Canary and bake analysis windows judged, by verdict.",
            ["namespace", "verdict"],
            registry=registry,
        )
        self.managed = Gauge(
            "modelrollout_managed_modeldeployments",
            "ModelDeployments the operator currently reconciles.",
            registry=registry,
        )
        self.phase = Gauge(
            "modelrollout_modeldeployment_phase",
            "1 for the current phase of each ModelDeployment.",
            ["namespace", "name", "phase"],
            registry=registry,
        )
        self.work_duration = Histogram(
            "modelrollout_workqueue_work_duration_seconds",
            "Time one key spent with a worker (a reconcile, with its writes).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.retries = Counter(
            "modelrollout_workqueue_retries_total",
            "Keys put back with a backoff after a failed reconcile.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "modelrollout_workqueue_depth",
            "Keys due and waiting for a worker.",
            registry=registry,
        )
        self.queue_oldest = Gauge(
            "modelrollout_workqueue_oldest_seconds",
            "How long the longest-waiting due key has waited for a worker.",
            registry=registry,
        )
        self.queued = Gauge(
            "modelrollout_workqueue_keys",
            "Keys in the queue, due now or later (resyncs and requeues included).",
            registry=registry,
        )
        self.cached = Gauge(
            "modelrollout_cache_objects",
            "Objects held by the watch-fed caches.",
            registry=registry,
        )
        self.notifications = Counter(
            "modelrollout_notifications_total",
            "Notifications finished per notifier: delivered, or failed after every attempt.",
            ["notifier", "result"],
            registry=registry,
        )
        self.notification_attempt_failures = Counter(
            "modelrollout_notification_attempt_failures_total",
            "Notification delivery attempts that failed (each is retried with backoff).",
            ["notifier"],
            registry=registry,
        )
        self.notifications_deferred = Counter(
            "modelrollout_notifications_deferred_total",
            "Notifications left in status for a later reconcile because the queue was full.",
            registry=registry,
        )
        self.hook_runs = Counter(
            "modelrollout_hook_runs_total",
            "Rollout hook runs finished, by hook point and result (passed or failed).",
            ["namespace", "at", "result"],
            registry=registry,
        )
        self.drift = Gauge(
            "modelrollout_input_drift",
            "Population stability index of each profiled input feature of a ModelDeployment's "
            "stable against its reference profile (status.drift).",
            ["namespace", "name", "input", "feature"],
            registry=registry,
        )
        self.drifted = Gauge(
            "modelrollout_input_drifted",
            "1 while a ModelDeployment's DataDrift condition is True.",
            ["namespace", "name"],
            registry=registry,
        )
        self._drift_keys: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def observe_run(self, _key: Key, seconds: float, result: Result) -> None:
        self.work_duration.observe(seconds)
        if result.failed:
            self.retries.inc()

    def watch_queue(self, queue: WorkQueue, caches: Caches) -> None:
        """Read the queue's and caches' sizes at each scrape."""
        self.queue_depth.set_function(queue.depth)
        self.queue_oldest.set_function(queue.oldest_age)
        self.queued.set_function(lambda: len(queue))
        self.cached.set_function(caches.size)

    def export_drift(
        self,
        namespace: str,
        name: str,
        drift: Sequence[FeatureDriftStatus],
        drifted: bool | None = None,
    ) -> None:
        """One series per scored feature (features no longer scored are removed), and whether
        DataDrift is True (None: no profile, no series)."""
        if drifted is None:
            self.drifted.remove(namespace, name)  # no series is no error
        else:
            self.drifted.labels(namespace, name).set(1 if drifted else 0)
        now = {(d.input, d.feature) for d in drift}
        for key in self._drift_keys.get((namespace, name), set()) - now:
            self.drift.remove(namespace, name, *key)
        for d in drift:
            self.drift.labels(namespace, name, d.input, d.feature).set(d.score)
        self._drift_keys[(namespace, name)] = now
