"""Revisions: a stable hash of everything in the spec that changes how the model behaves."""

from __future__ import annotations

import hashlib
import json

from modelrollout.api.spec import ModelDeploymentSpec

REVISION_LENGTH = 10


def revision_of(spec: ModelDeploymentSpec, image: str) -> str:
    """Hash of the model, the serving container (with its resolved image) and the placement.

    Autoscaling bounds and rollout settings are left out: changing them must not start a
    rollout. Hardware is in because it changes the pod template the new revision runs with.
    """
    material = {
        "model": spec.model.wire(),
        "serving": spec.serving.wire() | {"image": image},
        "hardware": spec.hardware.wire(),
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return digest[:REVISION_LENGTH]
