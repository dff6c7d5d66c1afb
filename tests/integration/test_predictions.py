"""Judging a model by what it predicts, end to end with real parts: `modelserver` processes
counting their predictions and inputs, Prometheus scraping them, the gateway splitting live
traffic by the HTTPRoute, and the operator comparing canary with stable and the stable's
traffic with its reference profile."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hack.gateway import NO_REVISION
from hack.loadgen import LoadStats, run_load
from modelserver.profile import build_profile
from modelserver.runtime import Runtime

from .conftest import ModelFile
from .kube import wait_for
from .rig import ROUTE, Rig, watch

pytestmark = pytest.mark.integration

FEATURES = 4


def write_scorer(path: Path, *, shift: float = 0.0, nudge: float = 0.0) -> ModelFile:
    """A linear score (batch, 1); `shift` is added to every output, `nudge` to the weights
    (a retrained model that behaves the same)."""
    w = numpy_helper.from_array(
        (np.array([[0.1], [0.2], [0.3], [0.4]]) + nudge).astype(np.float32), "w"
    )
    b = numpy_helper.from_array(np.array([0.25 + nudge + shift], dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["score"])],
        "scorer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return ModelFile(path, hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture
def scorers(tmp_path: Path) -> dict[str, ModelFile]:
    return {
        "v1": write_scorer(tmp_path / "v1.onnx"),
        "shifted": write_scorer(tmp_path / "shifted.onnx", shift=2.0),
        "retrained": write_scorer(tmp_path / "retrained.onnx", nudge=0.001),
    }


class PredictionRig(Rig):
    def model(self, m: dict[str, Any], model: ModelFile, version: str) -> dict[str, Any]:
        m["spec"]["model"] = {"uri": model.uri, "sha256": model.sha256, "version": version}
        m["spec"]["rollout"]["analysis"]["predictionShift"] = {"maxDivergence": 0.05}
        return m

    def rows(self, rate: float, seconds: float, rows: Any) -> LoadStats:
        payload = {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": [round(float(v), 4) for v in rows.ravel()],
                }
            ]
        }
        return run_load(
            self.gateway.url, self.kube.namespace, "iris", rate, seconds, payload, timeout_s=5
        )


@pytest.fixture
def rig(rig: Rig) -> PredictionRig:
    """The canary rig (conftest.py) with the scorer models' helpers."""
    return PredictionRig(**vars(rig))


def _stable(rig: PredictionRig, model: ModelFile, **extra: Any) -> str:
    m = rig.model(rig.manifest("v1"), model, "v1")
    m["spec"]["model"] |= extra
    return rig.ready_stable(m)


def test_canary_whose_outputs_moved_is_rolled_back_by_prediction_shift(
    rig: PredictionRig, scorers: dict[str, ModelFile]
) -> None:
    stable = _stable(rig, scorers["v1"])
    with rig.steady_load() as slices:
        bad = rig.deploy(rig.model(rig.manifest("v2"), scorers["shifted"], "v2"))
        watch(rig, lambda s: s.get("phase") == "RolledBack", timeout=120, what="rollback")
    status = rig.status()
    assert (status["stableRevision"], status["failedRevision"]) == (stable, bad)
    entry = status["history"][0]
    assert (entry["revision"], entry["outcome"]) == (bad, "RolledBack")
    # Not errors, not latency: what it predicted, with the buckets that moved.
    assert "output score: divergence" in entry["reason"]
    assert "bucket 0.3 100.0% -> 0%" in entry["reason"]
    assert "bucket 10 0% -> 100.0%" in entry["reason"]
    assert "error rate" not in entry["reason"].split("output score")[0]
    # The canary answered every request it got (no errors), and it did get live traffic. (The
    # gateway's own answers while a stand-in process starts carry no revision.)
    assert bad in {rev for st in slices for rev in st.by_revision}
    assert all(
        code < 500 for st in slices for (rev, code) in st.by_revision_status if rev != NO_REVISION
    )


