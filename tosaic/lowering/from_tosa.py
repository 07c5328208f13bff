"""Lower a TOSA graph to structured ops: one registered lowering per TOSA op.

Each lowering reads the TOSA op's operands (constants already as arrays) and emits structured ops whose
scalar bodies compute exactly what `tosaic/tosa/interpreter.py` computes for that op. Zero points, shifts,
multipliers and TOSA shape operands must be constants (the importer always makes them so); per-channel
multipliers and shifts become constant inputs read along the last dimension.

Floats follow the spec's definitions exactly where an element's value does not depend on an order of
accumulation the spec leaves to implementations' precision bounds: elementwise arithmetic, max/min/clamp
with their NaN modes, casts, and reductions and max pooling combined in index order. Convolutions, matmuls
and average pooling on floats, float argmax and resize, transcendental functions and f16 tensors are
refused here, at compile time, with the op and the reason.
"""

from __future__ import annotations

import numpy as np

from tosaic.ir import Graph, Operation, TensorType, Value, element_type_of, integer_range
from tosaic.lowering import scalar as S
from tosaic.lowering.structured import PARALLEL, REDUCTION, Access, AffineMap, LoweringError, generic, lowest
from tosaic.quant import float_ops, reciprocal_scale
from tosaic.tosa.interpreter import initial_state

LOWERINGS = {}


def lowers(*names):
    def register(fn):
        for name in names:
            LOWERINGS[name] = fn
        return fn

    return register


class LoweringContext:
    """Maps TOSA values to structured values while the structured graph is built."""

    def __init__(self, source: Graph):
        self.source = source
        self.graph = Graph(source.name)
        self.values: dict[Value, Value] = {}
        self.constants: dict[Value, np.ndarray] = {}
        self.op: Operation | None = None

    def emit(self, op: Operation) -> Operation:
        if self.op is not None:
            if op.loc is None:
                op.loc = self.op.loc or self.op.name
            self.graph.origins[op] = [f"{self.op.name}" + (f" ({self.op.loc})" if self.op.loc else "")]
        return self.graph.append(op)

    def const(self, array: np.ndarray) -> Value:
        array = np.require(array, requirements="C")  # keeps rank 0
        op = self.emit(Operation("linalg.const", [], {"values": array},
                                 [TensorType(array.shape, element_type_of(array))]))
        return op.result

    def constant(self, v: Value, what: str) -> np.ndarray:
        if v not in self.constants:
            raise LoweringError(f"{self.op.name} ({self.op.loc}): {what} is a runtime value; TOSA 1.0 PRO-INT makes "
                                f"it a compile-time constant (runtime ones belong to EXT-DYNAMIC, which the compiled "
                                f"targets do not implement)")
        return self.constants[v]

    def scalar(self, v: Value, what: str) -> int:
        return int(np.asarray(self.constant(v, what)).reshape(-1)[0])

    def operand(self, v: Value) -> Value:
        if v not in self.values:
            if v in self.constants:
                self.values[v] = self.const(self.constants[v])
            else:
                raise LoweringError(f"{self.op.name}: operand {v} has no structured value")
        return self.values[v]


def lower(source: Graph) -> Graph:
    """The structured program computing the same outputs as the TOSA graph `source`."""
    ctx = LoweringContext(source)
    for v in source.inputs:
        ctx.values[v] = ctx.graph.add_input(v.type, v.name)
    ctx.graph.io_info = dict(source.io_info)
    ctx.graph.state = initial_state(source)
    ctx.graph.origins = {}
    for op in source.ops:
        ctx.op = op
        halves = [v.type for v in list(op.operands) + list(op.results) if getattr(v.type, "dtype", None) == "f16"]
        if halves:
            raise LoweringError(f"{op.name} ({op.loc}) on {halves[0]}: compiled targets have no f16 kernels; "
                                f"use target='interp'")
        if op.name == "tosa.const":
            ctx.constants[op.result] = op.attrs["values"]
            continue
        if op.name == "tosa.const_shape":
            ctx.constants[op.result] = np.asarray(op.attrs["values"], dtype=np.int64)
            continue
        fn = LOWERINGS.get(op.name)
        if fn is None:
            raise LoweringError(f"{op.name} ({op.loc}) has no lowering to structured ops")
        results = fn(ctx, op)
        for tosa_value, value in zip(op.results, results or []):
            ctx.values[tosa_value] = value
    outputs = [ctx.operand(v) for v in source.outputs]
    ctx.graph.set_outputs(outputs, source.output_names)
    return ctx.graph


