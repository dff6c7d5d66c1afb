"""Write a benchmark model: python -m bench.profiler.generate PATH LAYERS|relu:NODES

LAYERS: the ~1 GB transformer. relu:NODES: a chain of NODES Relu nodes and one MatMul, small on
disk and huge as a graph (what a hostile tenant would write), encoded straight to the protobuf
wire format so the generator never holds a million node objects.
Runs in its own process so the benchmark's parent stays small (a child's ru_maxrss starts
from its parent's peak on Linux). Prints {"parameters": N, "seconds": S} as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.unit.hardware import onnxgen


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def write_relu_chain(path: Path, nodes: int) -> int:
    """t0 -> Relu x nodes -> MatMul with a 64x8 weight; returns the parameter count."""
    chunks = []
    for i in range(nodes):
        node = _field(1, b"t%d" % i) + _field(2, b"t%d" % (i + 1)) + _field(3, b"r%d" % i)
        chunks.append(_field(1, node + _field(4, b"Relu")))
    matmul = _field(1, b"t%d" % nodes) + _field(1, b"w") + _field(2, b"y") + _field(4, b"MatMul")
    chunks.append(_field(1, matmul))
    dims = _varint(1 << 3 | 0) + _varint(64) + _varint(1 << 3 | 0) + _varint(8)
    weight = dims + _varint(2 << 3 | 0) + _varint(1) + _field(8, b"w") + _field(9, bytes(2048))
    chunks.append(_field(2, b"chain") + _field(5, weight))
    for number, name, width in ((11, b"t0", 64), (12, b"y", 8)):
        dims = _field(1, _field(2, b"batch")) + _field(1, _varint(1 << 3 | 0) + _varint(width))
        tensor = _varint(1 << 3 | 0) + _varint(1) + _field(2, dims)  # float, [batch, width]
        chunks.append(_field(number, _field(1, name) + _field(2, _field(1, tensor))))
    graph = b"".join(chunks)
    opset = _field(1, b"") + _varint(2 << 3 | 0) + _varint(17)
    with path.open("wb") as f:
        f.write(_varint(1 << 3 | 0) + _varint(8) + _field(8, opset))
        f.write(_varint(7 << 3 | 2) + _varint(len(graph)))
        f.write(graph)
    return 64 * 8


def main() -> None:
    path, what = Path(sys.argv[1]), sys.argv[2]
    start = time.perf_counter()
    if what.startswith("relu:"):
        params = write_relu_chain(path, int(what.removeprefix("relu:")))
        print(json.dumps({"parameters": params, "seconds": time.perf_counter() - start}))
        return
    layers = int(what)
    g = onnxgen.transformer(d_model=1024, layers=layers, heads=16, vocab=32000)
    g.write(path, chunk_elems=1 << 22)  # 16 MiB of random weights at a time
    seconds = time.perf_counter() - start
    print(json.dumps({"parameters": g.expected.parameters, "seconds": seconds}))


if __name__ == "__main__":
    main()
