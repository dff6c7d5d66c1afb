"""The Helm chart installed into the real local control plane with the real helm binary.

Pods land on kwok nodes, which report them Running and Ready without running a container, so
the operator Deployment becomes Available without an image. What a container would do is checked
by running the operator as a local process with the installed Deployment's environment and the
chart's ServiceAccount token: the RBAC the chart grants must be enough for a real reconcile.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.localcluster import CPU_NODES, LocalCluster, build_tools

from .conftest import Models
from .kube import REPO, Kube, OperatorProcess, wait_for

pytestmark = pytest.mark.integration

CHART = REPO / "charts" / "modelrollout"
CRD = "modeldeployments.modelrollout.io"
# Pod Security admission runs in the API server: a namespace that enforces `restricted` rejects
# any operator pod that does not meet it, so the Deployment would never become Available.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@dataclass
class Helm:
    binary: Path
    kubeconfig: Path
    home: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = os.environ | {
            "KUBECONFIG": str(self.kubeconfig),
            # Helm's repository cache and plugins stay out of the user's home.
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=300, env=env
        )
        if check:
            assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
        return result


@pytest.fixture(scope="session")
def helm(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = build_tools("helm")["helm"] / "helm"
    return Helm(binary, cluster.kubeconfig, tmp_path_factory.mktemp("helm"))


@dataclass
class Release:
    name: str
    namespace: str


@pytest.fixture
def release(cluster: LocalCluster, helm: Helm) -> Iterator[Release]:
    """A namespace enforcing the restricted Pod Security Standard, for one release."""
    rel = Release(name=f"mr-{uuid.uuid4().hex[:6]}", namespace=f"mr-sys-{uuid.uuid4().hex[:6]}")
    cluster.kubectl("create", "namespace", rel.namespace)
    cluster.kubectl(
        "label", "namespace", rel.namespace, *[f"{k}={v}" for k, v in RESTRICTED.items()]
    )
    yield rel
    helm("uninstall", rel.name, "--namespace", rel.namespace, "--ignore-not-found", "--wait")
    cluster.kubectl("delete", "namespace", rel.namespace, "--wait=false")


@pytest.fixture
def sole_operator(operator: OperatorProcess) -> Iterator[None]:
    """The session's operator watches every namespace with the test settings. While a test runs
    the operator as the chart configures it, the session's one stands aside: two standalone
    operators with different settings would take turns rewriting the same children."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


def get(cluster: LocalCluster, kind: str, name: str, namespace: str = "") -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
    if namespace:
        args += ["-n", namespace]
    out = cluster.kubectl(*args)
    return json.loads(out) if out.strip() else None


def available(deployment: dict[str, Any] | None) -> bool:
    if not deployment:
        return False
    status = deployment.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return (
        conditions.get("Available") == "True"
        and status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == deployment["spec"]["replicas"]
        and status.get("availableReplicas") == deployment["spec"]["replicas"]
    )


def operator_pods(cluster: LocalCluster, rel: Release) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        *("get", "pods", "-n", rel.namespace, "-o", "json"),
        *("-l", f"app.kubernetes.io/instance={rel.name},app.kubernetes.io/component=operator"),
    )
    pods: list[dict[str, Any]] = json.loads(out)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def adopt_crd(cluster: LocalCluster, rel: Release) -> None:
    """Hand the CRD the session applied with kubectl over to this release, as a user who
    installed crds/ first would: Helm adopts an object that carries its ownership metadata."""
    cluster.kubectl("label", "crd", CRD, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    cluster.kubectl(
        *("annotate", "crd", CRD, "--overwrite"),
        f"meta.helm.sh/release-name={rel.name}",
        f"meta.helm.sh/release-namespace={rel.namespace}",
    )


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def model_deployment(name: str, models: Models, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": models.small.uri, "sha256": models.small.sha256, "version": "v1"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            **spec,
        },
    }


