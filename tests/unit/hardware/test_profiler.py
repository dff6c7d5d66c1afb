"""The streaming profiler on generated models, checked against onnx and hand-computed FLOPs."""

from __future__ import annotations

import io
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelrollout.hardware.errors import CorruptModelError, NotOnnxModelError
from modelrollout.hardware.profiler import ModelProfile, profile_stream

from . import onnxgen
from .conftest import BIG_SEQ, onnx_counts, profile_uri


def _bytes(model: onnx.ModelProto) -> bytes:
    return bytes(model.SerializeToString())


def _profile(model: onnx.ModelProto, **kw: object) -> ModelProfile:
    return profile_stream(io.BytesIO(_bytes(model)), **kw)  # type: ignore[arg-type]


def _single_node(
    op: str,
    inputs: dict[str, list[int | str | None] | None],
    inits: dict[str, np.ndarray] | None = None,
    domain: str = "",
    **attrs: Any,
) -> onnx.ModelProto:
    """A one-node model; graph inputs with shape None get no shape at all."""
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    inits = inits or {}
    node = helper.make_node(op, [*inputs, *inits], ["y"], domain=domain, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        vis,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _w(*dims: int) -> np.ndarray:
    return np.zeros(dims, dtype=np.float32)


# --- counts against onnx ---------------------------------------------------------------------


def test_mlp_matches_onnx_and_hand_computed_flops() -> None:
    model = onnxgen.mlp().model()
    p = _profile(model)
    ref = onnx_counts(model)
    assert p.parameter_count == ref.parameters == 784 * 256 + 256 + 256 * 10 + 10
    assert p.weight_bytes == ref.weight_bytes
    assert p.ops == dict(ref.ops)
    assert p.flops_per_sample == 2 * 784 * 256 + 2 * 256 * 10
    assert dict(p.flops_by_op) == {"MatMul": 2 * 784 * 256, "Gemm": 2 * 256 * 10}
    assert not p.flops_approximate
    assert p.opset == 17
    assert p.ir_version == onnxgen.IR_VERSION
    assert p.producer == "onnxgen"
    assert p.inputs[0].shape == ("batch", 784)
    assert p.inputs[0].elem_type == "float32"
    assert p.outputs[0].shape == ("batch", 10)
    assert p.has_dynamic_batch
    assert p.size_bytes == len(_bytes(model))


def test_conv_flops_by_hand() -> None:
    g = onnxgen.small_conv()
    p = _profile(g.model())
    assert p.flops_per_sample == 884_736 + 1_179_648 + 524_288 == g.expected.flops
    assert dict(p.flops_by_op) == {"Conv": 884_736 + 1_179_648, "ConvTranspose": 524_288}
    assert p.parameter_count == onnx_counts(g.model()).parameters
    assert not p.has_dynamic_batch
    assert not p.flops_approximate


def test_resnet_like_cnn(resnet_file: tuple[Path, onnxgen.GraphBuilder]) -> None:
    path, g = resnet_file
    p = profile_uri(str(path), cache=None)
    ref = onnx_counts(onnx.load(str(path)))
    assert 11_000_000 < p.parameter_count < 12_000_000
    assert p.parameter_count == ref.parameters == g.expected.parameters
    assert p.weight_bytes == ref.weight_bytes == g.expected.weight_bytes
    assert p.ops == dict(ref.ops) == dict(g.expected.ops)
    assert p.flops_per_sample == g.expected.flops
    assert 3.5 < p.gflops_per_sample < 3.8
    assert p.has_dynamic_batch
    assert not p.flops_approximate


def test_small_transformer_matches_onnx_and_runs(tmp_path: Path) -> None:
    """The streaming writer's output is a valid model (onnx checker, onnxruntime)."""
    import onnxruntime as ort

    g = onnxgen.transformer(d_model=32, layers=2, heads=4, vocab=50, seq=6)
    path = tmp_path / "t.onnx"
    g.write(path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    out = ort.InferenceSession(str(path)).run(None, {"input_ids": np.zeros((2, 6), np.int64)})
    assert np.asarray(out[0]).shape == (2, 6, 32)

    p = profile_uri(str(path), dim_overrides={"seq": 6}, cache=None)
    ref = onnx_counts(model)
    assert (p.parameter_count, p.weight_bytes) == (ref.parameters, ref.weight_bytes)
    assert p.ops == dict(ref.ops)
    assert p.flops_per_sample == g.expected.flops
    assert not p.flops_approximate


@pytest.mark.large_model
def test_transformer_over_100m_parameters(
    big_transformer: tuple[Path, onnxgen.GraphBuilder], big_profile: ModelProfile
) -> None:
    path, g = big_transformer
    p = big_profile
    assert p.parameter_count == g.expected.parameters > 100_000_000
    assert p.weight_bytes == g.expected.weight_bytes > 400_000_000
    assert p.size_bytes == path.stat().st_size
    assert p.ops == dict(g.expected.ops)
    # 12 layers x (24 S d^2 + 4 S^2 d) at S=128, d=768, plus nothing else with MACs.
    d, s = 768, BIG_SEQ
    assert p.flops_per_sample == g.expected.flops == 12 * (24 * s * d * d + 4 * s * s * d)
    assert not p.flops_approximate
    assert p.dim_overrides == (("seq", BIG_SEQ),)


@pytest.mark.large_model
def test_memory_stays_bounded_on_a_400mb_model(
    big_transformer: tuple[Path, onnxgen.GraphBuilder],
) -> None:
    path, g = big_transformer
    assert path.stat().st_size >= 400_000_000
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            p = profile_stream(f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert p.parameter_count == g.expected.parameters
    # One 1 MiB read buffer plus graph metadata; the weights are never held.
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    # Without a sequence length, the symbolic axis counts as 1 and the profile says so.
    assert p.flops_approximate
    assert any("seq" in note for note in p.approximations)


# --- shapes and FLOPs, one op at a time ------------------------------------------------------

FLOP_CASES = [
    pytest.param(
        _single_node("MatMul", {"a": [2, 3, 4]}, {"b": _w(4, 5)}),
        2 * 2 * 3 * 4 * 5,
        False,
        id="matmul-batched",
    ),
    pytest.param(
        _single_node("MatMul", {"a": [3, 2, 4]}, {"b": _w(3, 4, 5)}),
        2 * 3 * 2 * 4 * 5,
        False,
        id="matmul-broadcast-batch",
    ),
    pytest.param(
        _single_node("Gemm", {"a": ["n", 8]}, {"b": _w(16, 8)}, transB=1),
        2 * 8 * 16,
        False,
        id="gemm-transB",
    ),
    pytest.param(
        _single_node("Conv", {"x": [1, 2, 10]}, {"w": _w(4, 2, 3)}),
        2 * 4 * 8 * 2 * 3,
        False,
        id="conv1d",
    ),
    pytest.param(
        _single_node(
            "Conv",
            {"x": [1, 1, 9, 9]},
            {"w": _w(2, 1, 3, 3)},
            strides=[2, 2],
            auto_pad="SAME_UPPER",
        ),
        2 * 2 * 5 * 5 * 9,
        False,
        id="conv-same-stride2",
    ),
    pytest.param(
        _single_node(
            "Conv", {"x": [1, 4, 8, 8]}, {"w": _w(4, 1, 3, 3)}, group=4, pads=[1, 1, 1, 1]
        ),
        2 * 4 * 8 * 8 * 1 * 9,
        False,
        id="conv-depthwise",
    ),
    pytest.param(
        _single_node("ConvTranspose", {"x": [1, 4, 3, 3]}, {"w": _w(4, 2, 3, 3)}),
        2 * 4 * 9 * 2 * 9,
        False,
        id="conv-transpose",
    ),
    pytest.param(
        _single_node(
            "Attention", {"x": [1, 4, 8]}, {"w": _w(8, 24)}, domain="com.microsoft", num_heads=2
        ),
        2 * 4 * 8 * 24 + 2 * 4 * 4 * 8 * 2,
        False,
        id="ms-attention",
    ),
    pytest.param(
        _single_node(
            "MultiHeadAttention",
            {"q": [1, 4, 8], "k": [1, 6, 8], "v": [1, 6, 8]},
            domain="com.microsoft",
            num_heads=2,
        ),
        2 * 4 * 6 * 8 * 2,
        False,
        id="multi-head-attention",
    ),
    pytest.param(
        _single_node("Attention", {"q": [1, 2, 4, 8], "k": [1, 2, 6, 8], "v": [1, 2, 6, 8]}),
        2 * 2 * 4 * 6 * (8 + 8),
        False,
        id="onnx-attention-4d",
    ),
    pytest.param(
        _single_node(
            "MatMulNBits", {"a": [1, 16]}, {"b": _w(32, 1, 8)}, domain="com.microsoft", K=16, N=32
        ),
        2 * 16 * 32,
        False,
        id="matmul-4bit",
    ),
    pytest.param(
        _single_node("MatMul", {"a": None}, {"b": _w(8, 4)}),
        2 * 8 * 4,
        True,
        id="matmul-unknown-input-counts-one-row",
    ),
    pytest.param(
        _single_node("Einsum", {"a": [2, 3], "b": [3, 4]}, equation="ij,jk->ik"),
        0,
        True,
        id="einsum-not-counted",
    ),
]


@pytest.mark.parametrize(("model", "flops", "approximate"), FLOP_CASES)
def test_flops_per_op(model: onnx.ModelProto, flops: int, approximate: bool) -> None:
    p = _profile(model)
    assert p.flops_per_sample == flops
    assert p.flops_approximate is approximate


def test_attention_reshape_resolved_through_shape_arithmetic() -> None:
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as exporters emit for attention."""
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["b"], axis=0),
        helper.make_node("Gather", ["shape", "one"], ["s"], axis=0),
        helper.make_node("Unsqueeze", ["b", "axes0"], ["b1"]),
        helper.make_node("Unsqueeze", ["s", "axes0"], ["s1"]),
        helper.make_node("Concat", ["b1", "s1", "heads"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["xh"]),
        helper.make_node("Transpose", ["xh"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["xh"], ["k"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["q", "k"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "q"], ["y"]),
    ]
    inits = [
        helper.make_tensor("zero", i64, [], [0]),
        helper.make_tensor("one", i64, [], [1]),
        helper.make_tensor("axes0", i64, [1], [0]),
        helper.make_tensor("heads", i64, [2], [2, 4]),
    ]
    graph = helper.make_graph(
        nodes,
        "attn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    p = _profile(helper.make_model(graph))
    # scores: [1,2,5,4] x [1,2,4,5]; context: [1,2,5,5] x [1,2,5,4]
    assert p.flops_per_sample == 2 * 2 * 5 * 4 * 5 + 2 * 2 * 5 * 5 * 4
    assert not p.flops_approximate


def test_symbolic_dims_default_to_one_and_overrides_apply() -> None:
    model = _single_node("MatMul", {"a": ["batch", "seq", 8]}, {"b": _w(8, 8)})
    assert _profile(model).flops_per_sample == 2 * 8 * 8
    assert _profile(model).approximations == (
        "symbolic dims set to 1 (pass dim_overrides to set them): seq",
    )
    p = _profile(model, dim_overrides={"seq": 10})
    assert p.flops_per_sample == 2 * 10 * 8 * 8
    assert not p.flops_approximate


def test_value_info_fills_shapes_for_ops_without_rules() -> None:
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"]),  # no rule: output shape from value_info
        helper.make_node("Cast", ["nz"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(7, 5), "w")],
        value_info=[helper.make_tensor_value_info("nz", TensorProto.INT64, [6, 7])],
    )
    assert _profile(helper.make_model(graph)).flops_per_sample == 2 * 6 * 7 * 5


def test_subgraphs_counted_and_if_takes_the_costlier_branch() -> None:
    def branch(name: str, n: int) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("MatMul", ["x", f"w_{name}"], [f"y_{name}"])],
            name,
            [],
            [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [1, n])],
            [numpy_helper.from_array(_w(8, n), f"w_{name}")],
        )

    node = helper.make_node(
        "If", ["cond"], ["y"], then_branch=branch("then", 8), else_branch=branch("else", 4)
    )
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph)
    p = _profile(model)
    ref = onnx_counts(model)
    assert p.parameter_count == ref.parameters == 8 * 8 + 8 * 4
    assert p.ops == dict(ref.ops) == {"If": 1, "MatMul": 2}
    assert p.subgraph_count == ref.subgraphs == 2
    assert p.flops_per_sample == 2 * 8 * 8


def test_constant_nodes_and_sparse_initializers_count_as_parameters() -> None:
    const = helper.make_node(
        "Constant", [], ["c"], value=numpy_helper.from_array(_w(3, 4), "c_value")
    )
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(5, np.float32), "s"),
        numpy_helper.from_array(np.arange(5, dtype=np.int64), "s_idx"),
        [10, 10],
    )
    graph = helper.make_graph(
        [const, helper.make_node("Add", ["c", "x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        sparse_initializer=[sparse],
    )
    p = _profile(helper.make_model(graph))
    assert p.parameter_count == 12 + 5
    assert p.weight_bytes == 12 * 4 + 5 * 4 + 5 * 8
    assert p.tensor_count == 2


def test_external_data_counted_by_declared_length(tmp_path: Path) -> None:
    model = onnxgen.mlp().model()
    ref = onnx_counts(model)
    path = tmp_path / "mlp.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="mlp.weights",
        size_threshold=0,
    )
    p = profile_uri(str(path), cache=None)
    assert path.stat().st_size < 10_000  # weights live beside the model, not inside it
    assert p.parameter_count == ref.parameters
    assert p.weight_bytes == p.external_data_bytes == ref.weight_bytes
    assert p.external_data_files == ("mlp.weights",)
    assert p.flops_per_sample == _profile(model).flops_per_sample


# --- dynamic batch ---------------------------------------------------------------------------

BATCH_CASES = [
    pytest.param({"x": ["N", 3, 8, 8]}, True, id="named-batch"),
    pytest.param({"x": [None, 3]}, True, id="unnamed-batch"),
    pytest.param({"x": [1, 3, 8, 8]}, False, id="fixed"),
    pytest.param({"x": ["N", 3], "mask": [1, 3]}, False, id="one-input-fixed"),
    pytest.param({"x": ["N", 3], "y": ["N", 3]}, True, id="all-dynamic"),
    pytest.param({"x": None}, False, id="no-shape"),
]


@pytest.mark.parametrize(("inputs", "dynamic"), BATCH_CASES)
def test_dynamic_batch_detection(
    inputs: dict[str, list[int | str | None] | None], dynamic: bool
) -> None:
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    # Old exporters list initializers among the inputs; they are not batch inputs.
    vis.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [3]))
    graph = helper.make_graph(
        [helper.make_node("Identity", [next(iter(inputs))], ["out"])],
        "g",
        vis,
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(_w(3), "w")],
    )
    p = _profile(helper.make_model(graph))
    assert p.has_dynamic_batch is dynamic
    assert [i.name for i in p.inputs] == list(inputs)


# --- streaming mechanics ---------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 4096])
def test_any_chunking_gives_the_same_profile(chunk_size: int) -> None:
    data = _bytes(onnxgen.small_conv().model())
    whole = profile_stream([data])
    assert profile_stream(io.BytesIO(data), chunk_size=chunk_size) == whole
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    assert profile_stream(iter(pieces)) == whole
    assert profile_stream(memoryview(p) for p in pieces) == whole


def test_sha256_of_bytes_read_and_optional() -> None:
    import hashlib

    data = _bytes(onnxgen.mlp().model())
    assert profile_stream([data]).sha256 == hashlib.sha256(data).hexdigest()
    assert profile_stream([data], compute_sha256=False).sha256 == ""


# --- corrupt and non-ONNX input --------------------------------------------------------------


def _mlp_bytes() -> bytes:
    return _bytes(onnxgen.mlp().model())


CORRUPT_CASES = [
    pytest.param(b"", NotOnnxModelError, "no graph", id="empty"),
    pytest.param(b"hello, this is not a model\n", NotOnnxModelError, "not an ONNX", id="text"),
    pytest.param(
        b"<!doctype html><html>Not Found</html>", NotOnnxModelError, "wire type", id="html"
    ),
    pytest.param(b"PK\x03\x04" + bytes(60), NotOnnxModelError, "not an ONNX", id="zip"),
    pytest.param(b"\x08\x08\x28\x01", NotOnnxModelError, "no graph", id="protobuf-no-graph"),
    pytest.param(b"\x08" + b"\xff" * 11, NotOnnxModelError, "varint longer", id="long-varint"),
    pytest.param(
        b"\x08\x08\x3d\x00\x00\x00\x00",
        NotOnnxModelError,
        "ModelProto.graph",
        id="graph-wrong-wire-type",
    ),
    pytest.param(
        b"\x08\x08\x3a\x02\x0a\x80", CorruptModelError, "truncated", id="truncated-varint-in-graph"
    ),
    pytest.param(
        b"\x08\x08\x3a\x02\x0d\x00",
        CorruptModelError,
        "GraphProto.node has wire type",
        id="node-wrong-wire-type",
    ),
    pytest.param(
        b"\x08\x08\x3a\x02\x0a\x64", CorruptModelError, "past the end", id="node-longer-than-graph"
    ),
    pytest.param(
        _mlp_bytes()[: len(_mlp_bytes()) // 2],
        CorruptModelError,
        "truncated",
        id="truncated-in-weights",
    ),
    pytest.param(_mlp_bytes()[:-3], CorruptModelError, "truncated", id="truncated-at-end"),
]


@pytest.mark.parametrize(("data", "error", "message"), CORRUPT_CASES)
def test_corrupt_or_not_onnx(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        profile_stream([data])
    if error is CorruptModelError:
        assert not isinstance(info.value, NotOnnxModelError)  # damaged ONNX, not another format


def test_random_bytes_are_rejected() -> None:
    data = np.random.default_rng(7).bytes(4096)
    with pytest.raises(CorruptModelError):
        profile_stream([data])


def test_op_histogram_is_sorted_by_count(
    resnet_file: tuple[Path, onnxgen.GraphBuilder],
) -> None:
    p = profile_uri(str(resnet_file[0]), cache=None)
    counts = [c for _, c in p.op_histogram]
    assert counts == sorted(counts, reverse=True)
    assert Counter(p.ops)["Conv"] == 20
