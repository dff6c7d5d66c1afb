"""The campaign's scenarios and the seeded plan of its runs (pure: no I/O).

Every run draws its rollout kind (healthy or bad canary), the moment its fault starts and how
long the fault lasts from its own seed, itself drawn from the campaign seed, so
`--seed S --only NAME:INDEX` reproduces one run exactly as the campaign planned it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Kind = Literal["healthy", "bad"]


@dataclass(frozen=True)
class Scenario:
    name: str
    number: int  # the numbering of the faults
    what: str
    runs: int  # in the full campaign; the short version runs each scenario once
    onset_s: tuple[float, float]  # the fault starts this long after the canary's first traffic
    down_s: tuple[float, float]  # and lasts this long
    # The fault's onset counts from the canary's first traffic, so that it lands while the
    # rollout is under way (a bad canary is rolled back within seconds).
    # The short version (`make test`) caps how long a fault lasts, to fit its time budget.
    short_max_down_s: float = 10.0


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "operator-kill",
        1,
        "operator SIGKILLed, restarted 0-10 s later",
        20,
        (0.0, 6.0),
        (0.0, 10.0),
    ),
    Scenario(
        "apiserver-restart",
        2,
        "kube-apiserver stopped, started again 5-20 s later",
        2,
        (0.0, 4.0),
        (5.0, 20.0),
    ),
    Scenario("etcd-stop", 3, "etcd stopped for 10 s", 2, (0.0, 4.0), (10.0, 10.0)),
    Scenario(
        "prometheus-down",
        4,
        "Prometheus refusing connections for 30 s",
        2,
        (0.0, 6.0),
        (30.0, 30.0),
    ),
    Scenario(
        "prometheus-errors",
        4,
        "Prometheus answering HTTP 503 for 30 s",
        2,
        (0.0, 6.0),
        (30.0, 30.0),
    ),
    Scenario(
        "prometheus-empty",
        4,
        "Prometheus answering empty results for 30 s",
        2,
        (0.0, 6.0),
        (30.0, 30.0),
    ),
    Scenario(
        "api-partition",
        5,
        "operator cut off from kube-apiserver for 30 s, then healed",
        2,
        (0.0, 4.0),
        (30.0, 30.0),
    ),
    Scenario(
        "canary-pod-kill",
        6,
        "a canary pod deleted during analysis",
        2,
        (0.0, 3.0),
        (0.0, 0.0),
    ),
    Scenario(
        "stable-pod-kill",
        6,
        "a stable pod deleted during analysis",
        2,
        (0.0, 3.0),
        (0.0, 0.0),
    ),
    Scenario(
        "leader-kill",
        7,
        "two peered operator replicas, the active one SIGKILLed",
        2,
        (0.0, 4.0),
        (0.0, 0.0),
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True)
class RunSpec:
    scenario: str
    index: int  # 1-based within the scenario
    seed: int
    kind: Kind
    onset_s: float
    down_s: float

    @property
    def key(self) -> str:
        return f"{self.scenario}:{self.index}"


def run_seed(campaign_seed: int, scenario: str, index: int) -> int:
    """A run's own seed, stable across Python versions (no hash randomisation)."""
    return random.Random(f"{campaign_seed}/{scenario}/{index}").randrange(2**31)


def draw(scenario: Scenario, index: int, seed: int, kind: Kind, short: bool = False) -> RunSpec:
    rng = random.Random(seed)
    down = rng.uniform(*scenario.down_s)
    return RunSpec(
        scenario=scenario.name,
        index=index,
        seed=seed,
        kind=kind,
        onset_s=round(rng.uniform(*scenario.onset_s), 2),
        down_s=round(min(down, scenario.short_max_down_s) if short else down, 2),
    )


def short_plan(campaign_seed: int) -> list[RunSpec]:
    """The short version: one run for each of the issue's seven faults (where a fault has
    variants, the seed picks one), healthy and bad canaries alternating, faults capped at
    `short_max_down_s`."""
    rng = random.Random(f"{campaign_seed}/short")
    numbers = sorted({s.number for s in SCENARIOS})
    first_bad = rng.random() < 0.5
    specs = []
    for i, number in enumerate(numbers):
        scenario = rng.choice([s for s in SCENARIOS if s.number == number])
        kind: Kind = "bad" if (i % 2 == 0) == first_bad else "healthy"
        seed = run_seed(campaign_seed, scenario.name, 1)
        specs.append(draw(scenario, 1, seed, kind, short=True))
    return specs


def plan(
    campaign_seed: int,
    runs: dict[str, int] | None = None,
    only: set[str] | None = None,
) -> list[RunSpec]:
    """Every scenario's runs, healthy and bad canaries half and half (which comes first is
    drawn per scenario), interleaved across scenarios so machine noise falls on all alike.
    `runs` overrides per-scenario counts; `only` keeps scenario names or NAME:INDEX keys."""
    per_scenario: list[list[RunSpec]] = []
    for scenario in SCENARIOS:
        count = (runs or {}).get(scenario.name, scenario.runs)
        first_bad = random.Random(f"{campaign_seed}/{scenario.name}").random() < 0.5
        specs = []
        for i in range(1, count + 1):
            bad = (i % 2 == 1) == first_bad
            kind: Kind = "bad" if bad else "healthy"
            specs.append(draw(scenario, i, run_seed(campaign_seed, scenario.name, i), kind))
        per_scenario.append(specs)
    ordered = sorted(
        (spec for specs in per_scenario for spec in specs),
        key=lambda s: ((s.index - 0.5) / max(1, len(_of(per_scenario, s.scenario))), s.scenario),
    )
    if only:
        ordered = [s for s in ordered if s.scenario in only or s.key in only]
    return ordered


def _of(per_scenario: list[list[RunSpec]], name: str) -> list[RunSpec]:
    return next(specs for specs in per_scenario if specs and specs[0].scenario == name)
