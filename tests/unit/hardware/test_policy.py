"""Hardware policy: tiers from model profiles, spec overrides, and capacity fallback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from modelrollout.api.quantity import parse_quantity
from modelrollout.hardware.capacity import (
    CapacityReport,
    NodeInfo,
    PodInfo,
    PodShape,
    Taint,
    Toleration,
    compute_capacity,
)
from modelrollout.hardware.policy import (
    HardwareDecision,
    HardwareRequest,
    ProfileSummary,
    apply_capacity,
    choose_hardware,
    plan_hardware,
)
from modelrollout.hardware.profiler import ModelProfile, profile_stream
from modelrollout.hardware.thresholds import GPU_TOLERATION, HardwareThresholds

from . import onnxgen
from .conftest import profile_uri

MiB, GiB = 2**20, 2**30
GPU = "nvidia.com/gpu"

TINY = ProfileSummary(parameter_count=20, weight_bytes=80, flops_per_sample=40)
TRANSFORMER_300M = ProfileSummary(300_000_000, 1_200_000_000, 600_000_000)
TH = HardwareThresholds()


@pytest.fixture(scope="module")
def mlp_profile() -> ModelProfile:
    return profile_stream([onnxgen.mlp().model().SerializeToString()])


@pytest.fixture(scope="module")
def cnn_profile(resnet_file: tuple[Path, onnxgen.GraphBuilder]) -> ModelProfile:
    return profile_uri(str(resnet_file[0]), cache=None)


# --- tiers from generated models -------------------------------------------------------------


def test_mlp_is_cpu_small(mlp_profile: ModelProfile) -> None:
    d = choose_hardware(mlp_profile, TH)
    assert d.tier == d.auto_tier == "cpu-small"
    assert d.requests == d.limits == {"cpu": "1", "memory": "258Mi"}  # 256 MiB + 2 x 0.8 MB
    assert (d.intra_op_threads, d.inter_op_threads) == (1, 1)
    assert d.execution_provider == "cpu"
    assert d.onnxruntime_providers == ("CPUExecutionProvider",)
    assert d.node_selector == {}
    assert d.tolerations == ()
    assert "below the cpu-large bounds" in d.reason
    assert "0.2M parameters" in d.reason


def test_resnet_like_cnn_is_cpu_large(cnn_profile: ModelProfile) -> None:
    d = choose_hardware(cnn_profile, TH)
    assert d.tier == "cpu-large"
    assert d.requests["cpu"] == "4"
    assert d.intra_op_threads == 4
    assert d.reason.startswith("cpu-large: 3.63 GFLOPs/sample >= 1")


@pytest.mark.large_model
def test_bert_base_at_128_tokens_is_gpu(big_profile: ModelProfile) -> None:
    d = choose_hardware(big_profile, TH)
    assert d.tier == "gpu"
    assert "22.3 GFLOPs/sample >= 20" in d.reason


def test_300m_transformer_is_gpu() -> None:
    d = choose_hardware(TRANSFORMER_300M, TH)
    assert d.tier == "gpu"
    assert d.requests[GPU] == d.limits[GPU] == "1"
    assert d.node_selector == {"nvidia.com/gpu.present": "true"}
    assert d.tolerations == (Toleration(GPU, "Exists", "", "NoSchedule"),)
    assert d.execution_provider == "cuda"
    assert d.onnxruntime_providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert d.intra_op_threads == 2
    assert "300.0M parameters >= 250M" in d.reason
    assert "1.12 GiB of weights >= 1 GiB" in d.reason
    # 2 GiB base + 1.5 x weights, rounded up to MiB
    expected = 2 * GiB + 1.5 * 1_200_000_000
    assert parse_quantity(d.requests["memory"]) >= expected
    assert parse_quantity(d.requests["memory"]) - expected < MiB
    assert d.gpu_count == 1


TIER_CASES = [
    pytest.param(TINY, "cpu-small", id="tiny"),
    pytest.param(ProfileSummary(1000, 4000, 999_999_999), "cpu-small", id="just-under-1-gflop"),
    pytest.param(ProfileSummary(1000, 4000, 1_000_000_000), "cpu-large", id="exactly-1-gflop"),
    pytest.param(ProfileSummary(70_000_000, 280 * MiB, 10**8), "cpu-large", id="256mib-weights"),
    pytest.param(ProfileSummary(1000, 4000, 25 * 10**9), "gpu", id="flops-bound"),
    pytest.param(ProfileSummary(100_000_000, 1 * GiB, 10**8), "gpu", id="weights-bound-fp32"),
    pytest.param(ProfileSummary(250_000_000, 500 * MiB, 10**8), "gpu", id="params-bound-fp16"),
]


@pytest.mark.parametrize(("profile", "tier"), TIER_CASES)
def test_tier_thresholds(profile: ProfileSummary, tier: str) -> None:
    assert choose_hardware(profile, TH).tier == tier


def test_thresholds_are_configurable_like_a_configmap() -> None:
    th = HardwareThresholds.model_validate(
        {
            "gpu_min_gflops": 2,
            "gpu": {
                "cpu": 4,
                "memory_base_bytes": GiB,
                "memory_per_weight_byte": 1,
                "gpus": 1,
                "node_selector": {"accelerator": "a100"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
                "execution_provider": "cuda",
            },
        }
    )
    d = choose_hardware(ProfileSummary(11_000_000, 44_000_000, 3_600_000_000), th)
    assert d.tier == "gpu"
    assert d.node_selector == {"accelerator": "a100"}
    assert d.tolerations == (Toleration("dedicated", "Equal", "ml"),)
    assert d.intra_op_threads == 4
    with pytest.raises(ValueError, match="extra"):
        HardwareThresholds.model_validate({"gpu_min_gflop": 2})


# --- the spec wins ---------------------------------------------------------------------------


def test_mode_cpu_keeps_a_big_model_on_cpu() -> None:
    d = choose_hardware(TRANSFORMER_300M, TH, HardwareRequest(mode="cpu"))
    assert d.tier == "cpu-large"
    assert d.auto_tier == "gpu"
    assert "mode cpu set in the spec" in d.reason
    assert d.overridden == ("mode",)
    assert GPU not in d.requests
    assert d.tolerations == ()


def test_mode_gpu_puts_a_tiny_model_on_gpu() -> None:
    d = choose_hardware(TINY, TH, HardwareRequest(mode="gpu"))
    assert d.tier == "gpu"
    assert d.auto_tier == "cpu-small"
    assert d.execution_provider == "cuda"
    assert "mode gpu set in the spec (auto would pick cpu-small" in d.reason


OVERRIDE_CASES = [
    pytest.param(
        HardwareRequest(requests={"cpu": "3"}),
        {"cpu": "3", "memory": "257Mi"},
        {"cpu": "3", "memory": "257Mi"},
        3,
        id="cpu-request-raises-limit-and-threads",
    ),
    pytest.param(
        HardwareRequest(limits={"memory": "8Gi"}),
        {"cpu": "1", "memory": "257Mi"},
        {"cpu": "1", "memory": "8Gi"},
        1,
        id="memory-limit-only",
    ),
    pytest.param(
        HardwareRequest(limits={"memory": "128Mi"}),
        {"cpu": "1", "memory": "128Mi"},
        {"cpu": "1", "memory": "128Mi"},
        1,
        id="lower-limit-pulls-request-down",
    ),
    pytest.param(
        HardwareRequest(requests={"cpu": "2500m"}, limits={"cpu": "4"}),
        {"cpu": "2500m", "memory": "257Mi"},
        {"cpu": "4", "memory": "257Mi"},
        2,
        id="fractional-cpu-threads-round-down",
    ),
    pytest.param(
        HardwareRequest(mode="gpu", limits={GPU: "2"}),
        {"cpu": "2", "memory": "2049Mi", GPU: "2"},
        {"cpu": "2", "memory": "2049Mi", GPU: "2"},
        2,
        id="extended-resource-mirrored",
    ),
]


@pytest.mark.parametrize(("request_", "requests", "limits", "threads"), OVERRIDE_CASES)
def test_explicit_resources_win(
    request_: HardwareRequest, requests: dict[str, str], limits: dict[str, str], threads: int
) -> None:
    d = choose_hardware(TINY, TH, request_)
    assert dict(d.requests) == requests
    assert dict(d.limits) == limits
    assert d.intra_op_threads == threads
    assert "resources set in the spec win" in d.reason


def test_explicit_placement_merges_and_wins() -> None:
    mine = Toleration("dedicated", "Equal", "ml", "NoSchedule")
    req = HardwareRequest(
        mode="gpu",
        node_selector={"nvidia.com/gpu.present": "yes", "zone": "a"},
        tolerations=(mine, GPU_TOLERATION),
    )
    d = choose_hardware(TINY, TH, req)
    assert d.node_selector == {"nvidia.com/gpu.present": "yes", "zone": "a"}
    assert d.tolerations == (GPU_TOLERATION, mine)  # deduplicated
    assert set(d.overridden) == {"mode", "nodeSelector", "tolerations"}


# --- capacity --------------------------------------------------------------------------------


def _gpu_nodes(gpus: int, **kw: object) -> list[NodeInfo]:
    node = NodeInfo(
        "gpu-1",
        {"cpu": "16", "memory": "64Gi", GPU: str(gpus), "pods": "110"},
        {"nvidia.com/gpu.present": "true"},
        (Taint(GPU, "NoSchedule"),),
    )
    cpu = NodeInfo("cpu-1", {"cpu": "16", "memory": "64Gi", "pods": "110"})
    return [replace(node, **kw), cpu]  # type: ignore[arg-type]


def _report(nodes: list[NodeInfo], d: HardwareDecision, replicas: int = 1) -> CapacityReport:
    return compute_capacity(nodes, [], d.pod_shape(), replicas)


def test_gpu_fits_with_surge_room() -> None:
    d = choose_hardware(TRANSFORMER_300M, TH)
    out = apply_capacity(d, _report(_gpu_nodes(2), d), TRANSFORMER_300M, TH)
    assert out.tier == "gpu"
    assert out.condition_reason is None
    assert not out.scale_down_first


def test_gpu_fits_only_without_surge_rolls_out_scale_down_first() -> None:
    d = choose_hardware(TRANSFORMER_300M, TH)
    nodes = _gpu_nodes(1)
    old = [PodInfo("old", "gpu-1", container_requests=({GPU: "1"},))]
    report = compute_capacity(nodes, old, d.pod_shape(), 1, replacing={"default/old"})
    out = apply_capacity(d, report, TRANSFORMER_300M, TH)
    assert out.tier == "gpu"
    assert out.scale_down_first
    assert not out.fallback


FALLBACK_CASES = [
    pytest.param(HardwareRequest(), TH, "cpu-large", "HardwareFallback", id="auto-falls-back"),
    pytest.param(
        HardwareRequest(),
        TH.model_copy(update={"allow_cpu_fallback": False}),
        "gpu",
        "InsufficientCapacity",
        id="cluster-forbids-fallback",
    ),
    pytest.param(
        HardwareRequest(mode="gpu"),
        TH,
        "gpu",
        "InsufficientCapacity",
        id="explicit-gpu-never-falls-back",
    ),
    pytest.param(
        HardwareRequest(mode="gpu", allow_cpu_fallback=True),
        TH,
        "cpu-large",
        "HardwareFallback",
        id="explicit-gpu-allowing-fallback",
    ),
    pytest.param(
        HardwareRequest(allow_cpu_fallback=False),
        TH,
        "gpu",
        "InsufficientCapacity",
        id="spec-forbids-fallback",
    ),
]


@pytest.mark.parametrize(("req", "th", "tier", "condition"), FALLBACK_CASES)
def test_gpu_does_not_fit(
    req: HardwareRequest, th: HardwareThresholds, tier: str, condition: str
) -> None:
    d = choose_hardware(TRANSFORMER_300M, th, req)
    nodes = _gpu_nodes(1, unschedulable=True)
    out = apply_capacity(d, _report(nodes, d), TRANSFORMER_300M, th, req)
    assert out.tier == tier
    assert out.condition_reason == condition
    assert "gpu-1: cordoned" in out.reason
    if condition == "HardwareFallback":
        assert out.fallback
        assert out.auto_tier == "gpu"
        assert GPU not in out.requests
        assert out.tolerations == ()
        assert out.node_selector == {}
        assert out.execution_provider == "cpu"
        assert out.reason.startswith("gpu does not fit: 0 of 1 replicas fit")
        assert "falling back to cpu-large" in out.reason
    else:
        assert out.insufficient_capacity
        assert not out.fallback


DEDICATED = Toleration("dedicated", "Equal", "ml", "NoSchedule")
AMD = "amd.com/gpu"
AMD_TOLERATION = Toleration(AMD, "Exists", "", "NoSchedule")
TH_AMD = TH.model_copy(
    update={
        "gpu_resource": AMD,
        "gpu": TH.gpu.model_copy(
            update={
                "node_selector": {"amd.com/gpu.present": "true"},
                "tolerations": (AMD_TOLERATION,),
            }
        ),
    }
)

# A fallen-back pod asks for no GPU and is neither pinned to nor let onto a GPU node, whatever
# the spec said for the GPU it wanted; the spec's other choices stand.
FALLBACK_SHAPES = [
    pytest.param(HardwareRequest(), TH, {"cpu": "4"}, {}, (), id="auto"),
    pytest.param(
        HardwareRequest(requests={"cpu": "3"}, limits={GPU: "2", "cpu": "3"}),
        TH,
        {"cpu": "3"},
        {},
        (),
        id="spec-gpu-limit",
    ),
    pytest.param(
        HardwareRequest(
            mode="gpu",
            allow_cpu_fallback=True,
            requests={GPU: "2"},
            node_selector={
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": "A100",
                "zone": "a",
            },
            tolerations=(GPU_TOLERATION, DEDICATED),
        ),
        TH,
        {"cpu": "4"},
        {"zone": "a"},
        (DEDICATED,),
        id="spec-gpu-selector-and-toleration",
    ),
    pytest.param(
        HardwareRequest(
            mode="gpu",
            allow_cpu_fallback=True,
            node_selector={"amd.com/gpu.present": "true"},
            tolerations=(AMD_TOLERATION,),
        ),
        TH_AMD,
        {"cpu": "4"},
        {},
        (),
        id="cluster-gpu-resource",
    ),
]


@pytest.mark.parametrize(("req", "th", "cpu", "selector", "tolerations"), FALLBACK_SHAPES)
def test_a_fallback_keeps_nothing_of_the_gpu(
    req: HardwareRequest,
    th: HardwareThresholds,
    cpu: dict[str, str],
    selector: dict[str, str],
    tolerations: tuple[Toleration, ...],
) -> None:
    nodes = [NodeInfo("cpu-1", {"cpu": "16", "memory": "64Gi", "pods": "110"}, {"zone": "a"})]
    out = plan_hardware(TRANSFORMER_300M, th, req, lambda s: compute_capacity(nodes, [], s, 1))
    assert (out.tier, out.fallback, out.insufficient_capacity) == ("cpu-large", True, False)
    assert out.requests["cpu"] == out.limits["cpu"] == cpu["cpu"]
    assert not {GPU, AMD} & (set(out.requests) | set(out.limits))
    assert dict(out.node_selector) == selector
    assert out.tolerations == tolerations
    assert out.execution_provider == "cpu"
    assert out.gpu_count == 0


@pytest.mark.parametrize(
    ("th", "req", "count"),
    [
        pytest.param(TH, HardwareRequest(mode="gpu"), 1, id="default-resource"),
        pytest.param(TH_AMD, HardwareRequest(mode="gpu"), 1, id="cluster-resource"),
        pytest.param(TH_AMD, HardwareRequest(mode="gpu", limits={AMD: "2"}), 2, id="spec-count"),
        pytest.param(TH, HardwareRequest(), 0, id="cpu"),
    ],
)
def test_gpu_count_reads_the_clusters_gpu_resource(
    th: HardwareThresholds, req: HardwareRequest, count: int
) -> None:
    """The placement checks capacity for any decision asking for GPUs: a cluster whose GPUs
    are `amd.com/gpu` must not have its GPU revisions placed unchecked."""
    assert choose_hardware(TINY, th, req).gpu_count == count


def test_plan_hardware_checks_the_fallback_tier_too() -> None:
    # GPU node cordoned and the CPU node too small for a 2.7 GiB cpu-large replica.
    nodes = [
        _gpu_nodes(1, unschedulable=True)[0],
        NodeInfo("small", {"cpu": "2", "memory": "2Gi", "pods": "110"}),
    ]
    shapes: list[PodShape] = []

    def capacity_for(shape: PodShape) -> CapacityReport:
        shapes.append(shape)
        return compute_capacity(nodes, [], shape, 1)

    out = plan_hardware(TRANSFORMER_300M, TH, None, capacity_for)
    assert len(shapes) == 2
    assert GPU in shapes[0].requests
    assert GPU not in shapes[1].requests
    assert out.tier == "cpu-large"
    assert out.fallback
    assert out.insufficient_capacity
    assert out.condition_reason == "InsufficientCapacity"
    assert "small: room for 0 (not enough cpu)" in out.reason


def test_plan_hardware_cpu_model_that_fits() -> None:
    nodes = _gpu_nodes(1)
    out = plan_hardware(TINY, TH, None, lambda s: compute_capacity(nodes, [], s, 3))
    assert out.tier == "cpu-small"
    assert out.condition_reason is None


def test_decision_helpers() -> None:
    d = choose_hardware(TRANSFORMER_300M, TH)
    shape = d.pod_shape()
    assert shape.requests[GPU] == "1"
    assert shape.tolerations == (GPU_TOLERATION,)
    assert d.container_resources() == {"requests": dict(d.requests), "limits": dict(d.limits)}