# --------------------------------------------------------------------------------- elementwise helper


def elementwise(ctx: LoweringContext, op: Operation, body_fn, operands=None, out_type=None) -> list[Value]:
    """A parallel generic op over the result's shape; TOSA broadcasting becomes each input's map."""
    out_type = out_type or op.result.type
    operands = list(op.operands[:1] if operands is None else operands)
    domain = out_type.shape
    accesses = [Access(AffineMap.broadcast(v.type.shape, domain)) for v in operands]
    ins = [S.inp(i, v.type.dtype) for i, v in enumerate(operands)]
    body = body_fn(*ins)
    new = generic([ctx.operand(v) for v in operands], [out_type], domain, (PARALLEL,) * len(domain),
                  accesses, [S.cast(body, out_type.dtype)])
    return ctx.emit(new).results


def _per_channel_or_scalar(ctx, v: Value, per_channel: bool, what: str, index: int):
    """A multiplier or shift: a scalar const, or (per channel) an input read along the last dimension."""
    values = np.asarray(ctx.constant(v, what)).astype(np.int64)
    if not per_channel or values.size == 1:
        return S.const(values.reshape(-1)[0], "i64"), None
    return S.cast(S.inp(index, v.type.dtype), "i64"), v


# ----------------------------------------------------------------------------------- data movement


@lowers("tosa.identity", "tosa.reshape")
def _reshape(ctx, op):
    x = op.operands[0]
    if x in ctx.constants and x not in ctx.values:
        ctx.constants[op.result] = np.asarray(ctx.constants[x]).reshape(op.result.type.shape)
        return []
    return ctx.emit(Operation("linalg.reshape", [ctx.operand(op.operands[0])], {}, [op.result.type])).results


def _copy(ctx, op, access: Access) -> list[Value]:
    out = op.result.type
    return ctx.emit(generic([ctx.operand(op.operands[0])], [out], out.shape, (PARALLEL,) * out.rank, [access],
                            [S.inp(0, out.dtype)])).results


@lowers("tosa.transpose")
def _transpose(ctx, op):
    perms = op.attrs["perms"]
    rank = len(perms)
    # Output dim i reads input dim perms[i].
    rows = [None] * rank
    for i, p in enumerate(perms):
        rows[p] = ({i: 1}, 0)
    return _copy(ctx, op, Access(AffineMap.rows(rows, rank)))


@lowers("tosa.slice")
def _slice(ctx, op):
    start = ctx.constant(op.operands[1], "slice start")
    rank = op.result.type.rank
    return _copy(ctx, op, Access(AffineMap.rows([({i: 1}, int(start[i])) for i in range(rank)], rank)))


@lowers("tosa.pad")
def _pad(ctx, op):
    padding = ctx.constant(op.operands[1], "padding")
    pad_const = np.asarray(ctx.constant(op.operands[2], "pad_const")).reshape(-1)[0]
    rank = op.result.type.rank
    fill = pad_const.item()
    return _copy(ctx, op, Access(AffineMap.rows([({i: 1}, -int(padding[2 * i])) for i in range(rank)], rank), fill))


@lowers("tosa.reverse")
def _reverse(ctx, op):
    axis, shape = op.attrs["axis"], op.result.type.shape
    rank = len(shape)
    rows = [({i: -1}, shape[i] - 1) if i == axis else ({i: 1}, 0) for i in range(rank)]
    return _copy(ctx, op, Access(AffineMap.rows(rows, rank)))


