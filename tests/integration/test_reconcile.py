"""A ModelDeployment reconciled by the running operator on the real local control plane."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import Models
from .kube import IMAGE, Kube, OperatorProcess, condition, model_deployment, revision, wait_for

pytestmark = pytest.mark.integration


@dataclass
class _Model:
    uri: str = ""
    sha256: str = ""


MODEL = _Model()


@pytest.fixture(autouse=True)
def _model(models: Models) -> None:
    """The manifests point at the session's small generated model."""
    MODEL.uri, MODEL.sha256 = models.small.uri, models.small.sha256


def manifest(name: str, version: str = "v1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"uri": MODEL.uri, "sha256": MODEL.sha256, "version": version},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCpuUtilization": 60},
        # No Prometheus here: a plain weight step, whose background analysis stays
        # Inconclusive and therefore never blocks it (the canary tests cover analysis).
        "rollout": {"steps": [{"setWeight": 50}], "bakeTime": "0s", "scaleDownDelay": "3s"},
    }
    body.update(spec)
    return model_deployment(name, body)


def wait_ready(kube: Kube, name: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = kube.get("mdep", name)
        cond = condition(obj, "Ready")
        current = (
            obj
            and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        )
        if obj and cond and cond["status"] == "True" and current:
            return obj
        return None

    return wait_for(ready, timeout=timeout, what=f"{name} Ready=True")


def test_create_builds_children_and_becomes_ready(kube: Kube, operator: OperatorProcess) -> None:
    m = manifest("iris")
    assert kube.apply(m).returncode == 0
    obj = wait_ready(kube, "iris")
    rev = revision(m)
    uid = obj["metadata"]["uid"]
    owner = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "iris",
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }

    dep = kube.get("deployment", f"iris-{rev}")
    assert dep is not None
    assert dep["metadata"]["ownerReferences"] == [owner]
    assert dep["spec"]["selector"]["matchLabels"] == {
        "modelrollout.io/deployment": "iris",
        "modelrollout.io/revision": rev,
    }
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELSERVER_MODEL_URI"] == MODEL.uri
    assert env["MODELSERVER_MODEL_SHA256"] == MODEL.sha256
    assert env["MODELSERVER_MODEL_VERSION"] == "v1"
    assert env["MODELSERVER_REVISION"] == rev
    assert env["MODELSERVER_MODEL_NAME"] == "iris"
    assert [p["containerPort"] for p in container["ports"]] == [8080, 9090]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in _fields_owned_by(dep, "modelrollout"), "HPA owns replicas"

    svc = kube.get("service", "iris")
    assert svc is not None
    assert svc["metadata"]["ownerReferences"] == [owner]
    assert svc["spec"]["selector"] == {"modelrollout.io/deployment": "iris"}
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("http", 8080),
        ("metrics", 9090),
    ]

    hpa = kube.get("hpa", "iris")
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"iris-{rev}",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60

    pdb = kube.get("pdb", "iris")
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["metadata"]["ownerReferences"] == [owner]

    # The Deployment became Available on kwok nodes, through the real scheduler.
    dep = wait_for(
        lambda: (
            (d := kube.get("deployment", f"iris-{rev}"))
            and d["status"].get("availableReplicas", 0) >= 1
            and d
        ),
        what="deployment available",
    )
    pods = kube.list("pods", f"modelrollout.io/revision={rev}")
    assert pods
    assert all(p["spec"]["nodeName"].startswith("kwok-cpu-") for p in pods)
    wait_for(
        lambda: all(
            p["metadata"]["labels"].get("modelrollout.io/track") == "stable"
            for p in kube.list("pods", f"modelrollout.io/revision={rev}")
        ),
        what="pods labelled with their track",
    )

    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["stableRevision"] == rev
    assert status["modelVersion"] == "v1"
    assert status["history"][0]["outcome"] == "Promoted"
    assert {c["type"] for c in status["conditions"]} == {
        "Ready",
        "Progressing",
        "Degraded",
        "Reconciling",
        "Stalled",
        "HardwareFallback",
        "InsufficientCapacity",
    }
    assert condition(obj, "Reconciling")["status"] == "False"
    assert condition(obj, "Stalled")["status"] == "False"
    assert status["hardware"]["tier"] == "cpu-small"
    assert status["hardware"]["revision"] == rev
    assert condition(obj, "Degraded")["status"] == "False"

    # kopf's bookkeeping lives under this project's group, not kopf's own.
    meta = kube.must("mdep", "iris")["metadata"]
    assert meta.get("finalizers") == ["modelrollout.io/finalizer"]
    assert not [k for k in meta.get("annotations", {}) if "kopf.zalando.org" in k]

    events = kube.list("events")
    assert any(e["reason"] == "Promoted" and e["involvedObject"]["name"] == "iris" for e in events)


