"""The campaign's seeded plan (bench/chaos/scenarios.py)."""

from __future__ import annotations

from bench.chaos.run import _public
from bench.chaos.scenarios import BY_NAME, SCENARIOS, plan, short_plan


def test_the_same_seed_plans_the_same_runs() -> None:
    assert plan(42) == plan(42)
    assert plan(42) != plan(43)


def test_one_run_is_reproduced_alone_as_the_campaign_planned_it() -> None:
    campaign = {s.key: s for s in plan(7)}
    again = plan(7, only={"etcd-stop:2", "operator-kill:13"})
    assert {s.key for s in again} == {"etcd-stop:2", "operator-kill:13"}
    for spec in again:
        assert spec == campaign[spec.key]


def test_counts_kinds_and_ranges() -> None:
    specs = plan(1)
    assert sum(1 for s in specs if s.scenario == "operator-kill") == 20
    for scenario in SCENARIOS:
        mine = [s for s in specs if s.scenario == scenario.name]
        assert len(mine) == scenario.runs
        healthy = sum(1 for s in mine if s.kind == "healthy")
        assert abs(healthy - (len(mine) - healthy)) <= 1, "healthy and bad half and half"
        for s in mine:
            assert scenario.onset_s[0] <= s.onset_s <= scenario.onset_s[1]
            assert scenario.down_s[0] <= s.down_s <= scenario.down_s[1]
    assert all(5 <= s.down_s <= 20 for s in specs if s.scenario == "apiserver-restart")


def test_short_version_runs_every_scenario_once() -> None:
    specs = plan(3, runs={s.name: 1 for s in SCENARIOS})
    assert sorted(s.scenario for s in specs) == sorted(BY_NAME)


def test_short_plan_one_run_per_fault_of_the_issue() -> None:
    specs = short_plan(5)
    assert short_plan(5) == specs
    numbers = sorted(BY_NAME[s.scenario].number for s in specs)
    assert numbers == [1, 2, 3, 4, 5, 6, 7]
    assert all(s.down_s <= BY_NAME[s.scenario].short_max_down_s for s in specs)
    kinds = [s.kind for s in specs]
    assert kinds.count("bad") in (3, 4)
    # Over seeds, every variant of a fault gets its turn.
    picked = {s.scenario for seed in range(40) for s in short_plan(seed)}
    assert picked == set(BY_NAME)


def test_the_reported_command_line_leaves_this_machines_directories_out() -> None:
    argv = [
        "--seed",
        "7",
        "--out",
        "/srv/x",
        "--work=/srv/y",
        "--work",
        "/srv/z",
        "--until",
        "13:08",
    ]
    assert _public(argv) == ["--seed", "7", "--until", "13:08"]
