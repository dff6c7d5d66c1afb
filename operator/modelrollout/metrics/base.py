"""The metric provider contract: what one analysis window of one revision looks like."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from modelrollout.plan.samples import TrackSample

__all__ = [
    "MetricProvider",
    "ProviderError",
    "TrackSample",
    "TrackSamples",
    "WindowQuery",
    "sample_tracks",
]


@dataclass(frozen=True, slots=True)
class WindowQuery:
    """Which serving pods to measure, and over which window.

    Only the fields that are given narrow the selection; ``revision`` is always required
    because it is what tells canary and stable apart.
    """

    revision: str
    window_seconds: float
    namespace: str | None = None
    model: str | None = None
    track: str | None = None
    # Evaluation instant (Unix seconds). Pass the same value for canary and stable so both
    # are measured over exactly the same window; None means "now" on the provider's clock.
    at: float | None = None
    # Also read the predictions per output and bucket (the prediction-shift check).
    outputs: bool = False

    def __post_init__(self) -> None:
        if not self.revision:
            raise ValueError("WindowQuery.revision must not be empty")
        if not math.isfinite(self.window_seconds) or self.window_seconds < 1:
            raise ValueError(
                f"WindowQuery.window_seconds must be at least 1, got {self.window_seconds}"
            )


class ProviderError(Exception):
    """The metric backend could not answer; the message is meant for ``status`` as is."""

    def __init__(self, message: str, *, query: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.query = query

    def __str__(self) -> str:
        return self.message


@runtime_checkable
class MetricProvider(Protocol):
    """A metric backend: measures one revision over one window."""

    async def sample(self, query: WindowQuery) -> TrackSample:
        """Measure the revision; raise ProviderError when the backend cannot answer."""
        ...


@dataclass(frozen=True, slots=True)
class TrackSamples:
    """Both tracks of one window, shaped for ``plan.analysis.analyse``.

    A track that could not be measured is None, and ``error`` says why.
    """

    canary: TrackSample | None
    stable: TrackSample | None
    error: str | None = None


async def sample_tracks(
    provider: MetricProvider, canary: WindowQuery, stable: WindowQuery | None
) -> TrackSamples:
    """Measure canary and stable concurrently; provider errors become data, not exceptions.

    Give both queries the same ``at`` so they cover the same window. ``stable`` None (no
    stable revision, e.g. during the bake window after promotion) measures only the canary.
    """

    async def one(query: WindowQuery | None) -> TrackSample | ProviderError | None:
        if query is None:
            return None
        try:
            return await provider.sample(query)
        except ProviderError as exc:
            return exc

    canary_out, stable_out = await asyncio.gather(one(canary), one(stable))
    errors = [
        f"{track}: {out}"
        for track, out in (("canary", canary_out), ("stable", stable_out))
        if isinstance(out, ProviderError)
    ]
    return TrackSamples(
        canary=canary_out if isinstance(canary_out, TrackSample) else None,
        stable=stable_out if isinstance(stable_out, TrackSample) else None,
        error="; ".join(errors) or None,
    )