def _fields_owned_by(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    for entry in obj["metadata"].get("managedFields", []):
        if entry["manager"] == manager and entry["operation"] == "Apply":
            spec: dict[str, Any] = entry["fieldsV1"].get("f:spec", {})
            return {k.removeprefix("f:"): v for k, v in spec.items()}
    return {}


def test_update_children_follow(kube: Kube, operator: OperatorProcess) -> None:
    m = manifest("follow")
    kube.apply(m)
    wait_ready(kube, "follow")
    rev1 = revision(m)

    # Autoscaling bounds are not a new revision: the HPA follows in place.
    m["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 7}
    assert kube.apply(m).returncode == 0
    wait_for(
        lambda: (h := kube.get("hpa", "follow")) and h["spec"]["maxReplicas"] == 7,
        what="hpa maxReplicas 7",
    )
    hpa = kube.get("hpa", "follow")
    assert hpa is not None
    # No CPU target given: the default utilisation target applies.
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert revision(m) == rev1

    # A new model version is a new revision: new Deployment, promoted, the old one removed.
    m["spec"]["model"]["version"] = "v2"
    rev2 = revision(m)
    assert rev2 != rev1
    kube.apply(m)
    obj = wait_for(
        lambda: (o := wait_ready(kube, "follow")) and o["status"]["stableRevision"] == rev2 and o,
        what="v2 stable",
    )
    wait_for(lambda: kube.get("deployment", f"follow-{rev1}") is None, what="old revision gone")
    assert kube.must("hpa", "follow")["spec"]["scaleTargetRef"]["name"] == f"follow-{rev2}"
    # Promotion restarted nothing: the Deployment born as canary keeps its template (and its
    # MODELSERVER_TRACK), while its pods now carry the stable track label.
    dep2 = kube.must("deployment", f"follow-{rev2}")
    assert dep2["metadata"]["generation"] == 1
    env = {e["name"]: e["value"] for e in dep2["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELSERVER_TRACK"] == "canary"
    wait_for(
        lambda: (
            {
                p["metadata"]["labels"].get("modelrollout.io/track")
                for p in kube.list("pods", f"modelrollout.io/revision={rev2}")
            }
            == {"stable"}
        ),
        what="promoted pods relabelled stable",
    )
    history = obj["status"]["history"]
    assert [h["revision"] for h in history[:2]] == [rev2, rev1]
    assert history[0]["modelVersion"] == "v2"
    assert obj["status"]["modelVersion"] == "v2"


def test_deleted_children_come_back(kube: Kube, operator: OperatorProcess) -> None:
    m = manifest("heal")
    kube.apply(m)
    wait_ready(kube, "heal")
    rev = revision(m)
    old = {kind: kube.get(kind, name) for kind, name in _children("heal", rev)}

    for kind, name in _children("heal", rev):
        kube.delete(kind, name)
    for kind, name in _children("heal", rev):
        uid = old[kind]["metadata"]["uid"]  # type: ignore[index]

        def recreated(kind: str = kind, name: str = name, uid: str = uid) -> bool:
            obj = kube.get(kind, name)
            return obj is not None and obj["metadata"]["uid"] != uid

        wait_for(recreated, what=f"{kind}/{name} recreated", timeout=30)
    wait_ready(kube, "heal")


def _children(name: str, rev: str) -> list[tuple[str, str]]:
    return [
        ("deployment", f"{name}-{rev}"),
        ("service", name),
        ("hpa", name),
        ("pdb", name),
    ]


def test_hand_edits_are_reset(kube: Kube, operator: OperatorProcess) -> None:
    m = manifest("drift")
    kube.apply(m)
    wait_ready(kube, "drift")
    rev = revision(m)

    kube.patch("hpa", "drift", {"spec": {"maxReplicas": 99}})
    kube.patch("service", "drift", {"spec": {"selector": {"modelrollout.io/deployment": "other"}}})
    kube.patch(
        "deployment",
        f"drift-{rev}",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "modelserver", "image": "evil"}]}}
            }
        },
        kind_of="strategic",
    )
    wait_for(
        lambda: (h := kube.get("hpa", "drift")) and h["spec"]["maxReplicas"] == 4,
        what="hpa reset",
        timeout=30,
    )
    wait_for(
        lambda: (
            (s := kube.get("service", "drift"))
            and s["spec"]["selector"] == {"modelrollout.io/deployment": "drift"}
        ),
        what="service selector reset",
        timeout=30,
    )
    wait_for(
        lambda: (
            (d := kube.get("deployment", f"drift-{rev}"))
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
        ),
        what="image reset",
        timeout=30,
    )


