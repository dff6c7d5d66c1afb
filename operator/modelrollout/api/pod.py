"""Pod settings of the model server: what a platform team adds to the pods the operator
generates (ServiceAccount, pull secrets, affinity, priority, extra volumes, labels).

The operator's own fields win where safety needs them, and admission refuses a setting that
would collide with them rather than dropping it silently: probes and ports are not settable at
all; labels and annotations under `modelrollout.io/`, the volumes the operator mounts and the
paths it mounts them at are refused, naming the field. Large Kubernetes types (affinity, volume
sources, spread constraints) are passed through as written; the API server validates them when
the operator applies the Deployment.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, JsonValue, model_validator

from modelrollout.api.refs import SECRET_PATTERN
from modelrollout.api.types import NAME_PATTERN, ApiModel

# What the operator mounts into the model server, and where.
MODEL_DIR = "/models"
TMP_DIR = "/tmp"
TOKEN_DIR = "/var/run/secrets/modelrollout/token"
# A pvc:// or oci:// model, mounted read-only.
MODEL_STORE_DIR = "/mnt/model-store"
OPERATOR_VOLUMES = ("models", "tmp", "token", "model-store")
OPERATOR_PATHS = (MODEL_DIR, TMP_DIR, TOKEN_DIR, MODEL_STORE_DIR)

# Label keys the operator sets on every pod; selectors and Services depend on them.
OPERATOR_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
)
# Annotations the operator sets so any Prometheus finds the metrics port.
OPERATOR_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
RESERVED_PREFIX = "modelrollout.io/"

# Environment the operator gives the model server: which model, which bytes, which revision and
# track its metrics are labelled with, its ports, the reference profile its inputs are binned by.
# A user value would make a pod serve or report something other than its revision, so admission
# refuses these names.
OPERATOR_ENV = (
    "MODELSERVER_REVISION",
    "MODELSERVER_TRACK",
    "MODELSERVER_PORT",
    "MODELSERVER_METRICS_PORT",
    "MODELSERVER_GRPC_PORT",
    "MODELSERVER_TOKEN_FILE",
    "MODELSERVER_EXECUTION_PROVIDER",
    "MODELSERVER_REFERENCE_URI",
    "MODELSERVER_REFERENCE_SHA256",
)
OPERATOR_ENV_PREFIX = "MODELSERVER_MODEL_"


def reserved_env(name: str) -> bool:
    return name in OPERATOR_ENV or name.startswith(OPERATOR_ENV_PREFIX)


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


def _covers(path: str) -> str:
    """CEL: a mount at `m.mountPath` hides or shares `path` (equal, above it or below it)."""
    return (
        f"m.mountPath == '{path}' || m.mountPath.startsWith('{path}/') "
        f"|| '{path}'.startsWith(m.mountPath.endsWith('/') ? m.mountPath : m.mountPath + '/')"
    )


def _path_covers(mount: str, path: str) -> bool:
    prefix = mount if mount.endswith("/") else mount + "/"
    return mount == path or mount.startswith(path + "/") or path.startswith(prefix)


_ENV_RULE: JsonValue = {
    "rule": "!has(self.env) || self.env.all(e, !(e.name in "
    + _cel_list(OPERATOR_ENV)
    + f") && !e.name.startsWith('{OPERATOR_ENV_PREFIX}'))",
    "message": "spec.serving.env must not set the operator's variables "
    f"({OPERATOR_ENV_PREFIX}*, " + ", ".join(OPERATOR_ENV) + "); use the spec fields instead",
    "fieldPath": ".env",
    "reason": "FieldValueForbidden",
}
GRPC_PORT_MESSAGE = "spec.serving.grpc.port must differ from spec.serving.port and metricsPort"
SERVING_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.port) || !has(self.metricsPort) || self.port != self.metricsPort",
        "message": "spec.serving.port and spec.serving.metricsPort must differ",
        "fieldPath": ".metricsPort",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.grpc) || !has(self.grpc.port) || "
        "((!has(self.port) || self.grpc.port != self.port) && "
        "(!has(self.metricsPort) || self.grpc.port != self.metricsPort))",
        "message": GRPC_PORT_MESSAGE,
        "fieldPath": ".grpc.port",
        "reason": "FieldValueInvalid",
    },
    _ENV_RULE,
]
"""CEL rules of spec.serving (declared here beside the names they protect)."""


class LocalObjectReference(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=SECRET_PATTERN)
    """Name of the object in the ModelDeployment's namespace."""


class OptionalRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=SECRET_PATTERN)
    """Name of the Secret or ConfigMap."""

    optional: bool | None = None
    """Start the pod even when it is missing."""


class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as environment variables. Variables the operator
    sets win over them (explicit env wins over envFrom in Kubernetes)."""

    prefix: str | None = Field(default=None, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    """Prepended to every key."""

    secret_ref: OptionalRef | None = None
    """A Secret."""

    config_map_ref: OptionalRef | None = None
    """A ConfigMap."""

    @model_validator(mode="after")
    def _one(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("spec.pod.envFrom: each entry needs one of secretRef, configMapRef")
        return self


class Volume(ApiModel):
    """A pod volume, as in a Pod spec (`name` plus one source such as `configMap`, `secret`,
    `persistentVolumeClaim`, `emptyDir` or `csi`)."""

    # The volume source is kept as written (a free-form object in the CRD).
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Volume name, referenced by `volumeMounts`."""


