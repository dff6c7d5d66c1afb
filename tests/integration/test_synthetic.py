"""Synthetic traffic end to end: a model nobody sends requests to is still judged. The operator
sends the sample requests from a ConfigMap to the canary (model server processes standing in
for its pods, reached through the local gateway), Prometheus counts them (labelled apart by the
model server) and the sequential analysis counts them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hack.gateway import Gateway
from hack.loadgen import infer_payload
from hack.localcluster import LocalCluster
from hack.podrunner import PodRunner
from hack.prometheus import Prometheus

from .conftest import Models
from .kube import Kube, OperatorProcess, model_deployment, revision, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def via_gateway(operator: OperatorProcess, gateway: Gateway) -> Iterator[OperatorProcess]:
    """The operator runs outside the cluster: it reaches a canary's Service through the local
    gateway (`/<namespace>/<service>/...`), as MODELROLLOUT_CANARY_URL_TEMPLATE says."""
    template = gateway.url + "/{namespace}/{service}"
    operator.stop()
    operator.env["MODELROLLOUT_CANARY_URL_TEMPLATE"] = template
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        operator.env.pop("MODELROLLOUT_CANARY_URL_TEMPLATE")
        operator.start()


def manifest(models: Models, prometheus: Prometheus, version: str) -> dict[str, Any]:
    return model_deployment(
        "quiet",
        {
            "model": {"uri": models.small.uri, "sha256": models.small.sha256, "version": version},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            "rollout": {
                # Held after the analysis: one that passes at its first read would promote
                # (and clear the analysis from status) before the test could read it.
                "steps": [{"setWeight": 50}, {"analysis": {}}, {"pause": {}}],
                "analysis": {
                    "interval": "2s",
                    "minRequests": 20,
                    "maxLatencyRatio": 3,
                    "prometheusUrl": prometheus.url,
                },
                "syntheticTraffic": {
                    "ratePerSecond": 10,
                    "maxRequests": 400,
                    "samples": {"configMap": "quiet-samples"},
                },
                "trafficRouter": {"type": "gatewayAPI", "httpRoute": "quiet"},
                "bakeTime": "0s",
                "scaleDownDelay": "2s",
                "progressDeadline": "3m",
            },
        },
    )


def test_a_model_without_traffic_gets_its_canary_judged_on_synthetic_requests(
    kube: Kube,
    router_crds: LocalCluster,
    via_gateway: OperatorProcess,
    modelservers: PodRunner,
    prometheus: Prometheus,
    models: Models,
) -> None:
    samples = [infer_payload(4, input_name="input"), infer_payload(4, rows=2, input_name="input")]
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "quiet-samples"},
            "data": {"requests.json": json.dumps(samples)},
        }
    )
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "quiet"},
        "spec": {
            "parentRefs": [{"name": "public-gateway"}],
            "rules": [{"backendRefs": [{"name": "quiet-stable", "port": 8080, "weight": 100}]}],
        },
    }
    assert kube.apply(route).returncode == 0
    v1 = manifest(models, prometheus, "v1")
    assert kube.apply(v1).returncode == 0

    def status() -> dict[str, Any]:
        return dict((kube.get("mdep", "quiet") or {}).get("status") or {})

    wait_for(lambda: status().get("stableRevision") == revision(v1), timeout=90, what="v1")
    v2 = manifest(models, prometheus, "v2")
    assert kube.apply(v2).returncode == 0
    # Nobody else sends a request: only the synthetic traffic can get the canary judged.
    wait_for(lambda: status().get("canaryRevision") == revision(v2), timeout=60, what="canary")
    seen = wait_for(
        lambda: (s := status()).get("synthetic", {}).get("sent", 0) >= 20 and s,
        timeout=90,
        what="synthetic requests counted",
    )
    assert seen["synthetic"]["revision"] == revision(v2)

    def judged_on_them() -> dict[str, Any] | None:
        s = status()
        last = (s.get("rollout") or {}).get("lastAnalysis") or {}
        return s if last.get("canaryRequests", 0) >= 20 else None

    judged = wait_for(judged_on_them, timeout=120, what="the analysis counting them")
    assert judged["rollout"]["lastAnalysis"]["canaryErrors"] == 0
    # Kept apart in the evidence, and no share of the route: they never passed it.
    canary = judged["rollout"]["evidence"]["canary"]
    assert canary["synthetic"] == canary["requests"] > 0
    share = [c for c in judged.get("conditions", []) if c["type"] == "RouteNotHonoured"]
    assert all(c["status"] == "False" for c in share), share
    # The model server counted them apart, under the canary's revision, and only there.
    query = 'sum by (revision) (modelserver_synthetic_requests_total{namespace="%s"})'
    by_revision = {
        r["metric"]["revision"]: float(r["value"][1])
        for r in prometheus.query(query % kube.namespace)
    }
    assert set(by_revision) == {revision(v2)}
    assert by_revision[revision(v2)] >= 20
