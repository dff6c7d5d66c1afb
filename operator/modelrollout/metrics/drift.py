"""Input drift of a ModelDeployment's stable: its profiled input features over the drift
window from Prometheus, beside the reference profile's features (read by the reconciler
through hardware.reference); the scores are the pure plan.drift's."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from modelrollout.api.reference import FeatureReference
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.types import parse_duration
from modelrollout.plan.samples import DriftReading
from modelrollout.tenancy import TenantPolicy

from .analysis import spec_provider
from .base import ProviderError, WindowQuery
from .registry import ProviderLookup

__all__ = ["read_drift"]


async def read_drift(
    provider_for: ProviderLookup,
    spec: ModelDeploymentSpec,
    namespace: str,
    name: str,
    revision: str,
    now: datetime,
    default_url: str,
    policy: TenantPolicy,
    features: tuple[FeatureReference, ...],
    token_file: Path | None = None,
) -> DriftReading | None:
    """The revision's input counts beside the profile's features; None without a profile."""
    ref = spec.model.reference
    if ref is None:
        return None
    if not any(f.frequencies is not None for f in features):
        return DriftReading(features, threshold=ref.max_drift, error="no reference frequencies")
    try:
        provider = spec_provider(provider_for, spec, policy, default_url, token_file)
        inputs = getattr(provider, "inputs", None)
        if inputs is None:
            raise ProviderError(f"metric provider {type(provider).__name__} reads no inputs")
        window = parse_duration(ref.drift_window).total_seconds()
        query = WindowQuery(
            revision, window, namespace=namespace, model=spec.model.name or name, at=now.timestamp()
        )
        counts = await inputs(query)
    except (ValueError, ProviderError) as exc:
        return DriftReading(features, threshold=ref.max_drift, error=str(exc))
    return DriftReading(features, counts, threshold=ref.max_drift)