@lowers("tosa.tile")
def _tile(ctx, op):
    x = op.operands[0]
    out = op.result.type
    indices = [S.binary("mod", S.index(i), S.const(n, "i64")) for i, n in enumerate(x.type.shape)]
    body = S.extract(0, out.dtype, indices)
    return ctx.emit(generic([ctx.operand(x)], [out], out.shape, (PARALLEL,) * out.rank, [Access(None)],
                            [body])).results


@lowers("tosa.concat")
def _concat(ctx, op):
    return ctx.emit(Operation("linalg.concat", [ctx.operand(v) for v in op.operands], {"axis": op.attrs["axis"]},
                              [op.result.type])).results


@lowers("tosa.gather")
def _gather(ctx, op):
    values, indices = op.operands
    out = op.result.type
    k = values.type.shape[1]
    index = S.cast(S.inp(1, indices.type.dtype), "i64")
    # TOSA requires 0 <= index < K; the kernels clamp so that a bad index cannot read outside memory.
    index = S.binary("min", S.binary("max", index, S.const(0, "i64")), S.const(k - 1, "i64"))
    body = S.extract(0, out.dtype, [S.index(0), index, S.index(2)])
    return ctx.emit(generic([ctx.operand(values), ctx.operand(indices)], [out], out.shape, (PARALLEL,) * 3,
                            [Access(None), Access(AffineMap.rows([({0: 1}, 0), ({1: 1}, 0)], 3))],
                            [body])).results


# ------------------------------------------------------------------------------------- quantization


@lowers("tosa.rescale")
def _rescale(ctx, op):
    x, multiplier, shift, input_zp, output_zp = op.operands
    attrs, out = op.attrs, op.result.type
    in_dtype = x.type.dtype
    in_bits = 8 * x.type.numpy_dtype.itemsize
    in_zp, out_zp = ctx.scalar(input_zp, "input_zp"), ctx.scalar(output_zp, "output_zp")
    operands = [x]
    m, m_value = _per_channel_or_scalar(ctx, multiplier, attrs["per_channel"], "multiplier", 1)
    if m_value is not None:
        operands.append(m_value)
    s, s_value = _per_channel_or_scalar(ctx, shift, attrs["per_channel"], "shift", len(operands))
    if s_value is not None:
        operands.append(s_value)
    value = S.cast(S.inp(0, in_dtype), "i64")
    if attrs["input_unsigned"]:
        value = S.binary("and", value, S.const((1 << in_bits) - 1, "i64"))
        in_zp &= (1 << in_bits) - 1
    if attrs["output_unsigned"]:
        out_zp &= (1 << (8 * out.numpy_dtype.itemsize)) - 1
    value = S.binary("sub", value, S.const(in_zp, "i64"))
    if in_dtype == "i48":
        value = S.cast(S.cast(value, "i48"), "i64")
    double_round = attrs["scale32"] and attrs["rounding_mode"] == "DOUBLE_ROUND"
    scaled = S.binary("add", S.apply_scale(value, m, s, double_round), S.const(out_zp, "i64"))
    low, high = integer_range(out.dtype)
    if attrs["output_unsigned"]:
        scaled = S.clamp(scaled, 0, high - low)
        scaled = S.select(S.binary("gt", scaled, S.const(high, "i64")),
                          S.binary("sub", scaled, S.const(high - low + 1, "i64")), scaled)
    else:
        scaled = S.clamp(scaled, low, high)
    domain = out.shape
    accesses = [Access(AffineMap.identity(out.rank))]
    channel = AffineMap.rows([({out.rank - 1: 1}, 0)], out.rank)
    accesses += [Access(channel) for _ in operands[1:]]
    new = generic([ctx.operand(v) for v in operands], [out], domain, (PARALLEL,) * out.rank, accesses,
                  [S.cast(scaled, out.dtype)])
    return ctx.emit(new).results


