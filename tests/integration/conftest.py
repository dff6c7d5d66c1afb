"""The real control plane, started once per test session, and the operator beside it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.localcluster import LocalCluster, running

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
