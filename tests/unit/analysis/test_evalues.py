"""The mixture likelihood ratios: their formulas, their edges, and the supermartingale property
that makes them anytime-valid, checked exactly on small cases."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from modelrollout.plan.evalues import (
    ERROR_RATIOS,
    LATENCY_BETS,
    bet_log_factors,
    limit_log_evalue,
    log_mixture,
    ratio_log_factors,
)


def binomial_lr(n_c: int, x_c: int, n_s: int, x_s: int, r: float) -> float:
    """The conditional binomial likelihood ratio written out the long way."""
    theta0 = n_c / (n_c + n_s)
    theta = n_c * r / (n_c * r + n_s)
    return (theta / theta0) ** x_c * ((1 - theta) / (1 - theta0)) ** x_s


@pytest.mark.parametrize(
    ("n_c", "x_c", "n_s", "x_s"),
    [(10, 3, 40, 1), (80, 24, 320, 0), (5, 0, 5, 5), (1000, 12, 1000, 10), (1, 1, 99, 0)],
)
def test_log_factors_are_the_conditional_binomial_likelihood_ratio(
    n_c: int, x_c: int, n_s: int, x_s: int
) -> None:
    got = ratio_log_factors(n_c, x_c, n_s, x_s, ERROR_RATIOS)
    for r, value in zip(ERROR_RATIOS, got, strict=True):
        assert math.isclose(value, math.log(binomial_lr(n_c, x_c, n_s, x_s, r)), rel_tol=1e-9)


@pytest.mark.parametrize(
    ("n_c", "x_c", "n_s", "x_s"),
    [(0, 0, 50, 3), (50, 0, 0, 0), (50, 0, 50, 0), (20, 4, 0, 0)],
    ids=["no canary traffic", "no stable traffic, no errors", "no errors", "no stable traffic"],
)
def test_increments_that_cannot_compare_carry_no_evidence(
    n_c: int, x_c: int, n_s: int, x_s: int
) -> None:
    assert ratio_log_factors(n_c, x_c, n_s, x_s, ERROR_RATIOS) == [0.0] * len(ERROR_RATIOS)


def test_bad_counts_and_ratios_are_refused() -> None:
    with pytest.raises(ValueError, match="increment counts must be >= 0"):
        ratio_log_factors(10, -1, 10, 0, ERROR_RATIOS)
    with pytest.raises(ValueError, match="rate ratios must be positive"):
        ratio_log_factors(10, 1, 10, 0, [0.0])
    with pytest.raises(ValueError, match="at least one component"):
        log_mixture([])
    with pytest.raises(ValueError, match="need 0 <= errors <= requests"):
        limit_log_evalue(5, 4, 0.05)
    with pytest.raises(ValueError, match=r"limit must be in \[0, 1\]"):
        limit_log_evalue(1, 4, 1.5)


def hypergeometric(x: int, k: int, n_c: int, n_s: int) -> Fraction:
    """P(x of the k bad requests fell on the canary | both tracks equally bad)."""
    return Fraction(math.comb(n_c, x) * math.comb(n_s, k - x), math.comb(n_c + n_s, k))


@pytest.mark.parametrize(("n_c", "n_s"), [(2, 8), (5, 5), (10, 3), (12, 30)])
@pytest.mark.parametrize("ratios", [ERROR_RATIOS, (1.01, 7.0)], ids=["default", "other"])
def test_each_increment_has_expectation_at_most_one_when_the_canary_is_as_good(
    n_c: int, n_s: int, ratios: tuple[float, ...]
) -> None:
    """The supermartingale property, exactly: whatever the number of bad requests k, the
    mixture's factor averaged over the true (hypergeometric) law of the canary's share is <= 1.
    That is what Ville's inequality needs for P(ever >= 1/alpha) <= alpha."""
    for k in range(1, n_c + n_s):
        expectation = 0.0
        for x in range(max(0, k - n_s), min(k, n_c) + 1):
            logs = ratio_log_factors(n_c, x, n_s, k - x, ratios)
            expectation += float(hypergeometric(x, k, n_c, n_s)) * math.exp(log_mixture(logs))
        assert expectation <= 1 + 1e-12, (k, expectation)


