"""Hardware policy: from a model's size and compute cost to a tier and pod resources. Pure.

Tiers, cheapest first: `cpu-small` (1 core), `cpu-large` (4 cores), `gpu` (1 GPU). The
default bounds come from measurements with onnxruntime 1.32 on one AMD EPYC core, one
intra-op thread:
- dense compute runs at about 85-90 GFLOP/s per core (a ResNet-18-shaped CNN, 3.6 GFLOPs,
  took 40 ms; a BERT-base-shaped encoder at 128 tokens, 22 GFLOPs, 266 ms);
- a transformer step streams every weight once: about 20 GB/s per core;
- a CPU session opened from a file peaks at 1.56x the weight bytes above a ~50 MiB process
  (434 MB model: 694 MiB peak RSS).

Hence:
- cpu-large from 1 GFLOP/sample (over ~10 ms on one core, latency starts to show) or from
  256 MiB of weights (memory-bandwidth bound, and over 600 MiB of memory per replica);
- gpu from 20 GFLOPs/sample (~230 ms on one core, still ~60-80 ms on four), from 250M
  parameters or from 1 GiB of weights (each step reads all of it; a GPU reads 15-40x faster);
- memory request = base + 2x weight bytes: the measured 1.56x load peak plus headroom for
  activations and the arena; limits equal requests, so replicas get Guaranteed QoS and
  predictable latency;
- onnxruntime's intra-op threads follow the CPU request (its default follows the host's
  cores, not the container's quota, which over-subscribes and throttles).

A ModelDeployment's own choices always win: `mode: cpu|gpu` fixes the tier family, explicit
requests/limits replace the computed ones key by key, and its node selector and tolerations
are added to the tier's (its values win on the same key).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Protocol

from modelrollout.api.quantity import Quantity, format_bytes, format_quantity, parse_quantity

from .capacity import CapacityReport, PodShape, Toleration
from .thresholds import (
    GPU_NODE_LABEL,
    GPU_RESOURCE,
    ExecutionProvider,
    GiB,
    HardwareThresholds,
    MiB,
    Mode,
    Tier,
)


class ModelComplexity(Protocol):
    """What the policy reads from a profile (ModelProfile and ProfileSummary both fit)."""

    @property
    def parameter_count(self) -> int: ...
    @property
    def weight_bytes(self) -> int: ...
    @property
    def flops_per_sample(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """The three numbers the policy needs, e.g. rebuilt from a status without re-profiling."""

    parameter_count: int
    weight_bytes: int
    flops_per_sample: int


@dataclass(frozen=True, slots=True)
class HardwareRequest:
    """The ModelDeployment's `hardware` stanza, already validated."""

    mode: Mode = "auto"
    requests: Mapping[str, Quantity] = field(default_factory=dict)
    limits: Mapping[str, Quantity] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    allow_cpu_fallback: bool | None = None  # None: the cluster default, and only in auto mode


@dataclass(frozen=True, slots=True)
class HardwareDecision:
    tier: Tier
    auto_tier: Tier  # what the thresholds alone would pick
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    node_selector: Mapping[str, str]
    tolerations: tuple[Toleration, ...]
    execution_provider: ExecutionProvider
    intra_op_threads: int
    inter_op_threads: int
    reason: str
    overridden: tuple[str, ...] = ()  # which parts the spec set: mode, requests, limits...
    fallback: bool = False  # condition HardwareFallback
    insufficient_capacity: bool = False  # condition InsufficientCapacity; do not roll out
    scale_down_first: bool = False  # no room to surge: remove an old pod before adding one
    gpu_resource: str = GPU_RESOURCE  # the cluster's GPU resource name (thresholds.gpu_resource)

    @property
    def gpu_count(self) -> int:
        q = self.limits.get(self.gpu_resource) or self.requests.get(self.gpu_resource)
        return int(parse_quantity(q)) if q else 0

    @property
    def condition_reason(self) -> str | None:
        if self.insufficient_capacity:
            return "InsufficientCapacity"
        if self.fallback:
            return "HardwareFallback"
        return None

    @property
    def onnxruntime_providers(self) -> tuple[str, ...]:
        if self.execution_provider == "cuda":
            return ("CUDAExecutionProvider", "CPUExecutionProvider")
        return ("CPUExecutionProvider",)

    def pod_shape(self) -> PodShape:
        return PodShape(dict(self.requests), dict(self.node_selector), self.tolerations)

    def container_resources(self) -> dict[str, dict[str, str]]:
        return {"requests": dict(self.requests), "limits": dict(self.limits)}


