"""The canary's observed share of requests against the weight its route was set to."""

from __future__ import annotations

import pytest

from modelrollout.plan.share import check_share


@pytest.mark.parametrize(
    ("canary", "stable", "weight", "honoured", "text"),
    [
        (0, 0, 20, True, "no requests since the weight was set"),
        (80, 320, 20, True, "canary served 20.0% of requests (80/400) since the route was set"),
        (64, 336, 20, True, "16.0%"),  # a few points of skew: requests in flight, scrape timing
        (128, 272, 50, True, "32.0%"),  # a step from 20% counted with seconds at the old weight
        (30, 370, 20, False, "7.5%"),
        (0, 400, 20, False, "the route is not honoured"),  # the gateway ignores weights
        (200, 200, 20, False, "canary served 50.0% of requests (200/400)"),
        (0, 8, 20, True, "0.0%"),  # far off, but 8 requests prove nothing
        (400, 0, 100, True, "100.0%"),
        (0, 400, 0, True, "0.0%"),
        (60, 340, 0, False, "the route is not honoured"),
    ],
)
def test_share_against_weight(
    canary: int, stable: int, weight: int, honoured: bool, text: str
) -> None:
    got = check_share(canary, stable, weight)
    assert got.honoured is honoured, got.message
    assert text in got.message


def test_bad_input_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="weight must be a percentage"):
        check_share(1, 1, 101)
    with pytest.raises(ValueError, match="request counts must be >= 0"):
        check_share(-1, 1, 10)
