"""Where a ModelDeployment's pods may run: the hardware mode, node selector and tolerations."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from modelrollout.api.types import ApiModel

__all__ = ["HardwareMode", "HardwareSpec", "Toleration"]


class HardwareMode(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=316)
    """Taint key the toleration applies to; empty matches all keys."""

    operator: Literal["Exists", "Equal"] = "Equal"
    """`Exists` or `Equal`."""

    value: str | None = Field(default=None, max_length=63)
    """Taint value to match when operator is `Equal`."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""


class HardwareSpec(ApiModel):
    """Where the model runs. `auto` picks CPU or GPU from the model's size and compute cost and
    checks that the cluster can schedule it."""

    mode: HardwareMode = HardwareMode.AUTO
    """`auto`, `cpu` or `gpu`."""

    node_selector: dict[str, str] | None = None
    """Explicit node selector; wins over the policy's choice."""

    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Explicit tolerations; win over the policy's choice."""

    allow_cpu_fallback: bool = True
    """When `auto` picks GPU but no GPU capacity is schedulable, serve on CPU instead of
    waiting."""


# --- rollout ---------------------------------------------------------------------------------
