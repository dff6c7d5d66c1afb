"""Pod settings on the real control plane: the API server refuses what collides with the
operator's fields, naming it, and the Deployment carries the merged pod spec."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Models
from .kube import Kube, OperatorProcess, model_deployment, revision, wait_for

pytestmark = pytest.mark.integration

MODEL = {"uri": "/m.onnx", "version": "v1"}
VOL = {"name": "cache", "emptyDir": {}}

COLLISIONS = [
    ({"serving": {"port": 9090}}, "spec.serving.metricsPort"),
    ({"serving": {"grpc": {"port": 9090}}}, "spec.serving.grpc.port"),
    ({"serving": {"env": [{"name": "MODELSERVER_MODEL_URI", "value": "/x"}]}}, "spec.serving.env"),
    ({"pod": {"labels": {"modelrollout.io/track": "canary"}}}, "spec.pod.labels"),
    ({"pod": {"annotations": {"prometheus.io/port": "1"}}}, "spec.pod.annotations"),
    ({"pod": {"volumes": [{"name": "models", "emptyDir": {}}]}}, "spec.pod.volumes"),
    (
        {"pod": {"volumes": [VOL], "volumeMounts": [{"name": "cache", "mountPath": "/models"}]}},
        "spec.pod.volumeMounts",
    ),
    ({"pod": {"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}}, "spec.pod.volumeMounts"),
]


@pytest.mark.parametrize(("extra", "field"), COLLISIONS, ids=[f for _, f in COLLISIONS])
def test_collisions_refused_at_admission(kube: Kube, extra: dict[str, Any], field: str) -> None:
    result = kube.apply(model_deployment("bad", {"model": MODEL} | extra))
    assert result.returncode != 0, "the API server accepted a colliding spec"
    assert "is invalid" in result.stderr
    assert field in result.stderr, result.stderr
    assert kube.get("mdep", "bad") is None


def test_deployment_carries_the_merged_pod_spec(
    kube: Kube, operator: OperatorProcess, models: Models
) -> None:
    pod = {
        "serviceAccountName": "model-reader",
        "imagePullSecrets": [{"name": "registry"}],
        "envFrom": [{"configMapRef": {"name": "tuning", "optional": True}}],
        "volumes": [{"name": "cache", "configMap": {"name": "tuning", "optional": True}}],
        "volumeMounts": [{"name": "cache", "mountPath": "/etc/tuning"}],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "preference": {
                            "matchExpressions": [
                                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                            ]
                        },
                    }
                ]
            }
        },
        "labels": {"team": "fraud"},
        "annotations": {"example.com/owner": "fraud"},
    }
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "model-reader"}})
    spec = {
        "model": {"uri": models.small.uri, "sha256": models.small.sha256, "version": "v1"},
        "hardware": {"mode": "cpu"},
        "serving": {"env": [{"name": "MODELSERVER_LOG_LEVEL", "value": "debug"}]},
        "pod": pod,
    }
    m = model_deployment("pods", spec)
    result = kube.apply(m)
    assert result.returncode == 0, result.stderr
    rev = revision(m)
    dep = wait_for(lambda: kube.get("deployment", f"pods-{rev}"), timeout=60, what="Deployment")
    template = dep["spec"]["template"]
    ps = template["spec"]
    (container,) = ps["containers"]
    assert ps["serviceAccountName"] == "model-reader"
    assert ps["imagePullSecrets"] == [{"name": "registry"}]
    assert ps["affinity"] == pod["affinity"]
    assert {v["name"] for v in ps["volumes"]} >= {"models", "tmp", "cache"}
    assert {"name": "cache", "mountPath": "/etc/tuning", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert container["envFrom"] == pod["envFrom"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELSERVER_LOG_LEVEL"] == "debug"
    assert env["MODELSERVER_MODEL_URI"] == models.small.uri
    # The operator's labels stay, so the revision's selector and Services still find the pods.
    assert template["metadata"]["labels"]["team"] == "fraud"
    assert template["metadata"]["labels"]["modelrollout.io/revision"] == rev
    assert template["metadata"]["annotations"]["example.com/owner"] == "fraud"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    spread = ps["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    # The scheduler took the spread and the affinity: the pods run on the kwok nodes.
    pods = wait_for(
        lambda: (
            [
                p
                for p in kube.list("pods", f"modelrollout.io/revision={rev}")
                if p["spec"].get("nodeName")
            ]
            or None
        ),
        timeout=60,
        what="scheduled pods",
    )
    assert pods[0]["spec"]["serviceAccountName"] == "model-reader"