def test_unchanged_children_are_not_patched(kube: Kube, operator: OperatorProcess) -> None:
    """While nothing changes the operator sends no apply, and what it owns on every child stays
    as it was. resourceVersions are not the measure: controllers keep writing the children's
    status (the HPA's every 15 s, the budget's as pods settle)."""
    m = manifest("still")
    kube.apply(m)
    wait_ready(kube, "still")
    rev = revision(m)
    # The HPA scales the Deployment to its minimum (spec.replicas, not the operator's field).
    wait_for(
        lambda: (
            (d := kube.get("deployment", f"still-{rev}")) and d["status"].get("readyReplicas") == 2
        ),
        what="2 ready replicas",
    )
    kinds = _children("still", rev)
    before = {k: _operator_owned(kube, k, n) for k, n in kinds}
    log_mark = len(operator.log_path.read_bytes())
    time.sleep(12)  # more than two resync periods of the operator under test (5 s)
    after = {k: _operator_owned(kube, k, n) for k, n in kinds}
    assert after == before
    log = operator.log_path.read_bytes()[log_mark:].decode(errors="replace")
    applied = [line for line in log.splitlines() if f" {kube.namespace}/" in line]
    assert not [line for line in applied if "applied " in line], applied


def _operator_owned(kube: Kube, kind: str, name: str) -> dict[str, Any]:
    """What the operator writes on a child: its spec and metadata, and the field manager
    entry the API server keeps for the operator (its time moves with any change it makes)."""
    args = ("-n", kube.namespace, "get", kind, name, "-o", "json", "--show-managed-fields")
    obj = json.loads(kube.run(*args))
    meta = obj["metadata"]
    return {
        "spec": obj.get("spec"),
        "generation": meta.get("generation"),
        "labels": meta.get("labels"),
        "annotations": meta.get("annotations"),
        "owners": meta.get("ownerReferences"),
        "managed": [f for f in meta["managedFields"] if f["manager"] == "modelrollout"],
    }


def test_deleting_the_model_deployment_collects_children(
    kube: Kube, operator: OperatorProcess
) -> None:
    m = manifest("gone")
    kube.apply(m)
    wait_ready(kube, "gone")
    rev = revision(m)
    kube.delete("mdep", "gone")
    for kind, name in _children("gone", rev):

        def collected(kind: str = kind, name: str = name) -> bool:
            return kube.get(kind, name) is None

        wait_for(collected, what=f"{kind}/{name} collected")
    wait_for(lambda: not kube.list("pods", "modelrollout.io/deployment=gone"), what="pods gone")


