"""The live show of `make demo`: model `sentiment` under constant load, a healthy v2 promoted step
by step, then a v3 that answers 30% of requests with errors and a v4 that predicts wrongly (its
label map shuffled), each rolled back by itself. At the end it counts the answers that were not
2xx: on the real node there must be none but v3's injected 500s, since readiness probes keep
traffic from pods that are not serving yet and the model server drains before it exits (the
demo fails otherwise); kwok-only, a stand-in still loading its model can answer 503.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hack import demonode, s3server
from hack.loadgen import infer_payload, run_load
from hack.models import write_mlp

SHOW = "sentiment"  # the ModelDeployment the live rollout show uses
RATE = 30  # requests a second
Kubectl = Callable[..., str]


def show_manifest(
    models: Path,
    store: str,
    prometheus: str,
    version: str,
    env: dict[str, str],
    real: bool = False,
    shuffled: bool = False,
) -> str:
    name = f"{SHOW}-shuffled" if shuffled else SHOW
    path = models / f"{name}.onnx"
    sha = write_mlp(path, seed=7, shuffled=shuffled)
    uri = s3server.put(store, f"s3://demo-models/{name}/model.onnx", path.read_bytes())
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": SHOW},
        "spec": {
            "parentRefs": [{"name": "public-gateway"}],
            "rules": [{"backendRefs": [{"name": f"{SHOW}-stable", "port": 8080, "weight": 100}]}],
        },
    }
    mdep = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": SHOW},
        "spec": {
            "model": {
                "uri": uri,
                "endpoint": store,
                "credentialsSecret": "model-store",
                "sha256": sha,
                "version": version,
            },
            "serving": {"env": [{"name": k, "value": v} for k, v in env.items()]},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
            "rollout": {
                "steps": [
                    {"setWeight": 20},
                    {"analysis": {}},
                    {"setWeight": 50},
                    {"analysis": {}},
                ],
                "analysis": {
                    "interval": "2s",
                    "minRequests": 20,
                    "maxLatencyRatio": 3,
                    "prometheusUrl": prometheus,
                    # Also judge what each version predicts against the stable.
                    "predictionShift": {"maxDivergence": 0.05},
                },
                "trafficRouter": {"type": "gatewayAPI", "httpRoute": SHOW},
                "bakeTime": "10s",
                "scaleDownDelay": "5s",
            },
        },
    }
    if real:
        # kube-proxy splits the Service's traffic by the replica ratio: no route to steer.
        del mdep["spec"]["rollout"]["trafficRouter"]  # type: ignore[index]
        demonode.place(mdep)
        return yaml.safe_dump(mdep, sort_keys=False)
    return yaml.safe_dump_all([route, mdep], sort_keys=False)


def _status(kubectl: Kubectl) -> dict[str, Any]:
    obj = json.loads(kubectl("get", "mdep", SHOW, "-o", "json"))
    return dict(obj.get("status") or {})


def _line(status: dict[str, Any]) -> str:
    analysis = (status.get("rollout") or {}).get("lastAnalysis") or {}
    verdict = f" | last analysis {analysis['verdict']}" if analysis else ""
    weight = status.get("canaryWeight", 0)
    bar = "#" * (weight // 5) + "." * (20 - weight // 5)
    return f"  {status.get('phase', '?'):<12} canary [{bar}] {weight:>3}%{verdict}"


def follow(kubectl: Kubectl, done: Callable[[dict[str, Any]], bool], timeout: float) -> Any:
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(kubectl)
        line = _line(status)
        if line != last:
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
            last = line
        if done(status):
            return status
        time.sleep(1)
    raise SystemExit("the rollout did not finish in time; see .cluster/operator.log")


class Load:
    """RATE requests a second to the model, in 2-second runs, until stopped; the answers are
    counted per phase of the show, by revision and status code."""

    def __init__(self, target: str, namespace: str) -> None:
        self.target, self.namespace = target, namespace
        self.phase = "healthy"
        self.counts: dict[str, Counter[int]] = {}
        self.stop = threading.Event()
        self.running = threading.Event()  # set when a run starts
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        payload = infer_payload(4, input_name="input")
        while not self.stop.is_set():
            phase = self.phase
            self.running.set()
            stats = run_load(self.target, self.namespace, SHOW, RATE, 2, payload, timeout_s=5)
            self.counts.setdefault(phase, Counter()).update(stats.by_status)

    def switch(self, phase: str) -> None:
        """Count from here on under `phase`, once the run under way has been counted."""
        self.phase = phase
        self.running.clear()
        self.running.wait(timeout=15)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def _target(kubectl: Kubectl, gateway: str, real: bool) -> tuple[str, str]:
    """Where the load goes: the Service itself on the real node (once kube-proxy routes it to
    the Ready pods), else the gateway, once the stand-in answers."""
    if real:
        return demonode.service_url(kubectl, SHOW), ""
    # kwok marks pods Ready at once; the stand-in process needs a moment to load its model.
    probe = infer_payload(4, input_name="input")
    deadline = time.monotonic() + 60
    while run_load(gateway, "default", SHOW, 5, 1, probe, timeout_s=5).by_status.get(200, 0) < 3:
        if time.monotonic() > deadline:
            raise SystemExit(
                "the sentiment model server did not answer; see .cluster/podrunner.log"
            )
    return gateway, "default"


def wait_gone(kubectl: Kubectl, revision: str, timeout: float = 120) -> None:
    """Wait until no pod of `revision` is left."""
    deadline = time.monotonic() + timeout
    selector = f"modelrollout.io/revision={revision}"
    while kubectl("get", "pods", "-l", selector, "-o", "name").strip():
        if time.monotonic() > deadline:
            raise SystemExit(f"the pods of revision {revision} were not gone in {timeout:.0f}s")
        time.sleep(1)


def run_show(
    kubectl: Kubectl, models: Path, store: str, gateway: str, prometheus: str, real: bool = False
) -> None:
    behind = "its Service (kube-proxy)" if real else "an HTTPRoute"
    print(f"\n== Live rollout: model 'sentiment' behind {behind}, {RATE} requests/s of traffic ==")

    def manifest(version: str, env: dict[str, str], shuffled: bool = False) -> str:
        return show_manifest(models, store, prometheus, version, env, real, shuffled)

    kubectl("apply", "-f", "-", stdin=manifest("v1", {}))
    kubectl("wait", "--for=condition=Ready", f"mdep/{SHOW}", "--timeout=180s")
    with Load(*_target(kubectl, gateway, real)) as load:
        time.sleep(3)
        print("\n-- v2, healthy: 20% -> analysis -> 50% -> analysis -> promoted --")
        kubectl("apply", "-f", "-", stdin=manifest("v2", {}))
        follow(
            kubectl,
            lambda s: s.get("modelVersion") == "v2" and not s.get("canaryRevision"),
            timeout=180,
        )
        load.switch("errors")
        print("\n-- v3, answers 30% of requests with errors: rolled back by itself --")
        kubectl("apply", "-f", "-", stdin=manifest("v3", {"MODELSERVER_FAULT_ERROR_RATIO": "0.3"}))
        bad_errors = follow(kubectl, lambda s: s.get("phase") == "RolledBack", timeout=180)
        # v3's pods answer through the one Service until they are gone; their 500s count as v3's.
        wait_gone(kubectl, str(bad_errors.get("failedRevision")))
        load.switch("shuffled")
        print(
            "\n-- v4, its label map shuffled (no errors, same speed, every answer wrong): "
            "rolled back by what it predicts --"
        )
        kubectl("apply", "-f", "-", stdin=manifest("v4", {}, shuffled=True))
        final = follow(
            kubectl,
            lambda s: (
                s.get("phase") == "RolledBack"
                and s.get("failedRevision") != bad_errors.get("failedRevision")
            ),
            timeout=180,
        )
    print(f"\nRolled back (v3): {final['history'][1]['reason']}")
    print(f"Rolled back (v4): {final['history'][0]['reason']}")
    print("History (newest first):")
    for entry in final["history"]:
        print(
            f"  {entry['revision']}  {entry['modelVersion']:<4} {entry['outcome']:<10} "
            f"{entry['reason']}"
        )
    report(load.counts, real=real)


def not_2xx(counts: Counter[int], injected: bool) -> Counter[int]:
    """Answers that were not 2xx, by status code (0: no answer at all); with `injected`, 500s
    are left out: they are the fault the show puts into v3 (the model server names no revision
    in its answers, so a 500 cannot be told apart by its sender)."""
    return Counter(
        {c: n for c, n in counts.items() if not 200 <= c < 300 and not (injected and c == 500)}
    )


def report(counts: dict[str, Counter[int]], real: bool) -> None:
    """How many answers were not 2xx, per part of the show. On the real node there must be
    none but v3's injected 500s."""
    parts = (
        ("healthy", "while v2 rolled out"),
        ("errors", "while v3 ran"),
        ("shuffled", "while v4 ran"),
    )
    lost: Counter[int] = Counter()
    lines = []
    for phase, when in parts:
        seen = counts.get(phase, Counter())
        other = not_2xx(seen, injected=phase == "errors")
        lost += other
        injected = f", {seen[500]} of them v3's injected errors (500)" if phase == "errors" else ""
        lines.append(f"{seen.total()} {when}{injected}, {other.total()} other non-2xx")
    print(f"Answers during the show: {'; '.join(lines)}")
    if not lost:
        return
    codes = ", ".join(f"{n} x {code or 'no answer'}" for code, n in sorted(lost.items()))
    if real:
        raise SystemExit(
            f"non-2xx answers on the real node ({codes}): readiness probes and the drain "
            "should have prevented every one"
        )
    print(
        f"  ({codes}: a canary's stand-in process was still loading its model after kwok had "
        "reported the pod Ready; on a real node the readiness probe holds it back)"
    )
