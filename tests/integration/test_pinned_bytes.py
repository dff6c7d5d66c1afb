"""Pinned bytes on the real control plane: without spec.model.sha256 the operator pins the
bytes it read, and a file changed at the same URI becomes a new revision only when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hack.models import write_mlp

from .kube import Kube, OperatorProcess, model_deployment, revision, wait_for

pytestmark = pytest.mark.integration


def pinned_sha(kube: Kube, name: str) -> str | None:
    dep = kube.get("deployment", name)
    if dep is None:
        return None
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return env.get("MODELSERVER_MODEL_SHA256")


def test_bytes_pinned_until_a_refresh(
    kube: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    first = write_mlp(path, seed=1)
    spec: dict[str, Any] = {
        "model": {"uri": f"file://{path}", "version": "v1"},
        "hardware": {"mode": "cpu"},
        "rollout": {"steps": [{"setWeight": 50}], "bakeTime": "0s", "scaleDownDelay": "2s"},
    }
    m = model_deployment("pinned", spec)
    assert kube.apply(m).returncode == 0
    rev = revision(m)
    wait_for(lambda: pinned_sha(kube, f"pinned-{rev}") == first, timeout=60, what="pinned sha")
    hardware = kube.must("mdep", "pinned")["status"]["hardware"]
    assert (hardware["revision"], hardware["modelSha256"]) == (rev, first)

    # The file changes under the same URI; a change that is not a new revision (autoscaling)
    # leaves the revision on the bytes it pinned.
    second = write_mlp(path, seed=2)
    assert second != first
    kube.patch("mdep", "pinned", {"spec": {"autoscaling": {"maxReplicas": 4}}})
    wait_for(
        lambda: (kube.get("hpa", "pinned") or {}).get("spec", {}).get("maxReplicas") == 4,
        timeout=60,
        what="the autoscaling change applied",
    )
    assert pinned_sha(kube, f"pinned-{rev}") == first

    # model.refresh asks for the new bytes: a new revision, pinned to them.
    spec["model"]["refresh"] = "1"
    spec["autoscaling"] = {"maxReplicas": 4}
    refreshed = revision(model_deployment("pinned", spec))
    assert refreshed != rev
    kube.patch("mdep", "pinned", {"spec": {"model": {"refresh": "1"}}})
    wait_for(
        lambda: pinned_sha(kube, f"pinned-{refreshed}") == second,
        timeout=60,
        what="the refreshed revision pinned to the new bytes",
    )
    assert pinned_sha(kube, f"pinned-{rev}") in (first, None)
