"""What each plugin command writes: pure functions from the object (as the API server returns it)
to a JSON merge patch, or an ActionError saying why the command does not apply.

One-shot actions are annotations `modelrollout.io/<action>`; the operator consumes them on its
next reconcile whether or not they applied, so a stale one never fires later. Pausing a whole
rollout is `spec.paused`, a level: it holds until set back to false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelrollout.api import GROUP
from modelrollout.api.status import HistoryEntry
from modelrollout.cli.read import in_rollout, read_status, waiting_for_resume
from modelrollout.redact import REDACTED, redact_uri

Obj = Mapping[str, Any]
Patch = dict[str, Any]

PROMOTE = f"{GROUP}/promote"
ABORT = f"{GROUP}/abort"
RETRY = f"{GROUP}/retry"
RESUME = f"{GROUP}/resume"


class ActionError(Exception):
    """The command does not apply to the object as it stands (nothing to promote, ...)."""


@dataclass(frozen=True)
class Change:
    """A merge patch and what it does, in words. An empty patch means nothing to do."""

    patch: Patch
    summary: str
    notes: list[str] = field(default_factory=list)


def annotate(key: str, value: str) -> Patch:
    return {"metadata": {"annotations": {key: value}}}


def _merge(a: Patch, b: Patch) -> Patch:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _pending_spec_change(obj: Obj) -> bool:
    """The spec changed and the operator has not looked yet: a rollout may be about to start."""
    meta, status = obj.get("metadata") or {}, read_status(obj)
    return status.observed_generation != meta.get("generation")


def promote(obj: Obj, stamp: str, force: bool = False) -> Change:
    """Skip the remaining steps and analysis: make the canary the stable revision now."""
    if not (force or in_rollout(obj) or _pending_spec_change(obj)):
        raise ActionError(
            f"{_name(obj)} has no rollout in progress (phase {read_status(obj).phase}); "
            "nothing to promote (--force sets the annotation anyway)"
        )
    return Change(annotate(PROMOTE, stamp), f"{_name(obj)}: promotion requested")


def abort(obj: Obj, stamp: str, force: bool = False) -> Change:
    """Roll the canary back now (or, during the bake window, go back to the previous stable)."""
    status = read_status(obj)
    if not (force or in_rollout(obj) or status.bake or _pending_spec_change(obj)):
        raise ActionError(
            f"{_name(obj)} has no rollout in progress and no bake window (phase "
            f"{status.phase}); nothing to abort (--force sets the annotation anyway)"
        )
    return Change(
        annotate(ABORT, stamp),
        f"{_name(obj)}: abort requested",
        [
            "the aborted revision is not retried until the spec changes or you run retry; "
            "in GitOps, revert the change in git as well"
        ],
    )


def retry(obj: Obj, stamp: str, force: bool = False) -> Change:
    """Start a fresh rollout of the revision that was rolled back."""
    status = read_status(obj)
    if not force and status.phase != "RolledBack":
        raise ActionError(
            f"{_name(obj)} is not rolled back (phase {status.phase}); nothing to retry "
            "(--force sets the annotation anyway)"
        )
    return Change(
        annotate(RETRY, stamp),
        f"{_name(obj)}: retry of revision {status.failed_revision} requested",
    )


def pause(obj: Obj) -> Change:
    """Hold the rollout at its current step (spec.paused: true) until resumed."""
    spec = obj.get("spec") or {}
    if spec.get("paused"):
        return Change({}, f"{_name(obj)} is already paused")
    notes = []
    if not in_rollout(obj):
        notes.append("no rollout in progress: the next one will hold before its first step")
    return Change({"spec": {"paused": True}}, f"{_name(obj)} paused", notes)


def resume(obj: Obj, stamp: str) -> Change:
    """Undo a pause: spec.paused back to false and, at a pause step without a duration, the
    resume annotation that lets the rollout move past it."""
    spec = obj.get("spec") or {}
    patch: Patch = {}
    done = []
    if spec.get("paused"):
        patch = _merge(patch, {"spec": {"paused": False}})
        done.append("spec.paused set to false")
    if waiting_for_resume(obj):
        patch = _merge(patch, annotate(RESUME, stamp))
        done.append("moving past the pause step")
    if not patch:
        return Change({}, f"{_name(obj)} is not paused; nothing to resume")
    return Change(patch, f"{_name(obj)} resumed ({'; '.join(done)})")


# --- undo --------------------------------------------------------------------------------------


def _entry_matches_spec(entry: HistoryEntry, spec: Obj) -> bool:
    """Does the spec already describe this history entry's model and image?"""
    model = spec.get("model") or {}
    image = (spec.get("serving") or {}).get("image")
    same_model = (
        redact_uri(model.get("uri") or "") == entry.model_uri
        and model.get("version") == entry.model_version
        and model.get("sha256") == entry.model_sha256
    )
    # An unset image means the operator's default, which the plugin cannot see: only an image
    # named in the spec can tell two entries apart.
    return same_model and (image is None or image == entry.image)


