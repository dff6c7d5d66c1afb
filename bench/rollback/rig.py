"""The real parts, started once, and one trial of either kind in its own namespace.

The rollout benchmarks' rig (bench/rig.py: the local control plane, the pod runner, Prometheus,
the weighted gateway as a process of its own) and the operator as a subprocess
(tests/integration/kube.py).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightkube import Client, KubeConfig

from bench.rig import (
    KUBE_ERRORS,
    NAME,
    PAYLOAD,
    ROUTE,
    Rig,
    answering,
    apply,
    http_route,
    local_rig,
    model_deployment,
    read_status,
    wait_for,
)
from hack.gateway import NO_REVISION, HTTPRoute
from hack.loadgen import Answer, BackgroundLoad
from tests.integration.kube import OperatorProcess

CANARY_SERVICE = f"{NAME}-canary"
POLL_S = 0.25
Kind = Literal["regression", "healthy"]


@dataclass(frozen=True)
class Settings:
    """What every trial's ModelDeployment and load share."""

    interval_s: int = 10
    failure_limit: int = 2
    sequential_interval_s: int = 2
    min_requests: int = 20
    rate_per_s: float = 40.0
    bake_s: int = 12
    # None leaves spec.rollout.analysis.maxLatencyRatio at the API default.
    max_latency_ratio: float | None = None
    regression_error_ratio: float = 0.3
    stable_latency_ms: float = 20.0
    latency_noise: float = 0.10  # canary latency uniform in stable * (1 +- noise)


@dataclass
class Env:
    rig: Rig
    operator: OperatorProcess


@contextlib.contextmanager
def environment(workdir: Path) -> Iterator[Env]:
    """The shared rig (bench/rig.py) and one operator."""
    with local_rig(workdir) as rig:
        operator = OperatorProcess(rig.cluster, workdir / "operator.log")
        try:
            operator.start()
            yield Env(rig, operator)
        finally:
            operator.stop()


# --- one trial ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """An analysis verdict as the status showed it; `at` is seconds after the canary's apply."""

    at: float
    verdict: str
    canary_requests: int | None
    canary_errors: int | None
    reason: str

    @property
    def short(self) -> str:
        counts = ""
        if self.canary_requests is not None:
            counts = f" {self.canary_errors or 0}/{self.canary_requests}"
        return f"{self.verdict[0]}@{self.at:.1f}{counts}"


@dataclass
class TrialResult:
    kind: Kind
    index: int
    namespace: str
    started: str  # UTC wall clock
    stable_latency_ms: float | None = None
    canary_latency_ms: float | None = None
    outcome: str = "Timeout"  # RolledBack, Promoted, Timeout, Error
    reason: str = ""
    # Seconds after the canary ModelDeployment was applied (monotonic clock of this process).
    weight_on: float | None = None  # first poll with the canary's route weight > 0
    weight_off: float | None = None  # first poll after that with it back at 0
    first_canary_response: float | None = None
    first_canary_5xx: float | None = None
    last_canary_response: float | None = None
    promoted: float | None = None
    bake_done: float | None = None
    windows: list[Window] = field(default_factory=list)
    canary_responses: int = 0
    canary_5xx: int = 0
    stable_responses: int = 0
    stable_5xx: int = 0
    unrouted: int = 0  # answered by the gateway itself, or no response at all
    codes: dict[str, int] = field(default_factory=dict)  # "canary 500", "stable 200", ...
    sent: int = 0
    dropped: int = 0
    error: str = ""
    method: str = "windows"

    @property
    def detection_from_weight(self) -> float | None:
        if self.weight_on is None or self.weight_off is None or self.outcome != "RolledBack":
            return None
        return self.weight_off - self.weight_on

    @property
    def detection_from_5xx(self) -> float | None:
        if self.first_canary_5xx is None or self.weight_off is None:
            return None
        if self.outcome != "RolledBack":
            return None
        return self.weight_off - self.first_canary_5xx

    @property
    def promotion(self) -> float | None:
        if self.weight_on is None or self.promoted is None:
            return None
        return self.promoted - self.weight_on

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["windows"] = [w.__dict__ for w in self.windows]
        return doc


@dataclass(frozen=True)
class TrialSpec:
    kind: Kind
    index: int
    canary_latency_ms: float | None = None
    # The analysis method the trial's ModelDeployment uses (sequential: the API default).
    method: str = "windows"