@lowers("tosa.table")
def _table(ctx, op):
    x, table = op.operands
    out = op.result.type
    v = S.cast(S.inp(0, x.type.dtype), "i64")
    if x.type.dtype == "i8":
        body = S.extract(1, out.dtype, [S.binary("add", v, S.const(128, "i64"))])
    else:
        index = S.binary("ashr", S.binary("add", v, S.const(32768, "i64")), S.const(7, "i64"))
        fraction = S.binary("and", v, S.const(0x7F, "i64"))
        base = S.cast(S.extract(1, table.type.dtype, [index]), "i64")
        following = S.cast(S.extract(1, table.type.dtype, [S.binary("min", S.binary("add", index, S.const(1, "i64")),
                                                                    S.const(512, "i64"))]), "i64")
        body = S.binary("add", S.binary("shl", base, S.const(7, "i64")),
                        S.binary("mul", S.binary("sub", following, base), fraction))
    return ctx.emit(generic([ctx.operand(x), ctx.operand(table)], [out], out.shape, (PARALLEL,) * out.rank,
                            [Access(AffineMap.identity(out.rank)), Access(None)], [S.cast(body, out.dtype)])).results


@lowers("tosa.cast")
def _cast(ctx, op):
    return elementwise(ctx, op, lambda x: S.cast(x, op.result.type.dtype))


# ---------------------------------------------------------------------------------- named structured


def _acc_dtype(op) -> str:
    return op.result.type.dtype


def _refuse_float_accumulation(op, x: Value) -> None:
    if S.is_float(x.type.dtype):
        raise LoweringError(f"{op.name} ({op.loc}) on {x.type}: a float accumulation, whose order the spec leaves "
                            f"to implementations, has no compiled kernel bit-exact with the interpreter; use "
                            f"target='interp'")


@lowers("tosa.conv2d", "tosa.depthwise_conv2d")
def _conv(ctx, op):
    x, w, bias, input_zp, weight_zp = op.operands
    _refuse_float_accumulation(op, x)
    name = "linalg.conv2d" if op.name == "tosa.conv2d" else "linalg.depthwise_conv2d"
    attrs = {"stride": tuple(op.attrs["stride"]), "dilation": tuple(op.attrs["dilation"]),
             "pad": tuple(op.attrs["pad"]), "input_zp": ctx.scalar(input_zp, "input_zp"),
             "weight_zp": ctx.scalar(weight_zp, "weight_zp")}
    bias_value = np.asarray(ctx.constant(bias, "bias")) if bias in ctx.constants else None
    channels = op.result.type.shape[3]
    if bias_value is not None and bias_value.size == 1 and channels != 1:
        bias_value = np.broadcast_to(bias_value, (channels,))
    b = ctx.const(bias_value) if bias_value is not None else ctx.operand(bias)
    return ctx.emit(Operation(name, [ctx.operand(x), ctx.operand(w), b], attrs, [op.result.type])).results


@lowers("tosa.matmul")
def _matmul(ctx, op):
    a, b, a_zp, b_zp = op.operands
    _refuse_float_accumulation(op, a)
    attrs = {"a_zp": ctx.scalar(a_zp, "a_zp"), "b_zp": ctx.scalar(b_zp, "b_zp")}
    return ctx.emit(Operation("linalg.matmul", [ctx.operand(a), ctx.operand(b)], attrs, [op.result.type])).results


