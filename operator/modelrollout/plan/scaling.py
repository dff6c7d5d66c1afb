"""The autoscaler and disruption budget of a ModelDeployment's revisions, as plain manifests."""

from __future__ import annotations

from typing import Any

from modelrollout.api.names import LABEL_DEPLOYMENT
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.plan.children import Manifest, Owner, common_labels, object_metadata

DEFAULT_CPU_TARGET = 70
RPS_METRIC = "modelserver_requests_per_second"


def autoscaler(
    owner: Owner,
    spec: ModelDeploymentSpec,
    target_deployment: str,
    *,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    name: str | None = None,
) -> Manifest:
    """An HPA for one revision's Deployment; bounds default to spec.autoscaling."""
    scaling = spec.autoscaling
    metrics: list[dict[str, Any]] = []
    cpu_target = scaling.target_cpu_utilization
    if cpu_target is None and scaling.target_requests_per_second is None:
        cpu_target = DEFAULT_CPU_TARGET
    if cpu_target is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": cpu_target},
                },
            }
        )
    if scaling.target_requests_per_second is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": RPS_METRIC},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": _quantity(scaling.target_requests_per_second),
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_metadata(owner, name or owner.name, common_labels(owner)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": target_deployment,
            },
            "minReplicas": min_replicas if min_replicas is not None else scaling.min_replicas,
            "maxReplicas": max_replicas if max_replicas is not None else scaling.max_replicas,
            "metrics": metrics,
        },
    }


def disruption_budget(owner: Owner) -> Manifest:
    """At most one pod of the model down at a time during node drains; never blocks a drain
    of a single-replica deployment (maxUnavailable rather than minAvailable)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(owner, owner.name, common_labels(owner)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {LABEL_DEPLOYMENT: owner.name}},
        },
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity for a rate: whole numbers as-is, fractions in milli-units."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"
