"""Small exact tests on counts, in plain Python (no scipy).

Error rates in a canary window are often a handful of errors out of a few hundred requests,
where normal approximations are poor; the exact tests here stay valid at any count and stay
fast at large counts because tail sums stop once the terms no longer matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = [
    "binomial_sf",
    "chi2_sf",
    "fisher_greater",
    "two_proportion_z",
]

Ratio = Callable[[int, int], float]

# A tail term this much smaller than the running sum cannot change a double any more.
_NEGLIGIBLE = 1e-17


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _check_count(name: str, successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"{name}: need 0 <= successes <= trials, got {successes}/{trials}")


def _decreasing_tail(first: int, last: int, log_pmf: Callable[[int], float], ratio: Ratio) -> float:
    """Sum pmf(first), pmf(first ± 1), ... towards ``last`` while the terms shrink.

    ``first`` must lie on the far side of the mode so each term is smaller than the one
    before: starting from the largest term, nothing underflows before it matters, and the
    sum can stop as soon as the terms stop counting.
    """
    step = 1 if last >= first else -1
    term = math.exp(log_pmf(first))
    total = term
    i = first
    while i != last and term > total * _NEGLIGIBLE:
        term *= ratio(i, step)
        i += step
        total += term
    return total


def _upper_tail(
    k: int, low: int, high: int, mode: int, log_pmf: Callable[[int], float], ratio: Ratio
) -> float:
    """P(X >= k) for a unimodal pmf on [low, high] with the given mode."""
    if k <= low:
        return 1.0
    if k > high:
        return 0.0
    if k > mode:
        return min(1.0, _decreasing_tail(k, high, log_pmf, ratio))
    # Left of the mode the upper tail is large; its complement is the small, safe sum.
    return max(0.0, 1.0 - _decreasing_tail(k - 1, low, log_pmf, ratio))


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided exact binomial test's p-value."""
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_sf: need n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    if k <= 0:
        return 1.0
    if k > n or p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    odds = p / (1.0 - p)

    def log_pmf(i: int) -> float:
        return _log_choose(n, i) + i * log_p + (n - i) * log_q

    def ratio(i: int, step: int) -> float:
        # pmf(i + step) / pmf(i)
        if step > 0:
            return (n - i) / (i + 1) * odds
        return i / (n - i + 1) / odds

    return _upper_tail(k, 0, n, math.floor((n + 1) * p), log_pmf, ratio)


def fisher_greater(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided Fisher exact test p-value for "rate 1 is greater than rate 2".

    x1 of n1 and x2 of n2 are the successes (here: errors) in each group. It is the probability,
    with both margins fixed, of group 1 holding at least x1 of the x1 + x2 successes.
    """
    _check_count("group 1", x1, n1)
    _check_count("group 2", x2, n2)
    total = n1 + n2
    successes = x1 + x2
    failures = total - successes
    if n1 == 0 or n2 == 0 or successes == 0 or failures == 0:
        # Either group is empty or every outcome is the same: the data cannot favour group 1.
        return 1.0
    log_denominator = _log_choose(total, n1)

    def log_pmf(k: int) -> float:
        return _log_choose(successes, k) + _log_choose(failures, n1 - k) - log_denominator

    def ratio(k: int, step: int) -> float:
        # Consecutive hypergeometric probabilities, pmf(k + step) / pmf(k).
        if step > 0:
            return (successes - k) * (n1 - k) / ((k + 1) * (failures - n1 + k + 1))
        return k * (failures - n1 + k) / ((successes - k + 1) * (n1 - k + 1))

    low = max(0, n1 - failures)
    high = min(n1, successes)
    mode = math.floor((n1 + 1) * (successes + 1) / (total + 2))
    return _upper_tail(x1, low, high, mode, log_pmf, ratio)


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float:
    """Pooled two-proportion z statistic for rate 1 minus rate 2 (0 when undefined).

    Shown in reasons because people read it more easily than a tiny p-value; the decision
    itself uses the exact tests above.
    """
    _check_count("group 1", x1, n1)
    _check_count("group 2", x2, n2)
    if n1 == 0 or n2 == 0:
        return 0.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 0.0
    return (x1 / n1 - x2 / n2) / se


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with ``df`` degrees of freedom: the regularized
    upper incomplete gamma Q(df/2, x/2), by its series below a + 1 and its continued fraction
    above (Numerical Recipes, 6.2)."""
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    if not x > 0:
        return 1.0
    a, z = df / 2, x / 2
    log_front = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1:
        term = total = 1 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= z / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return min(1.0, h * math.exp(log_front))
