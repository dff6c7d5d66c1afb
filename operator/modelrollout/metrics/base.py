"""The metric provider contract: what one analysis window of one revision looks like."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["MetricProvider", "ProviderError", "TrackSample", "WindowQuery"]


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

    def __post_init__(self) -> None:
        if not self.revision:
            raise ValueError("WindowQuery.revision must not be empty")
        if not math.isfinite(self.window_seconds) or self.window_seconds < 1:
            raise ValueError(
                f"WindowQuery.window_seconds must be at least 1, got {self.window_seconds}"
            )


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
