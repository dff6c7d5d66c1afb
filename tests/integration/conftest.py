"""The real control plane, started once per test session, and the operator beside it."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hack.gateway import Gateway
from hack.localcluster import LocalCluster, running
from hack.models import write_mlp
from hack.podrunner import PodRunner
from hack.prometheus import INSTALL_HINT, Prometheus, find_binary

from .kube import REPO, Kube, OperatorProcess, wait_established
from .rig import Rig, web_route

CRD = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"
_DESELECTED = pytest.StashKey[int]()


def real_node_wanted() -> bool:
    """MODELROLLOUT_REAL_NODE=1 starts a real node beside the kwok nodes, =0 does not; unset,
    CI decides (CI runs it, so the real-node tests cannot be skipped there). Only one real node
    runs on a machine at a time, so local runs leave it off unless asked."""
    value = os.environ.get("MODELROLLOUT_REAL_NODE", "")
    return value == "1" or (value == "" and bool(os.environ.get("CI")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a real node, the tests that need one are deselected and counted, not skipped:
    under CI a skip fails the run, and MODELROLLOUT_REAL_NODE=0 is an explicit choice."""
    if real_node_wanted():
        return
    needs_node = [item for item in items if "node" in getattr(item, "fixturenames", ())]
    if needs_node:
        config.hook.pytest_deselected(items=needs_node)
        items[:] = [item for item in items if item not in needs_node]
        config.stash[_DESELECTED] = len(needs_node)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    count = terminalreporter.config.stash.get(_DESELECTED, 0)
    if count:
        terminalreporter.write_line(
            f"real node off (MODELROLLOUT_REAL_NODE=0): {count} real-node tests deselected"
        )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    directory = tmp_path_factory.mktemp("cluster")
    with_node = real_node_wanted()
    with running(directory, real_node=with_node) as c:
        c.kubectl("apply", "--server-side", "-f", str(CRD))
        wait_established(c, "crd/modeldeployments.modelrollout.io")
        yield c
    # The real node leaves nothing behind: no process, mount, pod network namespace, bridge,
    # KUBE-/CNI-/MRNODE- chain, kubepods cgroup or changed sysctl. Its stop checks the host
    # once it has finished, before another cluster's node may start.
    assert not c.node_leftovers, f"the real node left host changes: {c.node_leftovers}"


@pytest.fixture(scope="session")
def router_crds(cluster: LocalCluster) -> LocalCluster:
    """The project's stand-in HTTPRoute and VirtualService CRDs (hack/crds), once per session."""
    crds = sorted((REPO / "hack" / "crds").glob("*.yaml"))
    for crd in crds:
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    names = [f"crd/{path.name.removesuffix('.yaml')}" for path in crds]
    wait_established(cluster, *names)
    return cluster


def notifiers(directory: Path) -> str:
    """Two notifiers, a webhook and a Slack one, whose URLs are files a test writes (the
    operator reads them at each delivery, as it reads a mounted Secret)."""
    return json.dumps(
        [
            {"name": "test-webhook", "url_file": str(directory / "webhook-url")},
            {"name": "test-slack", "type": "slack", "url_file": str(directory / "slack-url")},
        ]
    )


@pytest.fixture(scope="session")
def operator(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_path = Path(tmp_path_factory.mktemp("operator")) / "operator.log"
    # Per-cluster thresholds (a documented setting) scaled down so a few-MB test model counts
    # as GPU-sized: real GPU-sized files would not fit the test budget.
    hardware = '{"gpu_min_parameters": 1000000, "gpu_min_weight_bytes": 4000000}'
    env = {"MODELROLLOUT_HARDWARE": hardware, "MODELROLLOUT_NOTIFIERS": notifiers(log_path.parent)}
    proc = OperatorProcess(cluster, log_path, env=env)
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


@pytest.fixture
def rig(
    kube: Kube,
    operator: OperatorProcess,
    router_crds: LocalCluster,
    modelservers: PodRunner,
    prometheus: Prometheus,
    gateway: Gateway,
    models: Models,
) -> Rig:
    """The canary tests' namespace: the route `web`, stand-in pods, Prometheus, the gateway."""
    assert kube.apply(web_route()).returncode == 0
    return Rig(kube, operator, gateway, prometheus, models)


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str

    @property
    def uri(self) -> str:
        return f"file://{self.path}"


@dataclass(frozen=True)
class Models:
    small: ModelFile  # ~100 parameters: cpu-small
    large: ModelFile  # ~2M parameters: gpu under the test thresholds above
    corrupt: ModelFile  # not a protobuf at all


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    directory = tmp_path_factory.mktemp("models")
    small = directory / "small.onnx"
    large = directory / "large.onnx"
    corrupt = directory / "corrupt.onnx"
    corrupt.write_bytes(b"\xff\xff\xff\xff not an onnx model")
    return Models(
        small=ModelFile(small, write_mlp(small)),
        large=ModelFile(large, write_mlp(large, features=512, hidden=2048, classes=512)),
        corrupt=ModelFile(corrupt, hashlib.sha256(corrupt.read_bytes()).hexdigest()),
    )