@lowers("tosa.transpose_conv2d")
def _transpose_conv2d(ctx, op):
    """out[n, oy, ox, oc] = bias + sum over (ky, kx, ic) of the input pixel (iy, ix) with
    iy * stride_y + out_pad_top + ky == oy (and likewise x): a gather by division, guarded."""
    x, w, bias, input_zp, weight_zp = op.operands
    _refuse_float_accumulation(op, x)
    out = op.result.type
    n, oh, ow, oc = out.shape
    _, kh, kw, ic = w.type.shape
    ih, iw = x.type.shape[1:3]
    sy, sx = op.attrs["stride"]
    top, _, left, _ = op.attrs["out_pad"]
    acc = out.dtype
    wide = "i64"
    in_zp, w_zp = ctx.scalar(input_zp, "input_zp"), ctx.scalar(weight_zp, "weight_zp")

    def source(d_out, d_k, pad, stride, size):
        shifted = S.binary("sub", S.binary("sub", S.index(d_out), S.index(d_k)), S.const(pad, wide))
        position = S.binary("floordiv", shifted, S.const(stride, wide))
        exact = S.binary("eq", S.binary("mod", shifted, S.const(stride, wide)), S.const(0, wide))
        inside = S.binary("and", S.binary("ge", position, S.const(0, wide)),
                          S.binary("gt", S.const(size, wide), position))
        return position, S.binary("and", exact, inside)

    iy, ok_y = source(1, 4, top, sy, ih)
    ix, ok_x = source(2, 5, left, sx, iw)
    valid = S.binary("and", ok_y, ok_x)
    pixel = S.cast(S.extract(0, x.type.dtype, [S.index(0), iy, ix, S.index(6)], in_zp), wide)
    product = S.binary("mul", S.binary("sub", pixel, S.const(in_zp, wide)),
                       S.binary("sub", S.cast(S.inp(1, w.type.dtype), wide), S.const(w_zp, wide)))
    term = S.select(valid, product, S.const(0, wide))
    body = S.cast(S.binary("add", S.cast(S.out(0, acc), wide), term), acc)
    w_map = AffineMap.rows([({3: 1}, 0), ({4: 1}, 0), ({5: 1}, 0), ({6: 1}, 0)], 7)
    b_map = AffineMap.rows([({3: 1}, 0) if bias.type.shape[0] > 1 else ({}, 0)], 7)  # BC == 1 broadcasts
    init = S.cast(S.inp(2, bias.type.dtype), acc)
    new = generic([ctx.operand(x), ctx.operand(w), ctx.operand(bias)], [out], (n, oh, ow, oc, kh, kw, ic),
                  (PARALLEL,) * 4 + (REDUCTION,) * 3, [Access(None), Access(w_map), Access(b_map)], [body], [init])
    return ctx.emit(new).results


@lowers("tosa.avg_pool2d")
def _avg_pool2d(ctx, op):
    x, input_zp, output_zp = op.operands
    _refuse_float_accumulation(op, x)
    out = op.result.type
    kernel, stride, pad = tuple(op.attrs["kernel"]), tuple(op.attrs["stride"]), tuple(op.attrs["pad"])
    acc_type = TensorType(out.shape, "i32")
    in_zp = ctx.scalar(input_zp, "input_zp")
    total = ctx.emit(Operation("linalg.pool", [ctx.operand(x)], {
        "kind": "sum", "kernel": kernel, "stride": stride, "pad": pad, "input_zp": in_zp, "pad_value": in_zp,
        "init": 0}, [acc_type])).result
    # The divisor counts the in-bounds taps of each window: a constant [OH, OW] table of multipliers/shifts.
    oh, ow = out.shape[1:3]
    h, w = x.type.shape[1:3]

    def counts(o, k, s, p, size):
        start = np.arange(o) * s - p
        return np.minimum(start + k, size) - np.maximum(start, 0)

    count = np.outer(counts(oh, kernel[0], stride[0], pad[0], h), counts(ow, kernel[1], stride[1], pad[2], w))
    multiplier, shift = reciprocal_scale(count)
    hw = AffineMap.rows([({1: 1}, 0), ({2: 1}, 0)], 4)
    body = S.binary("add", S.apply_scale(S.cast(S.inp(0, "i32"), "i64"), S.inp(1, "i64"), S.inp(2, "i64"), False),
                    S.const(ctx.scalar(output_zp, "output_zp"), "i64"))
    low, high = integer_range(out.dtype)
    new = generic([total, ctx.const(np.asarray(multiplier, dtype=np.int64)), ctx.const(np.asarray(shift, dtype=np.int64))],
                  [out], out.shape, (PARALLEL,) * 4, [Access(AffineMap.identity(4)), Access(hw), Access(hw)],
                  [S.cast(S.clamp(body, low, high), out.dtype)])
    return ctx.emit(new).results


