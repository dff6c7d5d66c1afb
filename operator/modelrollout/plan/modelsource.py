"""How a revision's pods reach the model: what the server reads, and the volumes it needs. Pure.

Object stores (s3, gs, az) and http(s) are downloaded by the server itself; a
PersistentVolumeClaim is mounted read-only; an OCI image holding the model is mounted as an
image volume where the cluster supports it (Kubernetes 1.33+ with the ImageVolume feature, the
operator's MODELROLLOUT_IMAGE_VOLUMES), else copied into an emptyDir by an init container that
runs the model image (which then needs a `cp`, e.g. built FROM busybox).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelrollout.api.model import ModelSpec
from modelrollout.api.pod import MODEL_STORE_DIR as MOUNT_DIR

VOLUME = "model-store"
# Where an OCI model image keeps the model (the KServe modelcar convention).
IMAGE_MODEL_DIR = "/models"


@dataclass(frozen=True)
class ModelSource:
    uri: str
    env: dict[str, str] = field(default_factory=dict)
    volumes: tuple[dict[str, Any], ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()
    init_containers: tuple[dict[str, Any], ...] = ()


def pvc_parts(uri: str) -> tuple[str, str]:
    """(claim, path inside it) of a pvc:// URI."""
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return claim, path


def oci_reference(uri: str) -> str:
    return uri.removeprefix("oci://")


def model_source(
    model: ModelSpec, *, image_volumes: bool, container_security: dict[str, Any]
) -> ModelSource:
    scheme = model.uri.split("://", 1)[0] if "://" in model.uri else "file"
    env = {}
    if model.endpoint:
        env["MODELSERVER_MODEL_ENDPOINT"] = model.endpoint
    if model.region:
        env["MODELSERVER_MODEL_REGION"] = model.region
    mount = {"name": VOLUME, "mountPath": MOUNT_DIR, "readOnly": True}
    if scheme == "pvc":
        claim, path = pvc_parts(model.uri)
        volume = {"name": VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return ModelSource(f"file://{MOUNT_DIR}/{path}", env, (volume,), (mount,))
    if scheme != "oci":
        return ModelSource(model.uri, env)
    reference = oci_reference(model.uri)
    if image_volumes:
        volume = {"name": VOLUME, "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}
        return ModelSource(f"file://{MOUNT_DIR}{IMAGE_MODEL_DIR}/", env, (volume,), (mount,))
    copy = {
        "name": "model-copy",
        "image": reference,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", "-R", f"{IMAGE_MODEL_DIR}/.", MOUNT_DIR],
        "volumeMounts": [{"name": VOLUME, "mountPath": MOUNT_DIR}],
        "securityContext": container_security,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    volume = {"name": VOLUME, "emptyDir": {}}
    return ModelSource(f"file://{MOUNT_DIR}/", env, (volume,), (mount,), (copy,))
