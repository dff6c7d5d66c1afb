"""`kubectl modelrollout` against the real control plane: the console script as a subprocess,
its views of real objects, and the annotations and spec it writes, consumed by the operator."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from modelrollout.api.status import (
    AnalysisStatus,
    Condition,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    RolloutStatus,
)

from .conftest import ModelFile, Models
from .kube import IMAGE, Kube, OperatorProcess, condition, model_deployment, revision, wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-modelrollout"
ANNOTATIONS = ("promote", "abort", "retry", "resume")


def plugin(
    kube: Kube, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script as kubectl would: KUBECONFIG in the environment."""
    env = os.environ | {
        "KUBECONFIG": str(kubeconfig or kube.cluster.kubeconfig),
        "NO_COLOR": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    return subprocess.run(
        [str(PLUGIN), *args, "-n", kube.namespace],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def status(kube: Kube, name: str) -> dict[str, Any]:
    return dict(kube.must("mdep", name).get("status") or {})


def annotations_of(kube: Kube, name: str) -> dict[str, str]:
    return dict(kube.must("mdep", name)["metadata"].get("annotations") or {})


def actions_left(kube: Kube, name: str) -> list[str]:
    return [a for a in ANNOTATIONS if f"modelrollout.io/{a}" in annotations_of(kube, name)]


@pytest.fixture
def model(models: Models) -> ModelFile:
    return models.small


def manifest(name: str, version: str, model: ModelFile, **spec: Any) -> dict[str, Any]:
    """Steps the control plane can walk without Prometheus: the background analysis stays
    Inconclusive, which never blocks a setWeight or pause step."""
    body: dict[str, Any] = {
        "model": {"uri": model.uri, "sha256": model.sha256, "version": version},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "rollout": {
            "steps": [{"setWeight": 50}, {"pause": {}}],
            "analysis": {"interval": "5s"},
            "bakeTime": "0s",
            "scaleDownDelay": "2s",
        },
    }
    body.update(spec)
    return model_deployment(name, body)


def at_pause_step(kube: Kube, name: str, canary: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        s = status(kube, name)
        if s.get("canaryRevision") == canary and (s.get("rollout") or {}).get("step") == 1:
            return s
        return None

    return wait_for(check, timeout=60, what=f"{name} waiting at the pause step with {canary}")


def serving(kube: Kube, name: str, version: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kube.must("mdep", name)
        s = obj.get("status") or {}
        current = s.get("observedGeneration") == obj["metadata"]["generation"]
        if (
            current
            and s.get("modelVersion") == version
            and not s.get("canaryRevision")
            and condition(obj, "Ready").get("status") == "True"
        ):
            return dict(s)
        return None

    return wait_for(check, timeout=60, what=f"{name} serving {version}")


class Watch:
    """`status --watch` as a subprocess; frames read on a thread so the test can wait for one."""

    def __init__(self, kube: Kube, name: str) -> None:
        env = os.environ | {
            "KUBECONFIG": str(kube.cluster.kubeconfig),
            "NO_COLOR": "1",
            "PYTHONIOENCODING": "utf-8",
        }
        self.proc = subprocess.Popen(
            [str(PLUGIN), "status", name, "--watch", "-n", kube.namespace],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.frames: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        frame: list[str] = []
        for line in self.proc.stdout:
            if line.startswith("--- "):
                frame = []
            frame.append(line)
            # The frame so far: a frame has no end marker, and the next one may be long off.
            self.frames.put("".join(frame))

    def wait_frame(self, *needles: str, timeout: float = 60) -> str:
        """The first frame (or frame so far) holding every needle."""
        seen: list[str] = []

        def next_match() -> str | None:
            try:
                frame = self.frames.get(timeout=0.5)
            except queue.Empty:
                return None
            seen.append(frame)
            return frame if all(n in frame for n in needles) else None

        try:
            return wait_for(next_match, timeout=timeout, interval=0, what=f"a frame with {needles}")
        except AssertionError:
            last = seen[-1] if seen else "(no frame)"
            raise AssertionError(f"no frame with {needles}; last frame:\n{last}") from None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@contextmanager
def watching(kube: Kube, name: str) -> Iterator[Watch]:
    watch = Watch(kube, name)
    try:
        yield watch
    finally:
        watch.stop()


# --- the operator consumes what the plugin writes ---------------------------------------------


def test_a_rollout_driven_from_the_plugin(
    kube: Kube, operator: OperatorProcess, model: ModelFile
) -> None:
    name = "iris"
    v1, v2 = (manifest(name, v, model) for v in ("v1", "v2"))
    # v3 also changes the serving env and the pod settings: undo must take those back too.
    v3_changes = {
        "serving": {"env": [{"name": "MODELSERVER_LOG_LEVEL", "value": "debug"}]},
        "pod": {"labels": {"team": "fraud"}},
    }
    v3 = manifest(name, "v3", model, **v3_changes)
    assert kube.apply(v1).returncode == 0
    serving(kube, name, "v1")

    rows = [line.split() for line in ok(plugin(kube, "list")).splitlines()]
    assert rows[0] == ["NAME", "PHASE", "STABLE", "CANARY", "STEP", "READY", "AGE"]
    assert rows[1][:5] == [name, "Ready", "v1", "-", "-"]

    # v2 walks to the pause step; the live view follows it there.
    with watching(kube, name) as watch:
        watch.wait_frame("Phase:         Ready")
        kube.patch("mdep", name, {"spec": {"model": {"version": "v2"}}})
        # The hints come last: a frame that has them is complete.
        frame = watch.wait_frame("Phase:         Progressing", "Hint: waiting at a pause step")
    at_pause_step(kube, name, revision(v2))
    assert f"canary  {revision(v2)}  model v2" in frame
    assert "stable 50% [" in frame
    assert "Hint: waiting at a pause step; continue with: kubectl modelrollout resume iris" in frame

    # pause holds it (phase Paused); resume lifts spec.paused and moves past the pause step.
    assert ok(plugin(kube, "pause", name)) == "iris paused\n"
    assert kube.must("mdep", name)["spec"]["paused"] is True
    wait_for(lambda: status(kube, name).get("phase") == "Paused", what="phase Paused")
    assert "Phase:         Paused" in ok(plugin(kube, "status", name))
    out = ok(plugin(kube, "resume", name))
    assert out == "iris resumed (spec.paused set to false; moving past the pause step)\n"
    assert kube.must("mdep", name)["spec"]["paused"] is False
    # As docs/gitops.md tells pipelines to wait: the conditions carry observedGeneration, so a
    # Ready left over from v1 does not count.
    kube.run("-n", kube.namespace, "wait", f"mdep/{name}", "--for=condition=Ready", "--timeout=50s")
    serving(kube, name, "v2")
    assert actions_left(kube, name) == []

    # v3 is aborted (rolled back), retried, then promoted before its steps are done.
    kube.patch("mdep", name, {"spec": {"model": {"version": "v3"}} | v3_changes})
    at_pause_step(kube, name, revision(v3))
    assert ok(plugin(kube, "abort", name)) == "iris: abort requested\n"
    wait_for(lambda: status(kube, name).get("phase") == "RolledBack", what="phase RolledBack")
    s = status(kube, name)
    assert s["failedRevision"] == revision(v3)
    assert s["history"][0]["outcome"] == "Aborted"
    assert "kubectl modelrollout retry iris" in ok(plugin(kube, "status", name))

    ok(plugin(kube, "retry", name))
    at_pause_step(kube, name, revision(v3))
    assert ok(plugin(kube, "promote", name)) == "iris: promotion requested\n"
    serving(kube, name, "v3")
    assert actions_left(kube, name) == []

    # undo goes back to v2: the whole revision from history (model, serving, hardware, pod, the
    # image); the operator rolls out that very revision.
    result = plugin(kube, "undo", name)
    assert ok(result).startswith(f"iris: spec set to history entry 3 (revision {revision(v2)}")
    assert "note: this starts a canary rollout" in result.stderr
    spec = kube.must("mdep", name)["spec"]
    assert spec["model"] == v2["spec"]["model"] | {"format": "onnx"}  # a CRD default
    assert spec["serving"]["image"] == IMAGE
    assert not spec["serving"].get("env")
    assert "pod" not in spec
    at_pause_step(kube, name, revision(v2))
    view = ok(plugin(kube, "status", name))
    history = view.split("History:", 1)[1].split("\n\n", 1)[0].splitlines()
    outcomes = [line.split()[3] for line in history[2:]]
    assert outcomes == ["Promoted", "Aborted", "Promoted", "Promoted"]


def test_kubectl_finds_the_plugin(kube: Kube) -> None:
    """`kubectl modelrollout ...` runs the console script from PATH."""
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        # kubectl refuses its own flags before a plugin's name; KUBECONFIG reaches the plugin.
        [
            str(kube.cluster.binaries.kubectl),
            "modelrollout",
            "list",
            "-n",
            kube.namespace,
        ],
        env=env | {"KUBECONFIG": str(kube.cluster.kubeconfig)},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"No ModelDeployments found in namespace {kube.namespace}.\n"


# --- views and writes on statuses the test sets itself --------------------------------------

T = "2026-03-01T12:00:00Z"


def held(
    kube: Kube, name: str, model: ModelFile, status: ModelDeploymentStatus, **spec: Any
) -> None:
    """A ModelDeployment carrying `status`, held in deletion by a finalizer of the test's own:
    the operator leaves terminating objects alone, so it does not rewrite that status."""
    m = manifest(name, "v2", model)
    m["metadata"]["finalizers"] = ["test.modelrollout.io/hold"]
    m["spec"].update(spec)
    assert kube.apply(m).returncode == 0
    kube.run("-n", kube.namespace, "delete", "mdep", name, "--wait=false")
    body = {"status": status.model_dump(by_alias=True, mode="json")}

    def written() -> bool:
        # A reconcile that began before the deletion may still land its status once.
        kube.run(
            "-n",
            kube.namespace,
            "patch",
            "mdep",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(body),
        )
        time.sleep(1)
        return bool(kube.must("mdep", name).get("status", {}).get("message") == status.message)

    wait_for(written, timeout=30, interval=0, what="the test's status to stay")


def release(kube: Kube, name: str) -> None:
    kube.patch("mdep", name, {"metadata": {"finalizers": None}})


def history_entry(revision: str, version: str, outcome: str) -> HistoryEntry:
    return HistoryEntry(
        revision=revision,
        model_version=version,
        model_uri=f"https://models.example/iris-{version}.onnx",
        model_sha256=version[-1] * 64,
        image=IMAGE,
        started=T,
        finished=T,
        outcome=outcome,
        reason="test",
    )


def canary_status() -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        observed_generation=1,
        phase=Phase.PROGRESSING,
        message="step 1: paused until resumed at 25%",
        conditions=[
            Condition(type="Ready", status="False", reason="Canary", last_transition_time=T),
            Condition(type="Progressing", status="True", reason="Canary", last_transition_time=T),
        ],
        stable_revision="aaaaaaaaaa",
        canary_revision="bbbbbbbbbb",
        canary_weight=25,
        rollout=RolloutStatus(
            step=1,
            step_started=T,
            passes=1,
            last_analysis=AnalysisStatus(
                verdict="Pass",
                reason="canary error rate 0.3% (3/1000) within limits",
                time=T,
                canary_requests=1000,
                canary_errors=3,
                canary_error_rate=0.003,
                canary_p99_seconds=0.042,
                stable_requests=3000,
                stable_errors=6,
                stable_error_rate=0.002,
                stable_p99_seconds=0.04,
                p99_ratio=1.05,
                z=0.98,
                p_value=0.27,
            ),
        ),
        model_version="v1",
        history=[
            history_entry("aaaaaaaaaa", "v1", "Promoted"),
            history_entry("9999999999", "v0", "Promoted"),
        ],
    )


def test_views_and_writes_on_a_status_set_by_the_test(kube: Kube, model: ModelFile) -> None:
    name = "held"
    held(
        kube,
        name,
        model,
        canary_status(),
        rollout={"steps": [{"setWeight": 25}, {"pause": {}}, {"analysis": {}}]},
    )
    try:
        view = ok(plugin(kube, "status", name))
        assert "Phase:         Progressing" in view
        assert "Traffic:       stable 75% [░░░░░░░░░░░░░░░█████] canary 25%" in view
        current = [line for line in view.splitlines() if line.startswith("  ▶")]
        assert [line.split(None, 2) for line in current] == [
            ["▶", "1", "pause until resumed          waiting: kubectl modelrollout resume held"]
        ]
        assert "  canary  1000      3       0.30%       42 ms" in view
        assert "  stable  3000      6       0.20%       40 ms" in view
        assert "p99 ratio 1.05   z 0.98   p-value 0.27" in view

        # resume at an indefinite pause step: the annotation, not spec.paused.
        assert ok(plugin(kube, "resume", name)) == "held resumed (moving past the pause step)\n"
        assert "modelrollout.io/resume" in annotations_of(kube, name)
        assert kube.must("mdep", name)["spec"]["paused"] is False  # the CRD default, untouched

        ok(plugin(kube, "promote", name))
        assert "modelrollout.io/promote" in annotations_of(kube, name)

        dry = json.loads(ok(plugin(kube, "undo", name, "--to-revision", "2", "--dry-run")))
        assert dry["spec"]["model"]["version"] == "v0"
        assert kube.must("mdep", name)["spec"]["model"]["version"] == "v2"
        ok(plugin(kube, "undo", name, "--to-revision", "2"))
        restored = kube.must("mdep", name)["spec"]["model"]
        assert restored == {
            "uri": "https://models.example/iris-v0.onnx",
            "version": "v0",
            "sha256": "0" * 64,
            "format": "onnx",
        }

        # Nothing was rolled back: retry refuses, exit 1, and says why.
        refused = plugin(kube, "retry", name)
        assert refused.returncode == 1
        assert refused.stderr == (
            "error: held is not rolled back (phase Progressing); nothing to retry "
            "(--force sets the annotation anyway)\n"
        )
    finally:
        release(kube, name)


# --- errors ----------------------------------------------------------------------------------


def test_not_found(kube: Kube) -> None:
    result = plugin(kube, "status", "nope")
    assert result.returncode == 3
    assert (
        result.stderr == f"error: modeldeployment 'nope' not found in namespace {kube.namespace}\n"
    )
    assert plugin(kube, "promote", "nope").returncode == 3


def _service_account_kubeconfig(kube: Kube, account: str, directory: Path) -> Path:
    kube.run("-n", kube.namespace, "create", "serviceaccount", account)
    token = kube.run("-n", kube.namespace, "create", "token", account).strip()
    config = json.loads(kube.cluster.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path = directory / f"{account}.kubeconfig"
    path.write_text(json.dumps(config))
    return path


def test_no_permission(kube: Kube, tmp_path: Path, model: ModelFile) -> None:
    assert kube.apply(manifest("iris", "v1", model)).returncode == 0
    # A reader may look but not act.
    kube.run(
        "-n",
        kube.namespace,
        "create",
        "role",
        "mdep-reader",
        "--verb=get,list,watch",
        "--resource=modeldeployments.modelrollout.io",
    )
    kube.run(
        "-n",
        kube.namespace,
        "create",
        "rolebinding",
        "mdep-reader",
        "--role=mdep-reader",
        f"--serviceaccount={kube.namespace}:reader",
    )
    reader = _service_account_kubeconfig(kube, "reader", tmp_path)
    nobody = _service_account_kubeconfig(kube, "nobody", tmp_path)

    def shown() -> bool:
        return plugin(kube, "status", "iris", kubeconfig=reader).returncode == 0

    wait_for(shown, timeout=30, what="the reader's role to take effect")
    denied = plugin(kube, "pause", "iris", kubeconfig=reader)
    assert denied.returncode == 4
    assert denied.stderr.startswith(
        'error: forbidden: modeldeployments.modelrollout.io "iris" is forbidden'
    )
    assert "cannot patch resource" in denied.stderr

    hidden = plugin(kube, "status", "iris", kubeconfig=nobody)
    assert hidden.returncode == 4
    assert "cannot get resource" in hidden.stderr
    assert plugin(kube, "list", kubeconfig=nobody).returncode == 4
