"""One read of the sequential analysis, from status to status: take the evidence kept in
status, add the read, judge it, and put it back. Pure; the rollout state machine calls it."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import replace
from typing import TypeVar

from modelrollout.api.spec import AnalysisSpec
from modelrollout.api.status import BakeStatus, EvidenceStatus, RolloutStatus
from modelrollout.plan.analysis import AnalysisResult, Verdict
from modelrollout.plan.evidence import Evidence, Readings
from modelrollout.plan.predictions import (
    PredictionEvidence,
    ShiftLimits,
    ShiftResult,
    judge_sequential,
)
from modelrollout.plan.sequential import SequentialLimits, SequentialResult, judge

__all__ = ["Judged", "judge_reading", "limits_of", "step_marks"]

# What a canary is judged with: one window (windows method) or the running evidence.
Judged = AnalysisResult | SequentialResult
State = TypeVar("State", RolloutStatus, BakeStatus)


def limits_of(spec: AnalysisSpec) -> SequentialLimits:
    return SequentialLimits(
        max_error_rate=spec.max_error_rate,
        max_error_rate_increase=spec.max_error_rate_increase,
        max_latency_ratio=spec.max_latency_ratio,
        min_requests=spec.min_requests,
        significance=spec.significance,
    )


def _evidence(state: RolloutStatus | BakeStatus) -> Evidence:
    if state.evidence is None:
        return Evidence()
    try:
        return Evidence.from_status(state.evidence.model_dump(by_alias=True))
    except ValueError:
        # Written by another version: start over rather than trust it (loses evidence only).
        return Evidence()


def judge_reading(
    state: State, spec: AnalysisSpec, readings: Readings
) -> tuple[State, SequentialResult]:
    """The state with the read added to its evidence, and the verdict on it."""
    evidence = _evidence(state)
    limits = limits_of(spec)
    if readings.error is not None or readings.canary is None:
        result = judge(evidence, limits, 0)
        reason = f"metrics provider error: {readings.error or 'no canary counters'}"
        return state, _inconclusive(result, reason)
    evidence = evidence.update(readings.canary, readings.stable)
    since = state.step_canary_requests if isinstance(state, RolloutStatus) else None
    result = judge(evidence, limits, evidence.canary.requests - (since or 0))
    predictions = _predictions(state, evidence, readings) if spec.prediction_shift else None
    if predictions is not None and spec.prediction_shift is not None:
        shift = ShiftLimits(
            max_divergence=spec.prediction_shift.max_divergence,
            significance=spec.prediction_shift.significance,
            min_requests=spec.min_requests,
        )
        result = with_shift(result, judge_sequential(predictions, shift))
    block = evidence.as_status() | {"predictions": predictions.as_status() if predictions else []}
    update: dict[str, object] = {"evidence": EvidenceStatus.model_validate(block)}
    if isinstance(state, RolloutStatus) and state.step_canary_requests is None:
        # The evidence starts within this step: the step's counts start with it.
        update |= {"step_canary_requests": 0, "step_stable_requests": 0, "step_canary_synthetic": 0}
    return state.model_copy(update=update), result


def _predictions(
    state: RolloutStatus | BakeStatus, evidence: Evidence, readings: Readings
) -> PredictionEvidence | None:
    """The prediction evidence with this read added; None without both tracks' counters."""
    c, s = readings.canary, readings.stable
    if c is None or s is None or c.outputs is None or s.outputs is None:
        return None
    before = PredictionEvidence()
    if state.evidence is not None and evidence.reads > 1:  # the evidence did not restart
        dumped = [o.model_dump(by_alias=True) for o in state.evidence.predictions]
        # Written by another version: start over (loses evidence only).
        with suppress(ValueError):
            before = PredictionEvidence.from_status(dumped)
    return before.update(c.outputs, s.outputs)


def with_shift(result: SequentialResult, shift: ShiftResult | None) -> SequentialResult:
    """The verdict with the prediction-shift check's: Fail if either fails, else Inconclusive
    if either is, else Pass; the reason of the verdict that decides."""
    if shift is None:
        return result
    finding = shift.finding
    order = (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.PASS)
    verdict = min(result.verdict, finding.verdict, key=order.index)
    texts = [t.reason for t in (result,) if t.verdict is verdict]
    texts += [finding.text] if finding.verdict is verdict else []
    return replace(
        result,
        verdict=verdict,
        reason="; ".join(texts),
        prediction_divergence=shift.divergence,
        prediction_evalue=shift.evalue,
        prediction_threshold=shift.threshold,
    )


def _inconclusive(result: SequentialResult, reason: str) -> SequentialResult:
    return SequentialResult(
        verdict=Verdict.INCONCLUSIVE,
        reason=reason,
        canary_requests=result.canary_requests,
        canary_errors=result.canary_errors,
        stable_requests=result.stable_requests,
        stable_errors=result.stable_errors,
        error_evalue=result.error_evalue,
        error_threshold=result.error_threshold,
        latency_evalue=result.latency_evalue,
        latency_threshold=result.latency_threshold,
    )


def step_marks(state: RolloutStatus) -> dict[str, int | None]:
    """Requests counted so far, as the next step's starting marks: canary and stable for its
    exposure, and the canary's synthetic ones for the route's share."""
    evidence = state.evidence
    return {
        "step_canary_requests": evidence.canary.requests if evidence else None,
        "step_stable_requests": evidence.stable.requests if evidence else None,
        "step_canary_synthetic": evidence.canary.synthetic if evidence else None,
    }
