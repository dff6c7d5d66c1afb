"""One analysis window of a ModelDeployment: measure both tracks with the metric provider the
registry gives, then judge them with the pure analysis (plan/analysis.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus
from modelrollout.api.types import parse_duration
from modelrollout.plan.analysis import AnalysisResult, AnalysisThresholds, analyse
from modelrollout.plan.evidence import Reading, Readings
from modelrollout.plan.predictions import ShiftLimits
from modelrollout.tenancy import TenantPolicy

from .base import MetricProvider, ProviderError, WindowQuery, sample_tracks
from .isolation import tenant_prometheus
from .prometheus import PrometheusProvider
from .registry import ProviderLookup

__all__ = ["analyse_window", "read_counters", "spec_provider"]


def spec_provider(
    provider_for: ProviderLookup,
    spec: ModelDeploymentSpec,
    policy: TenantPolicy,
    default_url: str,
    token_file: Path | None,
    overrides: Mapping[str, str | None] | None = None,
) -> MetricProvider:
    """The Prometheus a spec's analysis reads. The platform's policy decides which Prometheus
    and which query templates a spec may use (ValueError or ProviderError when it may not)."""
    return tenant_prometheus(
        policy,
        spec_url=spec.rollout.analysis.prometheus_url,
        default_url=default_url,
        overrides=overrides or {},
        factory=provider_for(PrometheusProvider.kind),
        token_file=token_file,
    )


def judged_tracks(status: ModelDeploymentStatus) -> tuple[str, str | None]:
    """The revisions judged: canary against stable while a canary runs; during the bake
    window the new stable alone, on the absolute limits."""
    if status.canary_revision and status.stable_revision:
        return status.canary_revision, status.stable_revision
    return status.stable_revision or "", None


async def analyse_window(
    provider_for: ProviderLookup,
    spec: ModelDeploymentSpec,
    namespace: str,
    name: str,
    status: ModelDeploymentStatus,
    now: datetime,
    default_url: str,
    policy: TenantPolicy,
    token_file: Path | None = None,
) -> AnalysisResult:
    """The verdict on the window that ends `now`: canary against stable while a canary runs,
    the new stable on the absolute limits alone during its bake window."""
    settings = spec.rollout.analysis
    window = parse_duration(settings.every).total_seconds()
    canary, stable = judged_tracks(status)
    try:
        overrides = settings.queries.model_dump() if settings.queries else {}
        provider = spec_provider(provider_for, spec, policy, default_url, token_file, overrides)
    except (ValueError, ProviderError) as exc:
        return analyse(None, None, provider_error=str(exc))
    at = now.timestamp()
    model = spec.model.name or name
    # Predictions are compared with the stable's: none to read without one.
    outputs = settings.prediction_shift is not None and stable is not None

    def query(revision: str) -> WindowQuery:
        return WindowQuery(
            revision, window, namespace=namespace, model=model, at=at, outputs=outputs
        )

    samples = await sample_tracks(provider, query(canary), query(stable) if stable else None)
    thresholds = AnalysisThresholds(
        max_error_rate=settings.max_error_rate,
        max_error_rate_increase=settings.max_error_rate_increase,
        max_p99_ratio=settings.max_latency_ratio,
        min_requests=settings.min_requests,
    )
    shift = settings.prediction_shift
    limits = (
        ShiftLimits(shift.max_divergence, shift.significance, settings.min_requests)
        if shift is not None
        else None
    )
    return analyse(
        samples.canary, samples.stable, thresholds, provider_error=samples.error, shift=limits
    )


async def read_counters(
    provider_for: ProviderLookup,
    spec: ModelDeploymentSpec,
    namespace: str,
    name: str,
    status: ModelDeploymentStatus,
    now: datetime,
    default_url: str,
    policy: TenantPolicy,
    token_file: Path | None = None,
) -> Readings:
    """Both tracks' raw counters now, for the sequential analysis (the same tracks as
    `analyse_window`: canary and stable, or the new stable alone while it bakes)."""
    settings = spec.rollout.analysis
    canary, stable = judged_tracks(status)
    try:
        # The counters' own queries are never overridden.
        provider = spec_provider(provider_for, spec, policy, default_url, token_file)
    except (ValueError, ProviderError) as exc:
        return Readings(None, None, str(exc))
    counters = getattr(provider, "counters", None)
    if counters is None:
        return Readings(None, None, f"metric provider {type(provider).__name__} reads no counters")
    model = spec.model.name or name
    at = now.timestamp()
    outputs = settings.prediction_shift is not None and stable is not None

    async def one(revision: str) -> Reading:
        reading: Reading = await counters(
            WindowQuery(revision, 1, namespace=namespace, model=model, at=at, outputs=outputs)
        )
        return reading

    try:
        canary_reading = await one(canary)
        stable_reading = await one(stable) if stable else None
    except ProviderError as exc:
        return Readings(None, None, str(exc))
    return Readings(canary_reading, stable_reading)
