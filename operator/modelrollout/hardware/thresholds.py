"""Per-cluster hardware policy settings: the bounds between tiers and each tier's pod shape.

Plain configuration (operator settings, Helm values); the policy that applies them is
hardware/policy.py, whose docstring says where the default numbers come from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .capacity import Toleration

__all__ = [
    "GPU_NODE_LABEL",
    "GPU_RESOURCE",
    "GPU_TOLERATION",
    "ExecutionProvider",
    "GiB",
    "HardwareThresholds",
    "MiB",
    "Mode",
    "Tier",
    "TierSpec",
]

Tier = Literal["cpu-small", "cpu-large", "gpu"]
Mode = Literal["auto", "cpu", "gpu"]
ExecutionProvider = Literal["cpu", "cuda"]

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
GPU_NODE_LABEL = "nvidia.com/gpu.present"

MiB = 2**20
GiB = 2**30


class TierSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: float = Field(gt=0, description="CPU request in cores; also onnxruntime intra-op threads")
    cpu_limit: float | None = Field(
        default=None, description="CPU limit in cores; None means equal to the request"
    )
    memory_base_bytes: int = Field(ge=0, description="process, runtime and server overhead")
    memory_per_weight_byte: float = Field(ge=0, description="memory per byte of model weights")
    memory_limit_factor: float = Field(default=1.0, ge=1.0, description="limit / request")
    gpus: int = Field(default=0, ge=0, description="GPUs per replica")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    execution_provider: ExecutionProvider = "cpu"


def _default_gpu_tier() -> TierSpec:
    return TierSpec(
        cpu=2,  # host side: input decoding and batching while the GPU computes
        memory_base_bytes=2 * GiB,  # CUDA context, cuBLAS/cuDNN libraries in host memory
        memory_per_weight_byte=1.5,  # weights pass through host memory on their way to the GPU
        gpus=1,
        node_selector={GPU_NODE_LABEL: "true"},
        tolerations=(GPU_TOLERATION,),
        execution_provider="cuda",
    )


class HardwareThresholds(BaseModel):
    """Per-cluster policy settings (operator settings or a ConfigMap). See module docs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_large_min_gflops: float = Field(
        default=1.0, ge=0, description="from here a sample takes over ~10 ms on one core"
    )
    cpu_large_min_weight_bytes: int = Field(
        default=256 * MiB, ge=0, description="from here a pass is memory-bandwidth bound"
    )
    gpu_min_gflops: float = Field(
        default=20.0, ge=0, description="~230 ms/sample on one core, 60-80 ms on four"
    )
    gpu_min_parameters: int = Field(
        default=250_000_000, ge=0, description="transformer-sized: every step reads all weights"
    )
    gpu_min_weight_bytes: int = Field(
        default=1 * GiB, ge=0, description="same bound in bytes (268M float32 parameters)"
    )
    allow_cpu_fallback: bool = Field(
        default=True,
        description="in auto mode, run on CPU when the GPU tier does not fit the cluster",
    )
    capacity_check: bool = Field(
        default=True,
        description="read nodes and every namespace's pods to check a GPU revision fits; off "
        "where the operator may not read them (the revision is then placed unchecked)",
    )
    gpu_resource: str = GPU_RESOURCE
    cpu_small: TierSpec = TierSpec(cpu=1, memory_base_bytes=256 * MiB, memory_per_weight_byte=2.0)
    cpu_large: TierSpec = TierSpec(cpu=4, memory_base_bytes=512 * MiB, memory_per_weight_byte=2.0)
    gpu: TierSpec = Field(default_factory=_default_gpu_tier)

    def tier(self, name: Tier) -> TierSpec:
        return {"cpu-small": self.cpu_small, "cpu-large": self.cpu_large, "gpu": self.gpu}[name]