@lowers("tosa.max_pool2d")
def _max_pool2d(ctx, op):
    out = op.result.type
    start, nan_mode = lowest(out.dtype), None
    if S.is_float(out.dtype):
        # The spec's start value (-inf, or NaN with IGNORE) also fills padded taps: apply_max passes over it.
        nan_mode = op.attrs.get("nan_mode", float_ops.PROPAGATE)
        start = float(float_ops.max_init(np.float32, nan_mode))
    attrs = {"kind": "max", "kernel": tuple(op.attrs["kernel"]), "stride": tuple(op.attrs["stride"]),
             "pad": tuple(op.attrs["pad"]), "input_zp": 0, "pad_value": start, "init": start, "nan_mode": nan_mode}
    return ctx.emit(Operation("linalg.pool", [ctx.operand(op.operands[0])], attrs, [out])).results


# -------------------------------------------------------------------------------------- elementwise

_BINARY = {"tosa.add": "add", "tosa.sub": "sub", "tosa.maximum": "max", "tosa.minimum": "min",
           "tosa.bitwise_and": "and", "tosa.bitwise_or": "or", "tosa.bitwise_xor": "xor",
           "tosa.logical_and": "and", "tosa.logical_or": "or", "tosa.logical_xor": "xor",
           "tosa.equal": "eq", "tosa.greater": "gt", "tosa.greater_equal": "ge", "tosa.intdiv": "div"}


def _wide(e: S.Expr) -> S.Expr:
    return e if S.is_float(e.dtype) or e.dtype == "i1" else S.cast(e, "i64")


def _nan_mode(op):
    """The NaN mode of a float max/min (None for integers, where it means nothing)."""
    return op.attrs.get("nan_mode", float_ops.PROPAGATE) if S.is_float(op.operands[0].type.dtype) else None


@lowers(*_BINARY)
def _binary(ctx, op):
    fn = _BINARY[op.name]
    nan_mode = _nan_mode(op) if fn in ("max", "min") else None
    return elementwise(ctx, op, lambda a, b: S.binary(fn, _wide(a), _wide(b), arg=nan_mode), op.operands)


@lowers("tosa.logical_left_shift")
def _shl(ctx, op):
    return elementwise(ctx, op, lambda a, b: S.binary("shl", _wide(a), _wide(b)), op.operands)


@lowers("tosa.logical_right_shift")
def _lshr(ctx, op):
    return elementwise(ctx, op, lambda a, b: S.binary("lshr", a, b, a.dtype), op.operands)


@lowers("tosa.arithmetic_right_shift")
def _ashr(ctx, op):
    def body(a, b):
        a, b = _wide(a), _wide(b)
        result = S.binary("ashr", a, b)
        if op.attrs["round"]:
            one = S.const(1, "i64")
            last = S.binary("and", S.binary("ashr", a, S.binary("max", S.binary("sub", b, one), S.const(0, "i64"))), one)
            result = S.binary("add", result, S.select(S.binary("gt", b, S.const(0, "i64")), last, S.const(0, "i64")))
        return result

    return elementwise(ctx, op, body, op.operands)


@lowers("tosa.mul")
def _mul(ctx, op):
    a, b, shift_value = op.operands
    shift = ctx.scalar(shift_value, "shift")
    out = op.result.type

    def body(x, y):
        if S.is_float(out.dtype):
            return S.binary("mul", x, y)
        product = S.binary("mul", _wide(x), _wide(y))
        if a.type.dtype == "i32" and shift > 0:
            product = S.binary("ashr", S.binary("add", product, S.const(1 << (shift - 1), "i64")), S.const(shift, "i64"))
        return product

    return elementwise(ctx, op, body, [a, b])


@lowers("tosa.select")
def _select(ctx, op):
    return elementwise(ctx, op, lambda c, a, b: S.select(c, a, b), op.operands)


@lowers("tosa.clamp")
def _clamp(ctx, op):
    low, high = op.attrs["min_val"], op.attrs["max_val"]
    return elementwise(ctx, op, lambda x: S.clamp(x, low, high, _nan_mode(op)))


