"""The reconcile planner: observed state in, desired children and the rollout decision out.
No I/O.

The rollout state machine (plan/rollout.py) decides which revisions serve and at what weight;
this module turns that into children (plan/desired.py), deletions, the route weight to set and
the events to record. The status is written by plan/settle.py from the plan and what acting on
it did.
"""

from __future__ import annotations

import json
from typing import Any

from modelrollout.api.hooks import HookPoint
from modelrollout.api.names import format_time
from modelrollout.api.status import HistoryEntry, ModelDeploymentStatus
from modelrollout.plan import children
from modelrollout.plan.desired import (
    TrafficSplit,
    desired_children,
    kept_revisions,
    split_for,
)
from modelrollout.plan.drift import drift_events
from modelrollout.plan.hooks import HookBook
from modelrollout.plan.oom import oom_events
from modelrollout.plan.revision import recorded_spec, revision_of
from modelrollout.plan.rollout import Action, CanaryView, Decision, Stage, decide, seconds
from modelrollout.plan.types import ChildRef, Event, Inputs, ObservedDeployment, Plan
from modelrollout.redact import redact_uri

__all__ = ["REQUEUE_PROGRESSING", "plan"]

# While something moves, look again soon; the periodic resync covers the steady state.
REQUEUE_PROGRESSING = 5.0


def _sanitise(
    status: ModelDeploymentStatus, observed: dict[str, ObservedDeployment], revision: str
) -> ModelDeploymentStatus:
    """Forget revisions whose Deployment is gone (deleted by hand): their pod template went
    with them, so the current revision takes over directly."""
    update: dict[str, object] = {}
    if (
        status.stable_revision
        and status.stable_revision != revision
        and (status.stable_revision not in observed)
    ):
        update |= {
            "stable_revision": None,
            "canary_revision": None,
            "rollout": None,
            "canary_weight": 0,
        }
    if status.bake and status.bake.previous_revision not in observed:
        update["bake"] = None
    return status.model_copy(update=update) if update else status


