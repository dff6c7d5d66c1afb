"""Prediction shift (plan.predictions): the effect size, the tests, and the verdict rules."""

from __future__ import annotations

import math
import random

import pytest

from modelrollout.plan.evidence import Reading, Readings
from modelrollout.plan.predictions import (
    PredictionEvidence,
    ShiftLimits,
    ShiftResult,
    g_test,
    js_divergence,
    judge_sequential,
    judge_window,
)
from modelrollout.plan.sequential import SequentialResult
from modelrollout.plan.stats import chi2_sf
from modelrollout.plan.verdicts import Finding, Verdict

LIMITS = ShiftLimits(max_divergence=0.05, significance=0.01, min_requests=50)


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [
        ([1, 1], [2, 2], 0.0),
        ([1, 0], [0, 1], 1.0),
        ([3, 1], [1, 3], 0.1887),
        ([0, 0], [1, 1], 0.0),  # nothing to compare
    ],
)
def test_js_divergence(p: list[float], q: list[float], expected: float) -> None:
    assert js_divergence(p, q) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841459, 1, 0.05),
        (6.634897, 1, 0.01),
        (11.0705, 5, 0.05),
        (0.0, 3, 1.0),
        (100, 2, 1.9287e-22),
    ],
)
def test_chi2_sf(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-3)


def test_g_test() -> None:
    assert g_test([50, 50], [50, 50]) == pytest.approx(1.0)
    assert g_test([90, 10], [10, 90]) < 1e-20
    assert g_test([0, 5], [0, 7]) == 1.0  # one bucket in use: no degrees of freedom


def _b(**counts: float) -> dict[str, dict[str, float]]:
    return {"y": {k.replace("_", "."): v for k, v in counts.items()}}


@pytest.mark.parametrize(
    ("canary", "stable", "verdict", "fragment"),
    [
        (_b(a=500, b=500), _b(a=480, b=520), Verdict.PASS, "within 0.05"),
        (_b(a=10, b=990), _b(a=500, b=500), Verdict.FAIL, "bucket a 50.0% -> 1.0%"),
        (_b(a=20, b=20), _b(a=500, b=500), Verdict.INCONCLUSIVE, "40 canary and 1000 stable"),
    ],
)
def test_window_verdicts(
    canary: dict[str, dict[str, float]],
    stable: dict[str, dict[str, float]],
    verdict: Verdict,
    fragment: str,
) -> None:
    result = judge_window(canary, stable, LIMITS)
    assert result is not None
    assert result.finding.verdict is verdict
    assert fragment in result.finding.text


def test_window_waits_for_significance() -> None:
    few = ShiftLimits(max_divergence=0.05, significance=0.01, min_requests=10)
    result = judge_window(_b(a=10, b=2), _b(a=5, b=7), few)
    assert result is not None
    assert result.finding.verdict is Verdict.INCONCLUSIVE
    assert "not significant yet" in result.finding.text
    assert result.p_value is not None


def test_window_judges_only_outputs_counted_alike() -> None:
    assert judge_window(_b(a=1, b=2), {"y": {"a": 1, "c": 2}}, LIMITS) is None  # new profile
    assert judge_window(_b(a=1, b=2), {"z": {"a": 1, "b": 2}}, LIMITS) is None
    assert judge_window({"y": {"only": 5}}, {"y": {"only": 5}}, LIMITS) is None


def test_fail_names_the_shifted_buckets_in_order() -> None:
    stable = {"score": {"0.1": 300, "0.2": 400, "0.3": 300, "+Inf": 0}}
    canary = {"score": {"0.1": 0, "0.2": 10, "0.3": 290, "+Inf": 700}}
    result = judge_window(canary, stable, LIMITS)
    assert result is not None
    assert result.finding.verdict is Verdict.FAIL
    text = result.finding.text
    assert "bucket +Inf 0% -> 70.0%" in text
    assert "bucket 0.2 40.0% -> 1.0%" in text
    assert text.index("+Inf") < text.index("bucket 0.2")  # the largest move first


