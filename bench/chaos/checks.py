"""What every chaos run is checked for, from what it recorded (pure: no I/O).

- the outcome: a healthy canary promoted, a bad one rolled back; a bad canary that was ever the
  stable revision, or a healthy one ever rolled back, is a wrong outcome;
- no request answered by a pod that was not Ready for the whole time the request was out, and
  no non-2xx answered by the stable revision (from the load generator's per-request log);
- recovery: from the fault's end to the first change of the rollout's progress in status;
- children: every Deployment, Service, HPA and PDB owned by the ModelDeployment, none twice
  for one revision, none left for a revision that is neither stable nor canary;
- history: no revision lost (every revision once seen in history stays), none twice, and the
  canary's entry says what happened to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.chaos.scenarios import Kind
from hack.loadgen import Answer

Status = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # monotonic
    status: Status


# --- outcome ----------------------------------------------------------------------------------


def outcome(snapshots: Sequence[Snapshot], canary: str) -> str:
    """Promoted (the canary is stable, its bake window over), RolledBack, or Undecided."""
    for snap in reversed(snapshots):
        st = snap.status
        if _rolled_back(st, canary):
            return "RolledBack"
        if st.get("stableRevision") == canary and not st.get("bake"):
            return "Promoted"
    return "Undecided"


def _rolled_back(st: Status, canary: str) -> bool:
    if st.get("failedRevision") == canary:
        return True
    return any(
        h.get("revision") == canary and h.get("outcome") == "RolledBack"
        for h in st.get("history") or []
    )


def wrong_outcome(kind: Kind, snapshots: Sequence[Snapshot], canary: str) -> str:
    """Why the outcome is wrong, or "" when it is not (an undecided run is not wrong, only
    unfinished; the report counts those apart)."""
    if kind == "bad":
        if any(s.status.get("stableRevision") == canary for s in snapshots):
            return "bad canary promoted"
        return ""
    if any(_rolled_back(s.status, canary) for s in snapshots):
        return "healthy canary rolled back"
    return ""


# --- traffic ----------------------------------------------------------------------------------


def ready_at(intervals: Sequence[tuple[float, float]], start: float, end: float) -> bool:
    """Was the pod Ready at some moment of [start, end]? `intervals` are its Ready spans."""
    return any(lo <= end and start <= hi for lo, hi in intervals)


def unready_answers(
    requests: Sequence[Answer], ready: Mapping[str, Sequence[tuple[float, float]]]
) -> int:
    """Requests a pod answered although it was not Ready at any moment while they were out."""
    return sum(1 for r in requests if r.pod and not ready_at(ready.get(r.pod, ()), r.sent, r.done))


def stable_failures(requests: Sequence[Answer], stable: str) -> int:
    """Answers of the stable revision that were not 2xx."""
    return sum(1 for r in requests if r.revision == stable and not 200 <= r.code < 300)


# --- recovery ---------------------------------------------------------------------------------


def progress_key(st: Status) -> str:
    """What changes whenever the rollout moves: phase, revisions, weight, the step and its
    evidence, the bake window, the history."""
    keys = ("phase", "stableRevision", "canaryRevision", "failedRevision", "canaryWeight")
    doc = {k: st.get(k) for k in keys}
    doc |= {"rollout": st.get("rollout"), "bake": st.get("bake")}
    doc["history"] = len(st.get("history") or [])
    return json.dumps(doc, sort_keys=True, default=str)


def describe(st: Status) -> str:
    """One line of where the rollout stands, for a run's timeline."""
    rollout = st.get("rollout") or {}
    analysis = rollout.get("lastAnalysis") or {}
    verdict = analysis.get("verdict")
    line = (
        f"{st.get('phase')} weight={st.get('canaryWeight')} step={rollout.get('step')} "
        f"verdict={verdict} bake={bool(st.get('bake'))}"
    )
    # Why a step holds, in the analysis' own words: what a run left undecided is read from.
    if verdict == "Inconclusive":
        line += f" ({str(analysis.get('reason', ''))[:200]})"
    return line


def recovery_s(snapshots: Sequence[Snapshot], fault_end: float, canary: str) -> float | None:
    """Seconds from the fault's end to the first status read after it whose progress differs
    from the last one before it; 0 when the rollout was decided by then; None when it never
    moved again."""
    before = [s for s in snapshots if s.at <= fault_end]
    after = [s for s in snapshots if s.at > fault_end]
    if before and outcome(before, canary) != "Undecided":
        return 0.0
    baseline = progress_key(before[-1].status) if before else None
    for snap in after:
        if progress_key(snap.status) != baseline:
            return round(snap.at - fault_end, 2)
    return None


# --- children and history ---------------------------------------------------------------------


def child_problems(
    children: Sequence[Mapping[str, Any]], owner_uid: str, live: set[str]
) -> list[str]:
    """Children (objects labelled as the ModelDeployment's) not owned by it (orphans), two
    Deployments for one revision (duplicates), or a Deployment of a revision not in `live`."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for child in children:
        meta = child.get("metadata") or {}
        name = f"{child.get('kind')}/{meta.get('name')}"
        owners = [o.get("uid") for o in meta.get("ownerReferences") or []]
        if owner_uid not in owners:
            problems.append(f"{name} is not owned by the ModelDeployment (orphan)")
        if child.get("kind") != "Deployment":
            continue
        revision = (meta.get("labels") or {}).get("modelrollout.io/revision", "")
        if revision in seen:
            problems.append(f"{name} duplicates {seen[revision]} for revision {revision}")
        seen[revision] = name
        if revision not in live:
            problems.append(f"{name} left for revision {revision}, neither stable nor canary")
    return problems


def history_problems(snapshots: Sequence[Snapshot], canary: str, result: str) -> list[str]:
    """Revisions lost from or repeated in history over the run; the canary's entry."""
    problems: list[str] = []
    known: set[str] = set()
    for snap in snapshots:
        revisions = [h.get("revision") for h in snap.status.get("history") or []]
        repeated = {r for r in revisions if revisions.count(r) > 1}
        if repeated:
            problems.append(f"history repeats {sorted(map(str, repeated))}")
        lost = known - set(map(str, revisions))
        if lost:
            problems.append(f"history lost {sorted(lost)}")
        known |= set(map(str, revisions))
    if not snapshots:
        return ["no status read"]
    final = snapshots[-1].status
    entry = next((h for h in final.get("history") or [] if h.get("revision") == canary), None)
    if result in ("Promoted", "RolledBack"):
        if entry is None:
            problems.append(f"no history entry for canary {canary}")
        elif entry.get("outcome") != result:
            problems.append(f"canary history says {entry.get('outcome')}, not {result}")
    return sorted(set(problems))
