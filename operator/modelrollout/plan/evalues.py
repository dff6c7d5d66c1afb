"""Anytime-valid evidence against a canary: mixture likelihood ratios on counts, no I/O.

The canary and the stable each produce a counting process: their requests, and among them the
"bad" ones (5xx responses, or responses slower than a latency bound). The evidence that the
canary's bad rate is higher than the stable's is read at arbitrary moments (every scrape), and
it must stay valid however often and however long it is read. This module builds it as a
mixture sequential probability ratio test (Robbins' method of mixtures), the construction of
Lindon, Sanden and Shirikian, "Rapid Regression Detection in Software Deployments through
Sequential Testing" (KDD 2022), for two counting processes.

**Rate ratio against the stable.** Between two reads the canary served ``n_c`` requests with
``x_c`` bad ones, the stable ``n_s`` with ``x_s``; write ``k = x_c + x_s``. If bad requests
arrive as Poisson processes with rates ``n_c p_c`` and ``n_s p_s``, then given ``k`` the
canary's share is Binomial(k, theta) with ``theta(r) = n_c r / (n_c r + n_s)`` and ``r = p_c /
p_s`` the rate ratio (Lindon et al., section 3: conditioning on the total removes the unknown
stable rate). The null hypothesis "the canary is no worse", ``r <= 1``, fixes
``theta0 = theta(1) = n_c / (n_c + n_s)``. For an alternative ``r > 1`` the likelihood ratio of
one increment is::

    (theta(r) / theta0)^x_c ((1 - theta(r)) / (1 - theta0))^x_s
        = r^x_c ((n_c + n_s) / (n_c r + n_s))^k

and the product over increments, ``L_r``, is a nonnegative supermartingale under the null, with
expectation 1 at ``r = 1`` and less below it (the factor grows with ``x_c`` and a smaller
``theta`` shifts ``x_c`` down). The traffic split may change between increments: ``theta0`` is
taken per increment, from counts read before the bad ones are judged. Requests are really
Bernoulli trials, not Poisson; under ``p_c = p_s`` the canary's bad count given ``k`` is then
hypergeometric, which is dominated in the convex order by the binomial (Hoeffding 1963,
theorem 4), and the factor above is convex in ``x_c``: its expectation stays at most 1, so the
guarantee holds exactly for per-request errors too.

A mixture ``M = sum_j w_j L_{r_j}`` over a grid of ratios with weights summing to 1 is again a
nonnegative supermartingale with ``M_0 = 1``, so by Ville's inequality
``P(sup_t M_t >= 1 / alpha) <= alpha`` under the null: a healthy canary is ever flagged with
probability at most alpha, however often it is looked at. The grid replaces the paper's
conjugate Dirichlet mixture because ``theta0`` moves with the traffic split; a wrong grid only
costs power (``log(1/w_j)`` nats of evidence), never validity.

**Latency, by betting.** Slow requests are not independent: a process that stalls for 200 ms
makes every request it holds slow at once, and a likelihood ratio per request would count one
stall as many pieces of evidence. Latency is therefore tested one read at a time: with
``d = x_c / n_c - x_s / n_s`` the difference of the two tracks' shares of requests slower than
a bound in that increment (``d`` in [-1, 1]), a bettor stakes a fraction ``lambda`` in [0, 1)
of its wealth on ``d`` being positive, and its wealth is multiplied by ``1 + lambda d``. If the
canary is no slower than the stable (each request of either track is slow with the same
probability, stalls included, so ``E[d] <= 0`` whatever the split), the wealth is a nonnegative
supermartingale: testing by betting (Shafer, JRSS A 2021; Waudby-Smith and Ramdas, JRSS B
2024), with the same Ville guarantee. A stall moves one read's ``d`` by a bounded amount, in
the canary's disfavour as often as in the stable's. Mixing over a grid of ``lambda`` keeps the
power of the best fixed bet within ``log(grid size)``.

**One canary against a fixed limit** (no stable to compare with, e.g. the bake window): each
request is bad with probability ``p``; against ``p <= p0`` the mixture of
``(p1/p0)^X ((1-p1)/(1-p0))^(N-X)`` over a grid of ``p1 > p0`` is the same kind of
supermartingale and needs only the cumulative counts ``X`` of ``N``.

State is the log likelihood or wealth per grid point (a few floats): it lives in the object's
status and survives an operator restart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "ERROR_RATIOS",
    "LATENCY_BETS",
    "LIMIT_MULTIPLIERS",
    "bet_log_factors",
    "limit_log_evalue",
    "log_mixture",
    "ratio_log_factors",
]

# Rate ratios the error evidence mixes over: from a 25% relative increase to a hundredfold one
# (a 0.3% stable rate against a broken model's 30%).
ERROR_RATIOS: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
# Fractions of the wealth staked per read on the canary's share of slow requests being higher.
LATENCY_BETS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
# Alternatives p1 = p0 x m against a fixed limit p0.
LIMIT_MULTIPLIERS: tuple[float, ...] = (1.25, 1.5, 2.0, 4.0, 8.0, 16.0)


def _check_increment(n_c: int, x_c: int, n_s: int, x_s: int) -> None:
    if min(n_c, x_c, n_s, x_s) < 0:
        raise ValueError(
            f"increment counts must be >= 0, got canary {x_c}/{n_c}, stable {x_s}/{n_s}"
        )


def ratio_log_factors(
    n_c: int, x_c: int, n_s: int, x_s: int, ratios: Sequence[float]
) -> list[float]:
    """log likelihood ratio of one increment for each alternative rate ratio in ``ratios``.

    ``x`` of ``n`` are the bad requests of each track between two reads. An increment where
    either track served nothing, or nothing was bad, carries no evidence (every factor is 0).
    """
    _check_increment(n_c, x_c, n_s, x_s)
    k = x_c + x_s
    if k == 0 or n_c == 0 or n_s == 0:
        return [0.0] * len(ratios)
    total = n_c + n_s
    out = []
    for r in ratios:
        if not (math.isfinite(r) and r > 0):
            raise ValueError(f"rate ratios must be positive and finite, got {r}")
        out.append(x_c * math.log(r) + k * math.log(total / (n_c * r + n_s)))
    return out


def bet_log_factors(n_c: int, x_c: int, n_s: int, x_s: int, bets: Sequence[float]) -> list[float]:
    """log wealth factor of one read for each stake in ``bets``: ``log(1 + lambda d)`` with
    ``d`` the canary's share of slow requests minus the stable's. No bet when a track served
    nothing (its share is undefined)."""
    _check_increment(n_c, x_c, n_s, x_s)
    if n_c == 0 or n_s == 0:
        return [0.0] * len(bets)
    d = min(x_c, n_c) / n_c - min(x_s, n_s) / n_s
    out = []
    for stake in bets:
        if not 0.0 <= stake < 1.0:
            raise ValueError(f"stakes must be in [0, 1), got {stake}")
        out.append(math.log1p(stake * d))
    return out


def log_mixture(log_likelihoods: Sequence[float]) -> float:
    """log of the equally weighted mixture of the given likelihood ratios (log-sum-exp)."""
    if not log_likelihoods:
        raise ValueError("a mixture needs at least one component")
    top = max(log_likelihoods)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in log_likelihoods) / len(log_likelihoods))


def limit_log_evalue(
    errors: int, requests: int, limit: float, multipliers: Sequence[float] = LIMIT_MULTIPLIERS
) -> float:
    """log e-value against "the bad rate is at most ``limit``" from cumulative counts.

    A limit of 0 makes any bad request certain evidence (+inf); a limit of 1 can never be
    exceeded (0, no evidence).
    """
    if requests < 0 or errors < 0 or errors > requests:
        raise ValueError(f"need 0 <= errors <= requests, got {errors}/{requests}")
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"limit must be in [0, 1], got {limit}")
    if limit >= 1.0:
        return 0.0
    if limit <= 0.0:
        return math.inf if errors else 0.0
    alternatives = sorted({min(limit * m, (1.0 + limit) / 2) for m in multipliers})
    logs = [
        errors * math.log(p1 / limit) + (requests - errors) * math.log((1 - p1) / (1 - limit))
        for p1 in alternatives
        if p1 > limit
    ]
    return log_mixture(logs) if logs else 0.0
