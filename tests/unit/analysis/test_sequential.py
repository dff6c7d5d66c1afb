"""Running evidence between reads, and the sequential verdicts on it, as tables."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from modelrollout.api.status import EvidenceStatus
from modelrollout.plan.analysis import Verdict
from modelrollout.plan.evidence import Evidence, Reading
from modelrollout.plan.sequential import SequentialLimits, judge, quantile

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TESTED = tuple(b for b in BOUNDS if b > 0.01)


def hist(fast_under: dict[float, int], total: int) -> tuple[tuple[float, int], ...]:
    """A cumulative histogram where ``fast_under[b]`` requests took at most b seconds;
    bounds not named take the count of the nearest named bound below them (or 0)."""
    out, last = [], 0
    for b in BOUNDS:
        last = fast_under.get(b, last)
        out.append((b, last))
    return (*out, (math.inf, total))


def reading(requests: int, errors: int, median_bound: float = 0.025) -> Reading:
    """A track where every request takes about the median bound (all at or under it)."""
    return Reading(requests, errors, hist({median_bound: requests}, requests))


def test_first_read_sets_the_baseline_and_the_bounds_above_the_floor() -> None:
    ev = Evidence().update(reading(500, 3), reading(90_000, 400))
    assert ev.reads == 1
    assert (ev.canary.requests, ev.stable.requests) == (0, 0)
    assert ev.bounds == TESTED


def test_increments_accumulate_and_a_missed_read_loses_nothing() -> None:
    ev = Evidence().update(reading(0, 0), reading(1000, 10))
    ev = ev.update(reading(40, 1), reading(1160, 11))
    ev = ev.update(reading(120, 2), reading(1480, 13))  # two periods' worth in one
    assert (ev.canary.requests, ev.canary.errors) == (120, 2)
    assert (ev.stable.requests, ev.stable.errors) == (480, 3)
    assert ev.canary.observed == 120
    assert ev.resets == 0


def test_a_counter_reset_drops_that_increment_and_counts_on_from_the_new_values() -> None:
    ev = Evidence().update(reading(0, 0), reading(1000, 0))
    ev = ev.update(reading(100, 0), reading(1400, 0))
    ev = ev.update(reading(30, 30), reading(1800, 0))  # canary pod restarted
    assert ev.resets == 1
    assert ev.canary.requests == 100
    ev = ev.update(reading(50, 31), reading(1900, 0))
    assert (ev.canary.requests, ev.canary.errors) == (120, 1)


def _sticky(flips: int, seconds_each: int = 15) -> Evidence:
    """Reads a second apart behind a Service with one kept-alive client: the traffic goes to
    one track for `seconds_each` reads, then to the other. The canary fails 30% of its
    requests, the stable none."""
    ev = Evidence().update(reading(0, 0), reading(0, 0))
    c_req = c_err = s_req = 0
    for flip in range(flips):
        for _ in range(seconds_each):
            if flip % 2 == 0:
                c_req, c_err = c_req + 10, c_err + 3
            else:
                s_req += 10
            ev = ev.update(reading(c_req, c_err), reading(s_req, 0))
    return ev


def test_reads_where_one_track_served_alone_are_pooled_until_both_have() -> None:
    # A read of the canary alone says nothing about which track the errors come from: it is
    # pooled, not judged, until the stable has served requests as well.
    ev = _sticky(flips=1)
    assert ev.pending == (150, 45, 0, 0)
    assert ev.log_errors == (0.0,) * len(ev.log_errors)
    ev = _sticky(flips=2)
    assert ev.pending == (0, 0, 140, 0)  # judged at the stable's first read, then pooled again
    assert max(ev.log_errors) > 0
    # Judged one read at a time, only the two reads where the traffic changed side would count:
    # the same 30% against 0% decides within a few flips instead of never.
    result = judge(_sticky(flips=4), DEFAULTS, step_requests=300)
    assert result.verdict is Verdict.FAIL, result.reason


def test_pooled_counts_survive_a_round_trip_and_bad_ones_are_refused() -> None:
    ev = _sticky(flips=1)
    back = Evidence.from_status(
        EvidenceStatus.model_validate(ev.as_status()).model_dump(by_alias=True)
    )
    assert back.pending == ev.pending
    old = ev.as_status()
    del old["pending"]  # written before pooling existed: nothing pending
    assert Evidence.from_status(old).pending == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="pending counts"):
        Evidence.from_status(ev.as_status() | {"pending": [10, 11, 0, 0]})


def test_synthetic_requests_are_kept_apart_per_track_and_round_trip() -> None:
    def with_synthetic(requests: int, synthetic: int) -> Reading:
        return Reading(requests, 0, hist({0.025: requests}, requests), synthetic=synthetic)

    ev = Evidence().update(with_synthetic(10, 4), reading(1000, 0))
    ev = ev.update(with_synthetic(70, 24), reading(1100, 0))
    ev = ev.update(with_synthetic(130, 44), reading(1200, 0))
    assert (ev.canary.requests, ev.canary.synthetic) == (120, 40)
    assert ev.stable.synthetic == 0
    wire = EvidenceStatus.model_validate(ev.as_status()).model_dump(by_alias=True)
    back = Evidence.from_status(wire)
    assert back.canary.synthetic == 40
    assert back.update(with_synthetic(140, 50), reading(1200, 0)).canary.synthetic == 46
    old = ev.as_status()
    del old["canary"]["synthetic"], old["lastCanary"]["synthetic"]  # before they were kept
    assert Evidence.from_status(old).canary.synthetic == 0
    with pytest.raises(ValueError, match="synthetic 130 is not a part of 120"):
        Evidence.from_status(ev.as_status() | {"canary": {**old["canary"], "synthetic": 130}})


def test_evidence_survives_a_round_trip_through_status() -> None:
    ev = Evidence().update(reading(0, 0), reading(1000, 10))
    ev = ev.update(reading(80, 20), reading(1320, 11))
    back = Evidence.from_status(ev.as_status())
    assert back.canary == ev.canary
    assert back.stable == ev.stable
    assert back.bounds == ev.bounds
    assert back.last_canary is not None
    assert ev.last_canary is not None
    assert back.last_canary.at(back.bounds) == ev.last_canary.at(ev.bounds)
    # The status model holds it as is (the CRD schema comes from that model).
    wire = EvidenceStatus.model_validate(ev.as_status()).model_dump(by_alias=True)
    assert Evidence.from_status(wire).log_errors == back.log_errors
    assert all(
        math.isclose(a, b, abs_tol=1e-6)
        for a, b in zip(back.log_errors, ev.log_errors, strict=True)
    )
    # ... and keeps counting from where it stood.
    assert back.update(reading(90, 20), reading(1400, 11)).canary.requests == 90


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d.pop("logErrors"), "logErrors"),
        (lambda d: d.update(logErrors=[0.0, 1.0]), "logErrors has 2 values"),
        (lambda d: d["canary"].update(fast=[1]), "canary.fast has 1 values"),
        (lambda d: d.update(reads="many"), "many"),
    ],
)
def test_malformed_status_evidence_is_refused_by_name(mangle: object, message: str) -> None:
    ev = Evidence().update(reading(0, 0), reading(1000, 10))
    data = ev.as_status()
    assert callable(mangle)
    mangle(data)
    with pytest.raises(ValueError, match=message):
        Evidence.from_status(data)


DEFAULTS = SequentialLimits()


@dataclass(frozen=True)
class Case:
    name: str
    reads: list[tuple[Reading, Reading | None]]
    verdict: Verdict
    reason: str
    step_requests: int = 1000
    limits: SequentialLimits = DEFAULTS


def at(c: tuple[int, int], s: tuple[int, int] | None) -> tuple[Reading, Reading | None]:
    return reading(*c), (reading(*s) if s is not None else None)


START = at((0, 0), (10_000, 0))
CASES = [
    Case(
        "the demo's first window fails at once",
        [START, at((41, 8), (10_239, 0))],
        Verdict.FAIL,
        "canary error rate 19.5% (8/41) vs stable 0% (0/239) since the canary started: "
        "exceeds 5% absolute and stable + 2 points, e-value",
    ),
    Case(
        "healthy with enough exposure passes",
        [START, at((300, 1), (11_200, 4))],
        Verdict.PASS,
        "within limits",
    ),
    Case(
        "healthy without the step's exposure holds",
        [START, at((30, 0), (10_120, 0))],
        Verdict.INCONCLUSIVE,
        "canary served 30 requests in this step, fewer than the 50 needed to pass it",
        step_requests=30,
    ),
    Case(
        "one error in a few requests waits for more",
        [START, at((12, 1), (10_048, 0))],
        Verdict.INCONCLUSIVE,
        "not significant yet",
    ),
    Case(
        "the stable failing as badly is not blamed on the canary",
        [START, at((200, 40), (10_800, 160))],
        Verdict.INCONCLUSIVE,
        "the stable is failing too, not blaming the canary",
    ),
    Case(
        "a small regression within the limits is not a rollback, however certain",
        [START, *[at((2000 * i, 30 * i), (10_000 + 8000 * i, 80 * i)) for i in range(1, 20)]],
        Verdict.PASS,
        "within limits",
    ),
    Case(
        "the bake window: no stable, judged against the absolute limit",
        [at((0, 0), None), at((200, 40), None)],
        Verdict.FAIL,
        "canary error rate 20.0% (40/200) since it started (no stable baseline) is above "
        "the 5% limit",
    ),
    Case(
        "the bake window below the limit passes",
        [at((0, 0), None), at((400, 4), None)],
        Verdict.PASS,
        "within the 5% limit",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_verdicts(case: Case) -> None:
    ev = Evidence()
    for canary, stable in case.reads:
        ev = ev.update(canary, stable)
    result = judge(ev, case.limits, case.step_requests)
    assert result.verdict is case.verdict, result.reason
    assert case.reason in result.reason


def slow_reads(slow_share: float, reads: int) -> Evidence:
    """Canary: ``slow_share`` of its requests take up to 250 ms, the rest 25 ms; stable: 1%
    take up to 50 ms. 20 canary and 80 stable requests a read."""
    ev = Evidence().update(Reading(0, 0, hist({}, 0)), Reading(0, 0, hist({}, 0)))
    for i in range(1, reads + 1):
        c_total, s_total = 20 * i, 80 * i
        c_fast = round(c_total * (1 - slow_share))
        canary = Reading(c_total, 0, hist({0.025: c_fast, 0.25: c_total}, c_total))
        stable = Reading(s_total, 0, hist({0.025: s_total - i, 0.05: s_total}, s_total))
        ev = ev.update(canary, stable)
    return ev


def test_a_slow_canary_fails_on_latency_with_the_numbers_in_one_line() -> None:
    result = judge(slow_reads(0.3, 40), SequentialLimits(), 200)
    assert result.verdict is Verdict.FAIL
    assert "ratio" in result.reason
    assert "240/800 canary requests slower than 50 ms vs 0/3200 stable" in result.reason
    assert result.latency_evalue is not None
    assert result.latency_threshold is not None
    assert result.latency_evalue >= result.latency_threshold


def test_latency_evidence_builds_one_read_at_a_time() -> None:
    """Ten reads of a 30% slow share are not yet enough: each read is one bounded bet."""
    result = judge(slow_reads(0.3, 10), SequentialLimits(), 200)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "not significant yet" in result.reason


def test_latency_is_not_judged_before_both_tracks_have_min_requests() -> None:
    result = judge(slow_reads(0.3, 2), SequentialLimits(), 200)
    assert result.verdict is not Verdict.FAIL
    assert result.latency_evalue is not None


def test_latency_within_ratio_passes() -> None:
    result = judge(slow_reads(0.0, 10), SequentialLimits(), 200)
    assert result.verdict is Verdict.PASS, result.reason


def test_quantile_interpolates_like_prometheus() -> None:
    bounds, fast = (0.01, 0.05, 0.1), (50, 90, 100)
    assert quantile(bounds, fast, 100, 0.5) == pytest.approx(0.01)
    assert quantile(bounds, fast, 100, 0.7) == pytest.approx(0.03)
    assert quantile(bounds, fast, 200, 0.99) == pytest.approx(0.1)  # past the last bound
    assert quantile(bounds, fast, 0, 0.99) is None


def test_status_shows_the_evidence_and_its_threshold() -> None:
    ev = Evidence()
    for canary, stable in CASES[0].reads:
        ev = ev.update(canary, stable)
    shown = judge(ev, SequentialLimits(significance=0.01), 100).as_status()
    assert shown["verdict"] == "Fail"
    assert shown["errorThreshold"] == 200
    assert shown["errorEvalue"] > 200
    assert shown["canaryErrors"] == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"significance": 0.0}, "significance must be in"),
        ({"max_latency_ratio": 0.5}, "max_latency_ratio must be >= 1"),
        ({"min_requests": 0}, "min_requests must be at least 1"),
        ({"max_error_rate": 2.0}, "max_error_rate must be in"),
    ],
)
def test_bad_limits_are_refused_by_name(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SequentialLimits(**kwargs)  # type: ignore[arg-type]
