"""Desired child objects of a ModelDeployment, as plain manifests for server-side apply.

Pure functions: the same inputs always give the same manifests, so applying them twice changes
nothing and a diff against the live object tells whether a patch is needed at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelrollout.api import API_VERSION, KIND, names
from modelrollout.api.names import (
    ANNOTATION_REVISION_SPEC,
    CONTAINER,
    LABEL_DEPLOYMENT,
    LABEL_REVISION,
    LABEL_TRACK,
    MANAGED_BY,
    Track,
    track_service_name,
)
from modelrollout.api.pod import MODEL_DIR, TMP_DIR, TOKEN_DIR
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.types import parse_duration
from modelrollout.plan.modelsource import ModelSource, model_source
from modelrollout.plan.pod import merge_pod_settings
from modelrollout.plan.revision import recorded_spec

__all__ = [
    "CONTAINER",
    "LABEL_DEPLOYMENT",
    "LABEL_REVISION",
    "LABEL_TRACK",
    "MANAGED_BY",
    "Manifest",
    "Owner",
    "Placement",
    "deployment",
    "deployment_name",
    "object_metadata",
    "service",
    "track_service",
]

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment every child points back to, so deleting it collects them."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Placement:
    """Where and with what a revision's pods run (from the hardware policy)."""

    tier: str
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    threads: int = 1
    provider: str = "cpu"
    # GPUs rarely have room for a surge pod: replace pods one at a time, old one first.
    scale_down_first: bool = False
    # The model's sha256 as the operator read it, pinned when the spec gives none.
    model_sha256: str | None = None
    # The cluster mounts OCI images as volumes (Kubernetes 1.33+ ImageVolume): an oci://
    # model is mounted, not copied by an init container.
    image_volumes: bool = False
    # The canary runs on a replica borrowed from the stable (rollout.capacity: borrow).
    borrowed: bool = False
    # The image for this tier (the GPU image on a CUDA tier); None: the spec's or the default.
    image: str | None = None


def common_labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelserver",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_DEPLOYMENT: owner.name,
    }


def deployment_name(owner: Owner, revision: str) -> str:
    return names.deployment_name(owner.name, revision)


def object_metadata(owner: Owner, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.reference()],
    }


def _server_env(
    owner: Owner, spec: ModelDeploymentSpec, revision: str, placement: Placement, track: str
) -> list[dict[str, Any]]:
    serving, model = spec.serving, spec.model
    source = _source(spec, placement)
    env = {
        "MODELSERVER_MODEL_NAME": model.name or owner.name,
        "MODELSERVER_MODEL_URI": source.uri,
        "MODELSERVER_MODEL_VERSION": model.version,
        "MODELSERVER_REVISION": revision,
        # The track the revision was born into. It stays fixed for the Deployment's life so a
        # promotion restarts no pod; the live track is the pod label modelrollout.io/track.
        "MODELSERVER_TRACK": track,
        "MODELSERVER_PORT": str(serving.port),
        "MODELSERVER_METRICS_PORT": str(serving.metrics_port),
        "MODELSERVER_THREADS": str(serving.threads or placement.threads),
        "MODELSERVER_EXECUTION_PROVIDER": placement.provider,
        # Endpoints controllers and gateways need a moment to stop sending before drain.
        "MODELSERVER_DRAIN_DELAY_S": "5",
        "MODELSERVER_MODEL_DIR": MODEL_DIR,
    } | source.env
    # Without a sha256 in the spec, the one the operator read: every pod of the revision
    # verifies the same bytes, even when the file at the URI changes later.
    sha256 = model.sha256 or placement.model_sha256
    if sha256:
        env["MODELSERVER_MODEL_SHA256"] = sha256
    if model.reference is not None:
        env["MODELSERVER_REFERENCE_URI"] = model.reference.uri
        env["MODELSERVER_REFERENCE_SHA256"] = model.reference.sha256
    if serving.grpc:
        env["MODELSERVER_GRPC_PORT"] = str(serving.grpc.port)
    if serving.batching:
        env["MODELSERVER_BATCH_MAX_SIZE"] = str(serving.batching.max_batch_size)
        window_ms = parse_duration(serving.batching.window).total_seconds() * 1000
        env["MODELSERVER_BATCH_WINDOW_MS"] = f"{window_ms:g}"
    if serving.auth:
        env["MODELSERVER_TOKEN_FILE"] = f"{TOKEN_DIR}/{serving.auth.token_secret.key}"
    out: dict[str, dict[str, Any]] = {k: {"name": k, "value": v} for k, v in env.items()}
    # User variables come last so they can override the defaults above; a Secret's value is
    # referenced (valueFrom), so the operator never holds it.
    for var in serving.env:
        out[var.name] = (
            {"name": var.name, "valueFrom": var.value_from.wire()}
            if var.value_from
            else {"name": var.name, "value": var.value}
        )
    return list(out.values())


_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def _source(spec: ModelDeploymentSpec, placement: Placement) -> ModelSource:
    return model_source(
        spec.model, image_volumes=placement.image_volumes, container_security=dict(_SECURITY)
    )


