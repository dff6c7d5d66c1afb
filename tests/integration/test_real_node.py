"""The images built here, run by a real kubelet: readiness probes, the Service through kube-proxy,
cluster DNS from another pod, memory limits, and SIGTERM drain during a rolling replacement.

These run when the session's cluster has a real node (always under CI; locally with
MODELROLLOUT_REAL_NODE=1, see tests/integration/conftest.py)."""

from __future__ import annotations

import ipaddress
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack import realnode
from hack.images import Image
from hack.localcluster import LocalCluster
from hack.prometheus import Prometheus

from .conftest import Models
from .kube import Kube, OperatorProcess, condition, model_deployment, wait_for
from .realnode import (
    ModelHost,
    infer,
    ready_latency,
    ready_pods,
    routed_service,
    run_pod,
    spec,
)
from .test_helm import CHART, Helm, Release, adopt_crd, helm, operator_pods, release, sole_operator

__all__ = ["helm", "release", "sole_operator"]  # fixtures shared with test_helm


@pytest.fixture(scope="session")
def node(cluster: LocalCluster) -> realnode.RealNode:
    if cluster.node is None:
        pytest.skip("no real node in this session: MODELROLLOUT_REAL_NODE=1 starts one")
    return cluster.node


@pytest.fixture(scope="session")
def model_host(node: realnode.RealNode, models: Models) -> Iterator[ModelHost]:
    with ModelHost(models.small.path.parent) as host:
        yield host


def serving_image(node: realnode.RealNode) -> Image:
    return node.images["modelserver"]


def wait_md_ready(kube: Kube, name: str, proc: OperatorProcess, timeout: float = 240) -> None:
    def ready() -> bool:
        return condition(kube.get("modeldeployment", name), "Ready").get("status") == "True"

    try:
        wait_for(ready, timeout=timeout, what=f"{name} Ready")
    except AssertionError:
        pods = kube.run("-n", kube.namespace, "get", "pods", "-o", "wide")
        events = kube.run("-n", kube.namespace, "get", "events", "--sort-by=.lastTimestamp")
        detail = f"{pods}\n{events[-3000:]}\n{proc.log_tail()}"
        raise AssertionError(f"{name} not Ready\n{detail}") from None


def ready_replicas(kube: Kube, name: str, count: int) -> list[dict[str, Any]]:
    """The HorizontalPodAutoscaler brings the Deployment up to its minimum after it exists."""
    selector = f"modelrollout.io/deployment={name}"

    def all_ready() -> list[dict[str, Any]] | None:
        pods = ready_pods(kube, selector)
        return pods if len(pods) == count else None

    return wait_for(all_ready, timeout=120, what=f"{count} Ready pods of {name}")


def test_pods_ready_through_probes_answer_through_service_and_dns(
    node: realnode.RealNode,
    operator: OperatorProcess,
    kube: Kube,
    models: Models,
    model_host: ModelHost,
) -> None:
    image = serving_image(node)
    manifest = model_deployment(
        "iris", spec(model_host.url(models.small.path), models.small.sha256, image)
    )
    assert kube.apply(manifest).returncode == 0
    wait_md_ready(kube, "iris", operator)

    pods = ready_replicas(kube, "iris", 2)
    pod_net = ipaddress.ip_network(realnode.POD_CIDR)
    for pod in pods:
        assert pod["spec"]["nodeName"] == realnode.NODE
        assert ipaddress.ip_address(pod["status"]["podIP"]) in pod_net
        # The readiness probe, not a fake node, said Ready: the server had loaded the model.
        print(
            f"pod {pod['metadata']['name']} created -> Ready {ready_latency(pod):.0f}s",
            file=sys.stderr,
        )

    # Through the Service's ClusterIP: kube-proxy's iptables rules pick a pod.
    url = f"http://{routed_service(kube, 'iris')}:8080/v2/models/iris/infer"
    for _ in range(10):
        status, body = infer(url)
        assert status == 200
        assert body["outputs"][0]["shape"] == [1, 3]

    # By DNS name from another pod: CoreDNS answers for the Service.
    host = f"iris.{kube.namespace}.svc.cluster.local"
    script = (
        "import json, urllib.request\n"
        f"r = urllib.request.urlopen('http://{host}:8080/v2/models/iris/ready', timeout=5)\n"
        "print('status', r.status)\n"
    )
    logs = run_pod(kube, "dns-client", image, script)
    assert "status 200" in logs