def binomial(x: int, n: int, p: float) -> float:
    return math.comb(n, x) * p**x * (1 - p) ** (n - x)


@pytest.mark.parametrize(("n_c", "n_s"), [(1, 9), (4, 16), (20, 20)])
@pytest.mark.parametrize(("p_c", "p_s"), [(0.3, 0.3), (0.05, 0.05), (0.1, 0.3)])
def test_each_latency_bet_has_expectation_at_most_one_when_the_canary_is_no_slower(
    n_c: int, n_s: int, p_c: float, p_s: float
) -> None:
    """Exactly, over both tracks' binomial slow counts: 1 when equally slow, less when the
    canary is faster. Stalls change the law of each share but not its mean, which is all
    the bet uses."""
    expectation = 0.0
    for x_c in range(n_c + 1):
        for x_s in range(n_s + 1):
            mix = math.exp(log_mixture(bet_log_factors(n_c, x_c, n_s, x_s, LATENCY_BETS)))
            expectation += binomial(x_c, n_c, p_c) * binomial(x_s, n_s, p_s) * mix
    if p_c == p_s:
        assert expectation == pytest.approx(1.0, abs=1e-12)
    else:
        assert expectation < 1.0


def test_a_stall_moves_latency_evidence_by_one_bounded_bet() -> None:
    """All 40 canary requests of a read slow (a stall) against none of the stable's: the
    wealth grows by at most 1 + max stake, where a per-request likelihood would explode."""
    factors = bet_log_factors(40, 40, 160, 0, LATENCY_BETS)
    assert max(factors) == pytest.approx(math.log(1 + max(LATENCY_BETS)))
    assert max(ratio_log_factors(40, 40, 160, 0, ERROR_RATIOS)) > 40
    with pytest.raises(ValueError, match=r"stakes must be in \[0, 1\)"):
        bet_log_factors(1, 1, 1, 0, [1.0])


def test_healthy_canaries_rarely_cross_the_threshold_however_often_they_are_read() -> None:
    """Ville's inequality in a quick simulation: per-request Bernoulli errors at the same rate,
    a traffic split that changes mid-way, 200 reads; crossing 1/alpha at any read counts."""
    rng = random.Random(13)
    alpha, runs, crossed = 0.1, 200, 0
    for _ in range(runs):
        p = rng.uniform(0.0, 0.05)
        log_l = [0.0] * len(ERROR_RATIOS)
        for read in range(200):
            share = 0.1 if read < 100 else 0.5
            n_c = sum(rng.random() < share for _ in range(10))
            n_s = 10 - n_c
            x_c = sum(rng.random() < p for _ in range(n_c))
            x_s = sum(rng.random() < p for _ in range(n_s))
            step = ratio_log_factors(n_c, x_c, n_s, x_s, ERROR_RATIOS)
            log_l = [a + b for a, b in zip(log_l, step, strict=True)]
            if log_mixture(log_l) >= math.log(1 / alpha):
                crossed += 1
                break
    assert crossed <= alpha * runs, crossed


def test_the_demo_window_is_overwhelming_evidence() -> None:
    """8 errors in 41 canary requests against 0 in 239 (the demo's first failing window):
    read as one increment the e-value is far past 1/0.005 = 200."""
    log_e = log_mixture(ratio_log_factors(41, 8, 239, 0, ERROR_RATIOS))
    assert math.exp(log_e) > 1e4


@pytest.mark.parametrize(
    ("errors", "requests", "limit", "expected"),
    [
        (0, 100, 0.05, "below 1"),
        (5, 100, 0.05, "below 1"),
        (30, 100, 0.05, "above 1e6"),
        (1, 1, 0.0, "inf"),
        (0, 100, 0.0, "one"),
        (100, 100, 1.0, "one"),
    ],
)
def test_evidence_against_a_fixed_limit(
    errors: int, requests: int, limit: float, expected: str
) -> None:
    log_e = limit_log_evalue(errors, requests, limit)
    match expected:
        case "below 1":
            assert log_e < 0
        case "above 1e6":
            assert log_e > math.log(1e6)
        case "inf":
            assert log_e == math.inf
        case "one":
            assert log_e == 0.0