def _final_window(at: float, reason: str) -> Window:
    """The window that triggered a rollback: the status drops `rollout` with it, so only the
    history entry's reason tells its counts ("canary error rate 30% (24/80) vs ...")."""
    found = re.search(r"canary error rate [^(]*\((\d+)/(\d+)\)", reason)
    errors, requests = (int(found[1]), int(found[2])) if found else (None, None)
    return Window(round(at, 2), "Fail", requests, errors, reason)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Trial:
    """One rollout in a fresh namespace: stable v1 Ready and serving, steady load, v2 applied,
    the route and status polled every 0.25 s until the rollout is decided."""

    def __init__(self, env: Env, settings: Settings, spec: TrialSpec) -> None:
        self.env, self.settings, self.spec = env, settings, spec
        self.namespace = (
            f"rb-{spec.method[:3]}-{spec.kind[:3]}-{spec.index:02d}-{uuid.uuid4().hex[:6]}"
        )
        self.client = Client(
            config=KubeConfig.from_file(env.rig.cluster.kubeconfig), field_manager="bench-rollback"
        )
        self.result = TrialResult(
            spec.kind, spec.index, self.namespace, _utc_now(), method=spec.method
        )

    # --- manifests ----------------------------------------------------------------------------

    def manifest(self, version: str, env: dict[str, str]) -> dict[str, Any]:
        s = self.settings
        analysis: dict[str, Any] = {
            "method": self.spec.method,
            "interval": f"{s.interval_s}s",
            "minRequests": s.min_requests,
            "failureLimit": s.failure_limit,
            "prometheusUrl": self.env.rig.prometheus.url,
        }
        if self.spec.method == "sequential":
            # The evidence is read every few seconds; the test controls false alarms itself,
            # so failureLimit stays at its default (1).
            analysis |= {"interval": f"{s.sequential_interval_s}s"}
            del analysis["failureLimit"]
        if s.max_latency_ratio is not None:
            analysis["maxLatencyRatio"] = s.max_latency_ratio
        return model_deployment(
            self.env.rig,
            self.namespace,
            version,
            env=env,
            replicas=(1, 2),
            weights=(20, 50),
            analysis=analysis,
            bake_s=s.bake_s,
        )

    # --- reads --------------------------------------------------------------------------------

    def _status(self) -> dict[str, Any] | None:
        return read_status(self.client, self.namespace)

    def _canary_weight(self) -> int | None:
        try:
            obj = self.client.get(HTTPRoute, ROUTE, namespace=self.namespace)
        except KUBE_ERRORS:
            return None
        rules = dict(obj).get("spec", {}).get("rules") or []
        for rule in rules:
            for ref in rule.get("backendRefs") or []:
                if ref.get("name") == CANARY_SERVICE:
                    return int(ref.get("weight", 1))
        return 0

    # --- the trial ----------------------------------------------------------------------------

    def run(self) -> TrialResult:
        env, r = self.env.rig, self.result
        env.cluster.kubectl("create", "namespace", self.namespace)
        env.podrunner.serve_namespace(self.namespace)
        load: BackgroundLoad | None = None
        try:
            apply(env.cluster, http_route(self.namespace))
            stable_env, canary_env = self._envs()
            stable = apply(env.cluster, self.manifest("v1", stable_env))

            def stable_ready() -> bool:
                st = self._status() or {}
                return st.get("stableRevision") == stable and st.get("phase") == "Ready"

            wait_for("v1 stable Ready", 120, stable_ready, poll_s=0.5)
            wait_for(
                "stable answering through the gateway",
                60,
                lambda: answering(env.gateway_url, self.namespace, NAME, 5, 1),
                poll_s=0.5,
            )
            load = BackgroundLoad(
                env.gateway_url, self.namespace, NAME, self.settings.rate_per_s, PAYLOAD
            ).start()
            # A baseline for the stable series before the canary appears.
            time.sleep(5)
            t0 = time.monotonic()
            canary = apply(env.cluster, self.manifest("v2", canary_env))
            self._follow(t0, canary)
            time.sleep(2)  # stragglers routed by the gateway's previous table
        except Exception as exc:
            r.outcome, r.error = "Error", f"{type(exc).__name__}: {exc}"
            t0, canary = time.monotonic(), ""
        finally:
            if load is not None:
                load.stop()
        if load is not None and canary:
            self._tally(load, t0, canary)
        env.podrunner.forget_namespace(self.namespace)
        env.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
        return r

    def _envs(self) -> tuple[dict[str, str], dict[str, str]]:
        s = self.settings
        if self.spec.kind == "regression":
            return {}, {"MODELSERVER_FAULT_ERROR_RATIO": str(s.regression_error_ratio)}
        assert self.spec.canary_latency_ms is not None
        self.result.stable_latency_ms = s.stable_latency_ms
        self.result.canary_latency_ms = self.spec.canary_latency_ms
        return (
            {"MODELSERVER_FAULT_LATENCY_MS": f"{s.stable_latency_ms:g}"},
            {"MODELSERVER_FAULT_LATENCY_MS": f"{self.spec.canary_latency_ms:.2f}"},
        )

    def _follow(self, t0: float, canary: str) -> None:
        r = self.result
        timeout = 150.0 if self.spec.kind == "regression" else 240.0
        seen: set[tuple[str, str]] = set()
        tick = time.monotonic()
        while True:
            now = time.monotonic()
            if now - t0 > timeout:
                r.outcome, r.reason = "Timeout", f"undecided after {timeout:g}s"
                return
            weight = self._canary_weight()
            at = time.monotonic() - t0
            if weight is not None:
                if weight > 0 and r.weight_on is None:
                    r.weight_on = at
                elif weight == 0 and r.weight_on is not None and r.weight_off is None:
                    r.weight_off = at
            st = self._status()
            if st is not None:
                self._note_windows(st, t0, seen)
                history = st.get("history") or []
                mine = next((h for h in history if h.get("revision") == canary), None)
                if st.get("failedRevision") == canary or (
                    mine is not None and mine.get("outcome") == "RolledBack"
                ):
                    if r.outcome != "RolledBack":
                        r.outcome = "RolledBack"
                        r.reason = str((mine or {}).get("reason", st.get("message", "")))
                        r.windows.append(_final_window(at, r.reason))
                    if r.weight_off is not None or r.weight_on is None:
                        return
                elif st.get("stableRevision") == canary:
                    if r.promoted is None:
                        r.promoted = at
                        r.outcome = "Promoted"
                        r.reason = str((mine or {}).get("reason", ""))
                    if self.spec.kind == "regression" or not st.get("bake"):
                        r.bake_done = at if self.spec.kind == "healthy" else None
                        return
            tick += POLL_S
            time.sleep(max(0.0, tick - time.monotonic()))

    def _note_windows(self, st: dict[str, Any], t0: float, seen: set[tuple[str, str]]) -> None:
        for holder in (st.get("rollout"), st.get("bake")):
            last = (holder or {}).get("lastAnalysis")
            if not last:
                continue
            key = (str(last.get("time")), str(last.get("verdict")))
            if key in seen:
                continue
            seen.add(key)
            self.result.windows.append(
                Window(
                    at=round(time.monotonic() - t0, 2),
                    verdict=str(last.get("verdict")),
                    canary_requests=last.get("canaryRequests"),
                    canary_errors=last.get("canaryErrors"),
                    reason=str(last.get("reason", "")),
                )
            )

    def _tally(self, load: BackgroundLoad, t0: float, canary: str) -> None:
        r = self.result
        r.sent, r.dropped = load.sent, load.dropped
        responses: list[Answer] = load.answers()
        for resp in responses:
            failed = resp.code >= 500 or resp.code == 0
            track = (
                "canary"
                if resp.revision == canary
                else ("none" if resp.revision in ("", NO_REVISION) else "stable")
            )
            key = f"{track} {resp.code}"
            r.codes[key] = r.codes.get(key, 0) + 1
            if resp.revision == canary:
                at = resp.done - t0
                r.canary_responses += 1
                if r.first_canary_response is None:
                    r.first_canary_response = at
                r.last_canary_response = at
                if failed:
                    r.canary_5xx += 1
                    if r.first_canary_5xx is None:
                        r.first_canary_5xx = at
            elif resp.revision in ("", NO_REVISION):
                r.unrouted += 1
            else:
                r.stable_responses += 1
                r.stable_5xx += int(failed)
