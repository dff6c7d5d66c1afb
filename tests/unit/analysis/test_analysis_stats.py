"""The exact tests against brute-force sums, and their behaviour at the edges."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from fractions import Fraction

import pytest

from modelrollout.plan.stats import binomial_sf, fisher_greater, two_proportion_z


def brute_binomial_tails(n: int, p: Fraction) -> list[float]:
    """P(X >= k) for k = 0..n+1, summed exactly."""
    pmf = [math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]
    tails = [Fraction(0)] * (n + 2)
    for i in range(n, -1, -1):
        tails[i] = tails[i + 1] + pmf[i]
    return [float(t) for t in tails]


def brute_fisher_greater(x1: int, n1: int, x2: int, n2: int) -> float:
    successes, total = x1 + x2, n1 + n2
    if successes in (0, total):
        return 1.0
    denominator = math.comb(total, n1)
    return float(
        sum(
            Fraction(math.comb(successes, k) * math.comb(total - successes, n1 - k), denominator)
            for k in range(x1, min(n1, successes) + 1)
        )
    )


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)


@pytest.mark.parametrize("p", [Fraction(1, 100), Fraction(1, 20), Fraction(1, 2), Fraction(9, 10)])
@pytest.mark.parametrize("n", [0, 1, 7, 50, 200])
def test_binomial_sf_matches_brute_force(n: int, p: Fraction) -> None:
    tails = brute_binomial_tails(n, p)
    for k in range(-1, n + 2):
        assert close(binomial_sf(k, n, float(p)), tails[max(k, 0)]), (k, n, p)


@pytest.mark.parametrize(
    ("n1", "n2"), [(1, 1), (5, 40), (50, 50), (60, 7), (120, 200)], ids=lambda v: str(v)
)
def test_fisher_greater_matches_brute_force(n1: int, n2: int) -> None:
    for x1 in range(0, n1 + 1, max(1, n1 // 12)):
        for x2 in range(0, n2 + 1, max(1, n2 // 12)):
            got = fisher_greater(x1, n1, x2, n2)
            assert close(got, brute_fisher_greater(x1, n1, x2, n2)), (x1, n1, x2, n2)


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (0, 10, 0.3, 1.0),
        (11, 10, 0.3, 0.0),
        (1, 10, 0.0, 0.0),
        (10, 10, 1.0, 1.0),
        (0, 0, 0.5, 1.0),
    ],
)
def test_binomial_sf_edges(k: int, n: int, p: float, expected: float) -> None:
    assert binomial_sf(k, n, p) == expected


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(0, 10, 0, 10), (10, 10, 10, 10), (3, 10, 0, 0), (0, 0, 3, 10), (0, 10, 5, 10)],
)
def test_fisher_greater_cannot_favour_group_1(x1: int, n1: int, x2: int, n2: int) -> None:
    assert fisher_greater(x1, n1, x2, n2) == 1.0


def test_far_left_start_does_not_underflow_to_zero() -> None:
    # The first term of the upper tail is ~1e-4000 here; summing from it would give 0.
    assert fisher_greater(1, 1_000_000, 10_000, 1_000_000) == pytest.approx(1.0)
    assert binomial_sf(1, 1_000_000, 0.01) == pytest.approx(1.0)
    assert binomial_sf(10_000, 1_000_000, 0.01) == pytest.approx(0.5013, abs=1e-3)


def test_large_counts_are_fast() -> None:
    started = time.perf_counter()
    for _ in range(50):
        assert fisher_greater(60_000, 1_000_000, 100_000, 10_000_000) < 1e-100
        assert binomial_sf(60_000, 1_000_000, 0.05) < 1e-100
    assert time.perf_counter() - started < 1.0


def test_two_proportion_z() -> None:
    # 46/199 vs 3/812 by hand: pooled 49/1011.
    pooled = 49 / 1011
    se = math.sqrt(pooled * (1 - pooled) * (1 / 199 + 1 / 812))
    assert two_proportion_z(46, 199, 3, 812) == pytest.approx((46 / 199 - 3 / 812) / se)
    assert two_proportion_z(0, 100, 0, 100) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: binomial_sf(1, -1, 0.5),
        lambda: binomial_sf(1, 10, 1.5),
        lambda: fisher_greater(11, 10, 0, 10),
        lambda: fisher_greater(-1, 10, 0, 10),
        lambda: two_proportion_z(1, 0, 0, 10),
    ],
)
def test_invalid_counts_raise(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="need"):
        call()