def pick_undo_target(obj: Obj, to_revision: str | None) -> tuple[int, HistoryEntry]:
    """The history entry (1-based number as `status` shows it, entry) undo goes back to.

    `to_revision` is an entry number from the history table or a revision hash. Without it:
    the stable revision when the spec points elsewhere (a rollout in progress or rolled back),
    otherwise the newest promoted revision before the stable one.
    """
    status = read_status(obj)
    history = list(status.history)
    if not history:
        raise ActionError(f"{_name(obj)} has no history yet; nothing to undo")
    if to_revision is not None:
        # Revisions are 10 hex digits; history keeps 10 entries, so a short number is an index.
        if to_revision.isdigit() and len(to_revision) < 10:
            n = int(to_revision)
            if not 1 <= n <= len(history):
                raise ActionError(
                    f"{_name(obj)} has history entries 1 to {len(history)}; there is no {n}"
                )
            return n, history[n - 1]
        for n, entry in enumerate(history, start=1):
            if entry.revision == to_revision:
                return n, entry
        raise ActionError(f"revision {to_revision} is not in the history of {_name(obj)}")

    spec = obj.get("spec") or {}
    stable = status.stable_revision
    promoted = [(n, e) for n, e in enumerate(history, start=1) if e.outcome == "Promoted"]
    for n, entry in promoted:
        if entry.revision == stable:
            if not _entry_matches_spec(entry, spec):
                return n, entry
            break
    for n, entry in promoted:
        if entry.revision != stable and not _entry_matches_spec(entry, spec):
            return n, entry
    raise ActionError(
        f"{_name(obj)} has no earlier promoted revision to go back to; "
        "pick one with --to-revision N"
    )


# The spec sections a history entry records (plan/revision.py): undo restores all of them.
REVISION_SECTIONS = ("model", "serving", "hardware", "pod")


def _replace(current: Any, target: Any) -> Any:
    """A merge patch that turns `current` into `target` (null removes what target lacks)."""
    if isinstance(current, dict) and isinstance(target, dict):
        out: Patch = {k: None for k in current if k not in target}
        out.update({k: _replace(current.get(k), v) for k, v in target.items()})
        return out
    return target


def _restore_sections(spec: Obj, recorded: Obj) -> Patch:
    """The spec's model, serving, hardware and pod sections set to exactly the recorded ones."""
    return {
        key: _replace(spec.get(key) or {}, recorded[key]) if key in recorded else None
        for key in REVISION_SECTIONS
        if key in recorded or key in spec
    }


def undo(obj: Obj, to_revision: str | None, stamp: str) -> Change:
    """Point the spec back at a revision from history. An entry that records its spec sections
    (model, serving, hardware, pod) gets all of them back exactly, with the image it ran; an
    older entry only its model uri, sha256, version and image (other fields keep their current
    values). The merge patch carries the resourceVersion that was read: a concurrent edit makes
    it fail with a conflict instead of being overwritten."""
    number, entry = pick_undo_target(obj, to_revision)
    meta, status = obj.get("metadata") or {}, read_status(obj)
    if not entry.model_uri or not entry.model_version:
        raise ActionError(
            f"history entry {number} (revision {entry.revision}) does not record its "
            "model; it cannot be restored"
        )
    if f"={REDACTED}" in entry.model_uri:
        raise ActionError(
            f"history entry {number} (revision {entry.revision}) was a signed URL, kept "
            f"without its secret ({entry.model_uri}); set spec.model.uri to a fresh one"
        )
    model: Patch = {
        "uri": entry.model_uri,
        "version": entry.model_version,
        # null removes the field in a merge patch: the entry was served without a checksum.
        "sha256": entry.model_sha256,
    }
    patch: Patch = {
        "metadata": {"resourceVersion": meta.get("resourceVersion")},
        "spec": {"model": model},
    }
    if entry.spec:
        patch["spec"] = _restore_sections(obj.get("spec") or {}, entry.spec)
    if entry.image:
        patch["spec"] = _merge(patch["spec"], {"serving": {"image": entry.image}})
    notes = []
    if entry.revision == status.failed_revision:
        # The operator does not retry a rolled-back revision without being asked.
        patch = _merge(patch, annotate(RETRY, stamp))
        notes.append(f"revision {entry.revision} was rolled back before; retrying it")
    if entry.revision != status.stable_revision:
        notes.append("this starts a canary rollout of that revision through the rollout steps")
    else:
        notes.append("the spec is back on the stable revision: the rollout in progress ends")
    notes.append("in GitOps, make the same change in git or the next sync reverts it")
    summary = (
        f"{_name(obj)}: spec set to history entry {number} (revision {entry.revision}, "
        f"model {entry.model_version}" + (f", image {entry.image}" if entry.image else "") + ")"
    )
    return Change(patch, summary, notes)
