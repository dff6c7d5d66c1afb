"""What a revision is made of: what starts a rollout and what does not."""

from typing import Any

import pytest

from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.plan.revision import revision_of

BASE: dict[str, Any] = {
    "model": {"uri": "https://m.example/iris.onnx", "version": "v1"},
    "serving": {"env": [{"name": "A", "value": "1"}]},
    "hardware": {"mode": "cpu"},
}


def rev(**changes: Any) -> str:
    body = {k: v for k, v in BASE.items()}
    for key, value in changes.items():
        body[key] = (body.get(key) or {}) | value
    return revision_of(ModelDeploymentSpec.model_validate(body), "img:1")


def test_a_spec_without_new_fields_keeps_the_revision_older_operators_gave_it() -> None:
    # Computed by the operator before spec.pod and spec.model.refresh existed: an upgrade
    # must start no rollout.
    assert rev() == "88554c35c1"
    assert rev(pod={"automountServiceAccountToken": False}) == "88554c35c1"


@pytest.mark.parametrize(
    "change",
    [
        {"pod": {"serviceAccountName": "reader"}},
        {"pod": {"labels": {"team": "a"}}},
        {"model": {"refresh": "2026-11-30"}},
        {"model": {"sha256": "a" * 64}},
        {"serving": {"grpc": {}}},
    ],
)
def test_what_starts_a_new_revision(change: dict[str, Any]) -> None:
    assert rev(**change) != rev()


def test_autoscaling_and_rollout_do_not() -> None:
    assert rev(autoscaling={"maxReplicas": 9}, rollout={"bakeTime": "1m"}) == rev()
