"""The profiler's bounds: node count refused past a limit, graph metadata kept within a budget.

A hostile model is small on disk and huge as a graph (1M Relu nodes are 14 MB and used to
cost ~520 MiB of Python objects); the profile must cost the same memory whatever the count.
"""

from __future__ import annotations

import tracemalloc

import onnx
import pytest
from onnx import TensorProto, helper

from modelrollout.hardware.errors import ModelTooLargeError
from modelrollout.hardware.profiler import ModelProfile, ProfileLimits, profile_stream


def relu_chain(n: int) -> bytes:
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"r{i}") for i in range(n)]
    nodes.append(helper.make_node("MatMul", [f"t{n}", "w"], ["y"], name="mm"))
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 8], [0.0] * 512)
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def chain() -> bytes:
    return relu_chain(6_000)


def peak_of(data: bytes, limits: ProfileLimits) -> tuple[int, ModelProfile]:
    chunks = [data[i : i + (64 << 10)] for i in range(0, len(data), 64 << 10)]
    tracemalloc.start()
    try:
        profile = profile_stream(iter(chunks), limits=limits)
        return tracemalloc.get_traced_memory()[1], profile
    finally:
        tracemalloc.stop()


def test_within_the_budget_the_estimate_is_exact() -> None:
    p = profile_stream([relu_chain(50)], limits=ProfileLimits(memory_bytes=1 << 20))
    assert p.flops_per_sample == 2 * 64 * 8
    assert not p.flops_approximate
    assert p.node_count == 51


def test_past_the_budget_memory_stays_bounded_and_counts_stay_exact(chain: bytes) -> None:
    small, profile = peak_of(chain, ProfileLimits(memory_bytes=256 << 10))
    full = profile_stream([chain], limits=ProfileLimits(memory_bytes=1 << 30))
    p, f = profile, full
    assert p.node_count == f.node_count == 6_001
    assert p.ops == f.ops == {"Relu": 6_000, "MatMul": 1}
    assert p.parameter_count == f.parameter_count == 512
    # Within the budget plus a chunk and bookkeeping; the whole graph as objects is ~3 MB.
    assert small < 768 << 10, small
    assert not f.flops_approximate
    assert p.flops_approximate
    assert p.flops_per_sample == 2 * 512
    assert any("policy.profileMemoryBytes" in n for n in p.approximations)
    assert [i.name for i in p.inputs] == ["t0"]


def test_more_nodes_than_the_limit_is_refused(chain: bytes) -> None:
    with pytest.raises(ModelTooLargeError, match=r"more than 5000 nodes \(policy\.profileMaxNodes"):
        profile_stream([chain], limits=ProfileLimits(max_nodes=5_000))
    assert onnx.load_from_string(chain).graph.node  # the model itself is valid