class VolumeMount(ApiModel):
    """Where a volume of `spec.pod.volumes` appears in the model server container."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Name of a volume in `spec.pod.volumes`."""

    mount_path: str = Field(min_length=1, max_length=1024, pattern=r"^/")
    """Absolute path in the container."""

    sub_path: str | None = Field(default=None, max_length=1024)
    """Sub-path inside the volume."""

    read_only: bool = True
    """Mounted read-only unless set to false."""


def _pod_rules() -> list[JsonValue]:
    mounts_clear = " || ".join(f"({_covers(p)})" for p in OPERATOR_PATHS)
    return [
        {
            "rule": "!has(self.labels) || self.labels.all(k, !k.startsWith('modelrollout.io/') "
            f"&& !(k in {_cel_list(OPERATOR_LABELS)}))",
            "message": "spec.pod.labels must not set modelrollout.io/ keys or the operator's "
            "app.kubernetes.io/ labels",
            "fieldPath": ".labels",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": "!has(self.annotations) || self.annotations.all(k, "
            f"!k.startsWith('modelrollout.io/') && !(k in {_cel_list(OPERATOR_ANNOTATIONS)}))",
            "message": "spec.pod.annotations must not set modelrollout.io/ keys or the "
            "operator's prometheus.io/ annotations",
            "fieldPath": ".annotations",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": "!has(self.volumes) || self.volumes.all(v, "
            f"!(v.name in {_cel_list(OPERATOR_VOLUMES)}))",
            "message": "spec.pod.volumes must not use the operator's volume names "
            + ", ".join(OPERATOR_VOLUMES),
            "fieldPath": ".volumes",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": f"!has(self.volumeMounts) || self.volumeMounts.all(m, !({mounts_clear}))",
            "message": "spec.pod.volumeMounts must not mount over the model paths "
            f"{MODEL_DIR} and {MODEL_STORE_DIR} or the operator's {TMP_DIR} and {TOKEN_DIR}",
            "fieldPath": ".volumeMounts",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": "!has(self.volumeMounts) || self.volumeMounts.all(m, "
            "has(self.volumes) && self.volumes.exists(v, v.name == m.name))",
            "message": "spec.pod.volumeMounts must name a volume of spec.pod.volumes",
            "fieldPath": ".volumeMounts",
            "reason": "FieldValueInvalid",
        },
    ]


class PodSettings(ApiModel):
    """Settings merged into the model server's pods. Every change to them is a new revision,
    rolled out (and judged) like a new model: a ServiceAccount that cannot read the model
    store fails as a canary, not in every pod at once."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _pod_rules()})

    service_account_name: str | None = Field(default=None, max_length=253, pattern=SECRET_PATTERN)
    """ServiceAccount the pods run as (for workload identity to a model store, for example)."""

    automount_service_account_token: bool = False
    """Mount the ServiceAccount's API token into the pods. Off: the model server never talks
    to the Kubernetes API."""

    image_pull_secrets: list[LocalObjectReference] | None = Field(default=None, max_length=16)
    """Secrets for pulling the model server image from a private registry."""

    env_from: list[EnvFromSource] | None = Field(default=None, max_length=16)
    """Whole Secrets or ConfigMaps as environment variables of the model server."""

    volumes: list[Volume] | None = Field(default=None, max_length=32)
    """Extra pod volumes (as in a Pod spec)."""

    volume_mounts: list[VolumeMount] | None = Field(default=None, max_length=32)
    """Where the extra volumes appear in the model server container."""

    affinity: dict[str, Any] | None = None
    """Node and pod affinity (as in a Pod spec). The hardware policy's node selector still
    applies; both must hold."""

    topology_spread_constraints: list[dict[str, Any]] | None = Field(default=None, max_length=8)
    """How a revision's replicas spread (as in a Pod spec). Absent: across nodes and zones,
    as a preference (`ScheduleAnyway`), so a small cluster still schedules them. An empty list
    turns spreading off."""

    priority_class_name: str | None = Field(default=None, max_length=253, pattern=SECRET_PATTERN)
    """PriorityClass of the pods."""

    labels: dict[str, str] | None = Field(default=None, max_length=64)
    """Extra pod labels. Keys under `modelrollout.io/` and the operator's `app.kubernetes.io/`
    labels are refused."""

    annotations: dict[str, str] | None = Field(default=None, max_length=64)
    """Extra pod annotations (for example a mesh sidecar's). Keys under `modelrollout.io/` and
    the operator's `prometheus.io/` annotations are refused."""

    @model_validator(mode="after")
    def _no_collisions(self) -> PodSettings:
        for key in self.labels or {}:
            if key.startswith(RESERVED_PREFIX) or key in OPERATOR_LABELS:
                raise ValueError(f"spec.pod.labels: {key} is set by the operator")
        for key in self.annotations or {}:
            if key.startswith(RESERVED_PREFIX) or key in OPERATOR_ANNOTATIONS:
                raise ValueError(f"spec.pod.annotations: {key} is set by the operator")
        volumes = {v.name for v in self.volumes or []}
        for v in volumes & set(OPERATOR_VOLUMES):
            raise ValueError(f"spec.pod.volumes: the name {v} is used by the operator")
        for m in self.volume_mounts or []:
            if m.name not in volumes:
                raise ValueError(f"spec.pod.volumeMounts: {m.name} is not in spec.pod.volumes")
            for path in OPERATOR_PATHS:
                if _path_covers(m.mount_path, path):
                    raise ValueError(
                        f"spec.pod.volumeMounts: {m.mount_path} overlaps the operator's {path}"
                    )
        return self
