"""What a metric provider measured for one revision over one analysis window: the planner's
input from metrics/, declared here so the pure analysis needs nothing from the I/O layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelrollout.api.reference import FeatureReference

__all__ = ["DriftReading", "TrackSample"]


@dataclass(frozen=True, slots=True)
class TrackSample:
    """What one revision did during one analysis window.

    ``requests`` and ``errors`` are 0 when the series simply has no data (no traffic), and
    None when the provider returned something unusable (NaN, infinite, negative): the
    analysis treats None as "cannot judge", never as healthy.
    """

    requests: int | None
    errors: int | None  # responses with a 5xx status
    p99_seconds: float | None  # None: no traffic in the window, or the series is NaN/missing
    window_seconds: float
    # The latency histogram over the window as (upper bound in seconds, cumulative count),
    # ascending, ending at +Inf; None when unknown. Lets the analysis count slow requests
    # instead of comparing two single p99 values.
    latency_buckets: tuple[tuple[float, float], ...] | None = None
    # Predictions in the window per output and bucket, when they were asked for.
    outputs: Mapping[str, Mapping[str, float]] | None = None


@dataclass(frozen=True, slots=True)
class DriftReading:
    """What observe read: the profile's features and the window's counts per (input, feature)
    and bucket; or why there is nothing to judge."""

    features: tuple[FeatureReference, ...] = ()
    counts: Mapping[tuple[str, str], Mapping[str, float]] | None = None
    threshold: float = 0.2
    error: str | None = None
