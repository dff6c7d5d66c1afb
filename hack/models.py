"""Small ONNX models made on the spot (onnx.helper, random weights): nothing is downloaded.

Used by `make demo` and the integration tests, which point ModelDeployments at these files
through file:// URIs that both the operator and the local model server processes can read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_mlp(
    path: Path,
    features: int = 4,
    hidden: int = 16,
    classes: int = 3,
    seed: int = 0,
    shuffled: bool = False,
) -> str:
    """A two-layer classifier with a dynamic batch axis; returns the file's sha256.

    `shuffled`: the same model with its label map rotated (class k answers as k + 1): as fast
    and error-free as the original, and wrong on every request."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((features, hidden)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1")
    w2_raw = rng.standard_normal((hidden, classes)).astype(np.float32)
    b2_raw = rng.standard_normal(classes).astype(np.float32)
    if shuffled:
        w2_raw, b2_raw = np.roll(w2_raw, 1, axis=1), np.roll(b2_raw, 1)
    w2 = numpy_helper.from_array(w2_raw, "w2")
    b2 = numpy_helper.from_array(b2_raw, "b2")
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        initializer=[w1, b1, w2, b2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()
