"""The local runner on the real control plane: a `modelserver` process per pod, routed by the
weighted gateway, scraped by Prometheus through file-based service discovery."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from hack.gateway import Gateway, WeightedPicker, split_by_weights
from hack.loadgen import check_loopback, infer_payload, run_load
from hack.localcluster import LocalCluster
from hack.models import write_mlp
from hack.podrunner import PodRunner, PodServer, read_registry
from hack.prometheus import Prometheus
from modelrollout.api.names import Track
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.plan import children

from .kube import Kube, wait_for

pytestmark = pytest.mark.integration

NAME = "iris"
FEATURES = 4


def mlp(path: Path, seed: int) -> Path:
    """A small classifier (hack.models), its random weights by `seed`: nothing is downloaded."""
    write_mlp(path, features=FEATURES, seed=seed)
    return path


def operator_spec(
    model: Path, version: str, env: dict[str, str] | None = None
) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {
                "uri": model.as_uri(),
                "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
                "version": version,
            },
            "serving": {"env": [{"name": k, "value": v} for k, v in (env or {}).items()]},
        }
    )


def orphan(manifest: dict[str, Any]) -> dict[str, Any]:
    # No ModelDeployment exists: the garbage collector would delete a child of a missing owner.
    del manifest["metadata"]["ownerReferences"]
    return manifest


def owner(namespace: str) -> children.Owner:
    return children.Owner(NAME, namespace, "00000000-0000-0000-0000-000000000000")


def revision_deployment(
    namespace: str, revision: str, model: Path, version: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Deployment the operator would create for this revision, one replica."""
    spec = operator_spec(model, version, env)
    manifest = children.deployment(
        owner(namespace), spec, revision, "modelrollout/modelserver:test", children.Placement("cpu")
    )
    manifest["spec"]["replicas"] = 1
    return orphan(manifest)


def track_service(namespace: str, track: Track, revision: str, model: Path) -> dict[str, Any]:
    """`NAME-stable` / `NAME-canary` as the operator creates them, selecting one revision."""
    spec = operator_spec(model, "1")
    return orphan(children.track_service(owner(namespace), spec, track, revision))


def http_route(namespace: str, stable: int, canary: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "local"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": f"{NAME}-stable", "port": 8080, "weight": stable},
                        {"name": f"{NAME}-canary", "port": 8080, "weight": canary},
                    ]
                }
            ],
        },
    }