class Load:
    """Constant load on a URL from this machine: `rate` requests a second, bounded in time."""

    def __init__(self, url: str, rate: float = 20, limit_s: float = 120) -> None:
        self.url, self.rate, self.limit_s = url, rate, limit_s
        self.results: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set() and time.monotonic() - start < self.limit_s:
            try:
                status, _ = infer(self.url, timeout=5)
                self.results[str(status)] += 1
            except Exception as exc:  # every failure counts, whatever its kind
                self.results[type(exc).__name__ + ": " + str(exc)[:80]] += 1
            time.sleep(1 / self.rate)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_rolling_replacement_under_load_loses_no_request(
    node: realnode.RealNode,
    operator: OperatorProcess,
    kube: Kube,
    models: Models,
    model_host: ModelHost,
) -> None:
    image = serving_image(node)
    manifest = model_deployment(
        "drain", spec(model_host.url(models.small.path), models.small.sha256, image)
    )
    assert kube.apply(manifest).returncode == 0
    wait_md_ready(kube, "drain", operator)
    ready_replicas(kube, "drain", 2)
    [deployment] = kube.list("deployments", "modelrollout.io/deployment=drain")
    name = deployment["metadata"]["name"]
    old = {p["metadata"]["name"] for p in kube.list("pods", "modelrollout.io/deployment=drain")}
    cluster_ip = routed_service(kube, "drain")

    with Load(f"http://{cluster_ip}:8080/v2/models/drain/infer") as load:
        time.sleep(2)
        # Every old pod gets SIGTERM while the load runs; the server drains before it exits.
        kube.run("-n", kube.namespace, "rollout", "restart", f"deployment/{name}")

        def replaced() -> bool:
            pods = kube.list("pods", "modelrollout.io/deployment=drain")
            names = {p["metadata"]["name"] for p in pods}
            fresh = ready_pods(kube, "modelrollout.io/deployment=drain")
            return not (names & old) and len(fresh) == 2

        wait_for(replaced, timeout=180, interval=1, what="old pods replaced and gone")
        time.sleep(2)
    ok = load.results.get("200", 0)
    failures = {k: v for k, v in load.results.items() if k != "200"}
    assert ok > 50, f"too little load to judge: {dict(load.results)}"
    assert not failures, f"requests lost during the rolling replacement: {failures} ({ok} ok)"


def oom_status(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("lastState") or {}).get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return {"restarts": status["restartCount"], **terminated}
    return None


def test_chart_operator_runs_from_its_image_in_a_restricted_namespace(
    cluster: LocalCluster,
    node: realnode.RealNode,
    helm: Helm,
    release: Release,
    sole_operator: None,
    kube: Kube,
    models: Models,
    model_host: ModelHost,
) -> None:
    """`helm install` as users run it: the operator is the operator image, started by kubelet
    in a namespace enforcing Pod Security `restricted`, talking to the API server through the
    `kubernetes` Service with the chart's ServiceAccount token."""
    operator_image, serving = node.images["operator"], serving_image(node)
    on_node = {
        "nodeSelector": {realnode.LABEL[0]: realnode.LABEL[1]},
        "tolerations": [{"key": realnode.LABEL[0], "operator": "Exists"}],
    }
    values = release_values(operator_image, serving) | on_node
    # The models are served at the node address, a private one the default policy refuses.
    values["operator"]["policy"] = {"allowedNetworks": [f"{realnode.NODE_IP}/32"]}
    values_file = kube_values_file(helm, values)
    adopt_crd(cluster, release)
    helm(
        *("install", release.name, str(CHART), "--namespace", release.namespace),
        *("-f", str(values_file), "--set", "crds.install=true", "--set", "crds.keep=true"),
        *("--wait", "--timeout", "180s"),
    )
    [pod] = operator_pods(cluster, release)
    assert pod["spec"]["nodeName"] == realnode.NODE
    statuses = pod["status"]["containerStatuses"]
    assert statuses[0]["image"].endswith(operator_image.ref.split("/")[-1])
    assert statuses[0]["ready"]

    # The operator in the pod reconciles a ModelDeployment whose pods run the serving image
    # (the chart's servingImage: the spec names none) on the real node.
    md = spec(model_host.url(models.small.path), models.small.sha256, serving, replicas=1)
    del md["serving"]["image"]
    assert kube.apply(model_deployment("chart", md)).returncode == 0

    def ready() -> bool:
        return condition(kube.get("modeldeployment", "chart"), "Ready").get("status") == "True"

    try:
        wait_for(ready, timeout=240, what="chart-run operator makes the ModelDeployment Ready")
    except AssertionError:
        logs = cluster.kubectl("-n", release.namespace, "logs", pod["metadata"]["name"])
        raise AssertionError(f"not Ready; operator log:\n{logs[-4000:]}") from None
    [server] = ready_pods(kube, "modelrollout.io/deployment=chart")
    assert server["spec"]["containers"][0]["image"] == serving.ref
    cluster_ip = routed_service(kube, "chart")
    status, _ = infer(f"http://{cluster_ip}:8080/v2/models/chart/infer")
    assert status == 200


