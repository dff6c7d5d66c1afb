"""What a tenant's ModelDeployment can make the operator do, on the real control plane: a model
URI the platform's policy refuses, a model whose reads keep stopping the operator, and the
chart's admission policy holding the operator to the track label on pods."""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hack.localcluster import LocalCluster

from .kube import REPO, Kube, OperatorProcess, condition, model_deployment, revision, wait_for
from .test_helm import Helm, helm

__all__ = ["helm"]  # the fixture, shared with test_helm

pytestmark = pytest.mark.integration

SHA = "0" * 64


def manifest(name: str, uri: str) -> dict[str, Any]:
    return model_deployment(
        name,
        {
            "model": {"uri": uri, "sha256": SHA, "version": "v1"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    )


def status_of(kube: Kube, name: str) -> dict[str, Any]:
    return dict((kube.get("mdep", name) or {}).get("status") or {})


def test_a_refused_model_uri_names_the_rule_in_status(
    kube: Kube, operator: OperatorProcess
) -> None:
    # The tests' operator allows file, http(s) and s3 only (tests/integration/kube.py).
    kube.apply(manifest("gcs", "gs://models/iris.onnx"))
    ready = wait_for(
        lambda: (c := condition(kube.get("mdep", "gcs"), "Ready")).get("reason") and c,
        what="Ready condition",
    )
    assert ready["reason"] == "RefusedByPolicy"
    assert "policy.modelUriSchemes" in ready["message"]
    assert kube.list("deployments") == []


class _Drip(BaseHTTPRequestHandler):
    """Sends a model's headers, then a byte every half second, for 60 s at most."""

    protocol_version = "HTTP/1.1"
    seen: list[float]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        for _ in range(120):
            try:
                self.wfile.write(b"\x08")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.5)


@pytest.fixture
def drip() -> Iterator[tuple[str, list[float]]]:
    seen: list[float] = []
    handler = type("Handler", (_Drip,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/model.onnx", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_model_whose_reads_stop_the_operator_is_not_read_again(
    kube: Kube, operator: OperatorProcess, drip: tuple[str, list[float]]
) -> None:
    uri, seen = drip
    m = manifest("stuck", uri)
    kube.apply(m)
    rev = revision(m)

    def marked(attempts: int) -> bool:
        mark = status_of(kube, "stuck").get("profiling") or {}
        return mark.get("revision") == rev and mark.get("attempts") == attempts

    def read_started(attempt: int) -> bool:
        return marked(attempt) and len(seen) == attempt

    # The mark is in the API server before the read starts; the operator stops mid-read.
    try:
        for attempt in (1, 2):
            # A restarted operator resyncs every object it sees first: allow for a busy cluster.
            wait_for(partial(read_started, attempt), timeout=150, what=f"read {attempt}")
            operator.kill()
            operator.start()
        ready = wait_for(
            lambda: (c := condition(kube.get("mdep", "stuck"), "Ready")).get("reason") and c,
            timeout=150,
            what="Ready condition",
        )
    finally:
        if operator.popen is None:
            operator.start()
    assert ready["reason"] == "ProfileInterrupted", ready
    assert "2 reads of this model stopped the operator" in ready["message"]
    # Resyncs come every 5 s: none of them reads the model again.
    time.sleep(7)
    assert len(seen) == 2
    assert marked(2)


def test_the_admission_policy_lets_the_operator_change_only_the_track_label(
    cluster: LocalCluster, kube: Kube, helm: Helm
) -> None:
    """The chart's ValidatingAdmissionPolicy, enforced by the real API server."""
    release = f"vap-{kube.namespace}"
    rendered = helm(
        *("template", release, str(REPO / "charts" / "modelrollout")),
        *("--namespace", kube.namespace, "--kube-version", "1.34.0"),
        *("--set", "admissionPolicy.enabled=true"),
        *("--show-only", "templates/admissionpolicy.yaml"),
    ).stdout
    cluster.kubectl("apply", "-f", "-", stdin=rendered)
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "server",
                "labels": {"modelrollout.io/track": "canary", "modelrollout.io/revision": "r1"},
            },
            "spec": {"containers": [{"name": "c", "image": "modelserver:test"}]},
        }
        assert kube.apply(pod).returncode == 0
        operator = f"system:serviceaccount:{kube.namespace}:{release}-modelrollout"

        def patch(body: dict[str, Any], user: str | None = operator) -> str:
            args = ["-n", kube.namespace, "patch", "pod", "server", "--type", "merge"]
            args += ["-p", json.dumps(body)]
            if user:
                # The operator's name with an admin's rights: only the policy can refuse it.
                args += [f"--as={user}", "--as-group=system:masters"]
            result = subprocess.run(
                [str(cluster.binaries.kubectl), "--kubeconfig", str(cluster.kubeconfig), *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return result.stderr if result.returncode else ""

        # The API server loads a new policy within a second or two; until then each probe
        # is a real change (a new value), so it is refused as soon as the policy holds.
        probes = itertools.count()
        refused = wait_for(
            lambda: patch({"metadata": {"labels": {"probe": str(next(probes))}}}),
            what="the policy in force",
        )
        assert "may change no pod label but modelrollout.io/track" in refused
        relabel = {"metadata": {"labels": {"modelrollout.io/revision": "r2"}}}
        assert "may change no pod label" in patch(relabel)
        assert patch({"metadata": {"labels": {"modelrollout.io/track": "stable"}}}) == ""
        assert "annotations, owners or finalizers" in patch(
            {"metadata": {"annotations": {"x": "y"}}}
        )
        assert "spec" in patch({"spec": {"activeDeadlineSeconds": 5}})
        # Everyone else is left alone.
        assert patch(relabel, user=None) == ""
        labels = kube.must("pod", "server")["metadata"]["labels"]
        assert labels["modelrollout.io/track"] == "stable"
        assert labels["modelrollout.io/revision"] == "r2"
    finally:
        cluster.kubectl("delete", "-f", "-", stdin=rendered, check=False)


def test_credentials_come_from_secrets_and_never_from_the_spec(
    kube: Kube, operator: OperatorProcess
) -> None:
    inline = manifest("inline", "https://alice:hunter2@models.example/m.onnx")
    refused = kube.apply(inline)
    assert refused.returncode != 0
    assert "must not carry credentials" in refused.stderr
    assert "hunter2" not in kube.run("-n", kube.namespace, "get", "mdep", "-o", "json")

    m = manifest("secrets", "s3://models/m.onnx")
    m["spec"]["model"]["credentialsSecret"] = "store-creds"
    m["spec"]["hardware"] = {"mode": "cpu"}  # the operator does not read s3://
    m["spec"]["serving"] = {
        "env": [{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "api"}}}],
        "auth": {"tokenSecret": {"name": "server-token", "key": "token"}},
    }
    assert kube.apply(m).returncode == 0
    rev = revision(m)
    deployment = wait_for(lambda: kube.get("deployment", f"secrets-{rev}"), what="Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "k", "key": "api"}}
    assert env["MODELSERVER_TOKEN_FILE"]["value"].endswith("/token")
    assert container["envFrom"] == [{"secretRef": {"name": "store-creds"}}]
    (token,) = [v for v in pod["volumes"] if v["name"] == "token"]
    assert token["secret"]["secretName"] == "server-token"
