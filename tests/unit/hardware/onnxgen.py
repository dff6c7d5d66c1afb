"""Synthetic ONNX models with random weights, for the profiler's tests and benchmark.

Small models are built in memory with onnx.helper. Large ones are written by a streaming
writer: the graph skeleton is serialized by onnx, and each initializer's raw_data is appended
chunk by chunk, so a 1 GB model never needs 1 GB of memory (protobuf fields may appear in any
order, so initializers after the rest of the graph are still a valid GraphProto).

Every builder also returns what the model should measure (parameters, bytes, FLOPs per sample
with 2 FLOPs per multiply-accumulate), computed from the layer sizes rather than by walking the
file, so the tests compare two independent derivations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8  # what the installed onnxruntime accepts for opset 17
OPSET = 17
_FLOAT_BYTES = 4


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@dataclass
class Expected:
    parameters: int = 0
    weight_bytes: int = 0
    flops: int = 0
    ops: Counter[str] = field(default_factory=Counter)


@dataclass
class _Init:
    name: str
    dims: tuple[int, ...]
    data_type: int = TensorProto.FLOAT
    values: np.ndarray | None = None  # small tensors given explicitly; others are random

    @property
    def numel(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) if self.dims else 1


class GraphBuilder:
    """Collects nodes and initializer specs; writes them in memory or streamed to a file."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[_Init] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.expected = Expected()
        self.rng = np.random.default_rng(seed)
        self._n = 0

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def weight(self, prefix: str, *dims: int) -> str:
        name = self.fresh(prefix)
        self.inits.append(_Init(name, tuple(dims)))
        n = int(np.prod(dims)) if dims else 1
        self.expected.parameters += n
        self.expected.weight_bytes += n * _FLOAT_BYTES
        return name

    def const(self, prefix: str, values: Sequence[int] | float) -> str:
        name = self.fresh(prefix)
        if isinstance(values, float):
            arr = np.asarray(values, dtype=np.float32)
            self.inits.append(_Init(name, (), TensorProto.FLOAT, arr))
        else:
            arr = np.asarray(values, dtype=np.int64)
            self.inits.append(_Init(name, arr.shape, TensorProto.INT64, arr))
        self.expected.parameters += arr.size
        self.expected.weight_bytes += arr.nbytes
        return name

    def node(self, op: str, inputs: Sequence[str], flops: int = 0, **attrs: Any) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        self.expected.ops[op] += 1
        self.expected.flops += flops
        return out

    def _graph(self, with_data: bool) -> onnx.GraphProto:
        inits = []
        if with_data:
            for i in self.inits:
                inits.append(numpy_helper.from_array(self._values(i), i.name))
        return helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, inits)

    def _values(self, i: _Init) -> np.ndarray:
        if i.values is not None:
            return i.values
        return ((self.rng.random(i.dims, dtype=np.float32) - 0.5) * 0.02).astype(np.float32)

    def model(self) -> onnx.ModelProto:
        """The whole model in memory (small models only)."""
        return _wrap(self._graph(with_data=True))

    def write(self, path: Path, chunk_elems: int = 1 << 20) -> None:
        """Stream the model to `path` without materializing the weights all at once."""
        skeleton = _wrap(self._graph(with_data=False))
        graph_head = skeleton.graph.SerializeToString()
        skeleton.ClearField("graph")
        model_head = skeleton.SerializeToString()

        entries = []
        for i in self.inits:
            header = TensorProto(name=i.name, dims=list(i.dims), data_type=i.data_type)
            head = header.SerializeToString()
            payload = i.numel * (8 if i.data_type == TensorProto.INT64 else _FLOAT_BYTES)
            tensor_len = len(head) + 1 + len(_varint(payload)) + payload
            prefix = b"\x2a" + _varint(tensor_len) + head + b"\x4a" + _varint(payload)
            entries.append((i, prefix, payload))
        graph_len = len(graph_head) + sum(len(p) + n for _, p, n in entries)

        with open(path, "wb") as f:
            f.write(model_head)
            f.write(b"\x3a" + _varint(graph_len))  # ModelProto.graph (field 7)
            f.write(graph_head)
            for i, prefix, _ in entries:
                f.write(prefix)  # GraphProto.initializer (field 5), TensorProto.raw_data (9)
                self._write_payload(f, i, chunk_elems)

    def _write_payload(self, f: BinaryIO, i: _Init, chunk_elems: int) -> None:
        if i.values is not None:
            f.write(i.values.tobytes())
            return
        left = i.numel
        while left:
            n = min(left, chunk_elems)
            chunk = self.rng.random(n, dtype=np.float32)
            chunk -= 0.5
            chunk *= 0.02
            f.write(chunk.data)
            left -= n


def _wrap(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxgen"
    )
    m.ir_version = IR_VERSION
    return m


# --- models ---------------------------------------------------------------------------------


def mlp(batch: str | int = "batch") -> GraphBuilder:
    """784 -> 256 -> 10 MLP: MatMul + Add + Relu, then Gemm."""
    g = GraphBuilder("mlp")
    g.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 784]))
    h = g.node("MatMul", ["x", g.weight("w", 784, 256)], flops=2 * 784 * 256)
    h = g.node("Add", [h, g.weight("b", 256)])
    h = g.node("Relu", [h])
    y = g.node("Gemm", [h, g.weight("w", 256, 10), g.weight("b", 10)], flops=2 * 256 * 10)
    g.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, 10]))
    return g


