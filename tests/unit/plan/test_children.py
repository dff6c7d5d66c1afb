"""Child manifests: the fields that no integration test reads back."""

import json
from typing import Any

import pytest

from modelrollout.api.pod import TOKEN_DIR
from modelrollout.api.serving import GrpcSpec
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.k8s.cluster import observe_deployment
from modelrollout.plan import children, scaling
from modelrollout.plan.children import Owner, Placement

OWNER = Owner("m", "ns", "uid")
PLACEMENT = Placement(
    tier="gpu",
    requests={"nvidia.com/gpu": "1"},
    limits={"nvidia.com/gpu": "1"},
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
    threads=2,
    provider="cuda",
    scale_down_first=True,
)


def spec(**extra: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": {"uri": "file:///m.onnx", "version": "v1", "name": "served"}} | extra
    )


@pytest.mark.parametrize(
    ("autoscaling", "metrics"),
    [
        ({}, [("Resource", 70)]),
        ({"targetCpuUtilization": 55}, [("Resource", 55)]),
        ({"targetRequestsPerSecond": 12.5}, [("Pods", "12500m")]),
        (
            {"targetCpuUtilization": 80, "targetRequestsPerSecond": 40},
            [("Resource", 80), ("Pods", "40")],
        ),
    ],
)
def test_autoscaler_targets(autoscaling: dict[str, Any], metrics: list[tuple[str, Any]]) -> None:
    hpa = scaling.autoscaler(OWNER, spec(autoscaling=autoscaling), "m-abc")
    seen = [
        (m["type"], m["resource"]["target"]["averageUtilization"])
        if m["type"] == "Resource"
        else (m["type"], m["pods"]["target"]["averageValue"])
        for m in hpa["spec"]["metrics"]
    ]
    assert seen == metrics
    if any(kind == "Pods" for kind, _ in metrics):
        pods = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
        assert pods["pods"]["metric"]["name"] == "modelserver_requests_per_second"


