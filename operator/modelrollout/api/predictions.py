"""spec.rollout.analysis.predictionShift: judging a canary by what it predicts."""

from __future__ import annotations

from pydantic import Field

from modelrollout.api.types import ApiModel

__all__ = ["PredictionShiftSpec"]


class PredictionShiftSpec(ApiModel):
    """Compare the canary's predictions with the stable's, output by output, over the buckets
    the model servers count them in (docs/reference-profile.md). A shift fails the analysis,
    and rolls the canary back, when it is both large (over maxDivergence) and significant;
    the same minRequests applies, to the predictions of each track."""

    max_divergence: float = Field(default=0.05, gt=0, le=1)
    """Largest acceptable Jensen-Shannon divergence (base 2: 0 identical, 1 disjoint) between
    the canary's and the stable's predictions of one output. 0.05 is a few points of share
    moved between buckets; a model whose outputs moved to other buckets is near 1."""

    significance: float = Field(default=0.01, gt=0, le=0.2)
    """The probability of ever failing a canary that predicts like the stable (sequential), or
    the level of each window's test (windows); shared out over the outputs judged. It is this
    check's own, besides `significance` for errors and latency."""