def test_retrained_model_that_predicts_alike_is_promoted(
    rig: PredictionRig, scorers: dict[str, ModelFile]
) -> None:
    _stable(rig, scorers["v1"])
    with rig.steady_load():
        good = rig.deploy(rig.model(rig.manifest("v2"), scorers["retrained"], "v2"))
        seen = watch(rig, lambda s: s.get("stableRevision") == good, timeout=150, what="promotion")
    judged = [
        s["rollout"]["lastAnalysis"] for s in seen if (s.get("rollout") or {}).get("lastAnalysis")
    ]
    assert all(a["verdict"] != "Fail" for a in judged)
    assert any(a["verdict"] == "Pass" and a.get("predictionDivergence") is not None for a in judged)


def test_traffic_from_a_shifted_distribution_raises_data_drift_without_rollback(
    rig: PredictionRig, scorers: dict[str, ModelFile], tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2000, FEATURES))
    profile = build_profile(Runtime(scorers["v1"].path), sample, bins=8)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.as_json()))
    reference = {
        "uri": path.as_uri(),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "driftWindow": "30s",
    }
    stable = _stable(rig, scorers["v1"], reference=reference)
    like = rng.standard_normal((256, FEATURES)).astype(np.float32)
    rig.rows(rate=2, seconds=15, rows=like)
    wait_for(lambda: bool(rig.status().get("drift")), what="drift scored", timeout=60)
    assert _condition(rig.status(), "DataDrift") == "False"
    shifted = (rng.standard_normal((256, FEATURES)) + 3).astype(np.float32)

    def drifted() -> bool:
        rig.rows(rate=2, seconds=3, rows=shifted)
        return _condition(rig.status(), "DataDrift") == "True"

    wait_for(drifted, what="DataDrift=True", timeout=90)
    status = rig.status()
    assert status["drift"][0]["score"] > 0.2
    assert status["drift"] == sorted(status["drift"], key=lambda d: -d["score"])
    # Not the model's fault: nothing rolled back, the stable keeps serving.
    assert (status["phase"], status["stableRevision"]) == ("Ready", stable)
    assert not [h for h in status.get("history", []) if h.get("outcome") == "RolledBack"]
    events = [e for e in rig.kube.list("events") if e["reason"] == "DataDriftStarted"]
    assert events
    assert events[0]["type"] == "Warning"


def _condition(status: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == kind), None)


def test_shifted_canary_is_rolled_back_in_its_shadow_step_with_no_user_answer_from_it(
    rig: PredictionRig, scorers: dict[str, ModelFile]
) -> None:
    stable = _stable(rig, scorers["v1"])
    # Long enough that only the analysis can end the step.
    steps: list[dict[str, Any]] = [{"shadow": {"duration": "5m"}}, {"setWeight": 50}]
    with rig.steady_load() as slices:
        bad = rig.deploy(rig.model(rig.manifest("v2", steps=steps), scorers["shifted"], "v2"))
        seen = watch(rig, lambda s: s.get("phase") == "RolledBack", timeout=120, what="rollback")
    status = rig.status()
    assert (status["stableRevision"], status["failedRevision"]) == (stable, bad)
    entry = status["history"][0]
    assert (entry["revision"], entry["outcome"]) == (bad, "RolledBack")
    assert "output score: divergence" in entry["reason"]
    assert all(s.get("canaryWeight", 0) == 0 for s in seen)
    # The canary answered mirrored copies, which the gateway dropped ...
    mirrored = rig.gateway.mirrored(rig.kube.namespace, "iris")
    assert sum(n for (rev, code), n in mirrored.items() if rev == bad and code == 200) >= 20
    # ... and no user got an answer from it: every answer came from the stable.
    answered = {rev for st in slices for rev in st.by_revision} - {NO_REVISION}
    assert answered == {stable}
    # After the rollback the route mirrors no more.

    def unmirrored() -> bool:
        rules = rig.kube.must("httproute", ROUTE)["spec"]["rules"]
        return not any(
            f.get("type") == "RequestMirror" for r in rules for f in r.get("filters", [])
        )

    wait_for(unmirrored, what="mirror removed", timeout=30)
