"""ONNX models built in the test session from random weights (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

# OIP datatype -> ONNX element type, for the identity models.
ONNX_TYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime the package allows
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    data = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    return numpy_helper.from_array(data, name)


def mlp(path: Path, *, features: int = 16, hidden: int = 64, classes: int = 8) -> Path:
    """Tabular classifier: features[N,16] -> logits[N,8], probabilities[N,8]."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((features, hidden)) * 0.3).astype(np.float32), "w1"
        ),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(
            (rng.standard_normal((hidden, classes)) * 0.3).astype(np.float32), "w2"
        ),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32) * 0.1, "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
        ],
        inits,
    )
    return _save(graph, path)


def fixed_batch(path: Path) -> Path:
    """x[1,8] -> y[1,4]: no dynamic batch axis, so never batched."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    return _save(graph, path)


def cnn(path: Path, *, size: int = 64, classes: int = 1000, hidden: int = 1100) -> Path:
    """Image classifier, ~10M parameters: image[N,3,64,64] -> logits[N,1000]."""
    rng = np.random.default_rng(3)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    prev, channels = "image", 3
    for i, out_ch in enumerate((32, 64, 128)):
        inits.append(_weight(rng, f"conv{i}_w", out_ch, channels, 3, 3))
        inits.append(numpy_helper.from_array(np.zeros(out_ch, np.float32), f"conv{i}_b"))
        nodes += [
            helper.make_node("Conv", [prev, f"conv{i}_w", f"conv{i}_b"], [f"c{i}"], pads=[1] * 4),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        prev, channels = f"p{i}", out_ch
    flat = channels * (size // 8) ** 2
    inits += [
        _weight(rng, "fc1_w", flat, hidden),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "fc1_b"),
        _weight(rng, "fc2_w", hidden, classes),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc2_b"),
    ]
    nodes += [
        helper.make_node("Flatten", [prev], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["f1"]),
        helper.make_node("Relu", ["f1"], ["f1r"]),
        helper.make_node("Gemm", ["f1r", "fc2_w", "fc2_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    return _save(graph, path)


def identity(path: Path, datatype: str) -> Path:
    """value[n,m] -> echo[n,m] of one datatype: exercises the datatype mapping end to end."""
    elem = ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["value"], ["echo"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("value", elem, ["n", "m"])],
        [helper.make_tensor_value_info("echo", elem, ["n", "m"])],
    )
    return _save(graph, path)


def parameter_count(path: Path) -> int:
    model = onnx.load(str(path))
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)
