"""Small helpers over kubectl for the integration tests: they read what the API server holds."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hack import realnode
from hack.localcluster import LocalCluster
from hack.processes import free_port

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def wait_for(
    condition: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.5, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}: {last!r}")


def wait_established(cluster: LocalCluster, *crds: str, timeout: float = 60) -> None:
    """Wait until each CRD (`crd/NAME`) is Established. `kubectl wait` fails outright on a CRD
    created a moment ago whose status has no conditions yet, so this reads them itself."""
    path = '{.status.conditions[?(@.type=="Established")].status}'

    def established(crd: str) -> bool:
        out = cluster.kubectl("get", crd, "-o", f"jsonpath={path}", check=False)
        return out.strip() == "True"

    for crd in crds:
        wait_for(functools.partial(established, crd), timeout=timeout, what=f"{crd} Established")


@dataclass
class Kube:
    cluster: LocalCluster
    namespace: str = "default"

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl(*args, stdin=stdin, check=check)

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """kubectl apply, returning the completed process so tests can read admission errors."""
        return subprocess.run(
            [
                str(self.cluster.binaries.kubectl),
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "-n",
                self.namespace,
                "apply",
                "-f",
                "-",
            ],
            input=json.dumps(manifest),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.run("-n", self.namespace, "get", kind, name, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def must(self, kind: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, name)
        assert obj is not None, f"{kind}/{name} does not exist in {self.namespace}"
        return obj

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["-n", self.namespace, "get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.run(*args))["items"]
        return items

    def delete(self, kind: str, name: str, wait: bool = False) -> None:
        self.run("-n", self.namespace, "delete", kind, name, f"--wait={str(wait).lower()}")

    def patch(self, kind: str, name: str, patch: dict[str, Any], kind_of: str = "merge") -> None:
        self.run(
            "-n", self.namespace, "patch", kind, name, "--type", kind_of, "-p", json.dumps(patch)
        )


IMAGE = "modelrollout/modelserver:test"  # the serving image OperatorProcess configures
GPU_IMAGE = "modelrollout/modelserver:test-gpu"  # and its GPU variant


def model_deployment(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def revision(manifest: dict[str, Any]) -> str:
    """The revision the operator computes for this manifest."""
    from modelrollout.api.spec import ModelDeploymentSpec
    from modelrollout.plan.revision import revision_of

    return revision_of(ModelDeploymentSpec.model_validate(manifest["spec"]), IMAGE)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """The condition of that type in the object's status, or {}."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


# An operator run outside the cluster, as the tests run it: models are local files or served
# on loopback (or at the local real node's address, where its pods can fetch them), and each
# test names its own Prometheus on a free port.
LOCAL_POLICY = json.dumps(
    {
        "modelUriSchemes": ["file", "http", "https", "s3"],
        # The tests' own Secrets, as a platform that lets the operator profile private models.
        "readModelCredentials": True,
        "allowedNetworks": ["127.0.0.0/8", f"{realnode.NODE_IP}/32"],
        "prometheusUrls": ["http://127.0.0.1:*"],
        "hookUrls": ["http://127.0.0.1:*"],
        "syntheticMaxRate": 20,
    }
)


@dataclass
class OperatorProcess:
    """The operator as users run it: `python -m modelrollout`, configured by environment."""

    cluster: LocalCluster
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0

    def start(self) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        env = (
            os.environ
            | {
                "KUBECONFIG": str(self.cluster.kubeconfig),
                "MODELROLLOUT_KUBECONFIG": str(self.cluster.kubeconfig),
                "MODELROLLOUT_RESYNC_SECONDS": "5",
                "MODELROLLOUT_METRICS_PORT": str(self.metrics_port),
                "MODELROLLOUT_HEALTH_PORT": str(self.health_port),
                "MODELROLLOUT_BIND_ADDRESS": "127.0.0.1",
                "MODELROLLOUT_SERVING_IMAGE": IMAGE,
                "MODELROLLOUT_SERVING_IMAGE_GPU": GPU_IMAGE,
                "MODELROLLOUT_POLICY": LOCAL_POLICY,
            }
            | self.env
        )
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "modelrollout"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to tidy up, as in a node failure."""
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
