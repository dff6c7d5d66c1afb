"""Streaming decoder for the parts of an ONNX ModelProto the profiler needs.

Field numbers follow onnx/onnx.proto3 (IR version 10). Tensor payloads (raw_data and the typed
*_data fields) are skipped, except tiny integer tensors whose values shape propagation uses
(e.g. the target shape of a Reshape). Everything kept is graph metadata: node types, names,
small attributes, dims and value shapes, so memory grows with the graph, not with the weights;
and a `Tally` counts everything as it streams and keeps graph metadata only up to its memory
budget, so memory has a bound however many nodes the graph has.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from ._wire import FIXED32, LEN, VARINT, WireReader, decode_packed_varints, to_signed64, wire_name
from .errors import CorruptModelError, ModelTooLargeError, NotOnnxModelError

# Strings longer than this (names, attribute strings) are skipped rather than kept: no real
# model needs them for profiling, and a hostile file could otherwise make us buffer a lot.
MAX_KEPT_STRING = 64 * 1024
# Integer tensors up to this many elements keep their values for shape propagation.
MAX_KEPT_INT_VALUES = 64
MAX_GRAPH_DEPTH = 32
# Per node and graph: more inputs, outputs or attributes than any real model has are counted
# but not kept (they would otherwise be held before the tally could weigh the node).
MAX_NODE_IO = 4096
MAX_NODE_ATTRS = 256
MAX_GRAPH_IO = 1024
# Distinct operator names and external files named in a profile; the rest are folded.
MAX_OP_NAMES = 4096
MAX_EXTERNAL_FILES = 64

TENSOR_TYPES: dict[int, tuple[str, int]] = {
    # data_type: (name, bits per element); 0 bits means variable size (strings)
    1: ("float32", 32),
    2: ("uint8", 8),
    3: ("int8", 8),
    4: ("uint16", 16),
    5: ("int16", 16),
    6: ("int32", 32),
    7: ("int64", 64),
    8: ("string", 0),
    9: ("bool", 8),
    10: ("float16", 16),
    11: ("float64", 64),
    12: ("uint32", 32),
    13: ("uint64", 64),
    14: ("complex64", 64),
    15: ("complex128", 128),
    16: ("bfloat16", 16),
    17: ("float8e4m3fn", 8),
    18: ("float8e4m3fnuz", 8),
    19: ("float8e5m2", 8),
    20: ("float8e5m2fnuz", 8),
    21: ("uint4", 4),
    22: ("int4", 4),
    23: ("float4e2m1", 4),
    24: ("float8e8m0", 8),
    25: ("uint2", 2),
    26: ("int2", 2),
    27: ("float6e2m3", 6),
    28: ("float6e3m2", 6),
}

_INT64 = 7
_INT32 = 6

Dim = int | str | None


@dataclass(slots=True)
class Tensor:
    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0
    payload_bytes: int = 0  # bytes of embedded data seen (raw_data or typed fields)
    external: bool = False
    external_location: str | None = None
    external_length: int | None = None
    int_values: list[int] | None = None  # only for tiny integer tensors
    extra_bytes: int = 0  # sparse tensors: bytes of their indices
    _small_raw: bytes | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.dims:
            n *= max(d, 0)
        return n

    @property
    def nbytes(self) -> int:
        """In-memory size: element count times element size; strings use their stored bytes."""
        if self.external and self.external_length is not None:
            return self.external_length + self.extra_bytes
        bits = TENSOR_TYPES.get(self.data_type, ("", 0))[1]
        if bits == 0:
            return self.payload_bytes + self.extra_bytes
        return (self.numel * bits + 7) // 8 + self.extra_bytes

    def finish(self) -> None:
        """Decode kept raw bytes once data_type is known (fields may come in any order)."""
        raw = self._small_raw
        self._small_raw = None
        if raw is None or self.int_values is not None:
            return
        if self.data_type == _INT64 and len(raw) % 8 == 0:
            self.int_values = list(struct.unpack(f"<{len(raw) // 8}q", raw))
        elif self.data_type == _INT32 and len(raw) % 4 == 0:
            self.int_values = list(struct.unpack(f"<{len(raw) // 4}i", raw))


@dataclass(slots=True)
class ValueInfo:
    name: str = ""
    elem_type: str = "unknown"
    shape: tuple[Dim, ...] | None = None


AttrValue = int | float | bytes | tuple[int, ...] | tuple[float, ...] | Tensor


@dataclass(slots=True)
class Node:
    op_type: str = ""
    domain: str = ""
    name: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    subgraphs: list[tuple[str, Graph]] = field(default_factory=list)

    @property
    def qualified_op(self) -> str:
        return self.op_type if self.domain in ("", "ai.onnx") else f"{self.domain}.{self.op_type}"


@dataclass(slots=True)
class Graph:
    name: str = ""
    nodes: list[Node] = field(default_factory=list)
    initializers: list[Tensor] = field(default_factory=list)
    sparse_initializers: list[Tensor] = field(default_factory=list)  # values; indices folded in
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    value_info: list[ValueInfo] = field(default_factory=list)


@dataclass(slots=True)
class Model:
    ir_version: int | None = None
    producer_name: str = ""
    producer_version: str = ""
    opset_imports: list[tuple[str, int]] = field(default_factory=list)
    graph: Graph | None = None
    started: bool = False  # the graph field has begun


class Tally:
    """Counts nodes, operators and tensors as the parse streams, enforces the node limit, and
    decides what graph metadata is kept for the FLOP estimate: objects are weighed (a rough,
    deliberately high estimate of their Python size) against `memory_bytes`; once over it,
    nothing more is kept (`dropped`) and the counts alone go on."""

    def __init__(self, max_nodes: int = 1 << 62, memory_bytes: int = 1 << 62) -> None:
        self.max_nodes = max_nodes
        self.memory_bytes = memory_bytes
        self.kept_bytes = 0
        self.dropped = False
        self.params = self.weight_bytes = self.external_bytes = 0
        self.tensors = self.nodes = self.subgraphs = 0
        self.external_files: set[str] = set()
        self.ops: Counter[str] = Counter()

    def keep(self, cost: int) -> bool:
        if self.dropped:
            return False
        self.kept_bytes += cost
        if self.kept_bytes > self.memory_bytes:
            self.dropped = True
        return not self.dropped

    def tensor(self, t: Tensor) -> None:
        self.tensors += 1
        self.params += t.numel
        nbytes = t.nbytes
        self.weight_bytes += nbytes
        if t.external:
            self.external_bytes += nbytes
            files = self.external_files
            if t.external_location and len(files) < MAX_EXTERNAL_FILES:
                files.add(t.external_location)

    def node(self, n: Node, at: int) -> None:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise ModelTooLargeError(
                f"the graph has more than {self.max_nodes} nodes (policy.profileMaxNodes; "
                f"stopped at byte {at})"
            )
        op = n.qualified_op
        if op in self.ops or len(self.ops) < MAX_OP_NAMES:
            self.ops[op] += 1
        else:
            self.ops["<other>"] += 1


def _tensor_cost(t: Tensor) -> int:
    return 240 + len(t.name) + 36 * len(t.dims) + 36 * len(t.int_values or ())


def _info_cost(vi: ValueInfo) -> int:
    return 200 + len(vi.name) + 60 * len(vi.shape or ())


def _node_cost(n: Node) -> int:
    cost = 480 + len(n.name) + len(n.op_type) + len(n.domain)
    cost += sum(80 + len(x) for x in n.inputs) + sum(80 + len(x) for x in n.outputs)
    for v in n.attrs.values():
        cost += 120
        if isinstance(v, tuple):
            cost += 40 * len(v)
        elif isinstance(v, bytes):
            cost += len(v)
    return cost


def _expect(r: WireReader, wire_type: int, wanted: int, what: str) -> None:
    if wire_type != wanted:
        raise CorruptModelError(
            f"{what} has wire type {wire_name(wire_type)}, expected {wire_name(wanted)}",
            offset=r.tell(),
        )


def _string(r: WireReader, end: int, what: str) -> str:
    stop = r.length(end, what)
    n = stop - r.tell()
    if n > MAX_KEPT_STRING:
        r.skip(n, what)
        return f"<{n}-byte string>"
    return r.read(n, what).decode("utf-8", "replace")


def _message_end(r: WireReader, wire_type: int, end: int, what: str) -> int:
    _expect(r, wire_type, LEN, what)
    return r.length(end, what)


def _check_end(r: WireReader, stop: int, what: str) -> None:
    if r.tell() != stop:
        raise CorruptModelError(f"{what} overruns its declared length", offset=r.tell())


def _int_list(r: WireReader, wire_type: int, end: int, what: str, out: list[int]) -> None:
    """Repeated int32/int64: packed (one length-delimited run) or one varint per key."""
    if wire_type == VARINT:
        out.append(to_signed64(r.varint()))
        return
    _expect(r, wire_type, LEN, what)
    stop = r.length(end, what)
    at = r.tell()
    n = stop - at
    if n > MAX_KEPT_STRING:
        r.skip(n, what)  # far longer than any dims or shape attribute: not worth keeping
        return
    out.extend(decode_packed_varints(r.read(n, what), at))


def _parse_tensor(r: WireReader, end: int) -> Tensor:
    t = Tensor()
    small_ints: list[int] = []
    while r.tell() < end:
        f, wt = r.key()
        if f == 1:  # dims
            _int_list(r, wt, end, "TensorProto.dims", t.dims)
        elif f == 2:  # data_type
            _expect(r, wt, VARINT, "TensorProto.data_type")
            t.data_type = r.varint()
        elif f == 8:  # name
            _expect(r, wt, LEN, "TensorProto.name")
            t.name = _string(r, end, "TensorProto.name")
        elif f == 9:  # raw_data: the weights themselves; only tiny ones are kept
            _expect(r, wt, LEN, "TensorProto.raw_data")
            stop = r.length(end, "TensorProto.raw_data")
            n = stop - r.tell()
            t.payload_bytes += n
            if n <= MAX_KEPT_INT_VALUES * 8:
                t._small_raw = r.read(n, "TensorProto.raw_data")
            else:
                r.skip(n, "TensorProto.raw_data")
        elif f in (5, 7) and wt == LEN:  # int32_data / int64_data, packed
            stop = r.length(end, "TensorProto int data")
            n = stop - r.tell()
            t.payload_bytes += n
            if n <= MAX_KEPT_INT_VALUES * 10:
                small_ints.extend(decode_packed_varints(r.read(n, "TensorProto int data")))
            else:
                r.skip(n, "TensorProto int data")
        elif f in (5, 7) and wt == VARINT:
            small_ints.append(to_signed64(r.varint()))
        elif f == 13:  # external_data: StringStringEntryProto {key=1, value=2}
            stop = _message_end(r, wt, end, "TensorProto.external_data")
            key = value = ""
            while r.tell() < stop:
                ef, ewt = r.key()
                if ef in (1, 2):
                    _expect(r, ewt, LEN, "StringStringEntryProto")
                    s = _string(r, stop, "StringStringEntryProto")
                    if ef == 1:
                        key = s
                    else:
                        value = s
                else:
                    r.skip_field(ewt, stop)
            _check_end(r, stop, "TensorProto.external_data")
            if key == "location":
                t.external_location = value
            elif key == "length":
                try:
                    t.external_length = int(value)
                except ValueError:
                    raise CorruptModelError(
                        f"external data length {value!r} is not an integer", offset=r.tell()
                    ) from None
        elif f == 14:  # data_location: 1 = EXTERNAL
            _expect(r, wt, VARINT, "TensorProto.data_location")
            t.external = r.varint() == 1
        else:  # float_data, string_data, double_data, uint64_data, doc_string, segment...
            t.payload_bytes += r.skip_field(wt, end)
    _check_end(r, end, "TensorProto")
    if small_ints and t.data_type in (_INT32, _INT64) and len(small_ints) <= MAX_KEPT_INT_VALUES:
        t.int_values = small_ints
    t.finish()
    if t.external_location is not None:
        t.external = True
    return t


def _parse_sparse_tensor(r: WireReader, end: int) -> Tensor:
    """SparseTensorProto: values=1, indices=2, dims=3. Counted as its values plus indices."""
    values: Tensor | None = None
    index_bytes = 0
    dims: list[int] = []
    while r.tell() < end:
        f, wt = r.key()
        if f in (1, 2):
            stop = _message_end(r, wt, end, "SparseTensorProto")
            t = _parse_tensor(r, stop)
            if f == 1:
                values = t
            else:
                index_bytes += t.nbytes
        elif f == 3:
            _int_list(r, wt, end, "SparseTensorProto.dims", dims)
        else:
            r.skip_field(wt, end)
    _check_end(r, end, "SparseTensorProto")
    values = values or Tensor()
    # Parameters are the stored (non-zero) values; bytes also cover the indices.
    values.extra_bytes = index_bytes
    return values


def _parse_shape(r: WireReader, end: int) -> tuple[Dim, ...]:
    dims: list[Dim] = []
    while r.tell() < end:
        f, wt = r.key()
        if f == 1:
            stop = _message_end(r, wt, end, "TensorShapeProto.dim")
            d: Dim = None
            while r.tell() < stop:
                df, dwt = r.key()
                if df == 1:
                    _expect(r, dwt, VARINT, "Dimension.dim_value")
                    d = to_signed64(r.varint())
                elif df == 2:
                    _expect(r, dwt, LEN, "Dimension.dim_param")
                    d = _string(r, stop, "Dimension.dim_param")
                else:
                    r.skip_field(dwt, stop)
            _check_end(r, stop, "TensorShapeProto.dim")
            dims.append(d)
        else:
            r.skip_field(wt, end)
    _check_end(r, end, "TensorShapeProto")
    return tuple(dims)


def _parse_tensor_type(r: WireReader, end: int, vi: ValueInfo) -> None:
    while r.tell() < end:
        f, wt = r.key()
        if f == 1:
            _expect(r, wt, VARINT, "TypeProto.Tensor.elem_type")
            et = r.varint()
            vi.elem_type = TENSOR_TYPES.get(et, (f"type{et}", 0))[0]
        elif f == 2:
            stop = _message_end(r, wt, end, "TypeProto.Tensor.shape")
            vi.shape = _parse_shape(r, stop)
        else:
            r.skip_field(wt, end)
    _check_end(r, end, "TypeProto.Tensor")


_OTHER_TYPES = {4: "sequence", 5: "map", 9: "optional", 6: "denotation"}


def _parse_value_info(r: WireReader, end: int) -> ValueInfo:
    vi = ValueInfo()
    while r.tell() < end:
        f, wt = r.key()
        if f == 1:
            _expect(r, wt, LEN, "ValueInfoProto.name")
            vi.name = _string(r, end, "ValueInfoProto.name")
        elif f == 2:
            tstop = _message_end(r, wt, end, "ValueInfoProto.type")
            while r.tell() < tstop:
                tf, twt = r.key()
                if tf in (1, 8):  # tensor_type, sparse_tensor_type share the layout
                    stop = _message_end(r, twt, tstop, "TypeProto.tensor_type")
                    _parse_tensor_type(r, stop, vi)
                else:
                    if tf in _OTHER_TYPES and tf != 6:
                        vi.elem_type = _OTHER_TYPES[tf]
                    r.skip_field(twt, tstop)
            _check_end(r, tstop, "TypeProto")
        else:
            r.skip_field(wt, end)
    _check_end(r, end, "ValueInfoProto")
    return vi


def _parse_attribute(r: WireReader, end: int, node: Node, depth: int, tally: Tally) -> None:
    name = ""
    value: AttrValue | None = None
    ints: list[int] = []
    floats: list[float] = []
    graphs: list[Graph] = []
    while r.tell() < end:
        f, wt = r.key()
        if f == 1:
            _expect(r, wt, LEN, "AttributeProto.name")
            name = _string(r, end, "AttributeProto.name")
        elif f == 2:  # f
            _expect(r, wt, FIXED32, "AttributeProto.f")
            value = r.float32()
        elif f == 3:  # i
            _expect(r, wt, VARINT, "AttributeProto.i")
            value = to_signed64(r.varint())
        elif f == 4:  # s
            _expect(r, wt, LEN, "AttributeProto.s")
            stop = r.length(end, "AttributeProto.s")
            n = stop - r.tell()
            if n <= MAX_KEPT_STRING:
                value = r.read(n, "AttributeProto.s")
            else:
                r.skip(n, "AttributeProto.s")
        elif f in (5, 10):  # t, tensors
            stop = _message_end(r, wt, end, "AttributeProto.t")
            t = _parse_tensor(r, stop)
            tally.tensor(t)
            if f == 5:
                value = t
        elif f in (22, 23):  # sparse_tensor, sparse_tensors
            stop = _message_end(r, wt, end, "AttributeProto.sparse_tensor")
            tally.tensor(_parse_sparse_tensor(r, stop))
        elif f in (6, 11):  # g, graphs
            stop = _message_end(r, wt, end, "AttributeProto.g")
            tally.subgraphs += 1
            graphs.append(_parse_graph(r, stop, depth + 1, tally))
        elif f == 7:  # floats: packed fixed32 or one per key
            if wt == FIXED32:
                floats.append(r.float32())
            else:
                _expect(r, wt, LEN, "AttributeProto.floats")
                stop = r.length(end, "AttributeProto.floats")
                n = stop - r.tell()
                if n % 4 or n > MAX_KEPT_STRING:
                    r.skip(n, "AttributeProto.floats")
                else:
                    floats.extend(struct.unpack(f"<{n // 4}f", r.read(n, "floats")))
        elif f == 8:  # ints
            _int_list(r, wt, end, "AttributeProto.ints", ints)
        else:
            r.skip_field(wt, end)
    _check_end(r, end, "AttributeProto")
    if ints:
        value = tuple(ints)
    elif floats:
        value = tuple(floats)
    if name and value is not None and len(node.attrs) < MAX_NODE_ATTRS:
        node.attrs[name] = value
    for g in graphs:
        node.subgraphs.append((name, g))


def _parse_node(r: WireReader, end: int, depth: int, tally: Tally) -> Node:
    node = Node()
    while r.tell() < end:
        f, wt = r.key()
        if f == 1:
            _expect(r, wt, LEN, "NodeProto.input")
            name = _string(r, end, "NodeProto.input")
            if len(node.inputs) < MAX_NODE_IO:
                node.inputs.append(name)
        elif f == 2:
            _expect(r, wt, LEN, "NodeProto.output")
            name = _string(r, end, "NodeProto.output")
            if len(node.outputs) < MAX_NODE_IO:
                node.outputs.append(name)
        elif f == 3:
            _expect(r, wt, LEN, "NodeProto.name")
            node.name = _string(r, end, "NodeProto.name")
        elif f == 4:
            _expect(r, wt, LEN, "NodeProto.op_type")
            node.op_type = _string(r, end, "NodeProto.op_type")
        elif f == 7:
            _expect(r, wt, LEN, "NodeProto.domain")
            node.domain = _string(r, end, "NodeProto.domain")
        elif f == 5:
            stop = _message_end(r, wt, end, "NodeProto.attribute")
            _parse_attribute(r, stop, node, depth, tally)
        else:
            r.skip_field(wt, end)
    _check_end(r, end, "NodeProto")
    return node


def _parse_graph(r: WireReader, end: int, depth: int, tally: Tally) -> Graph:
    if depth > MAX_GRAPH_DEPTH:
        raise CorruptModelError(
            f"subgraphs nested deeper than {MAX_GRAPH_DEPTH} levels", offset=r.tell()
        )
    g = Graph()
    while r.tell() < end:
        f, wt = r.key()
        if f == 1:
            stop = _message_end(r, wt, end, "GraphProto.node")
            node = _parse_node(r, stop, depth, tally)
            tally.node(node, r.tell())
            if tally.keep(_node_cost(node)):
                g.nodes.append(node)
        elif f == 2:
            _expect(r, wt, LEN, "GraphProto.name")
            g.name = _string(r, end, "GraphProto.name")
        elif f == 5:
            stop = _message_end(r, wt, end, "GraphProto.initializer")
            t = _parse_tensor(r, stop)
            tally.tensor(t)
            if tally.keep(_tensor_cost(t)):
                g.initializers.append(t)
        elif f == 15:
            stop = _message_end(r, wt, end, "GraphProto.sparse_initializer")
            t = _parse_sparse_tensor(r, stop)
            tally.tensor(t)
            if tally.keep(_tensor_cost(t)):
                g.sparse_initializers.append(t)
        elif f in (11, 12, 13):
            stop = _message_end(r, wt, end, "GraphProto value info")
            vi = _parse_value_info(r, stop)
            kept = g.inputs if f == 11 else g.outputs if f == 12 else g.value_info
            # The main graph's inputs and outputs are reported even past the budget.
            io = depth == 0 and f != 13 and len(kept) < MAX_GRAPH_IO
            if tally.keep(_info_cost(vi)) or io:
                kept.append(vi)
        else:
            r.skip_field(wt, end)
    _check_end(r, end, "GraphProto")
    return g


_NO_END = 1 << 62


def parse_model(r: WireReader, tally: Tally | None = None) -> Model:
    """Decode a ModelProto from the reader until end of input, counting into `tally`."""
    m = Model()
    try:
        _parse_model_fields(r, m, tally or Tally())
    except NotOnnxModelError:
        raise
    except CorruptModelError as e:
        # Garbage before any ONNX field means "not ONNX" (text, HTML, another format), not
        # "a damaged ONNX file".
        if m.ir_version is None and m.graph is None and not m.opset_imports and not m.started:
            raise NotOnnxModelError(f"not an ONNX model: {e.args[0]}") from e
        raise
    if m.graph is None:
        raise NotOnnxModelError(
            "not an ONNX model: no graph found in the file"
            + ("" if m.ir_version is not None else " (and no ir_version)")
        )
    return m


def _parse_model_fields(r: WireReader, m: Model, tally: Tally) -> None:
    while not r.at_eof():
        f, wt = r.key()
        if f == 1:
            _expect_top(r, wt, VARINT, "ModelProto.ir_version")
            m.ir_version = to_signed64(r.varint())
        elif f == 2:
            _expect_top(r, wt, LEN, "ModelProto.producer_name")
            m.producer_name = _string(r, _NO_END, "ModelProto.producer_name")
        elif f == 3:
            _expect_top(r, wt, LEN, "ModelProto.producer_version")
            m.producer_version = _string(r, _NO_END, "ModelProto.producer_version")
        elif f == 7:
            _expect_top(r, wt, LEN, "ModelProto.graph")
            stop = r.length(_NO_END, "ModelProto.graph")
            m.started = True
            m.graph = _parse_graph(r, stop, 0, tally)
        elif f == 8:
            _expect_top(r, wt, LEN, "ModelProto.opset_import")
            stop = r.length(_NO_END, "ModelProto.opset_import")
            domain = ""
            version = 0
            while r.tell() < stop:
                of, owt = r.key()
                if of == 1:
                    _expect(r, owt, LEN, "OperatorSetIdProto.domain")
                    domain = _string(r, stop, "OperatorSetIdProto.domain")
                elif of == 2:
                    _expect(r, owt, VARINT, "OperatorSetIdProto.version")
                    version = to_signed64(r.varint())
                else:
                    r.skip_field(owt, stop)
            _check_end(r, stop, "OperatorSetIdProto")
            m.opset_imports.append((domain, version))
        else:
            r.skip_field(wt, _NO_END)


def _expect_top(r: WireReader, wire_type: int, wanted: int, what: str) -> None:
    # A wrong wire type on a top-level ModelProto field almost always means the file is not
    # ONNX at all (an HTML error page, a pickle, a tarball), so say that rather than "corrupt".
    if wire_type != wanted:
        raise NotOnnxModelError(
            f"not an ONNX model: {what} has wire type {wire_name(wire_type)}, "
            f"expected {wire_name(wanted)}",
            offset=r.tell(),
        )
