"""What each plugin command writes, and when it refuses."""

from __future__ import annotations

import pytest

from modelrollout.cli import actions
from modelrollout.cli.actions import ABORT, PROMOTE, RESUME, RETRY, ActionError

from . import objects as o

STAMP = "2026-03-01T12:10:00Z"


def annotations_of(change: actions.Change) -> dict[str, str]:
    return dict(change.patch.get("metadata", {}).get("annotations", {}))


# --- promote, abort, retry -------------------------------------------------------------------


def test_promote_during_a_rollout() -> None:
    change = actions.promote(o.canary(), STAMP)
    assert change.patch == {"metadata": {"annotations": {PROMOTE: STAMP}}}
    assert PROMOTE == "modelrollout.io/promote"


def test_promote_with_nothing_in_flight_is_refused_unless_forced() -> None:
    with pytest.raises(
        ActionError, match=r"no rollout in progress \(phase Ready\); nothing to promote"
    ):
        actions.promote(o.ready(), STAMP)
    assert annotations_of(actions.promote(o.ready(), STAMP, force=True)) == {PROMOTE: STAMP}


def test_promote_right_after_a_spec_change() -> None:
    """The operator has not seen the new generation yet: a rollout is about to start."""
    obj = o.ready()
    obj["metadata"]["generation"] = 3
    assert annotations_of(actions.promote(obj, STAMP)) == {PROMOTE: STAMP}


def test_abort_during_rollout_and_bake() -> None:
    assert annotations_of(actions.abort(o.canary(), STAMP)) == {ABORT: STAMP}
    change = actions.abort(o.baking(), STAMP)
    assert annotations_of(change) == {ABORT: STAMP}
    assert any("revert the change in git" in n for n in change.notes)
    with pytest.raises(ActionError, match="nothing to abort"):
        actions.abort(o.ready(), STAMP)
    with pytest.raises(ActionError, match="nothing to abort"):
        actions.abort(o.rolled_back(), STAMP)


def test_retry_only_after_a_rollback() -> None:
    change = actions.retry(o.rolled_back(), STAMP)
    assert change.patch == {"metadata": {"annotations": {RETRY: STAMP}}}
    assert "bbbbbbbbbb" in change.summary
    with pytest.raises(ActionError, match=r"not rolled back \(phase Progressing\)"):
        actions.retry(o.canary(), STAMP)
    assert annotations_of(actions.retry(o.canary(), STAMP, force=True)) == {RETRY: STAMP}


# --- pause and resume ------------------------------------------------------------------------


def test_pause_sets_spec_paused() -> None:
    change = actions.pause(o.canary())
    assert change.patch == {"spec": {"paused": True}}
    assert change.notes == []


def test_pause_is_idempotent() -> None:
    change = actions.pause(o.canary(paused=True))
    assert change.patch == {}
    assert "already paused" in change.summary


def test_pause_without_a_rollout_holds_the_next_one() -> None:
    change = actions.pause(o.ready())
    assert change.patch == {"spec": {"paused": True}}
    assert "the next one will hold" in change.notes[0]


def test_resume_clears_spec_paused() -> None:
    change = actions.resume(o.canary(step=1, paused=True), STAMP)
    assert change.patch == {"spec": {"paused": False}}


def test_resume_at_an_indefinite_pause_step_sets_the_annotation() -> None:
    change = actions.resume(o.canary(step=2), STAMP)
    assert change.patch == {"metadata": {"annotations": {RESUME: STAMP}}}
    assert "moving past the pause step" in change.summary


def test_resume_both_at_once() -> None:
    change = actions.resume(o.canary(step=2, paused=True), STAMP)
    assert change.patch == {
        "spec": {"paused": False},
        "metadata": {"annotations": {RESUME: STAMP}},
    }


def test_resume_with_nothing_paused() -> None:
    assert actions.resume(o.canary(step=1), STAMP).patch == {}
    # A timed pause ends on its own: no annotation.
    assert actions.resume(o.canary(step=4), STAMP).patch == {}
    assert actions.resume(o.ready(), STAMP).patch == {}


# --- undo ------------------------------------------------------------------------------------


def test_undo_after_a_promotion_goes_to_the_previous_revision() -> None:
    obj = o.baking()
    change = actions.undo(obj, None, STAMP)
    assert change.patch == {
        "metadata": {"resourceVersion": "4711"},
        "spec": {
            "model": {
                "uri": "https://models.example/iris-v1.onnx",
                "version": "v1",
                "sha256": o.SHA_A,
            },
            "serving": {"image": o.IMAGE},
        },
    }
    assert "history entry 2 (revision aaaaaaaaaa, model v1" in change.summary
    assert any("starts a canary rollout" in n for n in change.notes)


def test_undo_during_a_rollout_returns_to_the_stable_revision() -> None:
    change = actions.undo(o.canary(), None, STAMP)
    assert change.patch["spec"]["model"]["version"] == "v1"
    assert any("rollout in progress ends" in n for n in change.notes)


