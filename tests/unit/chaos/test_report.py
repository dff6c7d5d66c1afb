"""The campaign's Markdown report (bench/chaos/report.py)."""

from __future__ import annotations

import pytest

from bench.chaos import report
from bench.chaos.faults import Fault
from bench.chaos.rig import RunResult, Settings
from bench.chaos.scenarios import RunSpec


def result(scenario: str, index: int, kind: str, **fields: object) -> RunResult:
    spec = RunSpec(scenario, index, 1000 + index, kind, 1.0, 2.0)  # type: ignore[arg-type]
    r = RunResult(spec, f"ns-{index}", fault=Fault("x", 0.0, 2.0, True), hit_rollout=True)
    r.__dict__.update(fields)
    return r


def test_targets_and_worst_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "versions", lambda: {"repo commit": "abc"})
    results = [
        result("operator-kill", 1, "bad", outcome="RolledBack", recovery_s=4.0, requests=100),
        result("operator-kill", 2, "healthy", outcome="Promoted", recovery_s=12.5, requests=90),
        result("etcd-stop", 1, "bad", outcome="Promoted", wrong="bad canary promoted"),
        result("leader-kill", 1, "healthy", outcome="Undecided", recovery_s=None, unready=2),
    ]
    text = report.render(
        results, seed=7, elapsed_s=600, argv=["--seed", "7"], settings=Settings(), planned=38
    )
    assert "seed **7**: 4 of 38 planned runs in 10.0 min" in text
    assert "| 0 wrong outcomes | 1 | NOT met |" in text
    assert "| 0 requests answered by a pod that was not Ready | 2 | NOT met |" in text
    assert "| campaign <= 30 min | 10.0 min | met |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 | operator-kill"))
    assert "| kwok | 2 (1/1) | 2 | 2 | 0 | 0 | 190 |" in row
    assert "| 12.5 s |" in row
    assert "never" in next(line for line in text.splitlines() if "| 7 | leader-kill" in line)
    assert "| operator-kill:2 | kwok | 1002 | healthy |" in text
