"""Light shape propagation and FLOP estimation over a decoded ONNX graph.

Conventions (also in the profiler docs):
- FLOPs are 2 x multiply-accumulates of MatMul/Gemm/Conv/ConvTranspose, their quantized and
  fused variants, and attention ops; elementwise ops, normalization and softmax are not counted
  (they are a few percent of the total for the models the policy cares about).
- "Per sample" means every batch axis (the first axis of a graph input, when symbolic) is 1.
  Other symbolic dims come from `dim_overrides` or default to 1 and are reported, so a
  transformer with a symbolic sequence length is costed per token unless told otherwise.
- Shapes come from initializers, graph inputs, a set of shape rules for common ops, and
  the model's own value_info annotations when a rule is missing. Small integer tensors
  (Shape -> Gather -> Concat -> Reshape chains) are folded so attention reshapes resolve.
- When a FLOP-bearing op has an unknown input shape, the estimate uses what is known
  (e.g. a MatMul with a known weight counts one row) and records a note; the profile is then
  marked approximate. If branches count the costlier branch; Loop/Scan bodies count once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._onnx import Dim, Graph, Node, Tensor

Shape = tuple[int, ...]
Values = tuple[int, ...]

MAX_NOTES = 20
MAX_VALUES = 64


@dataclass(slots=True)
class FlopsResult:
    total: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    unresolved_dims: set[str] = field(default_factory=set)


class _UnknownShapeError(Exception):
    """A rule lacks the shapes it needs; outputs stay unknown."""


def _prod(xs: Sequence[int]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def _bcast(*shapes: Shape | None) -> Shape:
    known = [s for s in shapes if s is not None]
    if len(known) != len(shapes):
        raise _UnknownShapeError
    rank = max((len(s) for s in known), default=0)
    out = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in known if i - rank + len(s) >= 0]
        big = [d for d in dims if d != 1]
        out.append(max(big) if big else 1)
    return tuple(out)


class _Ctx:
    def __init__(
        self,
        overrides: dict[str, int],
        batch_syms: set[str],
        result: FlopsResult,
        shapes: dict[str, Shape] | None = None,
        values: dict[str, Values] | None = None,
    ) -> None:
        self.overrides = overrides
        self.batch_syms = batch_syms
        self.result = result
        self.shapes: dict[str, Shape] = dict(shapes or {})
        self.values: dict[str, Values] = dict(values or {})
        self.hints: dict[str, tuple[Dim, ...]] = {}

    def note(self, text: str) -> None:
        notes = self.result.notes
        if text not in notes and len(notes) < MAX_NOTES:
            notes.append(text)

    def resolve(self, dims: tuple[Dim, ...], batch_axis0: bool = False) -> Shape:
        out: list[int] = []
        for i, d in enumerate(dims):
            if isinstance(d, int) and d >= 0:
                out.append(d)
            elif isinstance(d, str) and d in self.overrides:
                out.append(self.overrides[d])
            elif (batch_axis0 and i == 0) or (isinstance(d, str) and d in self.batch_syms):
                out.append(1)
            else:
                self.result.unresolved_dims.add(d if isinstance(d, str) else "?")
                out.append(1)
        return tuple(out)

    def shape(self, node: Node, i: int) -> Shape | None:
        if i >= len(node.inputs) or not node.inputs[i]:
            return None
        return self.shapes.get(node.inputs[i])

    def need(self, node: Node, i: int) -> Shape:
        s = self.shape(node, i)
        if s is None:
            raise _UnknownShapeError
        return s

    def value(self, node: Node, i: int) -> Values | None:
        if i >= len(node.inputs) or not node.inputs[i]:
            return None
        return self.values.get(node.inputs[i])

    def set_value(self, node: Node, v: Sequence[int], i: int = 0) -> None:
        if i < len(node.outputs) and len(v) <= MAX_VALUES:
            self.values[node.outputs[i]] = tuple(v)


def _ai(node: Node, name: str, default: int) -> int:
    v = node.attrs.get(name, default)
    return v if isinstance(v, int) else default


def _ints(node: Node, name: str) -> tuple[int, ...] | None:
    v = node.attrs.get(name)
    if isinstance(v, tuple) and all(isinstance(x, int) for x in v):
        return tuple(int(x) for x in v)
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,)
    return None


def _as(node: Node, name: str) -> str:
    v = node.attrs.get(name)
    return v.decode("ascii", "replace") if isinstance(v, bytes) else ""


def _axes(node: Node, ctx: _Ctx, input_index: int) -> tuple[int, ...] | None:
    """Axes come from an attribute (older opsets) or a constant input (newer ones)."""
    a = _ints(node, "axes")
    return a if a is not None else ctx.value(node, input_index)


Rule = Callable[[Node, _Ctx], tuple[list[Shape | None], int]]


# --- shape-only rules ------------------------------------------------------------------------


def _same(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.shape(node, 0)
    v = ctx.value(node, 0)
    if v is not None and node.op_type in ("Identity", "Cast", "CastLike"):
        ctx.set_value(node, v)
    return [s, s] if node.op_type == "Dropout" else [s], 0


_VALUE_OPS: dict[str, Callable[[int, int], int]] = {
    "Add": lambda x, y: x + y,
    "Sub": lambda x, y: x - y,
    "Mul": lambda x, y: x * y,
    "Div": lambda x, y: int(x / y) if y else 0,
}


def _elementwise(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    shapes = [ctx.shape(node, i) for i in range(len(node.inputs))]
    out = _bcast(*shapes)
    a, b = ctx.value(node, 0), ctx.value(node, 1)
    fn = _VALUE_OPS.get(node.op_type)
    if fn is not None and len(node.inputs) == 2 and a is not None and b is not None:
        # Shape arithmetic on small integer tensors (e.g. seq_len * heads); scalars broadcast.
        if len(a) == 1:
            a = a * len(b)
        if len(b) == 1:
            b = b * len(a)
        if len(a) == len(b):
            ctx.set_value(node, [fn(x, y) for x, y in zip(a, b, strict=True)])
    return [out], 0


def _constant(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    v = node.attrs.get("value")
    if isinstance(v, Tensor):
        if v.int_values is not None:
            ctx.set_value(node, v.int_values)
        return [tuple(v.dims)], 0
    if "value_int" in node.attrs or "value_float" in node.attrs:
        iv = node.attrs.get("value_int")
        if isinstance(iv, int):
            ctx.set_value(node, [iv])
        return [()], 0
    for name in ("value_ints", "value_floats"):
        seq = node.attrs.get(name)
        if isinstance(seq, tuple):
            if name == "value_ints":
                ctx.set_value(node, [int(x) for x in seq])
            return [(len(seq),)], 0
    raise _UnknownShapeError


def _shape_op(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    r = len(s)
    start = _ai(node, "start", 0)
    end = _ai(node, "end", r)
    sub = s[slice(start, end)]
    ctx.set_value(node, sub)
    return [(len(sub),)], 0


def _reshape(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    target = ctx.value(node, 1) if len(node.inputs) > 1 else _ints(node, "shape")
    if target is None:
        raise _UnknownShapeError
    data = ctx.shape(node, 0)
    allow_zero = _ai(node, "allowzero", 0)
    out: list[int] = []
    for i, d in enumerate(target):
        if d == 0 and not allow_zero:
            if data is None:
                raise _UnknownShapeError
            out.append(data[i])
        else:
            out.append(d)
    if -1 in out:
        if data is None:
            raise _UnknownShapeError
        known = _prod([d for d in out if d != -1])
        out[out.index(-1)] = _prod(data) // known if known else 0
    v = ctx.value(node, 0)
    if v is not None:
        ctx.set_value(node, v)
    return [tuple(out)], 0


def _transpose(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    perm = _ints(node, "perm") or tuple(reversed(range(len(s))))
    return [tuple(s[p] for p in perm)], 0


def _flatten(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    axis = _ai(node, "axis", 1)
    if axis < 0:
        axis += len(s)
    return [(_prod(s[:axis]), _prod(s[axis:]))], 0


def _concat(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    shapes = [ctx.need(node, i) for i in range(len(node.inputs)) if node.inputs[i]]
    axis = _ai(node, "axis", 0)
    vals = [ctx.value(node, i) for i in range(len(node.inputs)) if node.inputs[i]]
    if vals and all(v is not None for v in vals):
        ctx.set_value(node, [x for v in vals if v is not None for x in v])
    first = list(shapes[0])
    if axis < 0:
        axis += len(first)
    first[axis] = sum(s[axis] for s in shapes)
    return [tuple(first)], 0


def _squeeze(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    axes = _axes(node, ctx, 1)
    if axes is None:
        out = tuple(d for d in s if d != 1)
    else:
        norm = {a + len(s) if a < 0 else a for a in axes}
        out = tuple(d for i, d in enumerate(s) if i not in norm)
    v = ctx.value(node, 0)
    if v is not None:
        ctx.set_value(node, v)
    return [out], 0


def _unsqueeze(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    axes = _axes(node, ctx, 1)
    if axes is None:
        raise _UnknownShapeError
    rank = len(s) + len(axes)
    norm = sorted(a + rank if a < 0 else a for a in axes)
    out = list(s)
    for a in norm:
        out.insert(a, 1)
    v = ctx.value(node, 0)
    if v is not None:
        ctx.set_value(node, v)
    return [tuple(out)], 0


def _gather(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    data = ctx.need(node, 0)
    idx = ctx.need(node, 1)
    axis = _ai(node, "axis", 0)
    if axis < 0:
        axis += len(data)
    dv, iv = ctx.value(node, 0), ctx.value(node, 1)
    if dv is not None and iv is not None and len(data) == 1:
        ctx.set_value(node, [dv[i] for i in iv])
    return [data[:axis] + idx + data[axis + 1 :]], 0


def _slice(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    if len(node.inputs) > 1:
        starts, ends = ctx.value(node, 1), ctx.value(node, 2)
        axes = ctx.value(node, 3) if len(node.inputs) > 3 and node.inputs[3] else None
        steps = ctx.value(node, 4) if len(node.inputs) > 4 and node.inputs[4] else None
    else:
        starts, ends, axes, steps = _ints(node, "starts"), _ints(node, "ends"), None, None
        axes = _ints(node, "axes")  # opset < 10 keeps these as attributes
    if starts is None or ends is None:
        raise _UnknownShapeError
    axes = axes or tuple(range(len(starts)))
    steps = steps or (1,) * len(starts)
    out = list(s)
    v = ctx.value(node, 0)
    for a, b, e, st in zip(axes, starts, ends, steps, strict=False):
        a = a + len(s) if a < 0 else a
        rng = range(s[a])[slice(b, e, st)]
        out[a] = len(rng)
        if v is not None and len(s) == 1:
            ctx.set_value(node, [v[i] for i in rng])
    return [tuple(out)], 0


def _split(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    axis = _ai(node, "axis", 0)
    if axis < 0:
        axis += len(s)
    sizes = ctx.value(node, 1) if len(node.inputs) > 1 and node.inputs[1] else None
    sizes = sizes or _ints(node, "split")
    n = len(node.outputs)
    if sizes is None:
        parts = _ai(node, "num_outputs", n) or n
        chunk = -(-s[axis] // parts)
        sizes = tuple(min(chunk, s[axis] - i * chunk) for i in range(parts))
    outs: list[Shape | None] = []
    for size in sizes:
        o = list(s)
        o[axis] = size
        outs.append(tuple(o))
    return outs, 0


def _reduce(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    axes = _axes(node, ctx, 1)
    keep = _ai(node, "keepdims", 1)
    if axes is None:
        if _ai(node, "noop_with_empty_axes", 0):
            return [s], 0
        axes = tuple(range(len(s)))
    norm = {a + len(s) if a < 0 else a for a in axes}
    if keep:
        return [tuple(1 if i in norm else d for i, d in enumerate(s))], 0
    return [tuple(d for i, d in enumerate(s) if i not in norm)], 0


def _constant_of_shape(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    v = ctx.value(node, 0)
    if v is None:
        raise _UnknownShapeError
    return [tuple(v)], 0


def _expand(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    v = ctx.value(node, 1)
    if v is None:
        raise _UnknownShapeError
    return [_bcast(ctx.need(node, 0), tuple(v))], 0


def _tile(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    reps = ctx.value(node, 1)
    if reps is None:
        raise _UnknownShapeError
    return [tuple(d * r for d, r in zip(s, reps, strict=False))], 0


def _pad(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    pads = _ints(node, "pads") or ctx.value(node, 1)
    if pads is None or len(pads) != 2 * len(s):
        raise _UnknownShapeError
    return [tuple(d + pads[i] + pads[i + len(s)] for i, d in enumerate(s))], 0


def _global_pool(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    return [s[:2] + (1,) * (len(s) - 2)], 0


def _window_out(node: Node, spatial: Shape, kernel: Sequence[int], ceil_mode: bool) -> Shape:
    n = len(spatial)
    strides = _ints(node, "strides") or (1,) * n
    dil = _ints(node, "dilations") or (1,) * n
    pads = _ints(node, "pads") or (0,) * (2 * n)
    auto_pad = _as(node, "auto_pad")
    out = []
    for i in range(n):
        eff = (kernel[i] - 1) * dil[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-spatial[i] // strides[i]))
        elif auto_pad == "VALID":
            out.append((spatial[i] - eff) // strides[i] + 1)
        else:
            num = spatial[i] + pads[i] + pads[i + n] - eff
            out.append((-(-num // strides[i]) if ceil_mode else num // strides[i]) + 1)
    return tuple(out)


def _pool(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    s = ctx.need(node, 0)
    kernel = _ints(node, "kernel_shape")
    if kernel is None:
        raise _UnknownShapeError
    out = s[:2] + _window_out(node, s[2:], kernel, bool(_ai(node, "ceil_mode", 0)))
    return [out, out], 0


# --- FLOP-bearing rules ----------------------------------------------------------------------


def _matmul_shapes(a: Shape, b: Shape) -> tuple[Shape, int]:
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    m, k = a2[-2], a2[-1]
    n = b2[-1]
    batch = _bcast(a2[:-2], b2[:-2])
    out = batch + ((m,) if len(a) > 1 else ()) + ((n,) if len(b) > 1 else ())
    return out, 2 * _prod(batch) * m * k * n


def _matmul_like(a_index: int, b_index: int) -> Rule:
    def rule(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
        a, b = ctx.shape(node, a_index), ctx.shape(node, b_index)
        if node.op_type == "FusedMatMul":
            if a is not None and _ai(node, "transA", 0) and len(a) >= 2:
                a = (*a[:-2], a[-1], a[-2])
            if b is not None and _ai(node, "transB", 0) and len(b) >= 2:
                b = (*b[:-2], b[-1], b[-2])
        if a is not None and b is not None:
            out, flops = _matmul_shapes(a, b)
            return [out], flops
        if b is not None and len(b) >= 2:
            ctx.note(
                f"{node.op_type} {node.name or node.outputs[0]}: input shape unknown, "
                "counted one row"
            )
            return [None], 2 * _prod(b)
        ctx.note(f"{node.op_type} {node.name or node.outputs[0]}: shapes unknown, not counted")
        return [None], 0

    return rule


def _gemm(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    a, b = ctx.shape(node, 0), ctx.shape(node, 1)
    if b is None or len(b) != 2:
        ctx.note(f"Gemm {node.name or node.outputs[0]}: weight shape unknown, not counted")
        return [None], 0
    k, n = (b[1], b[0]) if _ai(node, "transB", 0) else (b[0], b[1])
    if a is None or len(a) != 2:
        ctx.note(f"Gemm {node.name or node.outputs[0]}: input shape unknown, counted one row")
        return [None], 2 * k * n
    m = a[1] if _ai(node, "transA", 0) else a[0]
    return [(m, n)], 2 * m * k * n


def _matmul_nbits(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    k, n = _ai(node, "K", 0), _ai(node, "N", 0)
    a = ctx.shape(node, 0)
    if a is None:
        ctx.note(f"MatMulNBits {node.name}: input shape unknown, counted one row")
        return [None], 2 * k * n
    return [(*a[:-1], n)], 2 * _prod(a[:-1]) * k * n


def _conv_like(x_index: int, w_index: int) -> Rule:
    def rule(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
        x, w = ctx.shape(node, x_index), ctx.shape(node, w_index)
        if w is None or len(w) < 3:
            ctx.note(f"{node.op_type} {node.name}: weight shape unknown, not counted")
            return [None], 0
        kernel = _ints(node, "kernel_shape") or w[2:]
        macs_per_position = w[1] * _prod(kernel)  # W[1] = input channels per group
        if x is None:
            ctx.note(f"{node.op_type} {node.name}: input shape unknown, counted one position")
            return [None], 2 * w[0] * macs_per_position
        spatial = _window_out(node, x[2:], kernel, False)
        out = (x[0], w[0], *spatial)
        return [out], 2 * x[0] * w[0] * _prod(spatial) * macs_per_position

    return rule


def _conv_transpose(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    x, w = ctx.shape(node, 0), ctx.shape(node, 1)
    if w is None or len(w) < 3:
        ctx.note(f"ConvTranspose {node.name}: weight shape unknown, not counted")
        return [None], 0
    group = _ai(node, "group", 1)
    kernel = _ints(node, "kernel_shape") or w[2:]
    # Every input position scatters into a kernel window for each output channel of its group.
    macs_per_position = w[1] * _prod(kernel)
    if x is None:
        ctx.note(f"ConvTranspose {node.name}: input shape unknown, counted one position")
        return [None], 2 * w[0] * macs_per_position
    n = len(x) - 2
    strides = _ints(node, "strides") or (1,) * n
    dil = _ints(node, "dilations") or (1,) * n
    pads = _ints(node, "pads") or (0,) * (2 * n)
    opad = _ints(node, "output_padding") or (0,) * n
    explicit = _ints(node, "output_shape")
    if explicit is not None:
        spatial = tuple(explicit[-n:])
    else:
        spatial = tuple(
            strides[i] * (x[2 + i] - 1)
            + opad[i]
            + (kernel[i] - 1) * dil[i]
            + 1
            - pads[i]
            - pads[i + n]
            for i in range(n)
        )
    out = (x[0], w[1] * group, *spatial)
    return [out], 2 * x[0] * x[1] * _prod(x[2:]) * macs_per_position


def _ms_attention(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    """com.microsoft Attention: input [B,S,D] x packed QKV weights [D, Dq+Dk+Dv]."""
    x, w = ctx.shape(node, 0), ctx.shape(node, 1)
    if x is None or w is None or len(x) != 3:
        ctx.note(f"Attention {node.name}: shapes unknown, not counted")
        return [None], 0
    b, s, d = x
    sizes = _ints(node, "qkv_hidden_sizes") or (w[1] // 3,) * 3
    dq, _, dv = sizes
    proj = 2 * b * s * d * w[1]
    return [(b, s, dv)], proj + 2 * b * s * s * dq + 2 * b * s * s * dv


def _mha(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    """com.microsoft MultiHeadAttention: query [B,S,D], key/value [B,L,D] or [B,H,L,dh]."""
    q = ctx.need(node, 0)
    if len(q) != 3:
        raise _UnknownShapeError
    b, s, d = q
    k, v = ctx.shape(node, 1), ctx.shape(node, 2)
    length = s if k is None else (k[1] if len(k) == 3 else k[2])
    dv = d if v is None else (v[2] if len(v) == 3 else v[1] * v[3])
    if k is None:
        ctx.note(f"MultiHeadAttention {node.name}: key length taken as query length")
    return [(b, s, dv)], 2 * b * s * length * d + 2 * b * s * length * dv


def _gqa(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    """com.microsoft GroupQueryAttention; the KV-cache length is not knowable statically."""
    q = ctx.need(node, 0)
    if len(q) != 3:
        raise _UnknownShapeError
    b, s, d = q
    heads, kv_heads = _ai(node, "num_heads", 1), _ai(node, "kv_num_heads", 1)
    packed = len(node.inputs) < 2 or not node.inputs[1]
    head_dim = d // (heads + 2 * kv_heads) if packed else d // heads
    ctx.note(f"GroupQueryAttention {node.name}: past length unknown, attention over {s} tokens")
    hidden = heads * head_dim
    return [(b, s, hidden)], 4 * b * s * s * hidden


def _onnx_attention(node: Node, ctx: _Ctx) -> tuple[list[Shape | None], int]:
    """ai.onnx Attention (opset 23): 4-D [B,H,S,dh] or 3-D [B,S,H*dh] inputs."""
    q, k, v = ctx.need(node, 0), ctx.need(node, 1), ctx.need(node, 2)
    if len(q) == 4:
        b, hq, s, dh = q
        length, dv = k[2], v[3]
        return [(b, hq, s, dv)], 2 * b * hq * s * length * (dh + dv)
    b, s, dq = q
    hq, hkv = _ai(node, "q_num_heads", 1), _ai(node, "kv_num_heads", 1)
    length = k[1]
    dv_total = v[2] // max(hkv, 1) * hq
    return [(b, s, dv_total)], 2 * b * s * length * (dq + dv_total)


_UNARY = [
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BatchNormalization",
    "BiasGelu",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "CumSum",
    "DequantizeLinear",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "FastGelu",
    "Floor",
    "Gelu",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LRN",
    "MeanVarianceNormalization",
    "Mish",
    "Neg",
    "Not",
    "QuantizeLinear",
    "QuickGelu",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Trilu",
]
_BINARY = [
    "Add",
    "And",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Or",
    "Pow",
    "PRelu",
    "Sub",
    "Sum",
    "Where",
    "Xor",
]
_REDUCE = [
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
]

RULES: dict[str, Rule] = {
    **dict.fromkeys(_UNARY, _same),
    **dict.fromkeys(_BINARY, _elementwise),
    **dict.fromkeys(_REDUCE, _reduce),
    **dict.fromkeys(("MaxPool", "AveragePool", "LpPool"), _pool),
    **dict.fromkeys(("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"), _global_pool),
    "Constant": _constant,
    "Shape": _shape_op,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Flatten": _flatten,
    "Concat": _concat,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
    "Slice": _slice,
    "Split": _split,
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Tile": _tile,
    "Pad": _pad,
    "MatMul": _matmul_like(0, 1),
    "FusedMatMul": _matmul_like(0, 1),
    "MatMulInteger": _matmul_like(0, 1),
    "MatMulIntegerToFloat": _matmul_like(0, 1),
    "DynamicQuantizeMatMul": _matmul_like(0, 1),
    "QLinearMatMul": _matmul_like(0, 3),
    "MatMulNBits": _matmul_nbits,
    "Gemm": _gemm,
    "Conv": _conv_like(0, 1),
    "FusedConv": _conv_like(0, 1),
    "ConvInteger": _conv_like(0, 1),
    "QLinearConv": _conv_like(0, 3),
    "ConvTranspose": _conv_transpose,
    "MultiHeadAttention": _mha,
    "GroupQueryAttention": _gqa,
}

_KNOWN_DOMAINS = ("", "ai.onnx", "com.microsoft")


class _Estimator:
    def __init__(self, overrides: dict[str, int], batch_syms: set[str]) -> None:
        self.overrides = overrides
        self.batch_syms = batch_syms
        self.result = FlopsResult()

    def run(self, graph: Graph, ctx: _Ctx, top: bool) -> int:
        for t in (*graph.initializers, *graph.sparse_initializers):
            ctx.shapes[t.name] = tuple(t.dims)
            if t.int_values is not None and len(t.int_values) <= MAX_VALUES:
                ctx.values[t.name] = tuple(t.int_values)
        for vi in graph.inputs:
            if vi.name in ctx.shapes or vi.shape is None:
                continue
            ctx.shapes[vi.name] = ctx.resolve(vi.shape, batch_axis0=top)
        for vi in (*graph.value_info, *graph.outputs):
            if vi.shape is not None:
                ctx.hints[vi.name] = vi.shape
        return sum(self.node(n, ctx) for n in graph.nodes)

    def node(self, node: Node, ctx: _Ctx) -> int:
        sub_total = 0
        sub_outs: list[Shape | None] = []
        if node.subgraphs:
            costs = []
            for _, g in node.subgraphs:
                child = _Ctx(self.overrides, self.batch_syms, self.result, ctx.shapes, ctx.values)
                costs.append(self.run(g, child, top=False))
                if not sub_outs:
                    sub_outs = [child.shapes.get(o.name) for o in g.outputs]
            if node.op_type == "If":
                sub_total = max(costs)
            else:
                sub_total = sum(costs)
                if node.op_type in ("Loop", "Scan"):
                    ctx.note(f"{node.op_type} {node.name}: body counted once (trip count unknown)")
        outs: list[Shape | None] = []
        flops = 0
        rule = None
        if node.domain in _KNOWN_DOMAINS:
            rule = RULES.get(node.op_type)
            if node.op_type == "Attention":
                rule = _ms_attention if node.domain == "com.microsoft" else _onnx_attention
        if rule is not None:
            try:
                outs, flops = rule(node, ctx)
            except _UnknownShapeError:
                outs = []
            except (IndexError, ValueError, ZeroDivisionError, TypeError):
                # A malformed attribute or a rank the rule did not expect: leave it unknown.
                outs = []
                ctx.note(f"{node.op_type} {node.name}: could not infer shapes")
        elif node.op_type == "Einsum":
            ctx.note(f"Einsum {node.name}: not counted")
        if node.op_type == "If" and not outs:
            outs = sub_outs
        for i, name in enumerate(node.outputs):
            s = outs[i] if i < len(outs) else None
            if s is None and name in ctx.hints:
                s = ctx.resolve(ctx.hints[name])
            if s is not None and name:
                ctx.shapes[name] = s
        if flops:
            self.result.by_op[node.qualified_op] += flops
        return flops + sub_total


def estimate_flops(
    graph: Graph, dim_overrides: dict[str, int], batch_syms: set[str]
) -> FlopsResult:
    est = _Estimator(dim_overrides, batch_syms)
    ctx = _Ctx(dim_overrides, batch_syms, est.result)
    est.result.total = est.run(graph, ctx, top=True)
    return est.result
