"""Metric providers: measure a revision's requests, 5xx errors and p99 over a window."""

from .base import MetricProvider, ProviderError, TrackSample, WindowQuery
from .prometheus import PrometheusProvider, QueryTemplateError, QueryTemplates

__all__ = [
    "MetricProvider",
    "PrometheusProvider",
    "ProviderError",
    "QueryTemplateError",
    "QueryTemplates",
    "TrackSample",
    "WindowQuery",
]
