"""Metric providers by the name the spec selects them with."""

from __future__ import annotations

from collections.abc import Callable

from .base import MetricProvider
from .prometheus import PrometheusProvider

__all__ = ["ProviderFactory", "ProviderLookup", "get", "kinds", "register"]

ProviderFactory = Callable[..., MetricProvider]
# How the reconciler finds a provider: `get` in production, a fake in tests.
ProviderLookup = Callable[[str], ProviderFactory]

_FACTORIES: dict[str, ProviderFactory] = {PrometheusProvider.kind: PrometheusProvider}


def register(kind: str, factory: ProviderFactory) -> None:
    """Add a provider; registering a taken name is an error so one cannot shadow another."""
    if kind in _FACTORIES:
        raise ValueError(f"metric provider {kind!r} is already registered")
    _FACTORIES[kind] = factory


def get(kind: str) -> ProviderFactory:
    try:
        return _FACTORIES[kind]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise ValueError(f"unknown metric provider {kind!r}; known: {known}") from None


def kinds() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))
