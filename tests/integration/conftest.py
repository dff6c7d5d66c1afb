"""The real control plane, started once per test session, and the operator beside it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.gateway import Gateway
from hack.localcluster import LocalCluster, running
from hack.podrunner import PodRunner
from hack.prometheus import INSTALL_HINT, Prometheus, find_binary

from .kube import REPO, Kube, OperatorProcess

CRD = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    directory = tmp_path_factory.mktemp("cluster")
    with running(directory) as c:
        c.kubectl("apply", "--server-side", "-f", str(CRD))
        c.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelrollout.io")
        yield c


@pytest.fixture(scope="session")
def router_crds(cluster: LocalCluster) -> LocalCluster:
    """The project's stand-in HTTPRoute and VirtualService CRDs (hack/crds), once per session."""
    crds = sorted((REPO / "hack" / "crds").glob("*.yaml"))
    for crd in crds:
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    names = [f"crd/{path.name.removesuffix('.yaml')}" for path in crds]
    cluster.kubectl("wait", "--for=condition=Established", *names)
    return cluster


@pytest.fixture(scope="session")
def operator(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_path = Path(tmp_path_factory.mktemp("operator")) / "operator.log"
    proc = OperatorProcess(cluster, log_path)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def kube(cluster: LocalCluster) -> Iterator[Kube]:
    """A fresh namespace per test."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    yield Kube(cluster, namespace)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


# --- local stand-ins for pods: model server processes, Prometheus, a weighted gateway ----------


@pytest.fixture(scope="session")
def podrunner(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PodRunner]:
    """Runs a `modelserver` process per Running ModelDeployment pod, in the namespaces opted in
    through `modelservers` (none by default)."""
    runner = PodRunner(cluster.kubeconfig, tmp_path_factory.mktemp("podrunner"), namespaces=set())
    with runner:
        yield runner


@pytest.fixture
def modelservers(kube: Kube, podrunner: PodRunner) -> Iterator[PodRunner]:
    """The test's namespace served by the podrunner; its processes stop when the test ends."""
    podrunner.serve_namespace(kube.namespace)
    yield podrunner
    podrunner.forget_namespace(kube.namespace)


@pytest.fixture(scope="session")
def prometheus(
    podrunner: PodRunner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Debian's Prometheus scraping the podrunner's processes every second (file SD)."""
    if find_binary() is None:
        pytest.fail(f"prometheus is not installed: {INSTALL_HINT}")
    assert podrunner.file_sd_path is not None
    with Prometheus(tmp_path_factory.mktemp("prometheus"), podrunner.file_sd_path) as prom:
        yield prom


@pytest.fixture(scope="session")
def gateway(cluster: LocalCluster, podrunner: PodRunner) -> Iterator[Gateway]:
    """Routes /<namespace>/<name>/... by the current HTTPRoute weights (or uniformly)."""
    with Gateway(cluster.kubeconfig, podrunner) as gw:
        yield gw
