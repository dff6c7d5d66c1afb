"""Pod settings: what collides with the operator's own fields is refused, naming the field
(admission refuses the same: see tests/integration/test_pod_settings.py)."""

from typing import Any

import pytest
from pydantic import ValidationError

from modelrollout.api.spec import ModelDeploymentSpec

VOL = {"name": "cache", "emptyDir": {}}


def parse(pod: dict[str, Any] | None = None, **extra: Any) -> ModelDeploymentSpec:
    body: dict[str, Any] = {"model": {"uri": "file:///m.onnx", "version": "v1"}} | extra
    if pod is not None:
        body["pod"] = pod
    return ModelDeploymentSpec.model_validate(body)


@pytest.mark.parametrize(
    ("pod", "serving", "fragment"),
    [
        ({"labels": {"modelrollout.io/track": "x"}}, None, "spec.pod.labels"),
        ({"labels": {"app.kubernetes.io/name": "x"}}, None, "spec.pod.labels"),
        ({"annotations": {"modelrollout.io/retry": "1"}}, None, "spec.pod.annotations"),
        ({"annotations": {"prometheus.io/port": "1"}}, None, "spec.pod.annotations"),
        ({"volumes": [{"name": "models", "emptyDir": {}}]}, None, "spec.pod.volumes"),
        ({"volumeMounts": [{"name": "cache", "mountPath": "/c"}]}, None, "not in spec.pod.volumes"),
        (
            {"volumes": [VOL], "volumeMounts": [{"name": "cache", "mountPath": "/models"}]},
            None,
            "/models",
        ),
        (
            {"volumes": [VOL], "volumeMounts": [{"name": "cache", "mountPath": "/models/x"}]},
            None,
            "/models",
        ),
        (
            {"volumes": [VOL], "volumeMounts": [{"name": "cache", "mountPath": "/"}]},
            None,
            "overlaps",
        ),
        (
            {"volumes": [VOL], "volumeMounts": [{"name": "cache", "mountPath": "/var/run"}]},
            None,
            "/var/run/secrets/modelrollout/token",
        ),
        ({"envFrom": [{"prefix": "X_"}]}, None, "spec.pod.envFrom"),
        ({"serviceAccountName": "Bad_Name"}, None, "serviceAccountName"),
        ({"nodeName": "n1"}, None, "nodeName"),
        (
            None,
            {"env": [{"name": "MODELSERVER_MODEL_URI", "value": "file:///x"}]},
            "spec.serving.env",
        ),
        (None, {"env": [{"name": "MODELSERVER_REVISION", "value": "r"}]}, "spec.serving.env"),
        (None, {"port": 9000, "metricsPort": 9000}, "metricsPort must differ"),
        (None, {"grpc": {"port": 8080}}, "spec.serving.grpc.port must differ"),
        (None, {"grpc": {"port": 9090}}, "spec.serving.grpc.port must differ"),
        (None, {"port": 8081, "grpc": {}}, "spec.serving.grpc.port must differ"),
        (None, {"env": [{"name": "MODELSERVER_GRPC_PORT", "value": "1"}]}, "spec.serving.env"),
        (None, {"env": [{"name": "MODELSERVER_REFERENCE_URI", "value": "x"}]}, "spec.serving.env"),
    ],
)
def test_collisions_refused_naming_the_field(
    pod: dict[str, Any] | None, serving: dict[str, Any] | None, fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse(pod, **({"serving": serving} if serving else {}))
    assert fragment in str(info.value)


def test_accepted_settings_round_trip() -> None:
    pod = {
        "serviceAccountName": "model-reader",
        "imagePullSecrets": [{"name": "registry"}],
        "envFrom": [{"configMapRef": {"name": "tuning"}, "prefix": "T_"}],
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c"}}],
        "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/model", "readOnly": False}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "topologySpreadConstraints": [],
        "priorityClassName": "serving-high",
        "labels": {"team": "fraud"},
        "annotations": {"sidecar.istio.io/inject": "true"},
    }
    parsed = parse(pod, serving={"env": [{"name": "MODELSERVER_LOG_LEVEL", "value": "debug"}]})
    # Free-form Kubernetes types are kept exactly as written.
    assert parsed.wire()["pod"] == pod | {"automountServiceAccountToken": False}
