"""Rollout hooks (pure): which runs a rollout waits for, which it starts, and what their results
mean. No I/O: the runs themselves are carried out asynchronously by modelrollout.hooks, whose
finished results come back as `HookResult`s in the next reconcile's inputs.

A run is one hook for one revision at one point (and, for analysis hooks, one step). Its record
in status (`status.hooks`) is the whole truth: a run recorded Passed is never started again, so
a restarted operator does not repeat it; a run recorded Running without a result is (re)started
by the runner, which is idempotent per run key (a Job hook's name is derived from it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from modelrollout.api.hooks import (
    GATES,
    HookFailurePolicy,
    HookPhase,
    HookPoint,
    HookRunStatus,
    HookSpec,
)
from modelrollout.api.names import format_time
from modelrollout.api.spec import RolloutStep

__all__ = ["Gate", "HookBook", "HookResult", "HookRun", "canary_gate", "job_name", "run_key"]

# Records kept in status; older ones of revisions no longer in play are dropped first.
MAX_RECORDS = 32
_EventTuple = tuple[str, str, str]


def run_key(revision: str, point: HookPoint, step: int, hook: str) -> str:
    return f"{revision}/{point.value}/{step}/{hook}"


def job_name(owner: str, key: str) -> str:
    """A Job hook's name: derived from the run key, so a restarted operator finds the Job it
    created instead of starting another. At most 63 characters (it becomes a label value)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    hook = key.rsplit("/", 1)[1]
    return f"{owner[:24].rstrip('-')}-{hook[:24].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class HookResult:
    """A finished run, as the runner reports it."""

    key: str
    passed: bool
    message: str
    finished: str


@dataclass(frozen=True)
class HookRun:
    """A run the runner should be carrying out (started now, or still running)."""

    key: str
    hook: HookSpec
    revision: str
    at: HookPoint
    step: int


@dataclass(frozen=True)
class Gate:
    """What a gate's hooks allow: pass, wait (`message`), or fail (`rollback` or hold)."""

    passed: bool
    message: str = ""
    rollback: bool = False


@dataclass
class HookBook:
    """The hook runs one reconcile knows of: the records from status, updated with the results
    that came in. The state machine asks it at each gate; it records the runs that are wanted."""

    hooks: tuple[HookSpec, ...]
    now: datetime
    records: dict[str, HookRunStatus] = field(default_factory=dict)
    events: list[_EventTuple] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        hooks: Iterable[HookSpec],
        records: Iterable[HookRunStatus],
        results: Mapping[str, HookResult],
        now: datetime,
    ) -> HookBook:
        book = cls(tuple(hooks), now)
        for record in records:
            key = run_key(record.revision, record.at, record.step, record.hook)
            result = results.get(key)
            if record.phase is HookPhase.RUNNING and result is not None:
                record = _finished(record, result)
                reason = "HookPassed" if result.passed else "HookFailed"
                kind = "Normal" if result.passed else "Warning"
                book.events.append((kind, reason, _describe(record)))
            book.records[key] = record
        return book

    def gate(self, at: HookPoint, revision: str, step: int = -1) -> Gate:
        """The gate's hooks for this revision (and step): started when not yet, then waited for."""
        assert at in GATES
        waiting: list[str] = []
        for hook in (h for h in self.hooks if h.at is at):
            record = self._run(hook, revision, step)
            if record.phase is HookPhase.FAILED:
                rollback = hook.on_failure is HookFailurePolicy.ROLLBACK
                message = f"hook {hook.name} ({at.value}) failed: {record.message}"
                held = "" if rollback else "; held until retried"
                return Gate(False, message + held, rollback=rollback)
            if record.phase is HookPhase.RUNNING:
                waiting.append(hook.name)
        if waiting:
            return Gate(False, f"waiting for {at.value} hook {', '.join(waiting)}")
        return Gate(True)

    def fire(self, at: HookPoint, revision: str) -> None:
        """An after-the-fact point was reached: start its hooks (once per revision)."""
        for hook in (h for h in self.hooks if h.at is at):
            self._run(hook, revision, -1)

    def retry(self, revision: str) -> None:
        """Forget the revision's failed runs, so their gates run them again."""
        for key, record in list(self.records.items()):
            if record.revision == revision and record.phase is HookPhase.FAILED:
                del self.records[key]

    def running(self) -> tuple[HookRun, ...]:
        """Every run not finished yet, for the runner (which ignores the ones it is on)."""
        by_name = {h.name: h for h in self.hooks}
        return tuple(
            HookRun(key, by_name[r.hook], r.revision, r.at, r.step)
            for key, r in self.records.items()
            if r.phase is HookPhase.RUNNING and r.hook in by_name
        )

    def kept(self, revisions: set[str]) -> list[HookRunStatus]:
        """The records for status: those of the revisions in play, newest last, bounded. A run
        whose hook left the spec is no longer waited for and is dropped."""
        names = {h.name for h in self.hooks}
        kept = [
            r
            for r in self.records.values()
            if r.revision in revisions and (r.hook in names or r.phase is not HookPhase.RUNNING)
        ]
        return kept[-MAX_RECORDS:]

    def _run(self, hook: HookSpec, revision: str, step: int) -> HookRunStatus:
        key = run_key(revision, hook.at, step, hook.name)
        record = self.records.get(key)
        if record is None:
            record = HookRunStatus(
                hook=hook.name, at=hook.at, revision=revision, step=step,
                started=format_time(self.now),
            )  # fmt: skip
            self.records[key] = record
            self.events.append(("Normal", "HookStarted", _describe(record)))
        return record


def canary_gate(
    book: HookBook | None, revision: str, weight: int, step: RolloutStep | None, index: int
) -> Gate | None:
    """The hooks a canary waits for where it stands: before it gets traffic (weight 0), and at
    each analysis step, which completes only when they passed too."""
    if book is None:
        return None
    if weight == 0:
        return book.gate(HookPoint.PRE_ROLLOUT, revision)
    if step is not None and step.analysis is not None:
        return book.gate(HookPoint.ANALYSIS, revision, index)
    return None


def _finished(record: HookRunStatus, result: HookResult) -> HookRunStatus:
    phase = HookPhase.PASSED if result.passed else HookPhase.FAILED
    return record.model_copy(
        update={"phase": phase, "message": result.message, "finished": result.finished}
    )


def _describe(record: HookRunStatus) -> str:
    where = f" at step {record.step}" if record.step >= 0 else ""
    what = f"hook {record.hook} ({record.at.value}{where}) for revision {record.revision}"
    if record.phase is HookPhase.RUNNING:
        return f"{what} started"
    if record.phase is HookPhase.PASSED:
        return f"{what} passed"
    return f"{what} failed: {record.message}"
