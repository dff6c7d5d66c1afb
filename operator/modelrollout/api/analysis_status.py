"""Analysis results and the sequential evidence kept in status (out of status.py, which
stays under 400 lines)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelrollout.api.types import ApiModel


class OutputEvidenceStatus(ApiModel):
    """predictionShift, sequential: one output's bucket counts and evidence."""

    output: str
    """The model output."""

    buckets: list[str]
    """Its buckets, in the order of the lists below."""

    last_canary: list[int]
    """The canary's counters at the last read."""

    last_stable: list[int]
    """The stable's counters at the last read."""

    canary: list[int]
    """Canary predictions per bucket since the evidence started."""

    stable: list[int]
    """Stable predictions per bucket over the same reads."""

    log_wealth: list[float]
    """log wealth of the evidence, per temper of its bet."""


class AnalysisVerdict(ApiModel):
    """What a window decided, and when."""

    verdict: Literal["Pass", "Fail", "Inconclusive"]
    """Pass, Fail, or Inconclusive (too little traffic, metrics unavailable, stable failing too)."""

    reason: str
    """The measured values and the limits they were judged against."""

    time: str
    """When the window ended."""


class AnalysisMeasurements(ApiModel):
    """What one analysis window measured. Declared once: the analysis returns these and the
    status stores them."""

    canary_requests: int | None = None
    """Requests the canary served in the window."""

    canary_errors: int | None = None
    """Of those, answered with a 5xx status."""

    canary_error_rate: float | None = None
    """canaryErrors / canaryRequests."""

    canary_p99_seconds: float | None = None
    """99th percentile request latency of the canary."""

    stable_requests: int | None = None
    """Requests the stable revision served in the same window."""

    stable_errors: int | None = None
    """Of those, answered with a 5xx status."""

    stable_error_rate: float | None = None
    """stableErrors / stableRequests."""

    stable_p99_seconds: float | None = None
    """99th percentile request latency of the stable revision."""

    p99_ratio: float | None = None
    """canaryP99Seconds / stableP99Seconds."""

    z: float | None = None
    """Two-proportion z statistic of the canary's error rate against the stable's."""

    p_value: float | None = None
    """One-sided p-value of the error-rate test that ran (Fisher exact or binomial)."""

    error_evalue: float | None = None
    """Sequential: evidence that the canary's error rate is higher than the stable's (or, with
    no stable, than maxErrorRate) since it started; it fails at errorThreshold."""

    error_threshold: float | None = None
    """Sequential: the errorEvalue that fails: 1 / its share of the significance."""

    latency_evalue: float | None = None
    """Sequential: the strongest evidence, over the histogram bounds, that the canary is slower."""

    latency_threshold: float | None = None
    """Sequential: the latencyEvalue that fails at any one bound."""

    prediction_divergence: float | None = None
    """predictionShift: the largest Jensen-Shannon divergence between the canary's and the
    stable's predictions over the outputs judged."""

    prediction_evalue: float | None = None
    """predictionShift, sequential: the strongest evidence, over the outputs, that the canary
    predicts differently; it fails at predictionThreshold."""

    prediction_threshold: float | None = None
    """predictionShift, sequential: the predictionEvalue that fails one output."""

    prediction_p_value: float | None = None
    """predictionShift, windows: the smallest G-test p-value over the outputs."""


class TrackTotalsStatus(ApiModel):
    """What one track served since the canary started (sequential analysis)."""

    requests: int = 0
    """Requests served."""

    errors: int = 0
    """Of those, answered with a 5xx status."""

    fast: list[int] = Field(default_factory=list)
    """Requests at or under each of the evidence's latency bounds."""

    observed: int = 0
    """Requests the latency histogram saw."""

    synthetic: int = 0
    """Of the requests, those the operator's synthetic traffic sent (not through the route)."""


class CounterReadStatus(ApiModel):
    """One track's raw counters at the last read, to take the next increment from."""

    requests: int
    """The request counter."""

    errors: int
    """The 5xx response counter."""

    fast: list[int] = Field(default_factory=list)
    """The histogram's cumulative counts at the evidence's latency bounds."""

    observed: int | None = None
    """The histogram's total; absent when the histogram was not read."""

    synthetic: int = 0
    """The synthetic request counter."""


class EvidenceStatus(ApiModel):
    """The running evidence of the sequential analysis, carried from read to read (and over an
    operator restart)."""

    reads: int = 0
    """Reads taken, the first of them the starting point."""

    resets: int = 0
    """Reads dropped because a counter went down (a pod restarted or left)."""

    bounds: list[float] = Field(default_factory=list)
    """Latency bounds (seconds) the latency evidence is kept for."""

    canary: TrackTotalsStatus = Field(default_factory=TrackTotalsStatus)
    """What the judged revision served since the evidence started."""

    stable: TrackTotalsStatus = Field(default_factory=TrackTotalsStatus)
    """What the stable revision served over the same reads."""

    last_canary: CounterReadStatus | None = None
    """The judged revision's counters at the last read."""

    last_stable: CounterReadStatus | None = None
    """The stable revision's counters at the last read (none during the bake window)."""
    log_errors: list[float] = Field(default_factory=list)
    """log likelihood ratio of the error evidence, per alternative rate ratio."""

    log_latency: list[list[float]] = Field(default_factory=list)
    """log wealth of the latency evidence, per bound and stake."""

    pending: list[int] = Field(default_factory=list)
    """Requests and 5xx not judged yet (canary requests, canary errors, stable requests,
    stable errors): pooled until both tracks have served requests."""

    predictions: list[OutputEvidenceStatus] = Field(default_factory=list)
    """predictionShift: the evidence per output judged."""


class AnalysisStatus(AnalysisMeasurements, AnalysisVerdict):
    """The last analysis window: verdict, the reason in words and the measured values."""