def test_install_upgrade_uninstall(
    cluster: LocalCluster, helm: Helm, release: Release, kube: Kube, models: Models
) -> None:
    # The namespace really enforces `restricted`: a pod without the chart's settings is refused.
    refused = subprocess.run(
        [
            *(str(cluster.binaries.kubectl), "--kubeconfig", str(cluster.kubeconfig)),
            *("run", "plain", "--image=busybox", "-n", release.namespace, "--dry-run=server"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr

    adopt_crd(cluster, release)
    installed = helm(
        *("install", release.name, str(CHART), "--namespace", release.namespace),
        *("--set", "crds.install=true", "--set", "crds.keep=true"),
        *("--wait", "--timeout", "120s"),
    )
    assert f"is installed as release {release.name} in {release.namespace}" in installed.stdout

    name = f"{release.name}-modelrollout"
    deployment = get(cluster, "deployment", name, release.namespace)
    assert available(deployment), deployment
    assert deployment is not None
    pods = operator_pods(cluster, release)
    assert len(pods) == 1
    # The real scheduler placed it on a CPU node: the GPU node's taint is not tolerated.
    assert pods[0]["spec"]["nodeName"] in CPU_NODES
    assert {c["type"]: c["status"] for c in pods[0]["status"]["conditions"]}["Ready"] == "True"
    assert env_of(deployment)["MODELROLLOUT_LOG_FORMAT"] == "json"
    assert get(cluster, "serviceaccount", name, release.namespace)
    assert get(cluster, "service", f"{name}-metrics", release.namespace)
    cluster_role = f"{release.namespace}-{name}"
    assert get(cluster, "clusterrole", cluster_role)
    assert get(cluster, "clusterrolebinding", cluster_role)
    crd = get(cluster, "crd", CRD)
    assert crd is not None
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name

    # A ModelDeployment created while the chart is installed must outlive the uninstall.
    assert kube.apply(model_deployment("survivor", models)).returncode == 0

    # An upgrade that changes values rolls the Deployment; --wait returns once it is Available.
    helm(
        *("upgrade", release.name, str(CHART), "--namespace", release.namespace),
        *("--reuse-values", "--set", "operator.logFormat=plain"),
        *("--set", "operator.resyncSeconds=7", "--wait", "--timeout", "120s"),
    )
    upgraded = get(cluster, "deployment", name, release.namespace)
    assert upgraded is not None
    assert upgraded["metadata"]["generation"] > deployment["metadata"]["generation"]
    assert available(upgraded), upgraded
    assert env_of(upgraded)["MODELROLLOUT_LOG_FORMAT"] == "plain"
    assert env_of(upgraded)["MODELROLLOUT_RESYNC_SECONDS"] == "7"

    # Recreate: no old pod runs beside the new one.
    def one_pod() -> list[dict[str, Any]] | None:
        pods = operator_pods(cluster, release)
        return pods if len(pods) == 1 else None

    pods = wait_for(
        one_pod,
        what="one operator pod after the upgrade",
    )
    (container,) = pods[0]["spec"]["containers"]
    assert {"name": "MODELROLLOUT_LOG_FORMAT", "value": "plain"} in container["env"]
    history = json.loads(
        helm("history", release.name, "-n", release.namespace, "-o", "json").stdout
    )
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    helm("uninstall", release.name, "--namespace", release.namespace, "--wait")
    assert get(cluster, "deployment", name, release.namespace) is None
    assert get(cluster, "serviceaccount", name, release.namespace) is None
    assert get(cluster, "service", f"{name}-metrics", release.namespace) is None
    assert get(cluster, "clusterrole", cluster_role) is None
    assert get(cluster, "clusterrolebinding", cluster_role) is None
    wait_for(lambda: not operator_pods(cluster, release), what="operator pods gone")
    # crds.keep: the CRD, and with it every ModelDeployment, stays.
    kept = get(cluster, "crd", CRD)
    assert kept is not None
    assert kept["metadata"]["uid"] == crd["metadata"]["uid"]
    assert kube.get("mdep", "survivor") is not None


def token_kubeconfig(cluster: LocalCluster, rel: Release, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount, as its pod would."""
    token = cluster.kubectl(
        "create", "token", f"{rel.name}-modelrollout", "-n", rel.namespace, "--duration=1h"
    ).strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def run_as_chart(
    cluster: LocalCluster, rel: Release, directory: Path, **extra: str
) -> OperatorProcess:
    """The operator as the installed pod would run it: the Deployment's own environment and the
    ServiceAccount's token. Only the listening ports move to free local ones."""
    deployment = get(cluster, "deployment", f"{rel.name}-modelrollout", rel.namespace)
    assert deployment is not None
    env = {
        k: v
        for k, v in env_of(deployment).items()
        if k
        not in (
            "MODELROLLOUT_METRICS_PORT",
            "MODELROLLOUT_HEALTH_PORT",
            "MODELROLLOUT_BIND_ADDRESS",
        )
    }
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = token_kubeconfig(cluster, rel, directory / "operator.kubeconfig")
    env |= {"KUBECONFIG": str(kubeconfig), "MODELROLLOUT_KUBECONFIG": str(kubeconfig), **extra}
    proc = OperatorProcess(cluster, directory / "operator.log", env=env)
    proc.start()
    return proc


def wait_ready(kube: Kube, name: str, proc: OperatorProcess) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = kube.get("mdep", name)
        status = (obj or {}).get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        current = obj and status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and conditions.get("Ready") == "True" else None

    try:
        return wait_for(ready, timeout=90, what=f"{name} Ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{proc.log_tail(60)}") from None


def permission_errors(proc: OperatorProcess, namespace: str) -> list[str]:
    """Refusals in the operator's log. Requests into other tests' namespaces do not count: a
    namespace being deleted refuses new objects with 403 too, whatever the RBAC."""
    text = proc.log_path.read_text(errors="replace")
    return [
        line
        for line in text.splitlines()
        if ("forbidden" in line.lower() or "not enough permissions" in line.lower())
        and ("/namespaces/" not in line or f"/namespaces/{namespace}/" in line)
    ]


def reconcile_and_clean_up(kube: Kube, proc: OperatorProcess, models: Models) -> None:
    # GPU mode makes the operator read node capacity and every pod's requests, cluster-wide.
    body = model_deployment("rbac", models, hardware={"mode": "gpu"})
    assert kube.apply(body).returncode == 0
    obj = wait_ready(kube, "rbac", proc)
    hardware = obj["status"]["hardware"]
    # Either outcome needs the capacity read: placed on the GPU node, or fell back for lack of room.
    assert hardware["tier"] == "gpu" or hardware["fallback"] is True, hardware
    for kind in ("service", "hpa", "pdb"):
        assert kube.get(kind, "rbac") is not None, kind
    assert kube.list("deployment", "modelrollout.io/deployment=rbac")
    # Events recorded under the chart's identity.
    assert any(e.get("reportingComponent") == "modelrollout" for e in kube.list("events"))

    # Deletion goes through the operator's finalizer, which it removes with the same rights.
    kube.delete("mdep", "rbac")
    wait_for(lambda: kube.get("mdep", "rbac") is None, what="ModelDeployment deleted")


def health_and_metrics(proc: OperatorProcess) -> None:
    """The paths the chart's probe and metrics Service point at, answered by the operator."""

    def get_ok(port: int, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return str(resp.read().decode()) if resp.status == 200 else None
        except OSError:
            return None

    wait_for(lambda: get_ok(proc.health_port, "/healthz") is not None, what="/healthz answers")
    metrics = wait_for(lambda: get_ok(proc.metrics_port, "/metrics"), what="/metrics answers")
    assert "modelrollout_reconcile_duration_seconds" in metrics


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
@pytest.mark.usefixtures("sole_operator")
def test_chart_rbac_is_enough_for_the_operator(
    cluster: LocalCluster,
    helm: Helm,
    release: Release,
    kube: Kube,
    models: Models,
    tmp_path: Path,
    scope: str,
) -> None:
    sets = ["crds.install=false", f"rbac.scope={scope}"]
    if scope == "namespace":
        sets.append(f"operator.watchNamespaces[0]={kube.namespace}")
    helm(
        *("install", release.name, str(CHART), "--namespace", release.namespace),
        *[arg for s in sets for arg in ("--set", s)],
        *("--wait", "--timeout", "120s"),
    )
    sa = f"system:serviceaccount:{release.namespace}:{release.name}-modelrollout"

    def can(*args: str) -> bool:
        result = cluster.kubectl("auth", "can-i", "--as", sa, *args, check=False)
        return result.strip() == "yes"

    assert can("patch", "deployments", "-n", kube.namespace)
    # Namespaced: no write access outside the watched namespace.
    assert can("patch", "deployments", "-n", "default") is (scope == "cluster")
    assert not can("get", "secrets", "-n", kube.namespace)

    proc = run_as_chart(cluster, release, tmp_path / "operator")
    try:
        expected = "[]" if scope == "cluster" else json.dumps([kube.namespace])
        assert json.loads(proc.env["MODELROLLOUT_NAMESPACES"]) == json.loads(expected)
        health_and_metrics(proc)
        reconcile_and_clean_up(kube, proc, models)
        assert permission_errors(proc, kube.namespace) == []
    finally:
        proc.stop()


@pytest.mark.usefixtures("sole_operator")
def test_peering(
    cluster: LocalCluster,
    helm: Helm,
    release: Release,
    kube: Kube,
    models: Models,
    tmp_path: Path,
) -> None:
    peering = f"peering-{release.name}"
    helm(
        *("install", release.name, str(CHART), "--namespace", release.namespace),
        *("--set", "crds.install=false", "--set", "peering.enabled=true"),
        *("--set", f"peering.name={peering}", "--set", "replicaCount=2"),
        *("--wait", "--timeout", "120s"),
    )
    name = f"{release.name}-modelrollout"
    deployment = get(cluster, "deployment", name, release.namespace)
    assert available(deployment), deployment
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    assert len(operator_pods(cluster, release)) == 2
    for kind in ("clusterkopfpeerings", "kopfpeerings"):
        crd = get(cluster, "crd", f"{kind}.kopf.dev")
        assert crd is not None
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert get(cluster, "clusterkopfpeering", peering) is not None

    # Two replicas as the chart runs them: each publishes a keep-alive under its pod name.
    replicas = ("replica-a", "replica-b")
    procs = [run_as_chart(cluster, release, tmp_path / r, POD_ID=r) for r in replicas]
    try:
        assert all(p.env["MODELROLLOUT_PEERING"] == peering for p in procs)

        def peers() -> dict[str, Any] | None:
            status = (get(cluster, "clusterkopfpeering", peering) or {}).get("status") or {}
            return status if set(replicas) <= set(status) else None

        status = wait_for(peers, what="both replicas' keep-alives in the peering object")
        priorities = {status[r]["priority"] for r in replicas}
        assert len(priorities) == 2, f"replicas of equal priority would both pause: {status}"

        # kopf starts every replica paused; one resumes while no peer outranks it and pauses
        # again when one does. In the end only the highest priority is active.
        highest = max(replicas, key=lambda r: int(status[r]["priority"]))

        def active() -> set[str]:
            running = set()
            for proc in procs:
                lines = [
                    line
                    for line in proc.log_path.read_text().splitlines()
                    if "Resuming operations" in line or "Pausing operations" in line
                ]
                if lines and "Resuming operations" in lines[-1]:
                    running.add(proc.env["POD_ID"])
            return running

        wait_for(lambda: active() == {highest}, what=f"{highest} alone active")
        reconcile_and_clean_up(kube, procs[0], models)
        for proc in procs:
            assert permission_errors(proc, kube.namespace) == []

        # An upgrade keeps the peering object, and with it the running replicas' keep-alives.
        uid = (get(cluster, "clusterkopfpeering", peering) or {})["metadata"]["uid"]
        helm(
            *("upgrade", release.name, str(CHART), "--namespace", release.namespace),
            *("--reuse-values", "--set", "operator.resyncSeconds=15", "--wait"),
        )
        after = get(cluster, "clusterkopfpeering", peering)
        assert after is not None
        assert after["metadata"]["uid"] == uid
        assert set(replicas) <= set(after.get("status") or {})
    finally:
        for proc in procs:
            proc.stop()
    cluster.kubectl("delete", "clusterkopfpeering", peering, "--ignore-not-found")
