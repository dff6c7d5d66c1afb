"""Rollout hooks in the planner: gates hold or roll back, runs are asked for once per revision
and point, and what status records keeps a passed hook from running again."""

from __future__ import annotations

from typing import Any

from modelrollout.api.hooks import HookPhase, HookPoint
from modelrollout.api.status import Phase
from modelrollout.plan.hooks import HookResult, job_name, run_key
from modelrollout.plan.rollout import Action

from .sim import HEALTHY, Sim, deployed, spec

STEPS = [{"setWeight": 50}, {"analysis": {}}]


def hook(name: str, at: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "at": at, "http": {"url": f"https://ci.example.com/{name}"}} | more


def canary(*hooks: dict[str, Any], steps: list[dict[str, Any]] | None = None) -> Sim:
    sim = deployed()
    sim.body = spec("v2", steps=steps or STEPS, hooks=list(hooks))
    return sim


def finish(sim: Sim, passed: bool, message: str = "") -> dict[str, HookResult]:
    """Results for every run the last plan wanted."""
    assert sim.last is not None
    return {
        r.key: HookResult(r.key, passed, message or ("HTTP 200" if passed else "HTTP 500"), "t")
        for r in sim.last.hook_runs
    }


def test_pre_rollout_gate_holds_traffic_until_it_passes() -> None:
    sim = canary(hook("smoke", "preRollout"))
    for _ in range(4):
        sim.cycle()
    assert sim.status.canary_weight == 0
    assert "waiting for preRollout hook smoke" in sim.status.message
    assert sim.last is not None
    (run,) = sim.last.hook_runs
    assert run.key == run_key(sim.revision, HookPoint.PRE_ROLLOUT, -1, "smoke")
    (record,) = sim.status.hooks
    assert record.phase is HookPhase.RUNNING
    started = [e for e in sim.last.events if e.reason == "HookStarted"]
    assert not started, "HookStarted is recorded once, when the run begins"
    sim.cycle(hook_results=finish(sim, True))
    assert sim.status.hooks[0].phase is HookPhase.PASSED
    assert sim.last is not None
    assert [e.reason for e in sim.last.events if e.reason.startswith("Hook")] == ["HookPassed"]
    sim.cycle()
    assert sim.status.canary_weight == 50
    assert not sim.last.hook_runs


def test_failed_gate_rolls_back_and_runs_rollback_hooks_once() -> None:
    sim = canary(hook("smoke", "preRollout"), hook("page", "rollback"))
    sim.cycle()
    sim.cycle()
    results = finish(sim, False, "HTTP 500: checks failed")
    sim.cycle(hook_results=results)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert "hook smoke (preRollout) failed: HTTP 500: checks failed" in sim.status.history[0].reason
    assert sim.last is not None
    (run,) = sim.last.hook_runs
    assert run.at is HookPoint.ROLLBACK
    assert run.revision == sim.revision
    sim.cycle(hook_results=finish(sim, True))
    for _ in range(3):
        sim.cycle()
        assert not sim.last.hook_runs
    phases = {r.hook: r.phase for r in sim.status.hooks}
    assert phases == {"smoke": HookPhase.FAILED, "page": HookPhase.PASSED}


def test_failed_gate_on_hold_waits_for_retry() -> None:
    sim = canary(hook("smoke", "preRollout", onFailure="hold"))
    sim.cycle()
    sim.cycle()
    sim.cycle(hook_results=finish(sim, False, "no answer within 30s"))
    for _ in range(3):
        sim.cycle()
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.status.canary_weight == 0
    assert "failed: no answer within 30s; held until retried" in sim.status.message
    assert sim.last is not None
    assert not sim.last.hook_runs
    sim.cycle(actions=frozenset({Action.RETRY}))
    assert sim.last is not None
    assert [r.hook.name for r in sim.last.hook_runs] == ["smoke"]
    sim.cycle(hook_results=finish(sim, True))
    sim.cycle()
    assert sim.status.canary_weight == 50


def test_pre_promotion_holds_all_traffic_then_post_promotion_runs_once() -> None:
    sim = canary(hook("accept", "prePromotion"), hook("announce", "postPromotion"),
                 steps=[{"setWeight": 50}])  # fmt: skip
    for _ in range(6):
        sim.cycle()
    assert sim.status.canary_weight == 100
    assert "waiting for prePromotion hook accept" in sim.status.message
    sim.cycle(hook_results=finish(sim, True))
    assert sim.status.stable_revision == sim.revision
    assert sim.last is not None
    assert [r.hook.name for r in sim.last.hook_runs] == ["announce"]
    sim.cycle(hook_results=finish(sim, False, "HTTP 404"))
    # After the fact: a failure is recorded, the promotion stands.
    assert sim.status.stable_revision == sim.revision
    for _ in range(3):
        sim.cycle()
        assert not sim.last.hook_runs
    assert {r.hook: r.phase for r in sim.status.hooks}["announce"] is HookPhase.FAILED


def test_analysis_step_waits_for_its_hook_as_well_as_its_windows() -> None:
    sim = canary(hook("load", "analysis"), steps=[{"setWeight": 50}, {"analysis": {}}])
    sim.run(HEALTHY, 12)
    assert sim.status.canary_weight == 50
    assert sim.status.rollout is not None
    assert sim.status.rollout.passes >= 1
    assert "waiting for analysis hook load" in sim.status.message
    assert sim.last is not None
    (run,) = sim.last.hook_runs
    assert run.step == 1
    sim.cycle(hook_results=finish(sim, True))
    sim.run(HEALTHY, 6)
    assert sim.status.stable_revision == sim.revision


def test_promote_action_skips_the_gates() -> None:
    sim = canary(hook("smoke", "preRollout"))
    sim.cycle()
    sim.cycle(actions=frozenset({Action.PROMOTE}))
    assert sim.status.stable_revision == sim.revision


def test_job_names_are_derived_from_the_run() -> None:
    key = run_key("abcdef0123", HookPoint.PRE_PROMOTION, -1, "acceptance-suite")
    name = job_name("a-very-long-model-deployment-name-for-fraud", key)
    assert name == job_name("a-very-long-model-deployment-name-for-fraud", key)
    assert len(name) <= 63
    other = run_key("abcdef0124", HookPoint.PRE_PROMOTION, -1, "acceptance-suite")
    assert job_name("a-very-long-model-deployment-name-for-fraud", other) != name
