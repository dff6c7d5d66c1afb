"""Configuration from the environment (prefix ``MODELSERVER_``)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _quota_cpus(root: Path) -> float | None:
    """CPUs granted by the cgroup CPU quota, or None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for sub in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # cgroup v1 mount names
        try:
            quota_us = int((root / sub / "cpu.cfs_quota_us").read_text())
            period_us = int((root / sub / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota_us <= 0 or period_us <= 0:
            return None
        return quota_us / period_us
    return None


def cgroup_cpu_count(root: Path = CGROUP_ROOT) -> int:
    """Cores this process may really use.

    onnxruntime sizes its thread pool from the host's cores, which oversubscribes a pod whose
    CPU limit is smaller; the quota (rounded up) and the affinity mask both bound it.
    """
    cpus = _affinity_cpus()
    quota = _quota_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELSERVER_", protected_namespaces=(), extra="ignore"
    )

    # The model
    model_name: str = "model"
    model_uri: str = ""
    # An S3-compatible, GCS or Azure endpoint other than the cloud's own; the S3 region.
    model_endpoint: str | None = None
    model_region: str | None = None
    model_sha256: str | None = None
    model_version: str = "1"
    revision: str = ""
    track: Literal["stable", "canary"] = "stable"

    # Network
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    # 0 serves /metrics on the main port only.
    metrics_port: int = Field(default=8082, ge=0, le=65535)
    # OIP v2 over gRPC (inference.GRPCInferenceService); 0, the default, serves REST only.
    grpc_port: int = Field(default=0, ge=0, le=65535)
    token_file: Path | None = None
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Parsed JSON takes several times its size: large tensors belong in the binary extension.
    max_json_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Decoded input tensors of one request (a BYTES element is counted at 256 bytes).
    max_request_memory_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    # Inference requests handled at once; more are answered 429 with Retry-After. 0: no cap.
    max_inflight_requests: int = Field(default=256, ge=0)
    retry_after_s: int = Field(default=1, ge=0)
    # Slow clients: a request's headers must arrive within header_timeout_s of its first byte
    # (or of the connection), its body within body_timeout_s of the headers.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=60.0, gt=0)
    # A Service balances connections, not requests: a connection's answers after this age
    # close it (HTTP `Connection: close`, gRPC GOAWAY), so kept-alive clients spread over pods
    # added since they connected (a canary, a scale-up). 0 keeps connections for ever.
    connection_max_age_s: float = Field(default=15.0, ge=0.0)

    # Runtime
    threads: int = Field(default_factory=cgroup_cpu_count, ge=1)
    execution_provider: Literal["cpu", "cuda"] = "cpu"
    batch_max_size: int = Field(default=1, ge=1)  # 1 disables dynamic batching
    batch_window_ms: float = Field(default=2.0, ge=0.0)
    # Models whose warm run takes at most this long run on the event loop, not a thread.
    inline_run_max_ms: float = Field(default=0.3, ge=0.0)

    # Output and input bucket counters (modelserver.distribution); false turns them off.
    distribution: bool = True
    # The reference profile (modelserver.reference): bins for the output and input counters.
    reference_uri: str = ""
    reference_sha256: str | None = None

    # Loading
    model_dir: Path = Path("/tmp/modelserver")
    download_max_bytes: int = Field(default=4 * 1024 * 1024 * 1024, gt=0)
    download_retries: int = Field(default=3, ge=0)
    download_timeout_s: float = Field(default=60.0, gt=0)

    # Shutdown: keep serving (not ready) for drain_delay_s so endpoints are updated, then stop
    # accepting and wait up to drain_timeout_s for in-flight requests.
    drain_delay_s: float = Field(default=0.0, ge=0.0)
    drain_timeout_s: float = Field(default=30.0, ge=0.0)

    # Test-only fault injection, off unless set.
    fault_error_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_latency_ms: float = Field(default=0.0, ge=0.0)
    # Faults begin this long after start: a version that passes its canary, then regresses.
    fault_after_s: float = Field(default=0.0, ge=0.0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("model_sha256", "reference_sha256")
    @classmethod
    def _check_sha256(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("a sha256 must be 64 hexadecimal characters")
        return value
