"""Injecting a run's fault at its drawn moment, in a thread of its own, and recording when it
began and ended (monotonic clock of this process)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bench.chaos.scenarios import RunSpec, Scenario

if TYPE_CHECKING:
    from bench.chaos.env import Env

TRIGGER_TIMEOUT_S = 60.0


class StatusSource(Protocol):
    def latest(self) -> dict[str, object]: ...


@dataclass
class Fault:
    """What was done and when; `end` is when the fault was healed (the moment of a kill for
    faults nothing heals: a deleted pod, a killed leader)."""

    what: str
    start: float | None = None
    end: float | None = None
    done: bool = False
    note: str = ""


@dataclass(frozen=True)
class Target:
    namespace: str
    stable: str
    canary: str


def inject(env: Env, spec: RunSpec, scenario: Scenario, status: StatusSource, t: Target) -> Fault:
    """Start the fault's thread; the returned Fault fills in as it happens."""
    fault = Fault(scenario.what)
    thread = threading.Thread(
        target=_run,
        args=(env, spec, scenario, status, fault, t),
        name=f"fault-{spec.key}",
        daemon=True,
    )
    thread.start()
    return fault


def _run(
    env: Env,
    spec: RunSpec,
    scenario: Scenario,
    status: StatusSource,
    fault: Fault,
    t: Target,
) -> None:
    try:
        _wait_canary_traffic(status, fault)
        time.sleep(spec.onset_s)
        _FAULTS[spec.scenario](env, spec, fault, t)
    except Exception as exc:
        fault.note = f"{type(exc).__name__}: {exc}"
    finally:
        if fault.start is not None and fault.end is None:
            fault.end = time.monotonic()
        fault.done = True


def _wait_canary_traffic(status: StatusSource, fault: Fault) -> None:
    deadline = time.monotonic() + TRIGGER_TIMEOUT_S
    while time.monotonic() < deadline:
        if int(str(status.latest().get("canaryWeight") or 0)) > 0:
            return
        time.sleep(0.1)
    fault.note = "the canary never had traffic; fault injected anyway"


def _begin(fault: Fault) -> None:
    fault.start = time.monotonic()


def _end(fault: Fault) -> None:
    fault.end = time.monotonic()


def _operator_kill(env: Env, spec: RunSpec, fault: Fault, t: Target) -> None:
    _begin(fault)
    env.operators.kill()
    time.sleep(spec.down_s)
    env.operators.restart()
    _end(fault)


def _component(name: str) -> _FaultFn:
    def run(env: Env, spec: RunSpec, fault: Fault, t: Target) -> None:
        _begin(fault)
        env.cluster.stop_component(name)
        try:
            time.sleep(spec.down_s)
        finally:
            # From the environment's long-lived thread: PR_SET_PDEATHSIG signals a child when
            # the thread that started it ends, and this one ends with the fault.
            env.spawner.submit(env.cluster.start_component, name).result()
        _end(fault)

    return run


def _prometheus(mode: str) -> _FaultFn:
    def run(env: Env, spec: RunSpec, fault: Fault, t: Target) -> None:
        _begin(fault)
        env.prometheus_proxy.set_mode(mode)  # type: ignore[arg-type]
        try:
            time.sleep(spec.down_s)
        finally:
            env.prometheus_proxy.set_mode("pass")
        _end(fault)

    return run


def _partition(env: Env, spec: RunSpec, fault: Fault, t: Target) -> None:
    _begin(fault)
    env.api_proxy.cut()
    try:
        time.sleep(spec.down_s)
    finally:
        env.api_proxy.heal()
    _end(fault)


def _pod_kill(track: str) -> _FaultFn:
    def run(env: Env, spec: RunSpec, fault: Fault, t: Target) -> None:
        revision = t.canary if track == "canary" else t.stable
        namespace = t.namespace
        out = env.cluster.kubectl(
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            f"modelrollout.io/revision={revision}",
            "-o",
            "json",
        )
        pods = [p["metadata"]["name"] for p in json.loads(out)["items"]]
        if not pods:
            fault.note = f"no {track} pod left to delete"
            return
        _begin(fault)
        env.cluster.kubectl("-n", namespace, "delete", "pod", sorted(pods)[0], "--wait=false")
        _end(fault)

    return run


def _leader_kill(env: Env, spec: RunSpec, fault: Fault, t: Target) -> None:
    _begin(fault)
    env.operators.kill(0)  # the replica with the higher priority: the active one
    _end(fault)


class _FaultFn(Protocol):
    def __call__(self, env: Env, spec: RunSpec, fault: Fault, t: Target) -> None: ...


_FAULTS: dict[str, _FaultFn] = {
    "operator-kill": _operator_kill,
    "apiserver-restart": _component("kube-apiserver"),
    "etcd-stop": _component("etcd"),
    "prometheus-down": _prometheus("down"),
    "prometheus-errors": _prometheus("error"),
    "prometheus-empty": _prometheus("empty"),
    "api-partition": _partition,
    "canary-pod-kill": _pod_kill("canary"),
    "stable-pod-kill": _pod_kill("stable"),
    "leader-kill": _leader_kill,
}