@lowers("tosa.abs")
def _abs(ctx, op):
    return elementwise(ctx, op, lambda x: S.unary("abs", _wide(x)))


@lowers("tosa.negate")
def _negate(ctx, op):
    x, input_zp, output_zp = op.operands
    out = op.result.type
    if S.is_float(out.dtype):
        return elementwise(ctx, op, lambda v: S.unary("neg", v))
    in_zp, out_zp = ctx.scalar(input_zp, "input_zp"), ctx.scalar(output_zp, "output_zp")

    def body(v):
        value = S.binary("add", S.unary("neg", S.binary("sub", _wide(v), S.const(in_zp, "i64"))), S.const(out_zp, "i64"))
        return value if out.dtype == "i32" else S.clamp(value, *integer_range(out.dtype))

    return elementwise(ctx, op, body)


@lowers("tosa.clz")
def _clz(ctx, op):
    return elementwise(ctx, op, lambda x: S.unary("clz", _wide(x)))


@lowers("tosa.bitwise_not", "tosa.logical_not")
def _not(ctx, op):
    return elementwise(ctx, op, lambda x: S.unary("not", x))


@lowers("tosa.floor", "tosa.ceil")
def _rounding(ctx, op):
    return elementwise(ctx, op, lambda x: S.unary(op.name.split(".")[1], x))


@lowers("tosa.exp", "tosa.log", "tosa.reciprocal", "tosa.tanh", "tosa.sin", "tosa.cos", "tosa.rsqrt",
        "tosa.sigmoid", "tosa.erf")
def _float_transcendental(ctx, op):
    raise LoweringError(f"{op.name} ({op.loc}) on {op.result.type}: compiled targets have no kernel for float "
                        f"transcendental functions that is bit-exact with the interpreter; use target='interp'")


# ---------------------------------------------------------------------------------------- reductions

_REDUCE = {"tosa.reduce_sum": ("add", lambda t, mode: 0), "tosa.reduce_product": ("mul", lambda t, mode: 1),
           "tosa.reduce_max": ("max", lambda t, mode: float_ops.max_init(np.float32, mode) if mode else lowest(t)),
           "tosa.reduce_min": ("min", lambda t, mode: float_ops.min_init(np.float32, mode) if mode
                               else integer_range(t)[1]),
           "tosa.reduce_all": ("and", lambda t, mode: 1), "tosa.reduce_any": ("or", lambda t, mode: 0)}


def _reduction_domain(x: TensorType, axis: int):
    # Loops: the kept dims in order, then the reduced axis last.
    rank = x.rank
    kept = [i for i in range(rank) if i != axis]
    domain = tuple(x.shape[i] for i in kept) + (x.shape[axis],)
    rows = [({kept.index(i): 1}, 0) if i != axis else ({rank - 1: 1}, 0) for i in range(rank)]
    return domain, AffineMap.rows(rows, rank)


@lowers(*_REDUCE)
def _reduce(ctx, op):
    x = op.operands[0]
    out = op.result.type
    combine, init = _REDUCE[op.name]
    nan_mode = _nan_mode(op) if combine in ("max", "min") else None
    domain, x_map = _reduction_domain(x.type, op.attrs["axis"])
    iterators = (PARALLEL,) * (len(domain) - 1) + (REDUCTION,)
    acc = out.dtype if S.is_float(out.dtype) or out.dtype == "i1" else "i64"
    # The accumulator is the first operand: apply_max_s(acc, value) in the spec's order.
    body = S.cast(S.binary(combine, S.cast(S.out(0, out.dtype), acc), S.cast(S.inp(0, x.type.dtype), acc),
                           arg=nan_mode), out.dtype)
    new = generic([ctx.operand(x)], [out], domain, iterators, [Access(x_map)], [body],
                  [S.const(init(out.dtype, nan_mode), out.dtype)])
    return ctx.emit(new).results


