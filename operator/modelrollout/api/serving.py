"""The model server container of a ModelDeployment: image, ports, environment, resources,
threads, batching and auth (spec.serving)."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from modelrollout.api.pod import GRPC_PORT_MESSAGE, OPERATOR_ENV, OPERATOR_ENV_PREFIX, SERVING_RULES
from modelrollout.api.pod import reserved_env as _reserved_env
from modelrollout.api.refs import AuthSpec, EnvVarSource
from modelrollout.api.types import ApiModel, Duration, Quantity

__all__ = ["BatchingSpec", "EnvVar", "GrpcSpec", "Resources", "ServingSpec"]


class EnvVar(ApiModel):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    """Environment variable name."""

    value: str = Field(default="", max_length=32768)
    """Environment variable value. Secrets go in `valueFrom` instead, never here."""

    value_from: EnvVarSource | None = None
    """The value from a key of a Secret or ConfigMap (the pod reads it; the operator never
    does)."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value and self.value_from is not None:
            raise ValueError(f"env {self.name}: give value or valueFrom, not both")
        return self


class Resources(ApiModel):
    """Compute resources of the serving container, as in a Pod spec."""

    requests: dict[str, Quantity] | None = None
    """Minimum resources, for example `{cpu: 500m, memory: 1Gi}`."""

    limits: dict[str, Quantity] | None = None
    """Maximum resources, for example `{memory: 2Gi, nvidia.com/gpu: "1"}`."""


class BatchingSpec(ApiModel):
    """Dynamic batching in the model server (only for models with a dynamic batch axis)."""

    max_batch_size: int = Field(default=32, ge=1, le=1024)
    """Largest batch the server assembles from concurrent requests."""

    window: Duration = "2ms"
    """How long the server waits for more requests before running a partial batch."""


class GrpcSpec(ApiModel):
    """The Open Inference Protocol v2 over gRPC (`inference.GRPCInferenceService`), beside
    REST: the same model, auth token (in the `authorization` metadata), limits and metrics."""

    port: int = Field(default=8081, ge=1, le=65535)
    """Port of the gRPC endpoint, on the pods and on the Services (port name `grpc`)."""


class ServingSpec(ApiModel):
    """How the model server container runs."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SERVING_RULES})

    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Model server image. Defaults to the operator's configured serving image. A change starts
    a new revision."""

    port: int = Field(default=8080, ge=1, le=65535)
    """Port of the Open Inference Protocol v2 REST endpoint."""

    metrics_port: int = Field(default=9090, ge=1, le=65535)
    """Port of the Prometheus metrics endpoint."""

    grpc: GrpcSpec | None = None
    """The gRPC endpoint. Off when absent; `grpc: {}` serves it on port 8081. Probes stay on
    the REST port."""

    resources: Resources | None = None
    """Explicit resources. When set they win over the hardware policy's choice."""

    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment variables for the model server. The operator's own (which model,
    which revision, which ports) are refused: they are set from the spec's fields."""

    threads: int | None = Field(default=None, ge=1, le=256)
    """onnxruntime intra-op threads. Defaults to the CPU request of the chosen hardware tier."""

    batching: BatchingSpec | None = None
    """Dynamic batching. Off when absent."""

    auth: AuthSpec | None = None
    """Require a bearer token on inference requests. Off when absent."""

    @model_validator(mode="after")
    def _no_collisions(self) -> ServingSpec:
        if self.port == self.metrics_port:
            raise ValueError("spec.serving.port and spec.serving.metricsPort must differ")
        if self.grpc is not None and self.grpc.port in (self.port, self.metrics_port):
            raise ValueError(GRPC_PORT_MESSAGE)
        for var in self.env:
            if _reserved_env(var.name):
                raise ValueError(
                    f"spec.serving.env: {var.name} is set by the operator "
                    f"({OPERATOR_ENV_PREFIX}*, {', '.join(OPERATOR_ENV)})"
                )
        return self
