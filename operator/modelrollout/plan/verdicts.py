"""The vocabulary of canary analysis: verdicts, the limits a window is judged against, and the
findings each check returns. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AnalysisThresholds", "Finding", "Verdict", "pvalue_text", "seconds_text"]


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True, slots=True)
class AnalysisThresholds:
    """Limits one analysis window is judged against; rates are fractions (0.05 = 5%)."""

    # Canary 5xx rate above this fails (when significant).
    max_error_rate: float = 0.05
    # Canary 5xx rate more than this above the stable's fails (when significant); 0.02 means
    # 2 percentage points, so 0.5% -> 3% fails. None turns the relative limit off.
    max_error_rate_increase: float | None = 0.02
    # Canary p99 / stable p99 above this fails; None turns the ratio off.
    max_p99_ratio: float | None = 1.5
    # A canary p99 at or below this never fails on latency: at a few milliseconds, ratios are
    # histogram-bucket noise (2 ms vs 1 ms is not a regression anyone should roll back for).
    p99_floor_seconds: float = 0.01
    # Canary p99 above this fails whatever the stable does; None turns it off.
    max_p99_seconds: float | None = None
    # Fewer canary requests than this and the p99 ratio is not judged: the p99 of a hundred
    # requests is its single slowest one, and one scheduling hiccup would fail the window.
    min_latency_requests: int = 200
    # Fewer canary requests than this in the window: Inconclusive. Also the least a stable
    # needs to serve to be compared against.
    min_requests: int = 50
    # One-sided significance level of the error-rate tests.
    significance: float = 0.001

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(f"max_error_rate must be in [0, 1], got {self.max_error_rate}")
        if self.max_error_rate_increase is not None and not (
            0.0 <= self.max_error_rate_increase <= 1.0
        ):
            raise ValueError(
                f"max_error_rate_increase must be in [0, 1], got {self.max_error_rate_increase}"
            )
        if self.max_p99_ratio is not None and not (
            math.isfinite(self.max_p99_ratio) and self.max_p99_ratio > 0
        ):
            raise ValueError(f"max_p99_ratio must be positive, got {self.max_p99_ratio}")
        if not (math.isfinite(self.p99_floor_seconds) and self.p99_floor_seconds >= 0):
            raise ValueError(f"p99_floor_seconds must be >= 0, got {self.p99_floor_seconds}")
        if self.max_p99_seconds is not None and not (
            math.isfinite(self.max_p99_seconds) and self.max_p99_seconds > 0
        ):
            raise ValueError(f"max_p99_seconds must be positive, got {self.max_p99_seconds}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be at least 1, got {self.min_requests}")
        if not 0.0 < self.significance < 1.0:
            raise ValueError(f"significance must be in (0, 1), got {self.significance}")


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    text: str


def percent_text(rate: float) -> str:
    if rate == 0:
        return "0%"
    return f"{rate * 100:.1f}%" if rate >= 0.01 else f"{rate * 100:.2f}%"


def seconds_text(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1000:.3g} ms"


def pvalue_text(p: float) -> str:
    return f"{p:.2g}"
