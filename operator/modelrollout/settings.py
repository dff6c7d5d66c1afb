"""Operator settings, from MODELROLLOUT_* environment variables (or a .env file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelrollout.hardware.thresholds import HardwareThresholds
from modelrollout.tenancy import TenantPolicy


class NotifierConfig(BaseModel):
    """One notifier ModelDeployments may select by name (`spec.notify`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """The name specs select it by."""

    type: Literal["webhook", "slack"] = "webhook"
    """webhook: the documented JSON payload; slack: a Slack incoming-webhook message."""

    url_file: Path | None = None
    """File holding the URL (a mounted Secret), read at each delivery."""

    url: str | None = None
    """The URL itself, for an operator run outside a cluster; the chart always uses url_file."""

    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    """Time one delivery attempt may take."""

    @model_validator(mode="after")
    def _one_url(self) -> NotifierConfig:
        if (self.url is None) == (self.url_file is None):
            raise ValueError(f"notifier {self.name}: give exactly one of url and url_file")
        return self


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELROLLOUT_", env_file=".env", extra="ignore")

    kubeconfig: Path | None = None
    """Kubeconfig to use. Unset: in-cluster config, then $KUBECONFIG, then ~/.kube/config."""

    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch, as a JSON list such as ["ml-a","ml-b"]. Empty: the whole cluster."""

    serving_image: str = "ghcr.io/modelrollout/modelserver:0.1.0"
    """Model server image for ModelDeployments that don't name one."""

    serving_image_gpu: str | None = None
    """Model server image for the GPU tier (onnxruntime-gpu, CUDA from the wheels: the serving
    image built with ONNXRUNTIME=onnxruntime-gpu), for ModelDeployments that don't name an
    image. Unset: the GPU tier runs `serving_image`, whose server then stays unready for want
    of CUDA."""

    image_volumes: bool = False
    """The cluster mounts OCI images as volumes (Kubernetes 1.33+ with the ImageVolume feature
    gate): oci:// models are mounted read-only instead of copied by an init container."""

    prometheus_url: str = "http://prometheus-server.monitoring.svc:9090"
    """Prometheus the canary analysis queries unless a ModelDeployment names its own."""

    prometheus_token_file: Path | None = None
    """File with a bearer token for that Prometheus (a mounted Secret), read at each analysis so
    a rotated token is picked up. Never sent to a Prometheus a ModelDeployment names."""

    resync_seconds: float = Field(default=300.0, gt=0)
    """Period of the level-based resync of every ModelDeployment: a safety net. Changes to an
    object, its children and its pods reach the operator through watches within a second."""

    workers: int = Field(default=16, ge=1, le=256)
    """ModelDeployments reconciled at the same time (the work queue's workers)."""

    shard_index: int = Field(default=0, ge=0)
    """This replica's shard, from 0 to shard_count - 1."""

    shard_count: int = Field(default=1, ge=1)
    """Shards the ModelDeployments are split into by a hash of namespace/name, one operator
    (or one peered group) per shard. 1: no sharding."""

    metrics_port: int = Field(default=8000, ge=0, le=65535)
    """Port of the operator's own Prometheus metrics; 0 disables them."""

    health_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the liveness endpoint (/healthz); 0 disables it."""

    bind_address: str = "0.0.0.0"
    """Address the metrics and health endpoints listen on."""

    peering: str | None = None
    """kopf peering name for running more than one replica (leader election). Unset: standalone."""

    hardware: HardwareThresholds = Field(default_factory=HardwareThresholds)
    """Hardware policy thresholds and tier shapes, as JSON in MODELROLLOUT_HARDWARE, e.g.
    {"gpu_min_gflops": 10, "allow_cpu_fallback": false}. See docs/hardware.md."""

    policy: TenantPolicy = Field(default_factory=TenantPolicy)
    """What tenants' ModelDeployments may make the operator fetch, query and spend, as JSON in
    MODELROLLOUT_POLICY, e.g. {"modelHosts": ["models.example.com"]}. See docs/security.md."""

    peering_priority: int | None = Field(default=None, ge=0)
    """Priority among peered replicas: the highest runs, the others stand by. Unset: random at
    start, so replicas never tie (replicas of equal priority would all pause)."""

    hook_concurrency: int = Field(default=8, ge=1, le=256)
    """Rollout hooks (HTTP calls, Jobs being waited for) run at once across every
    ModelDeployment; more wait their turn."""

    notifiers: list[NotifierConfig] = Field(default_factory=list)
    """Notifiers ModelDeployments may select by name, as JSON in MODELROLLOUT_NOTIFIERS, e.g.
    [{"name": "ml-slack", "type": "slack", "url_file": "/var/run/secrets/slack/url"}]."""

    notify_queue_size: int = Field(default=256, ge=1, le=100_000)
    """Notifications waiting for delivery at most; past it they wait in status for later."""

    peering_lifetime_seconds: int = Field(default=20, ge=10, le=600)
    """How long a replica's peering keep-alive stays valid; it is renewed 5-10 s before it ends.
    A standby takes over within this long of the active replica dying without a clean exit
    (a SIGKILL, a lost node): kopf's own default, 60 s, would hold rollouts that long."""
    canary_url_template: str = "http://{service}.{namespace}.svc:{port}"
    """How the operator reaches a canary's Service for synthetic traffic. Inside the cluster the
    default; an operator run outside it names a way in (a port-forward, a gateway)."""

    log_format: str = Field(default="plain", pattern="^(plain|json)$")
    """Log format: plain or json."""

    @model_validator(mode="after")
    def _shard_in_range(self) -> OperatorSettings:
        if self.shard_index >= self.shard_count:
            raise ValueError(
                f"shard_index {self.shard_index} is not below shard_count {self.shard_count}"
            )
        return self