def _size(n: float) -> str:
    return f"{n / GiB:.3g} GiB" if n >= GiB else f"{n / MiB:.3g} MiB"


def _params(n: int) -> str:
    return f"{n / 1e6:.1f}M parameters" if n >= 100_000 else f"{n} parameters"


def _gflops(flops: int) -> str:
    g = flops / 1e9
    return f"{g:.3g} GFLOPs/sample"


def auto_tier(
    profile: ModelComplexity, th: HardwareThresholds, allow_gpu: bool = True
) -> tuple[Tier, str]:
    """The tier the thresholds pick, and the numbers that decided it."""
    gflops = profile.flops_per_sample / 1e9
    p, w = profile.parameter_count, profile.weight_bytes
    if allow_gpu:
        hits = []
        if gflops >= th.gpu_min_gflops:
            hits.append(f"{_gflops(profile.flops_per_sample)} >= {th.gpu_min_gflops:g}")
        if p >= th.gpu_min_parameters:
            hits.append(f"{_params(p)} >= {th.gpu_min_parameters / 1e6:g}M")
        if w >= th.gpu_min_weight_bytes:
            hits.append(f"{_size(w)} of weights >= {_size(th.gpu_min_weight_bytes)}")
        if hits:
            return "gpu", "; ".join(hits)
    hits = []
    if gflops >= th.cpu_large_min_gflops:
        hits.append(f"{_gflops(profile.flops_per_sample)} >= {th.cpu_large_min_gflops:g}")
    if w >= th.cpu_large_min_weight_bytes:
        hits.append(f"{_size(w)} of weights >= {_size(th.cpu_large_min_weight_bytes)}")
    below_gpu = (
        f"below the gpu bounds ({th.gpu_min_gflops:g} GFLOPs/sample, "
        f"{th.gpu_min_parameters / 1e6:g}M parameters, {_size(th.gpu_min_weight_bytes)})"
    )
    if hits:
        return "cpu-large", "; ".join(hits) + (f", {below_gpu}" if allow_gpu else "")
    return "cpu-small", (
        f"{_params(p)}, {_size(w)} of weights, {_gflops(profile.flops_per_sample)}: below the "
        f"cpu-large bounds ({th.cpu_large_min_gflops:g} GFLOPs/sample, "
        f"{_size(th.cpu_large_min_weight_bytes)} of weights)"
    )


def _merge_resources(
    computed_req: dict[str, Fraction],
    computed_lim: dict[str, Fraction],
    req: HardwareRequest,
) -> tuple[dict[str, Fraction], dict[str, Fraction]]:
    """Explicit values replace computed ones per key; the other side follows if it would clash."""
    requests = dict(computed_req)
    limits = dict(computed_lim)
    explicit_req = {k: parse_quantity(v) for k, v in req.requests.items()}
    explicit_lim = {k: parse_quantity(v) for k, v in req.limits.items()}
    requests.update(explicit_req)
    limits.update(explicit_lim)
    for k in set(requests) & set(limits):
        if limits[k] >= requests[k]:
            continue
        if k in explicit_req and k not in explicit_lim:
            limits[k] = requests[k]
        elif k in explicit_lim and k not in explicit_req:
            requests[k] = limits[k]
    # Extended resources (GPUs) cannot be overcommitted: the API server wants request == limit.
    for k in set(explicit_req) | set(explicit_lim):
        if k not in ("cpu", "memory", "ephemeral-storage") and "." in k:
            v = explicit_lim.get(k, explicit_req.get(k))
            if v is not None:
                requests[k] = limits[k] = v
    return requests, limits