def _sequence(
    reads: int, per_read: int, p_canary: list[float], p_stable: list[float], rng: random.Random
) -> PredictionEvidence:
    """Cumulative counters of both tracks read `reads` times; the evidence after each."""
    labels = [str(i) for i in range(len(p_canary))]
    c = [0] * len(labels)
    s = [0] * len(labels)
    evidence = PredictionEvidence()
    for _ in range(reads):
        for counts, p, n in ((c, p_canary, per_read // 4), (s, p_stable, per_read)):
            for i in rng.choices(range(len(p)), weights=p, k=n):
                counts[i] += 1
        evidence = evidence.update(
            {"y": dict(zip(labels, c, strict=True))}, {"y": dict(zip(labels, s, strict=True))}
        )
    return evidence


def test_sequential_false_alarms_stay_under_significance() -> None:
    rng = random.Random(7)
    p = [0.5, 0.3, 0.15, 0.05]
    limits = ShiftLimits(max_divergence=1e-9, significance=0.1, min_requests=1)
    alarms = 0
    runs = 150
    for _ in range(runs):
        evidence = PredictionEvidence()
        c, s = [0] * 4, [0] * 4
        for _ in range(30):  # reads: the evidence must hold however often it is looked at
            for counts, n in ((c, 20), (s, 80)):
                for i in rng.choices(range(4), weights=p, k=n):
                    counts[i] += 1
            labels = ["0", "1", "2", "3"]
            evidence = evidence.update(
                {"y": dict(zip(labels, c, strict=True))}, {"y": dict(zip(labels, s, strict=True))}
            )
            result = judge_sequential(evidence, limits)
            if result is not None and result.finding.verdict is Verdict.FAIL:
                alarms += 1
                break
    assert alarms / runs <= 0.1


def test_sequential_finds_a_shift_within_a_few_reads() -> None:
    rng = random.Random(3)
    evidence = _sequence(6, 200, [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], rng)
    result = judge_sequential(evidence, LIMITS)
    assert result is not None
    assert result.finding.verdict is Verdict.FAIL
    assert result.evalue is not None
    assert result.threshold == 100
    assert result.evalue >= 100
    assert "output y: divergence" in result.finding.text


def test_a_mirrored_canary_that_predicts_alike_gains_no_evidence() -> None:
    evidence = PredictionEvidence()
    rng = random.Random(1)
    counts = [0, 0, 0]
    for _ in range(50):
        for i in rng.choices(range(3), weights=[0.2, 0.5, 0.3], k=40):
            counts[i] += 1
        same = {"y": {"a": counts[0], "b": counts[1], "c": counts[2]}}
        evidence = evidence.update(same, same)
    assert all(w <= 1e-9 for w in evidence.outputs[0].log_wealth)
    result = judge_sequential(evidence, LIMITS)
    assert result is not None
    assert result.finding.verdict is Verdict.PASS


def test_a_counter_reset_drops_the_increment_and_status_round_trips() -> None:
    e = PredictionEvidence().update(_b(a=10, b=10), _b(a=10, b=10))
    e = e.update(_b(a=20, b=30), _b(a=15, b=15))
    assert e.outputs[0].canary == (10, 20)
    assert e.outputs[0].stable == (5, 5)
    e = e.update(_b(a=5, b=5), _b(a=20, b=20))  # a canary pod went away
    assert e.outputs[0].canary == (10, 20)
    assert e.outputs[0].last_canary == (5, 5)
    assert PredictionEvidence.from_status(e.as_status()) == e
    broken = e.as_status()
    broken[0]["canary"] = [1]
    with pytest.raises(ValueError, match="prediction evidence is malformed"):
        PredictionEvidence.from_status(broken)


@pytest.mark.parametrize(
    ("main", "shift", "verdict", "reason"),
    [
        (Verdict.PASS, Verdict.FAIL, Verdict.FAIL, "shift"),
        (Verdict.FAIL, Verdict.PASS, Verdict.FAIL, "errors"),
        (Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE, "shift"),
        (Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE, "errors; shift"),
        (Verdict.PASS, Verdict.PASS, Verdict.PASS, "errors; shift"),
        (Verdict.FAIL, Verdict.FAIL, Verdict.FAIL, "errors; shift"),
    ],
)
def test_the_shift_verdict_joins_the_analysis(
    main: Verdict, shift: Verdict, verdict: Verdict, reason: str
) -> None:
    from modelrollout.plan.judging import with_shift

    result = SequentialResult(main, "errors", 100, 0, 100, 0, 1.0, 100.0)
    joined = with_shift(result, ShiftResult(Finding(shift, "shift"), divergence=0.3, evalue=2.0))
    assert (joined.verdict, joined.reason) == (verdict, reason)
    assert joined.as_status()["predictionDivergence"] == 0.3
    assert with_shift(result, None) is result


def test_judge_reading_keeps_prediction_evidence_in_status() -> None:
    from modelrollout.api.spec import AnalysisSpec
    from modelrollout.api.status import RolloutStatus
    from modelrollout.plan.judging import judge_reading

    spec = AnalysisSpec.model_validate(
        {"predictionShift": {"maxDivergence": 0.05}, "minRequests": 50}
    )
    state = RolloutStatus()
    verdicts = []
    for i in range(1, 8):
        canary = {"y": {"a": 10.0 * i, "b": 290.0 * i}}  # the canary moved to bucket b
        stable = {"y": {"a": 250.0 * i, "b": 50.0 * i}}
        readings = Readings(
            Reading(300 * i, 0, outputs=canary), Reading(300 * i, 0, outputs=stable)
        )
        state, result = judge_reading(state, spec, readings)
        verdicts.append(result.verdict)
    assert verdicts[0] is not Verdict.FAIL  # the first read is the starting point
    assert verdicts[-1] is Verdict.FAIL
    assert "output y: divergence" in result.reason
    assert "bucket b 16.7% -> 96.7%" in result.reason
    assert state.evidence is not None
    assert state.evidence.predictions[0].canary == [60, 1740]
    # Without predictionShift, nothing about predictions is judged or kept.
    plain = AnalysisSpec()
    state2, result2 = judge_reading(RolloutStatus(), plain, readings)
    assert state2.evidence is not None
    assert state2.evidence.predictions == []
    assert result2.prediction_divergence is None
    assert not math.isnan(result2.error_evalue)


def test_a_window_fails_on_a_shift_alone() -> None:
    from modelrollout.plan.analysis import analyse
    from modelrollout.plan.samples import TrackSample

    def sample(outputs: dict[str, dict[str, float]]) -> TrackSample:
        return TrackSample(500, 0, 0.005, 30, outputs=outputs)

    canary, stable = sample(_b(a=20, b=480)), sample(_b(a=400, b=100))
    result = analyse(canary, stable, shift=LIMITS)
    assert result.verdict is Verdict.FAIL
    assert "output y: divergence" in result.reason
    assert "G-test" in result.reason
    assert result.measured.prediction_divergence is not None
    assert result.measured.prediction_p_value is not None
    assert analyse(canary, stable).verdict is Verdict.PASS  # the check is off without limits