def plan(inputs: Inputs) -> Plan:
    spec, owner = inputs.spec, inputs.owner
    revision = revision_of(spec, inputs.image)
    observed = {d.revision: d for d in inputs.deployments}
    status = _sanitise(inputs.status, observed, revision)
    split = split_for(spec)
    book = HookBook.of(spec.rollout.hooks, status.hooks, inputs.hook_results, inputs.now)
    if Action.RETRY in inputs.actions:
        book.retry(revision)
    decision = _decide(inputs, revision, status, observed, split, book)
    _after_the_fact(book, decision)

    desired = desired_children(inputs, revision, decision, observed, split)
    keep = kept_revisions(inputs, revision, decision, status, observed, split)
    wanted = {(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in desired}
    wanted |= {("apps/v1", "Deployment", children.deployment_name(owner, r)) for r in keep}
    delete = [ChildRef(*key) for key in sorted(inputs.existing - wanted)]

    history = list(status.history)
    if decision.finished is not None:
        history.insert(0, _history_entry(inputs, revision, decision, observed))
    moving = decision.stage in (Stage.INITIAL, Stage.CANARY) or decision.bake is not None
    lingering = len(keep) > len({decision.stable, decision.canary} - {None})
    requeue = None
    runs = book.running()
    if moving or lingering or runs or decision.stage == Stage.PROMOTED:
        requeue = min(REQUEUE_PROGRESSING, max(1.0, seconds(spec.rollout.analysis.every) / 5))
    in_play = {decision.stable, decision.canary, decision.failed_revision, *keep}
    tracks = {r: "stable" for r in keep}
    if decision.canary:
        tracks[decision.canary] = "canary"
    return Plan(
        inputs=inputs,
        decision=decision,
        revision=revision,
        tracks=tracks,
        apply=desired,
        delete=delete,
        route_weight=split.route_weight(decision.weight),
        route_mirror=decision.mirror,
        previous=status,
        history=tuple(history),
        keep=frozenset(keep),
        events=[Event(*e) for e in (*book.events, *decision.events)]
        + drift_events(inputs)
        + oom_events(inputs.oom_kills, status.conditions),
        requeue_after=requeue,
        hooks=tuple(book.kept({revision} | {r for r in in_play if r})),
        hook_runs=runs,
        synthetic_revision=_synthetic_revision(inputs, decision),
    )


def _decide(
    inputs: Inputs,
    revision: str,
    status: ModelDeploymentStatus,
    observed: dict[str, ObservedDeployment],
    split: TrafficSplit,
    book: HookBook,
) -> Decision:
    if inputs.blocked is not None and revision != status.stable_revision:
        return Decision.blocked(revision, status, *inputs.blocked)
    new = observed.get(revision)
    stable_obs = observed.get(status.stable_revision) if status.stable_revision else None
    canary_view = None
    if new is not None and revision != status.stable_revision:
        realised = split.weight_in_place(status, new, inputs.route_weight)
        mirror = inputs.route_mirror and realised == 0
        canary_view = CanaryView(new.available, new.failed_reason, realised, mirror)
    return decide(
        revision=revision,
        status=status,
        rollout=inputs.spec.rollout,
        paused=inputs.spec.paused,
        canary=canary_view,
        stable_available=stable_obs is not None and stable_obs.available,
        analysis=inputs.analysis,
        actions=inputs.actions,
        now=inputs.now,
        readings=inputs.readings,
        hooks=book,
    )


def _synthetic_revision(inputs: Inputs, decision: Decision) -> str | None:
    """Synthetic traffic goes to a canary while it has traffic, that is while its analysis
    runs (docs/rollouts.md, "Synthetic traffic")."""
    wanted = inputs.spec.rollout.synthetic_traffic is not None
    running = decision.stage == Stage.CANARY and decision.weight > 0
    return decision.canary if wanted and running else None


def _after_the_fact(book: HookBook, decision: Decision) -> None:
    """postPromotion hooks when a canary was promoted, rollback hooks when one was rolled back
    or aborted: once per revision, since the transition itself happens once."""
    if decision.finished is None:
        return
    revision, outcome, _ = decision.finished
    if outcome == "Promoted" and decision.bake is not None:
        book.fire(HookPoint.POST_PROMOTION, revision)
    elif outcome in ("RolledBack", "Aborted"):
        book.fire(HookPoint.ROLLBACK, revision)


def _history_entry(
    inputs: Inputs, revision: str, decision: Decision, observed: dict[str, ObservedDeployment]
) -> HistoryEntry:
    assert decision.finished is not None
    fin_rev, outcome, reason = decision.finished
    now = format_time(inputs.now)
    seen = observed.get(fin_rev)
    if fin_rev == revision:
        model = inputs.spec.model
        version, uri, sha, image = model.version, model.uri, model.sha256, inputs.image
        pinned = seen.model_sha256 if seen else None
        sha = sha or pinned or (inputs.placement.model_sha256 if inputs.placement else None)
        recorded = recorded_spec(inputs.spec)
        spec: dict[str, Any] | None = json.loads(recorded) if recorded else None
    else:
        version = seen.model_version if seen else ""
        uri = seen.model_uri if seen else ""
        sha = seen.model_sha256 if seen else None
        image = seen.image if seen else ""
        spec = seen.revision_spec if seen else None
    return HistoryEntry(
        revision=fin_rev,
        model_version=version,
        # Status is readable by whoever reads the object: a signed URL's secret stays out.
        model_uri=redact_uri(uri),
        model_sha256=sha,
        image=image,
        started=inputs.status.rollout_started or now,
        finished=now,
        outcome=outcome,
        reason=reason,
        spec=_redacted(spec),
    )


def _redacted(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A recorded spec with its model URI redacted like the entry's own (status is readable by
    whoever reads the object)."""
    if spec is None or not isinstance(spec.get("model"), dict):
        return spec
    model = spec["model"] | {"uri": redact_uri(str(spec["model"].get("uri", "")))}
    return spec | {"model": model}