def _format(resources: Mapping[str, Fraction]) -> dict[str, str]:
    return {k: format_quantity(k, v) for k, v in resources.items()}


def choose_hardware(
    profile: ModelComplexity,
    thresholds: HardwareThresholds | None = None,
    request: HardwareRequest | None = None,
) -> HardwareDecision:
    """Pick the tier and pod resources for a model; the request's explicit choices win."""
    th = thresholds or HardwareThresholds()
    req = request or HardwareRequest()
    auto, why = auto_tier(profile, th)
    if req.mode == "auto":
        return _build(profile, th, req, auto, auto, f"{auto}: {why}")
    if req.mode == "gpu":
        reason = f"gpu: mode gpu set in the spec (auto would pick {auto}: {why})"
        return _build(profile, th, req, "gpu", auto, reason, ("mode",))
    tier, why_cpu = auto_tier(profile, th, allow_gpu=False)
    reason = f"{tier}: mode cpu set in the spec; {why_cpu}"
    return _build(profile, th, req, tier, auto, reason, ("mode",))


def _build(
    profile: ModelComplexity,
    th: HardwareThresholds,
    req: HardwareRequest,
    tier: Tier,
    auto: Tier,
    reason: str,
    overridden: tuple[str, ...] = (),
) -> HardwareDecision:
    spec = th.tier(tier)
    memory = spec.memory_base_bytes + spec.memory_per_weight_byte * profile.weight_bytes
    cpu = Fraction(spec.cpu).limit_denominator(1000)
    cpu_limit = Fraction(spec.cpu_limit).limit_denominator(1000) if spec.cpu_limit else cpu
    req_q: dict[str, Fraction] = {"cpu": cpu, "memory": Fraction(math.ceil(memory))}
    lim_q: dict[str, Fraction] = {
        "cpu": cpu_limit,
        "memory": Fraction(math.ceil(memory * spec.memory_limit_factor)),
    }
    if spec.gpus:
        req_q[th.gpu_resource] = lim_q[th.gpu_resource] = Fraction(spec.gpus)
    sizing = (
        f"memory {format_bytes(req_q['memory'])} = {_size(spec.memory_base_bytes)} + "
        f"{spec.memory_per_weight_byte:g} x {_size(profile.weight_bytes)} of weights"
    )
    changed = list(overridden)
    if req.requests or req.limits:
        req_q, lim_q = _merge_resources(req_q, lim_q, req)
        changed += [n for n, v in (("requests", req.requests), ("limits", req.limits)) if v]
        sizing += "; resources set in the spec win"
    threads = max(1, math.floor(req_q.get("cpu", cpu)))
    selector = {**spec.node_selector, **req.node_selector}
    tolerations = tuple(dict.fromkeys((*spec.tolerations, *req.tolerations)))
    if req.node_selector:
        changed.append("nodeSelector")
    if req.tolerations:
        changed.append("tolerations")
    gpus = lim_q.get(th.gpu_resource, Fraction(0))
    provider: ExecutionProvider = "cuda" if gpus > 0 else spec.execution_provider
    return HardwareDecision(
        tier=tier,
        auto_tier=auto,
        requests=_format(req_q),
        limits=_format(lim_q),
        node_selector=selector,
        tolerations=tolerations,
        execution_provider=provider,
        intra_op_threads=threads,
        inter_op_threads=1,
        reason=f"{reason}; {sizing}; {threads} intra-op thread{'s' if threads > 1 else ''}",
        overridden=tuple(changed),
        gpu_resource=th.gpu_resource,
    )