def small_conv() -> GraphBuilder:
    """Two convolutions and a transposed one on 1x3x32x32, FLOPs worked out by hand:

    conv 3->16, 3x3, pad 1:            out 16x32x32, 2*16*32*32*(3*9)        = 884,736
    conv 16->32, 3x3, stride 2, groups 2: out 32x16x16, 2*32*16*16*(8*9)     = 1,179,648
    convT 32->8, 2x2, stride 2:         in 32x16x16,  2*32*16*16*(8*4)       = 524,288
    """
    g = GraphBuilder("conv")
    g.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32]))
    h = g.node("Conv", ["x", g.weight("w", 16, 3, 3, 3)], flops=884_736, pads=[1, 1, 1, 1])
    h = g.node("Relu", [h])
    h = g.node(
        "Conv",
        [h, g.weight("w", 32, 8, 3, 3), g.weight("b", 32)],
        flops=1_179_648,
        pads=[1, 1, 1, 1],
        strides=[2, 2],
        group=2,
    )
    y = g.node("ConvTranspose", [h, g.weight("w", 32, 8, 2, 2)], flops=524_288, strides=[2, 2])
    g.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 8, 32, 32]))
    return g


def resnet_like(batch: str | int = "N", size: int = 224) -> GraphBuilder:
    """ResNet-18-shaped CNN (no batch norm), about 11.7M parameters."""
    g = GraphBuilder("resnet_like", seed=1)
    g.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size]))

    def conv(x: str, cin: int, cout: int, k: int, stride: int, hw_in: int) -> tuple[str, int]:
        pad = k // 2
        hw = (hw_in + 2 * pad - k) // stride + 1
        flops = 2 * cout * hw * hw * cin * k * k
        out = g.node(
            "Conv",
            [x, g.weight("w", cout, cin, k, k), g.weight("b", cout)],
            flops=flops,
            pads=[pad] * 4,
            strides=[stride, stride],
        )
        return out, hw

    x, hw = conv("x", 3, 64, 7, 2, size)
    x = g.node("Relu", [x])
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    hw = (hw + 2 - 3) // 2 + 1
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            h, hw2 = conv(x, cin, cout, 3, s, hw)
            h = g.node("Relu", [h])
            h, hw2 = conv(h, cout, cout, 3, 1, hw2)
            shortcut = x
            if s != 1 or cin != cout:
                shortcut, _ = conv(x, cin, cout, 1, s, hw)
            x = g.node("Relu", [g.node("Add", [h, shortcut])])
            cin, hw = cout, hw2
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    y = g.node("Gemm", [x, g.weight("w", 512, 1000), g.weight("b", 1000)], flops=2 * 512 * 1000)
    g.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, 1000]))
    return g


def transformer(
    d_model: int = 768,
    layers: int = 12,
    heads: int = 12,
    vocab: int = 30522,
    seq: int | None = None,
) -> GraphBuilder:
    """BERT-shaped encoder: embeddings, then attention + FFN blocks built from plain MatMuls.

    Inputs are input_ids [batch, seq] with both axes symbolic. `seq` only sets the sequence
    length used for the expected FLOPs (the profiler gets it through dim_overrides); None
    means seq = 1, the profiler's default for an unknown symbolic dim.
    The defaults give about 108.5M parameters (434 MB of float32 weights).
    """
    g = GraphBuilder("transformer", seed=2)
    d, s = d_model, seq or 1
    dh = d // heads
    g.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]))
    x = g.node("Gather", [g.weight("embed", vocab, d), "input_ids"], axis=0)
    split_heads = g.const("split_heads", [0, -1, heads, dh])
    merge_heads = g.const("merge_heads", [0, -1, d])
    scale = g.const("scale", float(np.sqrt(dh)))

    def linear(h: str, din: int, dout: int) -> str:
        y = g.node("MatMul", [h, g.weight("w", din, dout)], flops=2 * s * din * dout)
        return g.node("Add", [y, g.weight("b", dout)])

    def norm(h: str) -> str:
        return g.node("LayerNormalization", [h, g.weight("gamma", d), g.weight("beta", d)])

    for _ in range(layers):
        h = norm(x)
        q = g.node(
            "Transpose", [g.node("Reshape", [linear(h, d, d), split_heads])], perm=[0, 2, 1, 3]
        )
        k = g.node(
            "Transpose", [g.node("Reshape", [linear(h, d, d), split_heads])], perm=[0, 2, 3, 1]
        )
        v = g.node(
            "Transpose", [g.node("Reshape", [linear(h, d, d), split_heads])], perm=[0, 2, 1, 3]
        )
        scores = g.node("MatMul", [q, k], flops=2 * heads * s * dh * s)
        probs = g.node("Softmax", [g.node("Div", [scores, scale])], axis=-1)
        ctx = g.node("MatMul", [probs, v], flops=2 * heads * s * s * dh)
        ctx = g.node("Reshape", [g.node("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_heads])
        x = g.node("Add", [x, linear(ctx, d, d)])
        h = g.node("Relu", [linear(norm(x), d, 4 * d)])
        x = g.node("Add", [x, linear(h, 4 * d, d)])
    y = norm(x)
    g.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", "seq", d]))
    return g