def apply(kube: Kube, manifest: dict[str, Any]) -> None:
    result = kube.apply(manifest)
    assert result.returncode == 0, result.stderr


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_split_by_weights_is_exact_on_every_prefix() -> None:
    assert split_by_weights({"stable": 90, "canary": 10}, 100) == {"stable": 90, "canary": 10}
    assert split_by_weights({"stable": 90, "canary": 10}, 7) == {"stable": 6, "canary": 1}
    assert split_by_weights({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}
    assert split_by_weights({"a": 0, "b": 0}, 5) == {"a": 0, "b": 0}
    with pytest.raises(ValueError, match=">= 0"):
        split_by_weights({"a": -1}, 1)
    picker = WeightedPicker({"stable": 75, "canary": 25})
    seen = {"stable": 0, "canary": 0}
    for n in range(1, 401):
        key = picker.pick()
        assert key is not None
        seen[key] += 1
        expected = split_by_weights(picker.weights, n)
        assert all(abs(seen[k] - expected[k]) <= 1 for k in seen), (n, seen, expected)
    assert seen == {"stable": 300, "canary": 100}
    assert WeightedPicker({"stable": 0, "canary": 0}).pick() is None
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("http://10.0.0.1:8080")
    check_loopback("http://127.0.0.1:1")


def test_pods_served_routed_by_weight_and_scraped(
    kube: Kube,
    modelservers: PodRunner,
    gateway: Gateway,
    prometheus: Prometheus,
    router_crds: LocalCluster,
    tmp_path: Path,
) -> None:
    ns = kube.namespace
    revisions = {
        "aaa111": mlp(tmp_path / "v1.onnx", seed=1),
        "bbb222": mlp(tmp_path / "v2.onnx", 2),
    }
    apply(kube, revision_deployment(ns, "aaa111", revisions["aaa111"], version="1"))
    # The user's env reaches the process: this version fails every request.
    faulty = {"MODELSERVER_FAULT_ERROR_RATIO": "1"}
    apply(kube, revision_deployment(ns, "bbb222", revisions["bbb222"], version="2", env=faulty))

    # One process per pod, ready, with the pod's identity.
    servers = modelservers.wait_for_servers(ns, deployment=NAME, count=2, timeout=60)
    assert {s.revision for s in servers} == set(revisions)
    pods = {p["metadata"]["name"] for p in kube.list("pods", f"{children.LABEL_DEPLOYMENT}={NAME}")}
    assert {s.pod for s in servers} == pods
    for server in servers:
        assert alive(server.pid)
        assert server.url.startswith("http://127.0.0.1:")
        resp = httpx.get(f"{server.url}/v2/models/{NAME}/ready", timeout=5, trust_env=False)
        assert resp.status_code == 200, resp.text
    assert modelservers.registry_path is not None
    assert {s.pod for s in read_registry(modelservers.registry_path)} >= pods
    assert modelservers.file_sd_path is not None
    sd = json.loads(modelservers.file_sd_path.read_text())
    by_pod = {t["labels"]["pod"]: t for t in sd if t["labels"]["namespace"] == ns}
    for server in servers:
        assert by_pod[server.pod]["targets"] == [server.metrics_target]
        assert by_pod[server.pod]["labels"]["revision"] == server.revision
        assert by_pod[server.pod]["labels"]["deployment"] == NAME

    # No route object: uniform over the ready pods of every revision.
    payload = infer_payload(FEATURES, input_name="input")
    stats = run_load(gateway.url, ns, NAME, rate_per_s=20, duration_s=1, payload=payload)
    served = Counter(stats.by_revision)
    # A starved load generator may drop some of its schedule: the split is of what it sent.
    even = split_by_weights({"aaa111": 1, "bbb222": 1}, stats.completed)
    assert sorted(stats.by_revision.values()) == sorted(even.values()), stats.summary()
    assert stats.error_ratio("aaa111") == 0.0
    assert stats.error_ratio("bbb222") == 1.0
    assert gateway.route(ns, NAME) is not None

    # An HTTPRoute of the same name takes over; its weights split requests exactly.
    apply(kube, track_service(ns, "stable", "aaa111", revisions["aaa111"]))
    apply(kube, track_service(ns, "canary", "bbb222", revisions["bbb222"]))
    apply(kube, http_route(ns, stable=75, canary=25))
    wait_for(
        lambda: gateway.weights_by_revision(ns, NAME) == {"aaa111": 75, "bbb222": 25},
        timeout=15,
        what="gateway to read the HTTPRoute weights",
    )
    stats = run_load(gateway.url, ns, NAME, rate_per_s=40, duration_s=1, payload=payload)
    served += stats.by_revision
    expected = stats.expected({"aaa111": 75, "bbb222": 25})
    assert dict(stats.by_revision) == expected, stats.summary()
    assert stats.by_status == {200: expected["aaa111"], 500: expected["bbb222"]}, stats.summary()

    kube.patch("httproute", NAME, {"spec": http_route(ns, stable=0, canary=100)["spec"]}, "merge")
    wait_for(
        lambda: gateway.weights_by_revision(ns, NAME) == {"aaa111": 0, "bbb222": 100},
        timeout=15,
        what="gateway to follow the new weights",
    )
    stats = run_load(gateway.url, ns, NAME, rate_per_s=20, duration_s=0.5, payload=payload)
    served += stats.by_revision
    assert stats.completed > 0
    assert stats.by_revision == {"bbb222": stats.completed}, stats.summary()

    # Prometheus found every process through file SD; target labels name pod and revision.
    answered = gateway.counts_by_revision(ns, NAME)
    by = "namespace, deployment, pod, revision"
    query = f'sum by ({by}) (modelserver_requests_total{{namespace="{ns}"}})'

    def scraped_all(result: list[dict[str, Any]]) -> bool:
        got = {r["metric"]["revision"]: float(r["value"][1]) for r in result}
        return got == {rev: float(n) for rev, n in answered.items()}

    assert answered == served

    result = prometheus.wait_for(query, scraped_all, timeout=30)
    for series in result:
        server = next(s for s in servers if s.revision == series["metric"]["revision"])
        assert series["metric"] == {
            "namespace": ns,
            "deployment": NAME,
            "pod": server.pod,
            "revision": server.revision,
        }
    # The server's own label (from MODELSERVER_REVISION in the pod env) agrees with the pod's.
    own = prometheus.query(f'modelserver_requests_total{{namespace="{ns}"}}')
    assert {(s["metric"]["revision"], s["metric"]["exported_revision"]) for s in own} == {
        (r, r) for r in revisions
    }

    # A process that dies is started again, as the kubelet restarts a crashed container.
    stable = next(s for s in servers if s.revision == "aaa111")
    os.kill(stable.pid, signal.SIGKILL)

    def restarted() -> list[PodServer]:
        again = modelservers.servers(namespace=ns, revision="aaa111", ready=True)
        return [s for s in again if s.pid != stable.pid and s.pod == stable.pod]

    wait_for(restarted, timeout=30, what="the killed server to be restarted")

    # Deleting a Deployment stops its process and drops its scrape target.
    gone = next(s for s in servers if s.revision == "bbb222")
    kube.delete("deployment", f"{NAME}-bbb222")
    modelservers.wait_for_servers(ns, revision="bbb222", count=0, timeout=45)
    wait_for(lambda: not alive(gone.pid), timeout=10, what=f"pid {gone.pid} to exit")
    sd = json.loads(modelservers.file_sd_path.read_text())
    assert gone.pod not in {t["labels"]["pod"] for t in sd}
    # With the canary's pods gone, its whole share gets 503 from the gateway, as with no endpoints.
    stats = run_load(gateway.url, ns, NAME, rate_per_s=20, duration_s=0.25, payload=payload)
    assert stats.completed > 0
    assert stats.by_status == {503: stats.completed}, stats.summary()


def test_gateway_reads_the_router_a_model_deployment_names(
    kube: Kube, gateway: Gateway, router_crds: LocalCluster
) -> None:
    """Routes named by a ModelDeployment's trafficRouter. Only names and shares are checked: an
    operator running in the same session may be steering these routes meanwhile."""
    ns = kube.namespace

    def model_deployment(name: str, router: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "model": {"uri": "file:///nonexistent/model.onnx", "version": "1"},
                "rollout": {"trafficRouter": router},
            },
        }

    apply(kube, model_deployment("web", {"type": "gatewayAPI", "httpRoute": "web-route"}))
    route = http_route(ns, stable=60, canary=40)
    route["metadata"]["name"] = "web-route"
    for ref, track in zip(
        route["spec"]["rules"][0]["backendRefs"], ("stable", "canary"), strict=True
    ):
        ref["name"] = f"web-{track}"
    apply(kube, route)
    apply(kube, model_deployment("mesh", {"type": "istio", "virtualService": "mesh-vs"}))
    apply(
        kube,
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "mesh-vs", "namespace": ns},
            "spec": {
                "hosts": ["mesh"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": f"mesh-stable.{ns}.svc"}, "weight": 70},
                            {"destination": {"host": "mesh-canary"}, "weight": 30},
                        ]
                    }
                ],
            },
        },
    )
    apply(kube, model_deployment("plain", {"type": "replicas"}))

    web = gateway.watch(ns, "web")
    assert web.router == "httpRoute/web-route"
    assert [b.service for b in web.backends] == ["web-stable", "web-canary"]
    assert sum(b.weight for b in web.backends) == 100
    mesh = gateway.watch(ns, "mesh")
    assert mesh.router == "virtualService/mesh-vs"
    assert [b.service for b in mesh.backends] == ["mesh-stable", "mesh-canary"]
    assert sum(b.weight for b in mesh.backends) == 100
    plain = gateway.watch(ns, "plain")
    assert not plain.weighted
    # Nothing serves these routes here: the gateway answers itself, never with a 2xx.
    resp = httpx.post(f"{gateway.url}/{ns}/plain/v2/models/plain/infer", json={}, trust_env=False)
    assert resp.status_code == 503, resp.text
    missing = gateway.watch(ns, "no-such-thing")
    assert missing.router == "replicas"
    assert missing.error == ""
