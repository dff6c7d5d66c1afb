"""The operator's own Prometheus metrics, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
