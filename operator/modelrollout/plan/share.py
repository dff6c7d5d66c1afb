"""Is the route honoured? The canary's observed share of requests against its weight; no I/O.

A route can hold the weight the operator wrote and still not split traffic that way: a
gateway that ignores weights, a second route in front, clients pinned by connection reuse.
The analysis already counts both tracks' requests, so the split can be checked where it
matters, at the model servers. The counts since the weight was set are tested against that
weight with an e-value (the average of two one-sided mixture likelihood ratios from
``plan.evalues``, one for a share above the weight and one below, which is again an
e-value), and the share must also be off by more than half its distance to the nearer of 0%
and 100% (20% is not honoured below 10% or above 60%): some skew is normal (the requests
counted include a few seconds at the previous weight, while the gateway and the scrapes catch
up), a gateway that ignores the weights is a gross miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .evalues import limit_log_evalue

__all__ = ["ShareCheck", "check_share"]

# Evidence needed (the reciprocal of the significance): the check only holds a step, so it
# may be strict and still cheap.
THRESHOLD = 1000.0


@dataclass(frozen=True, slots=True)
class ShareCheck:
    """The outcome; ``honoured`` False holds the step, and ``message`` says why."""

    honoured: bool
    observed: float | None  # canary requests / all requests since the weight was set
    message: str


def check_share(canary_requests: int, stable_requests: int, weight: int) -> ShareCheck:
    """Judge the split of the requests served since the route was set to ``weight`` percent."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be a percentage, got {weight}")
    if canary_requests < 0 or stable_requests < 0:
        raise ValueError(
            f"request counts must be >= 0, got canary {canary_requests}, stable {stable_requests}"
        )
    total = canary_requests + stable_requests
    if total == 0:
        return ShareCheck(True, None, "no requests since the weight was set")
    share = canary_requests / total
    expected = weight / 100
    above = limit_log_evalue(canary_requests, total, expected)
    below = limit_log_evalue(stable_requests, total, 1.0 - expected)
    log_e = _log_mean(above, below)
    text = (
        f"canary served {share * 100:.1f}% of requests ({canary_requests}/{total}) since the "
        f"route was set to {weight}%"
    )
    tolerance = min(expected, 1.0 - expected) / 2
    if abs(share - expected) > tolerance and log_e >= math.log(THRESHOLD):
        return ShareCheck(False, share, f"{text}: the route is not honoured")
    return ShareCheck(True, share, text)


def _log_mean(a: float, b: float) -> float:
    """log((e^a + e^b) / 2) without overflow."""
    top = max(a, b)
    if top == math.inf:
        return math.inf
    return top + math.log((math.exp(a - top) + math.exp(b - top)) / 2)
