"""The canary rig shared by the progressive-delivery tests: a ModelDeployment `iris` behind
the HTTPRoute `web`, its pods served by stand-in processes, live traffic through the gateway,
the operator judging from Prometheus (the `rig` fixture in conftest.py builds it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hack.gateway import Gateway
from hack.loadgen import LoadStats, infer_payload, run_load
from hack.prometheus import Prometheus

from .kube import Kube, OperatorProcess, model_deployment, revision, wait_for

if TYPE_CHECKING:  # conftest builds the rig from its fixtures and imports this module
    from .conftest import Models

ROUTE = "web"


def web_route() -> dict[str, Any]:
    """The route a user wrote, all traffic to the stable Service; the operator steers it."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE},
        "spec": {
            "parentRefs": [{"name": "public-gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": "iris-stable", "port": 8080, "weight": 100}],
                }
            ],
        },
    }


@dataclass
class Rig:
    """A namespace with the route, the operator, stand-in pods, Prometheus and the gateway."""

    kube: Kube
    operator: OperatorProcess
    gateway: Gateway
    prometheus: Prometheus
    models: Models

    def manifest(
        self,
        version: str,
        env: dict[str, str] | None = None,
        steps: list[dict[str, Any]] | None = None,
        bake: str = "5s",
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "model": {
                "uri": self.models.small.uri,
                "sha256": self.models.small.sha256,
                "version": version,
            },
            "serving": {"env": [{"name": k, "value": v} for k, v in (env or {}).items()]},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            "rollout": {
                "steps": steps
                or [
                    {"setWeight": 20},
                    {"analysis": {}},
                    {"setWeight": 50},
                    {"analysis": {}},
                ],
                "analysis": {
                    # The sequential analysis (the default) reads the evidence every 2 s.
                    "interval": "2s",
                    "minRequests": 20,
                    # Every process of the test shares two cores, so tail latency is
                    # scheduling noise here; latency verdicts are covered by unit tests.
                    "maxLatencyRatio": 3,
                    "prometheusUrl": self.prometheus.url,
                },
                "trafficRouter": {"type": "gatewayAPI", "httpRoute": ROUTE},
                "bakeTime": bake,
                "scaleDownDelay": "2s",
                "progressDeadline": "5m",
            },
        }
        return model_deployment("iris", spec)

    def status(self) -> dict[str, Any]:
        return dict((self.kube.get("mdep", "iris") or {}).get("status") or {})

    def deploy(self, m: dict[str, Any]) -> str:
        result = self.kube.apply(m)
        assert result.returncode == 0, result.stderr
        return revision(m)

    def ready_stable(self, manifest: dict[str, Any] | None = None) -> str:
        """Deploy the first version (the rig's v1 unless given) and wait until it serves."""
        rev = self.deploy(manifest or self.manifest("v1"))
        wait_for(
            lambda: (
                self.status().get("stableRevision") == rev and self.status().get("phase") == "Ready"
            ),
            what="v1 stable",
            timeout=60,
        )
        # Traffic flows only once the stand-in process of a stable pod answers.
        wait_for(lambda: self._answers(), what="stable answering", timeout=60)
        return rev

    def _answers(self) -> bool:
        stats = self.load(rate=5, seconds=1)
        return stats.by_status.get(200, 0) > 0

    def load(self, rate: float, seconds: float) -> LoadStats:
        return run_load(
            self.gateway.url,
            self.kube.namespace,
            "iris",
            rate,
            seconds,
            infer_payload(4, input_name="input"),
            timeout_s=5,
        )

    @contextmanager
    def steady_load(self, rate: float = 40) -> Iterator[list[LoadStats]]:
        """Live traffic in 2-second bounded slices until the block ends."""
        stop = threading.Event()
        slices: list[LoadStats] = []

        def run() -> None:
            while not stop.is_set():
                slices.append(self.load(rate, 2))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield slices
        finally:
            stop.set()
            thread.join(timeout=20)

    def route_weights(self) -> dict[str, int]:
        route = self.kube.must("httproute", ROUTE)
        refs = route["spec"]["rules"][0]["backendRefs"]
        return {r["name"]: r.get("weight", 1) for r in refs}


def watch(rig: Rig, until: Any, timeout: float, what: str) -> list[dict[str, Any]]:
    """Status snapshots every half second until `until(status)` holds."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = rig.status()
        status["_t"] = time.monotonic()
        seen.append(status)
        if until(status):
            return seen
        time.sleep(0.5)
    last = {k: seen[-1].get(k) for k in ("phase", "message", "canaryWeight", "rollout", "history")}
    raise AssertionError(f"timed out waiting for {what}; last status {last}")