@lowers("tosa.argmax")
def _argmax(ctx, op):
    x = op.operands[0]
    axis = op.attrs["axis"]
    if S.is_float(x.type.dtype):
        raise LoweringError(f"tosa.argmax ({op.loc}) on {x.type}: only integer argmax is lowered")
    domain, x_map = _reduction_domain(x.type, axis)
    iterators = (PARALLEL,) * (len(domain) - 1) + (REDUCTION,)
    best = S.out(0, x.type.dtype)
    value = S.inp(0, x.type.dtype)
    better = S.binary("gt", _wide(value), _wide(best))
    position = S.cast(S.index(len(domain) - 1), "i32")
    kept = tuple(x.type.shape[i] for i in range(x.type.rank) if i != axis)
    out = op.result.type
    new = generic([ctx.operand(x)], [TensorType(kept, x.type.dtype), out], domain, iterators, [Access(x_map)],
                  [S.select(better, value, best), S.select(better, position, S.out(1, "i32"))],
                  [S.const(lowest(x.type.dtype), x.type.dtype), S.const(0, "i32")])
    return [ctx.emit(new).results[1]]


# ------------------------------------------------------------------------------------------- resize


@lowers("tosa.resize")
def _resize(ctx, op):
    x, scale, offset, _ = op.operands
    out = op.result.type
    if S.is_float(x.type.dtype):
        raise LoweringError(f"tosa.resize ({op.loc}) on {x.type}: only integer resize is lowered")
    n_y, d_y, n_x, d_x = (int(v) for v in ctx.constant(scale, "scale"))
    off_y, off_x = (int(v) for v in ctx.constant(offset, "offset"))
    h, w = x.type.shape[1:3]
    i64 = "i64"

    def axis(dim, n, d, off, size):
        position = S.binary("add", S.binary("mul", S.index(dim), S.const(d, i64)), S.const(off, i64))
        i = S.binary("floordiv", position, S.const(n, i64))
        r = S.binary("sub", position, S.binary("mul", i, S.const(n, i64)))
        i0 = S.binary("max", i, S.const(0, i64))
        i1 = S.binary("min", S.binary("add", i, S.const(1, i64)), S.const(size - 1, i64))
        return i0, i1, r

    iy0, iy1, ry = axis(1, n_y, d_y, off_y, h)
    ix0, ix1, rx = axis(2, n_x, d_x, off_x, w)

    def at(iy, ix):
        return S.cast(S.extract(0, x.type.dtype, [S.index(0), iy, ix, S.index(3)]), i64)

    if op.attrs["mode"] == "NEAREST_NEIGHBOR":
        iy = S.select(S.binary("ge", S.binary("mul", ry, S.const(2, i64)), S.const(n_y, i64)), iy1, iy0)
        ix = S.select(S.binary("ge", S.binary("mul", rx, S.const(2, i64)), S.const(n_x, i64)), ix1, ix0)
        body = at(iy, ix)
    else:
        wy0, wx0 = S.binary("sub", S.const(n_y, i64), ry), S.binary("sub", S.const(n_x, i64), rx)

        def term(v, a, b):
            return S.binary("mul", S.binary("mul", v, a), b)

        body = term(at(iy0, ix0), wy0, wx0)
        body = S.binary("add", body, term(at(iy0, ix1), wy0, rx))
        body = S.binary("add", body, term(at(iy1, ix0), ry, wx0))
        body = S.binary("add", body, term(at(iy1, ix1), ry, rx))
    return ctx.emit(generic([ctx.operand(x)], [out], out.shape, (PARALLEL,) * 4, [Access(None)],
                            [S.cast(body, out.dtype)])).results


# ---------------------------------------------------------------------------------------- variables


@lowers("tosa.variable")
def _variable(ctx, op):
    return []


@lowers("tosa.variable_read")
def _variable_read(ctx, op):
    return ctx.emit(Operation("linalg.variable_read", [], {"name": op.attrs["name"]}, [op.result.type])).results


@lowers("tosa.variable_write")
def _variable_write(ctx, op):
    ctx.emit(Operation("linalg.variable_write", [ctx.operand(op.operands[0])], {"name": op.attrs["name"]}, []))
    return []
