"""Model stores on the real control plane: an s3:// model in auto mode (the README's
fraud-scorer) read by the operator from a real S3-compatible server with the spec's Secret;
pvc:// and oci:// models mounted into the pods."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hack.podrunner import PodRunner
from hack.s3server import ACCESS_KEY, SECRET_KEY, S3Server

from .conftest import Models
from .kube import Kube, OperatorProcess, condition, model_deployment, revision, wait_for

pytestmark = pytest.mark.integration


def _status(kube: Kube, name: str) -> dict[str, Any]:
    return dict((kube.get("mdep", name) or {}).get("status") or {})


def _container(kube: Kube, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = kube.must("deployment", name)["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_s3_model_in_auto_mode_reaches_ready(
    kube: Kube,
    operator: OperatorProcess,
    models: Models,
    s3_server: S3Server,
    modelservers: PodRunner,
) -> None:
    uri = s3_server.put("fraud", "scorer/2026-11-01/model.onnx", models.small.path.read_bytes())
    kube.run(
        "-n", kube.namespace, "create", "secret", "generic", "model-store",
        f"--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_KEY}",
    )  # fmt: skip
    model = {
        "uri": uri,
        "endpoint": s3_server.endpoint,
        "version": "2026-11-01",
        "credentialsSecret": "model-store",
    }
    m = model_deployment(
        "fraud-scorer",
        {"model": model, "hardware": {"mode": "auto"}, "autoscaling": {"maxReplicas": 2}},
    )
    assert kube.apply(m).returncode == 0
    wait_for(lambda: _status(kube, "fraud-scorer").get("phase") == "Ready", what="Ready")
    hardware = _status(kube, "fraud-scorer")["hardware"]
    assert (hardware["tier"], hardware["modelSha256"]) == ("cpu-small", models.small.sha256)
    _, container = _container(kube, f"fraud-scorer-{revision(m)}")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELSERVER_MODEL_URI"] == uri
    assert env["MODELSERVER_MODEL_ENDPOINT"] == s3_server.endpoint
    assert container["envFrom"] == [{"secretRef": {"name": "model-store"}}]
    # The pod's model server (a local process given the pod's env, the Secret's keys through
    # envFrom as a kubelet gives them) downloads the model from the store and verifies it.
    (server,) = modelservers.wait_for_servers(kube.namespace, deployment="fraud-scorer")
    metadata = httpx.get(f"{server.url}/v2/models/fraud-scorer").json()
    assert metadata["versions"] == ["2026-11-01"]

    # Without the Secret the operator reads anonymously: the private bucket says no, and auto
    # mode has nothing to choose hardware from.
    anonymous = model_deployment("anonymous", {"model": {**model, "credentialsSecret": None}})
    del anonymous["spec"]["model"]["credentialsSecret"]
    assert kube.apply(anonymous).returncode == 0

    def refused() -> str:
        return str(condition(kube.get("mdep", "anonymous"), "Ready").get("message", ""))

    wait_for(lambda: "HTTP 403 Forbidden" in refused(), what="the anonymous read refused")
    assert "cannot choose hardware in auto mode" in refused()
    assert kube.get("deployment", f"anonymous-{revision(anonymous)}") is None


def test_pvc_and_oci_models_are_mounted(kube: Kube, operator: OperatorProcess) -> None:
    pvc = model_deployment(
        "on-pvc",
        {"model": {"uri": "pvc://models/fraud/v3/", "version": "v3"}, "hardware": {"mode": "cpu"}},
    )
    oci = model_deployment(
        "in-image",
        {
            "model": {"uri": "oci://registry.example.com/models/fraud:v3", "version": "v3"},
            "hardware": {"mode": "cpu"},
        },
    )
    for m in (pvc, oci):
        assert kube.apply(m).returncode == 0
    wait_for(lambda: kube.get("deployment", f"on-pvc-{revision(pvc)}") is not None, what="pvc")
    pod, container = _container(kube, f"on-pvc-{revision(pvc)}")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELSERVER_MODEL_URI"] == "file:///mnt/model-store/fraud/v3/"
    assert {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    } in pod["volumes"]
    assert {"name": "model-store", "mountPath": "/mnt/model-store", "readOnly": True} in container[
        "volumeMounts"
    ]

    wait_for(lambda: kube.get("deployment", f"in-image-{revision(oci)}") is not None, what="oci")
    pod, container = _container(kube, f"in-image-{revision(oci)}")
    (copy,) = pod["initContainers"]
    assert copy["image"] == "registry.example.com/models/fraud:v3"
    assert copy["command"] == ["cp", "-R", "/models/.", "/mnt/model-store"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELSERVER_MODEL_URI"] == "file:///mnt/model-store/"

    # Admission names what is wrong with a store URI.
    bad = model_deployment("bad", {"model": {"uri": "pvc://models/../etc/passwd", "version": "v1"}})
    result = kube.apply(bad)
    assert result.returncode != 0
    assert "want pvc://CLAIM/PATH" in result.stderr
