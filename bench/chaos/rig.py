"""One chaos run: a fresh namespace with a stable v1 Ready and answering, fixed-rate load
through the gateway, v2 (healthy, or answering 30% errors) applied, one fault injected at the
run's drawn moment, then the rollout followed to its decision and checked (bench/chaos/checks).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import Client, KubeConfig

from bench.chaos import checks, onnode
from bench.chaos.checks import Snapshot
from bench.chaos.env import Env
from bench.chaos.faults import Fault, Target, inject
from bench.chaos.scenarios import BY_NAME, RunSpec
from bench.rig import (
    NAME,
    PAYLOAD,
    answering,
    apply,
    http_route,
    model_deployment,
    read_status,
    wait_for,
)
from hack.loadgen import Answer, BackgroundLoad

POLL_S = 0.25
DECISION_TIMEOUT_S = 180.0
BAD_ERROR_RATIO = "0.3"


@dataclass(frozen=True)
class Settings:
    rate_per_s: float = 20.0
    interval_s: int = 1
    min_requests: int = 20
    bake_s: int = 3
    weights: tuple[int, ...] = (20, 50)  # each step's canary weight, an analysis after each

    def describe(self) -> str:
        steps = " and ".join(f"{w}%" for w in self.weights)
        return (
            f"{self.rate_per_s:g} requests/s; steps {steps}, each followed by the sequential "
            f"analysis ({self.interval_s} s interval, at least {self.min_requests} canary "
            f"requests); bake {self.bake_s} s"
        )


SHORT = Settings(rate_per_s=10.0, min_requests=10, bake_s=2, weights=(50,))


@dataclass
class RunResult:
    spec: RunSpec
    namespace: str
    node: str = "kwok"  # where its pods ran: kwok (pod runner processes) or real
    outcome: str = "Undecided"  # Promoted, RolledBack, Undecided, Error
    wrong: str = ""
    fault: Fault | None = None
    recovery_s: float | None = None
    hit_rollout: bool = False  # the fault began before the rollout was decided
    decided_s: float | None = None  # from the canary's apply
    requests: int = 0
    dropped: int = 0
    unready: int = 0
    stable_failures: int = 0
    gateway_errors: int = 0  # answers with no pod behind them (no ready endpoint, no answer)
    gateway_reasons: dict[str, int] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)  # status changes, seconds from apply
    child_problems: list[str] = field(default_factory=list)
    history_problems: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        recovered = self.recovery_s is not None and self.recovery_s <= 30
        return (
            self.outcome in ("Promoted", "RolledBack")
            and not self.wrong
            and recovered
            and self.unready == 0
            and self.stable_failures == 0
            and not self.child_problems
            and not self.history_problems
            and not self.error
        )

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["spec"] = self.spec.__dict__
        doc["fault"] = None if self.fault is None else self.fault.__dict__
        doc["ok"] = self.ok
        return doc


class StatusPoller:
    """The ModelDeployment's status every POLL_S, straight from kube-apiserver (not through the
    operator's proxy); reads that fail during an outage are simply missing."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client, self.namespace = client, namespace
        self.snapshots: list[Snapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-status", daemon=True)

    def start(self) -> StatusPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def latest(self) -> dict[str, Any]:
        return dict(self.snapshots[-1].status) if self.snapshots else {}

    def _run(self) -> None:
        while not self._stop.is_set():
            status = read_status(self.client, self.namespace)
            if status is not None:
                self.snapshots.append(Snapshot(time.monotonic(), status))
            self._stop.wait(POLL_S)


class Run:
    def __init__(self, env: Env, spec: RunSpec, settings: Settings | None = None) -> None:
        self.env, self.spec = env, spec
        self.settings = settings or Settings()
        self.scenario = BY_NAME[spec.scenario]
        self.namespace = f"chaos-{spec.scenario[:12]}-{spec.index:02d}-{uuid.uuid4().hex[:5]}"
        self.client = Client(
            config=KubeConfig.from_file(env.cluster.kubeconfig),
            field_manager="bench-chaos",
            timeout=httpx2.Timeout(3.0),
        )
        # Pod kills run on the real node when there is one: probes and kube-proxy matter there.
        self.real = env.real if self.scenario.number == 6 else None
        self.result = RunResult(spec, self.namespace, node="real" if self.real else "kwok")
        self.t0 = time.monotonic()
        self.load_at = (env.gateway_url, self.namespace)  # the Service itself on the real node

    def manifest(self, version: str, bad: bool) -> dict[str, Any]:
        s = self.settings
        env = {"MODELSERVER_FAULT_ERROR_RATIO": BAD_ERROR_RATIO} if bad else {}
        # One pod a revision spares the CPU; two where a stable pod is deleted, so that one
        # is left to answer.
        replicas = 2 if self.spec.scenario == "stable-pod-kill" else 1
        analysis = {
            "interval": f"{s.interval_s}s",
            "minRequests": s.min_requests,
            # Tail latency on a shared 2-core machine is scheduling noise.
            "maxLatencyRatio": 3,
            "prometheusUrl": self.env.prometheus_proxy.url,
        }
        manifest = model_deployment(
            self.env.rig,
            self.namespace,
            version,
            env=env,
            replicas=(replicas, replicas),
            weights=s.weights,
            analysis=analysis,
            bake_s=s.bake_s,
        )
        return onnode.place(manifest, self.real) if self.real else manifest

    def _status(self) -> dict[str, Any]:
        return read_status(self.client, self.namespace) or {}

    def prepare(self) -> str:
        """The namespace, the route and a Ready, answering stable v1; the operators the
        scenario needs."""
        env = self.env
        if self.spec.scenario == "leader-kill":
            env.operators.pair()
        else:
            env.operators.single()
        env.cluster.kubectl("create", "namespace", self.namespace)
        if self.real is None:
            env.podrunner.serve_namespace(self.namespace)
            apply(env.cluster, http_route(self.namespace))
        stable = apply(env.cluster, self.manifest("v1", bad=False))

        def ready() -> bool:
            st = self._status()
            return st.get("stableRevision") == stable and st.get("phase") == "Ready"

        wait_for("v1 Ready", 240 if self.real else 120, ready)
        if self.real is not None:
            self.load_at = (onnode.service_url(env.cluster, self.namespace), "")
        wait_for("v1 answering", 60, lambda: answering(*self.load_at, NAME, 10, 8))
        return stable

    def execute(self) -> RunResult:
        r = self.result
        load: BackgroundLoad | None = None
        poller: StatusPoller | None = None
        stable = canary = ""
        try:
            stable = self.prepare()
            load = BackgroundLoad(*self.load_at, NAME, self.settings.rate_per_s, PAYLOAD).start()
            poller = StatusPoller(self.client, self.namespace).start()
            time.sleep(1)  # the stable's first answers under load
            t0 = self.t0 = time.monotonic()
            canary = apply(self.env.cluster, self.manifest("v2", bad=self.spec.kind == "bad"))
            target = Target(self.namespace, stable, canary)
            r.fault = inject(self.env, self.spec, self.scenario, poller, target)
            self._wait_decided(poller, canary, t0)
            self._settle(canary)
            time.sleep(1)  # requests routed by the gateway's previous table come back
        except Exception as exc:
            r.error = f"{type(exc).__name__}: {exc}"
        finally:
            requests = load.stop() if load is not None else []
            if poller is not None:
                poller.stop()
        if poller is not None and canary:
            try:
                self._check(poller.snapshots, requests, stable, canary)
            except Exception as exc:
                r.error = r.error or f"checking: {type(exc).__name__}: {exc}"
            r.dropped = load.dropped if load is not None else 0
        if self.real is None:
            self.env.podrunner.forget_namespace(self.namespace)
        self.env.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
        return r

    def _wait_decided(self, poller: StatusPoller, canary: str, t0: float) -> None:
        deadline = t0 + DECISION_TIMEOUT_S
        while time.monotonic() < deadline:
            decided = checks.outcome(poller.snapshots, canary) != "Undecided"
            if decided and self.result.decided_s is None:
                self.result.decided_s = round(poller.snapshots[-1].at - t0, 2)
            if decided and self.result.fault is not None and self.result.fault.done:
                return
            time.sleep(POLL_S)

    def _settle(self, canary: str) -> None:
        """Once decided, the old revision's Deployment goes after scaleDownDelay."""

        def one_deployment() -> bool:
            return len(self._children("deployments")) == 1

        # Past that, the check names what is left.
        with contextlib.suppress(TimeoutError):
            wait_for("one Deployment left", 30, one_deployment)

    def _children(self, plural: str) -> list[dict[str, Any]]:
        out = self.env.cluster.kubectl(
            "-n",
            self.namespace,
            "get",
            plural,
            "-l",
            "app.kubernetes.io/managed-by=modelrollout",
            "-o",
            "json",
        )
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def _traffic(self, requests: list[Answer], stable: str) -> None:
        """The traffic checks, and every answer they count in the timeline."""
        r = self.result
        if self.real is not None:
            bad = self.spec.kind == "bad"
            r.unready, r.stable_failures = onnode.failed_answers(requests, bad)
            for q in requests:
                if not 200 <= q.code < 300 and not (bad and q.code == 500):
                    r.timeline.append(f"{q.sent - self.t0:.1f} answer {q.code}: {q.detail}")
            return
        r.unready = checks.unready_answers(requests, self.env.readiness.spans())
        r.stable_failures = checks.stable_failures(requests, stable)
        r.gateway_errors = sum(1 for q in requests if not q.pod)
        for q in requests:
            if q.revision == stable and not 200 <= q.code < 300:
                r.timeline.append(f"{q.sent - self.t0:.1f} stable {q.code}: {q.detail}")
            if not q.pod:
                key = f"{q.code} {q.detail}"
                r.gateway_reasons[key] = r.gateway_reasons.get(key, 0) + 1
                r.timeline.append(f"{q.sent - self.t0:.1f} no pod: {q.code}")

    def _check(
        self,
        snapshots: list[Snapshot],
        requests: list[Answer],
        stable: str,
        canary: str,
    ) -> None:
        r = self.result
        r.outcome = checks.outcome(snapshots, canary)
        r.wrong = checks.wrong_outcome(self.spec.kind, snapshots, canary)
        if r.fault is not None and r.fault.start is not None:
            before = [s for s in snapshots if s.at <= r.fault.start]
            r.hit_rollout = checks.outcome(before, canary) == "Undecided"
        if r.fault is not None and r.fault.end is not None:
            r.recovery_s = checks.recovery_s(snapshots, r.fault.end, canary)
        r.requests = len(requests)
        self._traffic(requests, stable)
        last = ""
        for snap in snapshots:
            key = checks.progress_key(snap.status)
            if key != last:
                r.timeline.append(f"{snap.at - self.t0:.1f} {checks.describe(snap.status)}")
                last = key
        if r.fault is not None and r.fault.start is not None:
            r.timeline.append(f"{r.fault.start - self.t0:.1f} fault starts")
        if r.fault is not None and r.fault.end is not None:
            r.timeline.append(f"{r.fault.end - self.t0:.1f} fault ends")
        r.timeline.sort(key=lambda x: float(x.split()[0]))
        obj = self.env.cluster.kubectl("-n", self.namespace, "get", "mdep", NAME, "-o", "json")
        mdep = json.loads(obj)
        children = [
            c
            for plural in ("deployments", "services", "horizontalpodautoscalers", "pdb")
            for c in self._children(plural)
        ]
        status = mdep.get("status") or {}
        live = {str(status.get("stableRevision"))}
        if status.get("canaryRevision"):
            live.add(str(status["canaryRevision"]))
        r.child_problems = checks.child_problems(children, mdep["metadata"]["uid"], live)
        r.history_problems = checks.history_problems(snapshots, canary, r.outcome)
