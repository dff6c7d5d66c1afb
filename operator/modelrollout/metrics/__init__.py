"""Metric providers: measure a revision's requests, 5xx errors and p99 over a window."""

from .base import (
    MetricProvider,
    ProviderError,
    TrackSample,
    TrackSamples,
    WindowQuery,
    sample_tracks,
)
from .prometheus import PrometheusProvider, QueryTemplateError, QueryTemplates

__all__ = [
    "MetricProvider",
    "PrometheusProvider",
    "ProviderError",
    "QueryTemplateError",
    "QueryTemplates",
    "TrackSample",
    "TrackSamples",
    "WindowQuery",
    "sample_tracks",
]