def test_deployment_env_placement_and_user_overrides() -> None:
    s = spec(
        serving={
            "env": [{"name": "MODELSERVER_THREADS", "value": "7"}, {"name": "EXTRA", "value": "x"}],
            "batching": {"maxBatchSize": 16, "window": "3ms"},
        }
    )
    dep = children.deployment(OWNER, s, "abc", "img:1", PLACEMENT, track="canary")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELSERVER_MODEL_NAME"] == "served"
    assert env["MODELSERVER_TRACK"] == "canary"
    assert env["MODELSERVER_EXECUTION_PROVIDER"] == "cuda"
    assert env["MODELSERVER_BATCH_MAX_SIZE"] == "16"
    assert env["MODELSERVER_BATCH_WINDOW_MS"] == "3"
    # The user's variables come last and win.
    assert env["MODELSERVER_THREADS"] == "7"
    assert env["EXTRA"] == "x"
    assert "MODELSERVER_MODEL_SHA256" not in env
    assert "MODELSERVER_REFERENCE_URI" not in env  # no profile: default bins
    assert container["resources"] == {
        "requests": {"nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert "replicas" not in dep["spec"]


def test_secrets_are_referenced_never_copied() -> None:
    s = spec(
        model={
            "uri": "s3://models/m.onnx",
            "version": "v1",
            "credentialsSecret": "store-creds",
        },
        serving={
            "env": [
                {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api"}}},
                {"name": "PLAIN", "value": "p"},
            ],
            "auth": {"tokenSecret": {"name": "server-token", "key": "token"}},
        },
    )
    dep = children.deployment(OWNER, s, "abc", "img:1", PLACEMENT, track="stable")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["API_KEY"] == {
        "name": "API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api"}},
    }
    assert env["PLAIN"] == {"name": "PLAIN", "value": "p"}
    assert env["MODELSERVER_TOKEN_FILE"]["value"] == f"{TOKEN_DIR}/token"
    assert container["envFrom"] == [{"secretRef": {"name": "store-creds"}}]
    mount = {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True}
    assert mount in container["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == "token")
    assert volume["secret"] == {
        "secretName": "server-token",
        "items": [{"key": "token", "path": "token"}],
        "defaultMode": 0o440,
    }
    # Without references the pod has none of it.
    plain = children.deployment(OWNER, spec(), "abc", "img:1", PLACEMENT, track="stable")
    (bare,) = plain["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in bare
    assert all(v["name"] != "token" for v in plain["spec"]["template"]["spec"]["volumes"])


def test_track_services_select_one_revision() -> None:
    svc = children.track_service(OWNER, spec(), "canary", "abc")
    assert svc["metadata"]["name"] == "m-canary"
    assert svc["spec"]["selector"] == {
        "modelrollout.io/deployment": "m",
        "modelrollout.io/revision": "abc",
    }
    assert children.service(OWNER, spec())["spec"]["selector"] == {
        "modelrollout.io/deployment": "m"
    }


@pytest.mark.parametrize(
    ("spec_sha", "pinned", "expected"),
    [(None, "b" * 64, "b" * 64), ("a" * 64, "b" * 64, "a" * 64), (None, None, None)],
)
def test_the_model_sha256_pinned_when_the_spec_gives_none(
    spec_sha: str | None, pinned: str | None, expected: str | None
) -> None:
    model = {"uri": "file:///m.onnx", "version": "v1"} | ({"sha256": spec_sha} if spec_sha else {})
    s = ModelDeploymentSpec.model_validate({"model": model})
    placement = Placement(tier="cpu-small", model_sha256=pinned)
    dep = children.deployment(OWNER, s, "r1", "img", placement)
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env.get("MODELSERVER_MODEL_SHA256") == expected


def test_the_deployment_records_the_revision_spec() -> None:
    s = spec(pod={"serviceAccountName": "reader"})
    dep = children.deployment(OWNER, s, "r1", "img", PLACEMENT)
    recorded = json.loads(dep["metadata"]["annotations"]["modelrollout.io/revision-spec"])
    assert recorded == {
        "model": s.model.wire(),
        "serving": s.serving.wire(),
        "hardware": s.hardware.wire(),
        "pod": s.pod.wire(),
    }
    assert observe_deployment(dep).revision_spec == recorded


def test_the_reference_profile_reaches_the_model_server() -> None:
    model = {"uri": "/m.onnx", "version": "v1", "reference": {"uri": "/p.json", "sha256": "a" * 64}}
    dep = children.deployment(OWNER, spec(model=model), "abc", "img:1", PLACEMENT, track="stable")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELSERVER_REFERENCE_URI"] == "/p.json"
    assert env["MODELSERVER_REFERENCE_SHA256"] == "a" * 64


def test_grpc_port_on_the_pods_and_the_services_when_asked() -> None:
    s = spec(serving={"grpc": {"port": 9001}})
    dep = children.deployment(OWNER, s, "abc", "img:1", PLACEMENT)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELSERVER_GRPC_PORT"] == "9001"
    assert {"name": "grpc", "containerPort": 9001, "protocol": "TCP"} in container["ports"]
    # Probes stay on REST: the kubelet's HTTP probes need no gRPC health service.
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    for svc in (
        children.service(OWNER, s),
        children.track_service(OWNER, s, "stable", "abc"),
        children.track_service(OWNER, s, "canary", "def"),
    ):
        grpc = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
        assert grpc == {
            "name": "grpc",
            "port": 9001,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        }


def test_no_grpc_port_unless_asked() -> None:
    s = spec()
    dep = children.deployment(OWNER, s, "abc", "img:1", PLACEMENT)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "MODELSERVER_GRPC_PORT" not in {e["name"] for e in container["env"]}
    assert [p["name"] for p in container["ports"]] == ["http", "metrics"]
    assert [p["name"] for p in children.service(OWNER, s)["spec"]["ports"]] == ["http", "metrics"]
    # `grpc: {}` is the default port.
    assert spec(serving={"grpc": {}}).serving.grpc == GrpcSpec(port=8081)
