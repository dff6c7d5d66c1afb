"""Input drift: the profile the operator reads, the scores, the condition and its events."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from modelrollout.api.reference import FeatureReference, parse_reference
from modelrollout.api.status import Condition, FeatureDriftStatus
from modelrollout.hardware.reference import ReferenceCache, ReferenceError, read_reference
from modelrollout.plan.drift import drift_condition, drift_scores, psi
from modelrollout.plan.samples import DriftReading
from modelrollout.telemetry import OperatorMetrics
from modelrollout.tenancy import TenantPolicy

PROFILE = {
    "format": "modelrollout.io/reference-profile",
    "version": 1,
    "inputs": [
        {
            "name": "x",
            "features": [
                {"index": 0, "name": "age", "edges": [30, 60], "frequencies": [0.3, 0.5, 0.2]},
                {"index": 1, "edges": [0.5], "frequencies": [0.5, 0.5]},
            ],
        }
    ],
}
AGE = FeatureReference("x", "age", ("30", "60", "+Inf"), (0.3, 0.5, 0.2), 0, (30.0, 60.0))
ONE = FeatureReference("x", "1", ("0.5", "+Inf"), (0.5, 0.5), 1, (0.5,))


def test_the_operator_reads_the_features_of_a_profile() -> None:
    assert parse_reference(json.dumps(PROFILE).encode()) == (AGE, ONE)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": "x"}, "format must be"),
        ({**PROFILE, "version": 9}, "version 9 is not supported"),
        ({**PROFILE, "inputs": [{"name": "x", "features": [{"edges": []}]}]}, "1-31 finite"),
        (
            {
                **PROFILE,
                "inputs": [{"name": "x", "features": [{"edges": [1], "frequencies": [1]}]}],
            },
            "must be 2 shares",
        ),
    ],
)
def test_a_bad_profile_is_named(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_reference(json.dumps(doc).encode())


def _write(tmp_path: Path, doc: Any) -> tuple[str, str]:
    raw = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    path = tmp_path / "profile.json"
    path.write_bytes(raw)
    return path.as_uri(), hashlib.sha256(raw).hexdigest()


def test_read_reference_goes_through_the_tenant_policy(tmp_path: Path) -> None:
    uri, sha = _write(tmp_path, PROFILE)
    files = TenantPolicy.model_validate({"modelUriSchemes": ["file"]})
    assert read_reference(uri, sha, files) == (AGE, ONE)
    with pytest.raises(ReferenceError, match="scheme 'file' is not allowed"):
        read_reference(uri, sha, TenantPolicy())  # the default: no files of the operator's pod
    with pytest.raises(ReferenceError, match="sha256 is"):
        read_reference(uri, "0" * 64, files)
    big, big_sha = _write(tmp_path, b" " * (2 << 20))
    with pytest.raises(ReferenceError, match="1048576-byte limit"):
        read_reference(big, big_sha, files)


def test_reference_cache_keeps_the_most_recent() -> None:
    cache = ReferenceCache(size=2)
    for key in ("a", "b", "c"):
        cache.put(key, (AGE,))
    assert cache.get("a") is None
    assert cache.get("c") == (AGE,)


@pytest.mark.parametrize(
    ("observed", "expected", "score"),
    [
        ([30, 50, 20], [0.3, 0.5, 0.2], 0.0),
        ([0, 0, 100], [0.3, 0.5, 0.2], 7.95),
        ([40, 40, 20], [0.3, 0.5, 0.2], 0.0511),
        ([0, 0, 0], [0.3, 0.5, 0.2], 0.0),
    ],
)
def test_psi(observed: list[float], expected: list[float], score: float) -> None:
    assert psi(observed, expected) == pytest.approx(score, abs=0.01)


def _reading(age: Mapping[str, float], one: Mapping[str, float]) -> DriftReading:
    return DriftReading((AGE, ONE), {("x", "age"): age, ("x", "1"): one}, threshold=0.2)


def test_scores_are_worst_first_and_need_enough_values() -> None:
    reading = _reading({"30": 0, "60": 0, "+Inf": 500}, {"0.5": 250, "+Inf": 250})
    scores = drift_scores(reading)
    assert [(s.feature, s.values) for s in scores] == [("age", 500), ("1", 500)]
    assert scores[0].score > 2
    assert scores[1].score == 0
    few = _reading({"30": 10, "60": 0, "+Inf": 0}, {"0.5": 250, "+Inf": 250})
    assert [s.feature for s in drift_scores(few)] == ["1"]


def _condition(status: str) -> list[Condition]:
    return [
        Condition.model_validate(
            {"type": "DataDrift", "status": status, "reason": "r", "lastTransitionTime": "t"}
        )
    ]


@pytest.mark.parametrize(
    ("before", "shifted", "status", "event"),
    [
        ([], True, "True", "DataDriftStarted"),
        (_condition("True"), True, "True", None),
        (_condition("True"), False, "False", "DataDriftEnded"),
        ([], False, "False", None),
    ],
)
def test_condition_and_events(
    before: list[Condition], shifted: bool, status: str, event: str | None
) -> None:
    age = {"30": 0, "60": 0, "+Inf": 500} if shifted else {"30": 150, "60": 250, "+Inf": 100}
    reading = _reading(age, {"0.5": 250, "+Inf": 250})
    update, events = drift_condition(before, drift_scores(reading), reading)
    assert update is not None
    assert update.status == status
    assert [e.reason for e in events] == ([event] if event else [])
    if shifted:
        assert "1 of 2 input features drifted" in update.message
        assert "x/age" in update.message


def test_no_verdict_without_values_or_with_an_error() -> None:
    reading = DriftReading((AGE,), None, error="Prometheus down")
    assert drift_condition([], drift_scores(reading), reading) == (None, [])


def test_operator_metric_follows_status() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    d = [FeatureDriftStatus(input="x", feature="age", score=2.5, values=500)]
    metrics.export_drift("ns", "m", d, drifted=True)
    assert (
        metrics.registry.get_sample_value(
            "modelrollout_input_drifted", {"namespace": "ns", "name": "m"}
        )
        == 1
    )
    value = metrics.registry.get_sample_value(
        "modelrollout_input_drift", {"namespace": "ns", "name": "m", "input": "x", "feature": "age"}
    )
    assert value == 2.5
    metrics.export_drift("ns", "m", [])
    assert (
        metrics.registry.get_sample_value(
            "modelrollout_input_drifted", {"namespace": "ns", "name": "m"}
        )
        is None
    )
    assert (
        metrics.registry.get_sample_value(
            "modelrollout_input_drift",
            {"namespace": "ns", "name": "m", "input": "x", "feature": "age"},
        )
        is None
    )


def test_settle_writes_drift_and_keeps_it_when_unreadable() -> None:
    from modelrollout.api.spec import ModelDeploymentSpec
    from modelrollout.api.status import ModelDeploymentStatus
    from modelrollout.plan.children import Owner
    from modelrollout.plan.drift import drift_status
    from modelrollout.plan.types import Inputs

    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "/m.onnx", "version": "v1"}})
    kept = [FeatureDriftStatus(input="x", feature="age", score=3.0, values=400)]

    def inputs(drift: DriftReading | None) -> Inputs:
        return Inputs(
            owner=Owner("m", "ns", "uid"),
            generation=1,
            spec=spec,
            status=ModelDeploymentStatus(drift=kept),
            image="img",
            placement=None,
            deployments=(),
            now=datetime.now(UTC),
            drift=drift,
        )

    shifted = _reading({"30": 0, "60": 0, "+Inf": 500}, {"0.5": 250, "+Inf": 250})
    drift, update = drift_status(inputs(shifted))
    assert drift[0].feature == "age"
    assert update is not None
    assert update.status == "True"
    assert drift_status(inputs(DriftReading((AGE,), error="down"))) == (kept, None)
    assert drift_status(inputs(None)) == ([], None)


def test_synthetic_rows_follow_the_reference() -> None:
    from modelrollout.api.reference import draw_rows

    rows = draw_rows((AGE, ONE), 4000, seed=1)
    assert rows == draw_rows((AGE, ONE), 4000, seed=1)
    assert all(len(r) == 2 for r in rows)
    ages = [r[0] for r in rows]
    shares = [
        sum(a <= 30 for a in ages) / 4000,
        sum(30 < a <= 60 for a in ages) / 4000,
        sum(a > 60 for a in ages) / 4000,
    ]
    assert shares == pytest.approx([0.3, 0.5, 0.2], abs=0.03)
    assert min(ages) >= 0
    assert max(ages) <= 90
    # Rows drawn this way score as no drift against the profile they came from.
    counts = {"30": shares[0] * 4000, "60": shares[1] * 4000, "+Inf": shares[2] * 4000}
    ones = [r[1] for r in rows]
    one = {"0.5": sum(v <= 0.5 for v in ones), "+Inf": sum(v > 0.5 for v in ones)}
    assert all(d.score < 0.01 for d in drift_scores(_reading(counts, one)))
    with pytest.raises(ValueError, match="one input"):
        draw_rows((AGE, FeatureReference("z", "q", ("1", "+Inf"), (0.5, 0.5), 0, (1.0,))), 3)