def release_values(operator_image: Image, serving: Image) -> dict[str, Any]:
    return {
        "image": {"repository": operator_image.repository, "tag": operator_image.tag},
        "operator": {
            "servingImage": {"repository": serving.repository, "tag": serving.tag},
        },
    }


def kube_values_file(helm: Helm, values: dict[str, Any]) -> Path:
    path = helm.home / f"values-{time.monotonic_ns()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


def test_hpa_scales_the_stable_from_real_cpu_use(
    cluster: LocalCluster,
    node: realnode.RealNode,
    operator: OperatorProcess,
    kube: Kube,
    models: Models,
    model_host: ModelHost,
) -> None:
    """metrics-server reads the kubelet's CPU figures; the HorizontalPodAutoscaler the operator
    made scales the Deployment up from them. A canary then holds the stable at that size while
    the canary's own minimum follows the weight (plan/desired.py, the replica-ratio router)."""
    md = spec(model_host.url(models.small.path), models.small.sha256, serving_image(node))
    # At most 2: the canary below gets as many pods, and CPU here is scarce.
    md["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2, "targetCpuUtilization": 20}
    assert kube.apply(model_deployment("busy", md)).returncode == 0
    wait_md_ready(kube, "busy", operator)
    ready_replicas(kube, "busy", 1)
    raw = f"/apis/metrics.k8s.io/v1beta1/namespaces/{kube.namespace}/pods"
    wait_for(
        lambda: json.loads(cluster.kubectl("get", "--raw", raw))["items"],
        timeout=90,
        what="pod metrics from metrics-server",
    )
    cluster_ip = routed_service(kube, "busy")

    def scaled() -> dict[str, Any] | None:
        hpa = kube.must("hpa", "busy")
        return hpa if hpa["status"].get("desiredReplicas", 0) >= 2 else None

    with Load(f"http://{cluster_ip}:8080/v2/models/busy/infer", rate=100, limit_s=180):
        hpa = wait_for(scaled, timeout=170, interval=2, what="the HPA to scale up under load")
    [cpu] = [m for m in hpa["status"]["currentMetrics"] if m["type"] == "Resource"]
    assert cpu["resource"]["current"]["averageUtilization"] > 20, hpa["status"]

    # A canary starts while the stable runs scaled up: the stable's autoscaler is held at the
    # pods it had (the traffic may come back to it), and the canary's minimum follows the
    # weight: at 50% of the Service's pods, as many as the stable has.
    [stable] = kube.list("deployments", "modelrollout.io/deployment=busy")
    scaled_to = wait_for(
        lambda: (
            (n := kube.must("deployment", stable["metadata"]["name"])["spec"]["replicas"]) >= 2
            and n
        ),
        timeout=60,
        what="the stable Deployment scaled up by its HPA",
    )
    md["model"]["version"] = "v2"
    md["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}]}
    assert kube.apply(model_deployment("busy", md)).returncode == 0

    held = wait_for(
        lambda: (kube.must("mdep", "busy")["status"].get("rollout") or {}).get("stableMinReplicas"),
        timeout=60,
        what="status.rollout.stableMinReplicas",
    )
    assert held >= scaled_to, (held, scaled_to)
    # spec.autoscaling says 1; the stable's autoscaler is raised to what it had.
    wait_for(
        lambda: kube.must("hpa", "busy")["spec"]["minReplicas"] == held,
        timeout=60,
        what=f"the stable's autoscaler held at {held}",
    )
    # The canary's autoscaler starts at 1 (weight 0) and follows the step to 50%.
    wait_for(
        lambda: (kube.get("hpa", "busy-canary") or {}).get("spec", {}).get("minReplicas") == held,
        timeout=90,
        what=f"the canary's autoscaler minimum at {held} (50% of the pods)",
    )


@pytest.fixture(scope="session")
def pod_prometheus(
    cluster: LocalCluster, node: realnode.RealNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Debian's Prometheus finding the model server pods through the API server."""
    directory = tmp_path_factory.mktemp("pod-prometheus")
    prom = Prometheus(directory, directory / "unused.json", kubeconfig=cluster.kubeconfig)
    with prom:
        yield prom


def test_canary_promoted_then_rolled_back_on_real_pods(
    node: realnode.RealNode,
    operator: OperatorProcess,
    kube: Kube,
    models: Models,
    model_host: ModelHost,
    pod_prometheus: Prometheus,
) -> None:
    """Replica-ratio canary: kube-proxy splits the Service's traffic over stable and canary
    pods; the analysis reads what Prometheus scraped from the pods it discovered itself."""

    def manifest(version: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        md = spec(model_host.url(models.small.path), models.small.sha256, serving_image(node))
        md["model"]["version"] = version
        md["serving"]["env"] = [{"name": k, "value": v} for k, v in (env or {}).items()]
        md["autoscaling"] = {"minReplicas": 2, "maxReplicas": 2}
        md["rollout"] = {
            "steps": [{"setWeight": 50}, {"analysis": {}}],
            "analysis": {
                "interval": "10s",
                "minRequests": 20,
                "maxLatencyRatio": 3,
                "failureLimit": 2,
                "prometheusUrl": pod_prometheus.url,
            },
            "bakeTime": "5s",
            "scaleDownDelay": "2s",
        }
        return model_deployment("canary", md)

    def status() -> dict[str, Any]:
        return dict((kube.get("mdep", "canary") or {}).get("status") or {})

    assert kube.apply(manifest("v1")).returncode == 0
    wait_md_ready(kube, "canary", operator)
    ready_replicas(kube, "canary", 2)
    cluster_ip = routed_service(kube, "canary")
    with Load(f"http://{cluster_ip}:8080/v2/models/canary/infer", rate=15, limit_s=300) as load:
        assert kube.apply(manifest("v2")).returncode == 0
        wait_for(
            lambda: status().get("modelVersion") == "v2" and not status().get("canaryRevision"),
            timeout=150,
            interval=1,
            what="v2 promoted",
        )
        promoted = dict(load.results)
        assert kube.apply(manifest("v3", {"MODELSERVER_FAULT_ERROR_RATIO": "0.5"})).returncode == 0
        final = wait_for(
            lambda: (s := status()).get("phase") == "RolledBack" and s,
            timeout=150,
            interval=1,
            what="v3 rolled back",
        )
    assert final["modelVersion"] == "v2"
    # Readiness probes held traffic back from pods still loading: none of the healthy
    # rollout's requests failed.
    assert set(promoted) == {"200"}, promoted
    targets = pod_prometheus.targets()
    assert targets, "Prometheus discovered no pods"
    assert all(t["labels"]["pod"] and t["labels"]["revision"] for t in targets)


def test_model_over_its_memory_limit_is_oom_killed_and_the_stable_keeps_serving(
    node: realnode.RealNode,
    operator: OperatorProcess,
    kube: Kube,
    models: Models,
    model_host: ModelHost,
) -> None:
    """A canary whose memory limit is below what the server needs: the kernel kills it, the
    kubelet restarts it, it never turns Ready, so the Service keeps sending every request to the
    stable pods and the rollout does not move past it."""
    md = spec(model_host.url(models.small.path), models.small.sha256, serving_image(node))
    md["autoscaling"] = {"minReplicas": 1, "maxReplicas": 1}
    md["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}]}
    assert kube.apply(model_deployment("oom", md)).returncode == 0
    wait_md_ready(kube, "oom", operator)
    stable = {p["metadata"]["name"] for p in ready_replicas(kube, "oom", 1)}
    cluster_ip = routed_service(kube, "oom")

    md["model"]["version"] = "v2"
    md["serving"]["resources"] = {
        "requests": {"cpu": "100m", "memory": "32Mi"},
        "limits": {"memory": "32Mi"},  # python with onnxruntime alone needs more
    }
    assert kube.apply(model_deployment("oom", md)).returncode == 0
    with Load(f"http://{cluster_ip}:8080/v2/models/oom/infer", rate=10, limit_s=150) as load:

        def killed() -> dict[str, Any] | None:
            for pod in kube.list("pods", "modelrollout.io/deployment=oom"):
                name = pod["metadata"]["name"]
                if name not in stable and (oom := oom_status(pod)):
                    return oom | {"pod": name} if oom["restarts"] >= 1 else None
            return None

        oom = wait_for(killed, timeout=120, interval=1, what="the canary OOM-killed, restarted")

        # The ModelDeployment reports it: a condition and an event naming pod and container.
        def reported() -> dict[str, Any] | None:
            found = condition(kube.get("modeldeployment", "oom"), "OOMKilled")
            return found if found.get("status") == "True" else None

        message = wait_for(reported, timeout=60, what="the OOMKilled condition")["message"]
        assert f"container modelserver of pod {oom['pod']}" in message, message
        assert "exit code 137" in message
        assert "memory limit 32Mi" in message
        events = json.loads(
            kube.run(
                *("-n", kube.namespace, "get", "events", "-o", "json"),
                "--field-selector=reason=OOMKilled,involvedObject.kind=ModelDeployment",
            )
        )["items"]
        assert any(oom["pod"] in e["message"] for e in events), events
    assert oom["exitCode"] == 137
    assert {p["metadata"]["name"] for p in ready_pods(kube, "modelrollout.io/deployment=oom")} == (
        stable
    )
    status = kube.must("mdep", "oom")["status"]
    assert status["modelVersion"] == "v1"
    assert status.get("canaryRevision"), status
    assert set(load.results) == {"200"}, dict(load.results)
