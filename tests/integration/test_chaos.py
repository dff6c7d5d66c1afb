"""The short version of `make chaos`: one rollout under each of the seven faults (bench/chaos),
on a control plane of its own (it restarts kube-apiserver and etcd, and runs its own operator
replicas), checked as the campaign checks every run. The seed is printed; set
MODELROLLOUT_CHAOS_SEED to replay one."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos.env import Env, environment
from bench.chaos.rig import SHORT, Run, RunResult
from bench.chaos.run import line
from bench.chaos.scenarios import short_plan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chaos_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with environment(Path(tmp_path_factory.mktemp("chaos"))) as env:
        yield env


def test_rollouts_come_through_every_fault(chaos_env: Env) -> None:
    seed = int(os.environ.get("MODELROLLOUT_CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"\nchaos seed {seed} (replay: MODELROLLOUT_CHAOS_SEED={seed})")
    results: list[RunResult] = []
    for spec in short_plan(seed):
        result = Run(chaos_env, spec, SHORT).execute()
        print(line(result))
        results.append(result)
    failed = {
        r.spec.key: {
            "kind": r.spec.kind,
            "outcome": r.outcome,
            "wrong": r.wrong,
            "recovery_s": r.recovery_s,
            "unready": r.unready,
            "stable_non2xx": r.stable_failures,
            "problems": r.child_problems + r.history_problems,
            "error": r.error,
            "timeline": r.timeline,
        }
        for r in results
        if not r.ok
    }
    assert not failed, f"seed {seed}: {failed}"
