"""The spec's pod settings merged into the pod template the operator generates.

Pure. The operator's fields win: its labels, annotations, volumes and mounts are written after
the user's (admission already refuses collisions, so this only guards objects stored before a
rule existed), and probes, ports and the model env are not settable at all.
"""

from __future__ import annotations

from typing import Any

from modelrollout.api.pod import PodSettings

ZONE = "topology.kubernetes.io/zone"
HOSTNAME = "kubernetes.io/hostname"


def default_spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """A revision's replicas spread over nodes, then zones; a preference only, so a cluster
    with one node or no zone labels still schedules every replica."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
        for key in (HOSTNAME, ZONE)
    ]


def _spread(settings: PodSettings, selector: dict[str, str]) -> list[dict[str, Any]]:
    if settings.topology_spread_constraints is None:
        return default_spread(selector)
    # A constraint that names no pods would count every pod in the namespace: give it the
    # revision's own.
    return [
        {"labelSelector": {"matchLabels": dict(selector)}} | dict(c)
        for c in settings.topology_spread_constraints
    ]


def _container(container: dict[str, Any], settings: PodSettings) -> dict[str, Any]:
    out = dict(container)
    if settings.env_from:
        # The operator's sources (the model store Secret) first; explicit env wins over all.
        out["envFrom"] = list(container.get("envFrom", [])) + [e.wire() for e in settings.env_from]
    if settings.volume_mounts:
        mounts = [m.wire() for m in settings.volume_mounts]
        out["volumeMounts"] = list(container.get("volumeMounts", [])) + mounts
    return out


def merge_pod_settings(
    template: dict[str, Any], settings: PodSettings, selector: dict[str, str]
) -> dict[str, Any]:
    """`template` (metadata and spec of a Deployment's pod template, one container) with the
    settings merged in. `selector` picks the revision's pods, for the spread constraints."""
    meta = dict(template.get("metadata", {}))
    meta["labels"] = (settings.labels or {}) | dict(meta.get("labels", {}))
    annotations = (settings.annotations or {}) | dict(meta.get("annotations", {}))
    if annotations:
        meta["annotations"] = annotations
    spec = dict(template["spec"])
    spec["containers"] = [_container(c, settings) for c in spec["containers"]]
    spec["automountServiceAccountToken"] = settings.automount_service_account_token
    if settings.service_account_name:
        spec["serviceAccountName"] = settings.service_account_name
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [s.wire() for s in settings.image_pull_secrets]
    if settings.priority_class_name:
        spec["priorityClassName"] = settings.priority_class_name
    if settings.affinity:
        spec["affinity"] = dict(settings.affinity)
    spread = _spread(settings, selector)
    if spread:
        spec["topologySpreadConstraints"] = spread
    if settings.volumes:
        spec["volumes"] = list(spec.get("volumes", [])) + [v.wire() for v in settings.volumes]
    return {"metadata": meta, "spec": spec}