def _secret_sources(spec: ModelDeploymentSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """Container fields and pod volumes for the Secrets the spec references."""
    container: dict[str, Any] = {}
    pod: dict[str, Any] = {}
    if spec.model.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.model.credentials_secret}}]
    if spec.serving.auth:
        ref = spec.serving.auth.token_secret
        container["volumeMounts"] = [{"name": "token", "mountPath": TOKEN_DIR, "readOnly": True}]
        # Readable by the pod's group (fsGroup) only.
        secret: dict[str, Any] = {
            "secretName": ref.name,
            "items": [{"key": ref.key, "path": ref.key}],
            "defaultMode": 0o440,
        }
        if ref.optional is not None:
            secret["optional"] = ref.optional
        pod["volumes"] = [{"name": "token", "secret": secret}]
    return container, pod


def _container_ports(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    serving = spec.serving
    ports = [
        {"name": "http", "containerPort": serving.port, "protocol": "TCP"},
        {"name": "metrics", "containerPort": serving.metrics_port, "protocol": "TCP"},
    ]
    if serving.grpc:
        ports.append({"name": "grpc", "containerPort": serving.grpc.port, "protocol": "TCP"})
    return ports


def _service_ports(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    serving = spec.serving
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": serving.port, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "metrics",
            "port": serving.metrics_port,
            "targetPort": "metrics",
            "protocol": "TCP",
        },
    ]
    if serving.grpc:
        # The port name tells Istio the protocol; appProtocol tells Gateway API implementations
        # (kubernetes.io/h2c is the value their conformance tests cover: HTTP/2 without TLS).
        ports.append(
            {
                "name": "grpc",
                "port": serving.grpc.port,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return ports


def _server_container(
    owner: Owner,
    spec: ModelDeploymentSpec,
    revision: str,
    image: str,
    placement: Placement,
    track: str,
) -> dict[str, Any]:
    # The placement already merges the spec's explicit resources, selector and tolerations.
    resources: dict[str, Any] = {}
    if placement.requests:
        resources["requests"] = dict(placement.requests)
    if placement.limits:
        resources["limits"] = dict(placement.limits)
    return {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": _container_ports(spec),
        "env": _server_env(owner, spec, revision, placement, track),
        "resources": resources,
        # Downloading and verifying a large model can take minutes; readiness says when it's done.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "securityContext": dict(_SECURITY),
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_DIR},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
    }


def _pod_spec(
    container: dict[str, Any], placement: Placement, spec: ModelDeploymentSpec
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "models", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }
    extra_container, extra_pod = _secret_sources(spec)
    container["volumeMounts"] += extra_container.pop("volumeMounts", [])
    container.update(extra_container)
    pod_spec["volumes"] += extra_pod.get("volumes", [])
    source = _source(spec, placement)
    container["volumeMounts"] += [dict(m) for m in source.mounts]
    pod_spec["volumes"] += [dict(v) for v in source.volumes]
    if source.init_containers:
        pod_spec["initContainers"] = [dict(c) for c in source.init_containers]
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in placement.tolerations]
    return pod_spec


def deployment(
    owner: Owner,
    spec: ModelDeploymentSpec,
    revision: str,
    image: str,
    placement: Placement,
    track: str = "stable",
) -> Manifest:
    """One Deployment per revision. `replicas` is left to the HorizontalPodAutoscaler."""
    labels = common_labels(owner) | {LABEL_REVISION: revision}
    selector = {LABEL_DEPLOYMENT: owner.name, LABEL_REVISION: revision}
    # GPUs rarely have room for a surge pod: replace pods one at a time, old one first.
    surge = {"maxSurge": 0, "maxUnavailable": 1} if placement.scale_down_first else None
    container = _server_container(owner, spec, revision, placement.image or image, placement, track)
    template = {
        "metadata": {
            "labels": labels,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.serving.metrics_port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": _pod_spec(container, placement, spec),
    }
    metadata = object_metadata(owner, deployment_name(owner, revision), labels)
    recorded = recorded_spec(spec)
    if recorded:
        # What the revision was built from, for its history entry once the spec has moved on.
        metadata["annotations"] = {ANNOTATION_REVISION_SPEC: recorded}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": 600,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": surge or {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": merge_pod_settings(template, spec.pod, selector),
        },
    }


def service(owner: Owner, spec: ModelDeploymentSpec, revision: str | None = None) -> Manifest:
    """The ModelDeployment's Service: over every live revision, or over one when given."""
    return _service(owner, spec, owner.name, revision)


def track_service(owner: Owner, spec: ModelDeploymentSpec, track: Track, revision: str) -> Manifest:
    """`NAME-stable` / `NAME-canary`: the backends a traffic router splits between."""
    name = track_service_name(owner.name, track)
    return _service(owner, spec, name, revision, {LABEL_TRACK: track})


def _service(
    owner: Owner,
    spec: ModelDeploymentSpec,
    name: str,
    revision: str | None,
    extra_labels: dict[str, str] | None = None,
) -> Manifest:
    selector = {LABEL_DEPLOYMENT: owner.name}
    if revision is not None:
        selector[LABEL_REVISION] = revision
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(owner, name, common_labels(owner) | (extra_labels or {})),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": _service_ports(spec),
        },
    }