def fallback_allowed(request: HardwareRequest, thresholds: HardwareThresholds) -> bool:
    """Explicit `mode: gpu` means GPU or nothing, unless the spec itself allows fallback."""
    if request.allow_cpu_fallback is not None:
        return request.allow_cpu_fallback
    return thresholds.allow_cpu_fallback and request.mode == "auto"


def _gpu_label(key: str, th: HardwareThresholds) -> bool:
    """A node label that only GPU nodes carry: the tier's own, or one named after the GPU
    resource (GPU feature discovery's `nvidia.com/gpu.present`, `nvidia.com/gpu.product`...)."""
    return (
        key in (GPU_NODE_LABEL, th.gpu_resource)
        or key in th.gpu.node_selector
        or key.startswith(f"{th.gpu_resource}.")
    )


def without_gpu(req: HardwareRequest, th: HardwareThresholds) -> HardwareRequest:
    """The spec's request for a CPU fallback: what asks for a GPU or a GPU node goes (the GPU
    resource, GPU node labels, tolerations of the GPU taint), so a fallen-back pod neither
    waits for a GPU nor sits on a GPU node; the rest of the spec's choices stand."""
    gpu_taints = {th.gpu_resource} | {t.key for t in th.gpu.tolerations if t.key}
    return replace(
        req,
        mode="cpu",
        requests={k: v for k, v in req.requests.items() if k != th.gpu_resource},
        limits={k: v for k, v in req.limits.items() if k != th.gpu_resource},
        node_selector={k: v for k, v in req.node_selector.items() if not _gpu_label(k, th)},
        tolerations=tuple(t for t in req.tolerations if t.key not in gpu_taints),
    )


def apply_capacity(
    decision: HardwareDecision,
    capacity: CapacityReport,
    profile: ModelComplexity,
    thresholds: HardwareThresholds | None = None,
    request: HardwareRequest | None = None,
) -> HardwareDecision:
    """Adjust a decision to what the cluster can schedule (capacity for decision.pod_shape()).

    Fits: the decision stands, scale-down-first when there is no room to surge. GPU that does
    not fit: the CPU tier the thresholds pick, flagged `fallback`, when allowed; otherwise
    `insufficient_capacity`. A CPU decision that does not fit is `insufficient_capacity` too
    (check the fallback decision's own capacity again: `plan_hardware` does both steps).
    """
    th = thresholds or HardwareThresholds()
    req = request or HardwareRequest()
    if capacity.fits:
        return replace(decision, scale_down_first=not capacity.surge_fits)
    short = capacity.summary()
    if decision.tier == "gpu" and not decision.fallback and fallback_allowed(req, th):
        cpu_req = without_gpu(req, th)
        tier, why = auto_tier(profile, th, allow_gpu=False)
        reason = f"gpu does not fit: {short}; falling back to {tier}: {why}"
        cpu = _build(profile, th, cpu_req, tier, decision.auto_tier, reason, decision.overridden)
        return replace(cpu, fallback=True)
    return replace(
        decision,
        insufficient_capacity=True,
        reason=f"{decision.tier} does not fit: {short}; chosen because {decision.reason}",
    )


def plan_hardware(
    profile: ModelComplexity,
    thresholds: HardwareThresholds | None,
    request: HardwareRequest | None,
    capacity_for: Callable[[PodShape], CapacityReport],
) -> HardwareDecision:
    """choose_hardware, then capacity checks (for the fallback tier too). Pure when
    `capacity_for` is, e.g. `lambda shape: compute_capacity(nodes, pods, shape, replicas)`."""
    decision = choose_hardware(profile, thresholds, request)
    decision = apply_capacity(
        decision, capacity_for(decision.pod_shape()), profile, thresholds, request
    )
    if decision.fallback:
        decision = apply_capacity(
            decision, capacity_for(decision.pod_shape()), profile, thresholds, request
        )
    return decision