def test_undo_after_a_rollback_returns_to_the_stable_revision() -> None:
    change = actions.undo(o.rolled_back(), None, STAMP)
    assert change.patch["spec"]["model"]["version"] == "v1"
    assert RETRY not in annotations_of(change)


def test_undo_to_a_rolled_back_revision_asks_for_a_retry() -> None:
    obj = o.rolled_back()
    obj["spec"]["model"] = {"uri": "https://models.example/iris-v1.onnx", "version": "v1"}
    obj["spec"]["model"]["sha256"] = o.SHA_A
    change = actions.undo(obj, "1", STAMP)
    assert change.patch["spec"]["model"]["version"] == "v2"
    assert annotations_of(change) == {RETRY: STAMP}
    assert any("rolled back before" in n for n in change.notes)


def test_undo_by_number_or_revision() -> None:
    obj = o.baking()
    assert actions.undo(obj, "2", STAMP).patch["spec"]["model"]["version"] == "v1"
    assert actions.undo(obj, "aaaaaaaaaa", STAMP).patch["spec"]["model"]["version"] == "v1"
    assert actions.undo(obj, "bbbbbbbbbb", STAMP).patch["spec"]["model"]["version"] == "v2"
    with pytest.raises(ActionError, match="entries 1 to 2; there is no 3"):
        actions.undo(obj, "3", STAMP)
    with pytest.raises(ActionError, match="revision cccccccccc is not in the history"):
        actions.undo(obj, "cccccccccc", STAMP)


def test_undo_all_digit_revision_hash() -> None:
    obj = o.baking()
    obj["status"]["history"][1]["revision"] = "0123456789"
    assert actions.undo(obj, "0123456789", STAMP).patch["spec"]["model"]["version"] == "v1"


def test_undo_restores_a_missing_checksum_as_null() -> None:
    obj = o.baking()
    obj["status"]["history"][1]["modelSha256"] = None
    assert actions.undo(obj, None, STAMP).patch["spec"]["model"]["sha256"] is None


def test_undo_with_only_one_revision() -> None:
    with pytest.raises(ActionError, match="no earlier promoted revision"):
        actions.undo(o.ready(), None, STAMP)
    with pytest.raises(ActionError, match="no history yet"):
        actions.undo(o.mdep(None), None, STAMP)


def test_undo_refuses_an_entry_without_a_model() -> None:
    obj = o.baking()
    obj["status"]["history"][1]["modelUri"] = ""
    with pytest.raises(ActionError, match="does not record its model"):
        actions.undo(obj, "2", STAMP)


def test_undo_refuses_a_signed_url_kept_without_its_secret() -> None:
    obj = o.baking()
    obj["status"]["history"][1]["modelUri"] = "https://b.example/m.onnx?X-Amz-Signature=REDACTED"
    with pytest.raises(ActionError, match="signed URL, kept without its secret"):
        actions.undo(obj, "2", STAMP)


def test_undo_compares_images_named_in_the_spec() -> None:
    """Same model, new image: with the image in the spec, the previous entry differs."""
    obj = o.baking()
    obj["spec"]["model"] = {
        "uri": "https://models.example/iris-v1.onnx",
        "version": "v1",
        "sha256": o.SHA_A,
    }
    obj["spec"]["serving"] = {"image": "registry.example/modelserver:0.2.0"}
    obj["status"]["history"][0].update(
        modelUri="https://models.example/iris-v1.onnx",
        modelVersion="v1",
        modelSha256=o.SHA_A,
        image="registry.example/modelserver:0.2.0",
    )
    change = actions.undo(obj, None, STAMP)
    assert change.patch["spec"]["serving"] == {"image": o.IMAGE}


def test_undo_restores_the_whole_recorded_revision() -> None:
    obj = o.baking()
    recorded = {
        "model": {"uri": "https://models.example/iris-v1.onnx", "version": "v1"},
        "serving": {"port": 8080, "metricsPort": 9090, "env": [{"name": "A", "value": "1"}]},
        "hardware": {"mode": "cpu", "allowCpuFallback": True},
    }
    obj["status"]["history"][1]["spec"] = recorded
    obj["spec"]["serving"] = {"threads": 4, "env": [{"name": "B", "value": "2"}]}
    obj["spec"]["pod"] = {"serviceAccountName": "new"}
    change = actions.undo(obj, None, STAMP)
    spec = change.patch["spec"]
    # Fields the current spec has and the revision did not are removed (null in a merge patch).
    assert spec["model"] == {
        "uri": "https://models.example/iris-v1.onnx",
        "version": "v1",
        "sha256": None,
    }
    assert spec["serving"] == {
        "threads": None,
        "port": 8080,
        "metricsPort": 9090,
        "env": [{"name": "A", "value": "1"}],
        "image": o.IMAGE,
    }
    assert spec["hardware"] == {"mode": "cpu", "allowCpuFallback": True}
    assert spec["pod"] is None
