"""Revisions: a stable hash of everything in the spec that changes how the model behaves."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modelrollout.api.spec import ModelDeploymentSpec

REVISION_LENGTH = 10
# A revision's recorded spec larger than this is left out of history (status and the
# Deployment's annotation have size limits the operator must never reach).
MAX_RECORDED_SPEC = 32 * 1024


def revision_spec(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """The spec sections a revision is made of, as the API server stores them.

    `pod` appears only when it differs from the defaults, so a spec written before the field
    existed keeps its revision across an operator upgrade (and starts no rollout).
    """
    sections = {
        "model": spec.model.wire(),
        "serving": spec.serving.wire(),
        "hardware": spec.hardware.wire(),
    }
    pod = spec.pod.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    if pod:
        sections["pod"] = spec.pod.wire()
    return sections


def recorded_spec(spec: ModelDeploymentSpec) -> str | None:
    """`revision_spec` as compact JSON, or None when it is too large to record."""
    text = json.dumps(revision_spec(spec), sort_keys=True, separators=(",", ":"))
    return text if len(text) <= MAX_RECORDED_SPEC else None


def revision_of(spec: ModelDeploymentSpec, image: str) -> str:
    """Hash of the model, the serving container (with its resolved image), the placement and
    the pod settings.

    Autoscaling bounds and rollout settings are left out: changing them must not start a
    rollout. Hardware is in because it changes the pod template the new revision runs with.
    """
    material = revision_spec(spec)
    material["serving"] = material["serving"] | {"image": image}
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return digest[:REVISION_LENGTH]
