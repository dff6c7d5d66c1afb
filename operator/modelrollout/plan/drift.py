"""Input drift: how far the traffic a model serves has moved from its reference profile. Pure.

The model servers count each profiled input feature in the reference profile's bins
(``modelserver_input_bucket_total``); the profile holds the share of the reference sample in
each bin. The score of a feature is the population stability index of the window's counts
against those shares, ``sum (p - q) ln(p / q)`` (shares floored at ``_FLOOR`` so an empty bin
does not make it infinite): the usual reading is under 0.1 stable, 0.1 to 0.25 a moderate
shift, over 0.25 a large one. Drift is the traffic's doing, not the canary's: it never rolls
anything back; it sets the ``DataDrift`` condition and ``status.drift``, and is an event when it
starts and when it ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelrollout.api.status import Condition, FeatureDriftStatus

from .conditions import ConditionUpdate
from .samples import DriftReading
from .types import Event, Inputs

__all__ = [
    "DATA_DRIFT",
    "DriftReading",
    "drift_condition",
    "drift_events",
    "drift_scores",
    "drift_status",
    "psi",
]

DATA_DRIFT = "DataDrift"
_FLOOR = 1e-4
# Fewer values of a feature than this in the window and it is not scored: a handful of
# requests says nothing about a distribution.
MIN_VALUES = 100


def psi(observed: Sequence[float], expected: Sequence[float]) -> float:
    """Population stability index of observed counts against expected shares."""
    total = sum(observed)
    if total <= 0:
        return 0.0
    out = 0.0
    for o, e in zip(observed, expected, strict=True):
        p, q = max(o / total, _FLOOR), max(e, _FLOOR)
        out += (p - q) * math.log(p / q)
    return out


def drift_scores(reading: DriftReading) -> list[FeatureDriftStatus]:
    """A score per feature with enough values in the window, worst first."""
    if reading.counts is None:
        return []
    scored = []
    for f in reading.features:
        counts = reading.counts.get((f.input, f.feature))
        if counts is None or f.frequencies is None:
            continue
        observed = [max(0.0, counts.get(b, 0.0)) for b in f.buckets]
        if sum(observed) < MIN_VALUES:
            continue
        score = psi(observed, f.frequencies)
        scored.append(
            FeatureDriftStatus(
                input=f.input,
                feature=f.feature,
                score=float(f"{score:.4g}"),
                values=round(sum(observed)),
            )
        )
    return sorted(scored, key=lambda d: -d.score)


def drift_condition(
    previous: Sequence[Condition], scores: Sequence[FeatureDriftStatus], reading: DriftReading
) -> tuple[ConditionUpdate | None, list[Event]]:
    """The DataDrift condition, and an event when drift starts or ends; None without a
    verdict (no profile, metrics unreadable, too few values): the condition stays as it was."""
    if reading.error is not None or not scores:
        return None, []
    drifted = [d for d in scores if d.score > reading.threshold]
    was = next((c.status == "True" for c in previous if c.type == DATA_DRIFT), False)
    if drifted:
        named = ", ".join(f"{d.input}/{d.feature} {d.score:.3g}" for d in drifted[:5])
        message = (
            f"{len(drifted)} of {len(scores)} input features drifted from the reference "
            f"profile (PSI over {reading.threshold:g}): {named}"
        )
        update = ConditionUpdate(DATA_DRIFT, "True", "Drifted", message)
        events = [] if was else [Event("Warning", "DataDriftStarted", message)]
        return update, events
    worst = scores[0]
    message = (
        f"the {len(scores)} input features scored are within PSI {reading.threshold:g} of the "
        f"reference profile (worst {worst.input}/{worst.feature} {worst.score:.3g})"
    )
    events = [Event("Normal", "DataDriftEnded", message)] if was else []
    return ConditionUpdate(DATA_DRIFT, "False", "WithinReference", message), events


def drift_status(inputs: Inputs) -> tuple[list[FeatureDriftStatus], ConditionUpdate | None]:
    """status.drift and the DataDrift condition update for this cycle: the previous ones when
    the drift could not be read, nothing without a reference profile."""
    reading = inputs.drift
    if reading is None:
        return [], None
    scores = drift_scores(reading)
    if reading.error is not None or not scores:
        return list(inputs.status.drift), None
    update, _ = drift_condition(inputs.status.conditions, scores, reading)
    return scores, update


def drift_events(inputs: Inputs) -> list[Event]:
    """DataDriftStarted or DataDriftEnded when the condition flips this cycle."""
    if inputs.drift is None:
        return []
    _, events = drift_condition(inputs.status.conditions, drift_scores(inputs.drift), inputs.drift)
    return events