SHADOW = {"shadow": {"duration": "1m"}}
INVALID = [
    ({"model": {"uri": "/m.onnx", "version": "v1", "sha256": "abc"}}, "spec.model.sha256"),
    (
        {
            "model": {"uri": "/m.onnx", "version": "v1"},
            "autoscaling": {"minReplicas": 5, "maxReplicas": 2},
        },
        "spec.autoscaling.minReplicas",
    ),
    (
        {"model": {"uri": "/m.onnx", "version": "v1"}, "hardware": {"mode": "tpu"}},
        "spec.hardware.mode",
    ),
    (
        {"model": {"uri": "/m.onnx", "version": "v1"}, "serving": {"port": 70000}},
        "spec.serving.port",
    ),
    (
        {
            "model": {"uri": "/m.onnx", "version": "v1"},
            "rollout": {"steps": [{"setWeight": 50}, {"setWeight": 20}]},
        },
        "spec.rollout.steps",
    ),
    ({"model": {"uri": "ftp://host/m.onnx", "version": "v1"}}, "spec.model.uri"),
    (
        {
            "model": {"uri": "/m.onnx", "version": "v1"},
            "rollout": {"trafficRouter": {"type": "linkerd"}},
        },
        "spec.rollout.trafficRouter.type",
    ),
    ({"model": {"uri": "/m.onnx"}}, "spec.model.version"),
    (
        # The replica ratio (the default router) cannot mirror requests.
        {"model": {"uri": "/m.onnx", "version": "v1"}, "rollout": {"steps": [SHADOW]}},
        "spec.rollout.steps: a shadow step needs a router that can mirror",
    ),
    (
        {
            "model": {"uri": "/m.onnx", "version": "v1"},
            "rollout": {"steps": [SHADOW], "trafficRouter": {"type": "replicas"}},
        },
        "trafficRouter.type gatewayAPI or istio); type replicas cannot",
    ),
]


@pytest.mark.parametrize(("spec", "field"), INVALID, ids=[f for _, f in INVALID])
def test_invalid_specs_refused_at_admission(kube: Kube, spec: dict[str, Any], field: str) -> None:
    body = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    result = kube.apply(body)
    assert result.returncode != 0, "the API server accepted an invalid spec"
    assert "is invalid" in result.stderr
    assert field in result.stderr, result.stderr
    assert kube.get("mdep", "bad") is None


def test_restarted_operator_neither_duplicates_nor_loses_children(
    kube: Kube, operator: OperatorProcess
) -> None:
    m = manifest("restart")
    operator.kill()
    try:
        kube.apply(m)
        m2 = manifest("restart-b", version="v9")
        kube.apply(m2)
    finally:
        operator.start()
    first = wait_ready(kube, "restart")
    wait_ready(kube, "restart-b")
    before = {d["metadata"]["name"]: d["metadata"]["uid"] for d in kube.list("deployments")}
    assert sorted(before) == sorted([f"restart-{revision(m)}", f"restart-b-{revision(m2)}"])

    # Kill it again mid-way through a revision change; the new operator finishes the job.
    m["spec"]["model"]["version"] = "v2"
    kube.apply(m)
    operator.kill()
    operator.start()
    done = wait_for(
        lambda: (
            (o := wait_ready(kube, "restart"))
            and o["status"]["stableRevision"] == revision(m)
            and o
        ),
        what="v2 promoted after restart",
    )
    wait_for(
        lambda: (
            {d["metadata"]["name"] for d in kube.list("deployments")}
            == {f"restart-{revision(m)}", f"restart-b-{revision(m2)}"}
        ),
        what="exactly one deployment per model deployment",
    )
    after = {d["metadata"]["name"]: d["metadata"]["uid"] for d in kube.list("deployments")}
    assert after[f"restart-b-{revision(m2)}"] == before[f"restart-b-{revision(m2)}"]
    assert len(kube.list("services")) == 2
    assert len(kube.list("hpa")) == 2
    # History survived the restarts: it lives in status.
    assert [h["modelVersion"] for h in done["status"]["history"]] == ["v2", "v1"]
    assert first["status"]["history"][0]["modelVersion"] == "v1"


def test_operator_serves_metrics_and_liveness(kube: Kube, operator: OperatorProcess) -> None:
    import urllib.request

    kube.apply(manifest("observed"))
    wait_ready(kube, "observed")

    def scrape() -> str:
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def phase_exported() -> str | None:
        text = scrape()
        return text if f'namespace="{kube.namespace}",phase="Ready"}} 1.0' in text else None

    text = wait_for(phase_exported, what="phase metric")
    assert "modelrollout_reconcile_duration_seconds_count" in text
    assert "modelrollout_children_applied_total" in text
    managed = [
        line
        for line in text.splitlines()
        if line.startswith("modelrollout_managed_modeldeployments")
    ]
    assert managed
    assert float(managed[0].split()[-1]) >= 1
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.health_port}/healthz", timeout=5
    ) as resp:
        assert resp.status == 200
