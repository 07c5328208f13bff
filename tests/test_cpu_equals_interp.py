"""The rule of the compiled CPU target: on every graph the TOSA interpreter runs, `target="cpu"` computes
the interpreter's bits, or refuses at compile time with a `tosaic.LoweringError` naming the op and why.

Every TOSA op the lowering supports (`tosaic.lowering.from_tosa.LOWERINGS`) has a case here, checked by
`test_every_lowered_op_has_a_case`. A case builds a small graph around the op from hypothesis draws: shapes
of every rank the op takes (rank 0 to 6 for elementwise ops), each dtype TOSA 1.0 PRO-INT (with EXT-INT16)
or PRO-FP gives it, attributes, and operands that are graph inputs or constants (weights and biases
included: TOSA makes only zero points, multipliers, shifts, shapes and tables compile-time constants).
Convolutions, matmuls, pools and reductions are sometimes followed by a RESCALE and a CLAMP, which the
compiled target fuses into their kernels as an epilogue. Inputs span each dtype's whole range; float
inputs include infinities, NaN and -0.0. A graph the interpreter rejects at run time (a TOSA REQUIRE, such
as a shift out of range) or does not implement (float convolutions) is outside the rule and is skipped.

Each example compiles Numba kernels, so CI draws a few examples per op (the kernel cache makes repeats of a
kernel's structure cheap); `-m slow` draws many more.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tosaic
from exactness import assert_same
from tosaic.ir import Graph, TensorType, integer_range
from tosaic.lowering.from_tosa import LOWERINGS
from tosaic.tosa.builder import STORAGE, TosaBuilder
from tosaic.tosa.interpreter import TosaRuntimeError
from tosaic.tosa.ops import VerifyError

FLOAT_SPECIALS = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0], dtype=np.float32)


class Maker:
    """One graph under construction from hypothesis draws: its builder, the graph inputs' values."""

    def __init__(self, data):
        self.data = data
        self.graph = Graph("case")
        self.b = TosaBuilder(self.graph)
        self.inputs: list[np.ndarray] = []
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="values seed"))

    def draw(self, strategy, label=None):
        return self.data.draw(strategy, label=label)

    def choice(self, options, label=None):
        return self.draw(st.sampled_from(list(options)), label)

    def shape(self, min_rank=0, max_rank=6, max_dim=4) -> tuple[int, ...]:
        rank = self.draw(st.integers(min_rank, max_rank), "rank")
        cap = max(1, min(max_dim, int(round(512 ** (1 / max(rank, 1))))))
        return tuple(self.draw(st.lists(st.integers(1, cap), min_size=rank, max_size=rank), "shape"))

    def broadcast_of(self, shape) -> tuple[int, ...]:
        """`shape` with some dimensions made 1 (TOSA broadcasting)."""
        ones = self.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)), "broadcast")
        return tuple(1 if one else d for d, one in zip(shape, ones))

    def values(self, shape, dtype: str, low=None, high=None) -> np.ndarray:
        storage = STORAGE[dtype]
        if dtype == "i1":
            return self.rng.integers(0, 2, size=shape).astype(np.bool_)
        if dtype == "f32":
            v = self.rng.uniform(-8, 8, size=shape).astype(np.float32)
            if v.size and self.draw(st.booleans(), "float specials"):
                flat = v.reshape(-1)
                picks = self.rng.integers(0, flat.size, size=max(1, flat.size // 4))
                flat[picks] = self.rng.choice(FLOAT_SPECIALS, size=picks.size)
            return v
        lo, hi = integer_range(dtype)
        lo = lo if low is None else low
        hi = hi if high is None else high
        return self.rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64).astype(storage)

    def operand(self, shape, dtype: str, low=None, high=None, runtime=None, name="x"):
        """A graph input or (when drawn, or `runtime` is False) a constant holding random values."""
        array = self.values(shape, dtype, low, high)
        if runtime is None:
            runtime = self.draw(st.booleans(), f"{name} is a graph input")
        if not runtime:
            return self.b.const(array, dtype)
        self.inputs.append(array)
        return self.graph.add_input(TensorType(tuple(shape), dtype), f"{name}{len(self.inputs)}")

    def input(self, shape, dtype, low=None, high=None, name="x"):
        return self.operand(shape, dtype, low, high, runtime=True, name=name)

    def zero_point(self, dtype: str):
        """A zero point: any int8 value, else 0 (TOSA 1.0)."""
        return self.draw(st.integers(-128, 127), "zero point") if dtype == "i8" else 0

    def requantized(self, v, label="epilogue"):
        """`v`, or (drawn) `v` rescaled to i8 and clamped: the chain the compiled target fuses as an epilogue."""
        if v.type.dtype not in ("i32", "i48") or not self.draw(st.booleans(), label):
            return v
        shift = self.draw(st.integers(20, 40), "epilogue shift")
        multiplier = self.draw(st.integers(1 << 28, (1 << 31) - 1), "epilogue multiplier")
        per_channel = v.type.rank > 0 and self.draw(st.booleans(), "per-channel epilogue")
        if per_channel:
            channels = v.type.shape[-1]
            multiplier = self.rng.integers(1 << 28, 1 << 31, size=channels)
            shift = self.rng.integers(20, 41, size=channels)
        out = self.b.rescale(v, multiplier, shift, 0, self.zero_point("i8"), "i8",
                             rounding=self.choice(["SINGLE_ROUND", "DOUBLE_ROUND"]))
        if self.draw(st.booleans(), "clamp after"):
            low = self.draw(st.integers(-128, 0))
            out = self.b.clamp(out, low, self.draw(st.integers(low, 127)))
        return out

    def finish(self, *outputs):
        self.graph.set_outputs(list(outputs), [f"out{i}" for i in range(len(outputs))])
        return self.graph, self.inputs


CASES: dict[str, Callable[[Maker, str], tuple]] = {}


def case(*names):
    def register(fn):
        for name in names:
            CASES[name] = fn
        return fn

    return register


# -------------------------------------------------------------------------------------- elementwise

BINARY_DTYPES = {
    "tosa.add": ("i32", "f32"), "tosa.sub": ("i32", "f32"), "tosa.maximum": ("i32", "f32"),
    "tosa.minimum": ("i32", "f32"), "tosa.bitwise_and": ("i8", "i16", "i32"), "tosa.bitwise_or": ("i8", "i16", "i32"),
    "tosa.bitwise_xor": ("i8", "i16", "i32"), "tosa.logical_and": ("i1",), "tosa.logical_or": ("i1",),
    "tosa.logical_xor": ("i1",), "tosa.equal": ("i32", "f32"), "tosa.greater": ("i32", "f32"),
    "tosa.greater_equal": ("i32", "f32"), "tosa.intdiv": ("i32",), "tosa.logical_left_shift": ("i8", "i16", "i32"),
    "tosa.logical_right_shift": ("i8", "i16", "i32"), "tosa.arithmetic_right_shift": ("i8", "i16", "i32"),
}
SHIFTS = {"tosa.logical_left_shift", "tosa.logical_right_shift", "tosa.arithmetic_right_shift"}


@case(*BINARY_DTYPES)
def _binary(m: Maker, name: str):
    dtype = m.choice(BINARY_DTYPES[name], "dtype")
    shape = m.shape()
    a = m.operand(m.broadcast_of(shape), dtype, name="a")
    low = high = None
    if name in SHIFTS:
        low, high = 0, 8 * np.dtype(STORAGE[dtype]).itemsize - 1
    b = m.operand(m.broadcast_of(shape), dtype, low, high, name="b")
    attrs = {}
    if name == "tosa.arithmetic_right_shift":
        attrs["round"] = m.draw(st.booleans(), "round")
    if name in ("tosa.maximum", "tosa.minimum"):
        attrs["nan_mode"] = m.choice(["PROPAGATE", "IGNORE"], "nan_mode")
    return m.finish(m.b.op(name, [a, b], attrs))


@case("tosa.mul")
def _mul(m: Maker, name: str):
    dtype = m.choice(["i8", "i16", "i32", "f32"], "dtype")
    shift = m.draw(st.integers(0, 31), "shift") if dtype == "i32" else 0
    bound = (1 << 15) if dtype == "i32" and shift else None
    shape = m.shape()
    a = m.operand(m.broadcast_of(shape), dtype, -bound if bound else None, bound, name="a")
    b = m.operand(m.broadcast_of(shape), dtype, -bound if bound else None, bound, name="b")
    return m.finish(m.b.op(name, [a, b, m.b.scalar(shift, "i8")]))


@case("tosa.select")
def _select(m: Maker, name: str):
    dtype = m.choice(["i1", "i8", "i16", "i32", "f32"], "dtype")
    shape = m.shape()
    operands = [m.operand(m.broadcast_of(shape), "i1", name="c")]
    operands += [m.operand(m.broadcast_of(shape), dtype, name=n) for n in "ab"]
    return m.finish(m.b.op(name, operands))


UNARY_DTYPES = {"tosa.abs": ("i32", "f32"), "tosa.clz": ("i32",), "tosa.bitwise_not": ("i8", "i16", "i32"),
                "tosa.logical_not": ("i1",), "tosa.floor": ("f32",), "tosa.ceil": ("f32",)}
TRANSCENDENTAL = ("tosa.exp", "tosa.log", "tosa.reciprocal", "tosa.tanh", "tosa.sin", "tosa.cos", "tosa.rsqrt",
                  "tosa.sigmoid", "tosa.erf")


@case(*UNARY_DTYPES, *TRANSCENDENTAL)
def _unary(m: Maker, name: str):
    dtype = m.choice(UNARY_DTYPES.get(name, ("f32",)), "dtype")
    return m.finish(m.b.op(name, [m.input(m.shape(), dtype)]))


@case("tosa.negate")
def _negate(m: Maker, name: str):
    dtype = m.choice(["i8", "i16", "i32", "f32"], "dtype")
    zps = [m.b.scalar(m.zero_point(dtype), dtype) for _ in range(2)] if dtype != "f32" else \
        [m.b.scalar(0, "f32")] * 2
    return m.finish(m.b.op(name, [m.input(m.shape(), dtype), *zps]))


@case("tosa.clamp")
def _clamp(m: Maker, name: str):
    dtype = m.choice(["i8", "i16", "i32", "f32"], "dtype")
    if dtype == "f32":
        low = m.draw(st.floats(-8, 8, width=32), "min")
        high = m.draw(st.floats(low, 8, width=32), "max")
    else:
        lo, hi = integer_range(dtype)
        low = m.draw(st.integers(lo, hi), "min")
        high = m.draw(st.integers(low, hi), "max")
    attrs = {"min_val": low, "max_val": high, "nan_mode": m.choice(["PROPAGATE", "IGNORE"], "nan_mode")}
    return m.finish(m.b.op(name, [m.input(m.shape(), dtype)], attrs))


@case("tosa.cast")
def _cast(m: Maker, name: str):
    source = m.choice(["i1", "i8", "i16", "i32", "f32"], "from")
    target = m.choice([t for t in ("i1", "i8", "i16", "i32", "f32") if t != source], "to")
    return m.finish(m.b.op(name, [m.input(m.shape(), source)], dtype=target))


@case("tosa.rescale")
def _rescale(m: Maker, name: str):
    source = m.choice(["i8", "i16", "i32", "i48"], "from")
    target = m.choice(["i8", "i16", "i32"], "to")
    scale32 = source == "i48" or m.draw(st.booleans(), "scale32")
    input_unsigned = source in ("i8", "i16") and target != "i32" and m.draw(st.booleans(), "input_unsigned")
    output_unsigned = (not input_unsigned and source in ("i8", "i16") and target in ("i8", "i16")
                       and m.draw(st.booleans(), "output_unsigned"))
    shape = m.shape(min_rank=1)
    per_channel = m.draw(st.booleans(), "per_channel")
    channels = shape[-1] if per_channel else 1
    shift = m.rng.integers(2, 63 if scale32 else 48, size=channels)
    multiplier = m.rng.integers(0, (1 << 31) if scale32 else (1 << 15), size=channels)
    # apply_scale REQUIREs -(1 << (shift - 1)) <= value < 1 << (shift - 1): bound the inputs by the least shift.
    bits = min(int(shift.min()) - 1, 8 * np.dtype(STORAGE[source]).itemsize - 1 if source != "i48" else 47)
    x = m.input(shape, source, -(1 << bits) // 2, (1 << bits) // 2 - 1)

    def zp(dtype, unsigned):
        if dtype == "i8":
            return m.draw(st.integers(-128, 127), "zero point")
        return m.choice([0, -32768], "zero point") if unsigned and dtype == "i16" else 0

    out = m.b.rescale(x, multiplier, shift, zp(source, input_unsigned), zp(target, output_unsigned), target,
                      rounding=m.choice(["SINGLE_ROUND", "DOUBLE_ROUND"]), scale32=scale32,
                      input_unsigned=input_unsigned, output_unsigned=output_unsigned)
    return m.finish(out)


@case("tosa.table")
def _table(m: Maker, name: str):
    dtype = m.choice(["i8", "i16"], "dtype")
    x = m.input(m.shape(), dtype)
    if dtype == "i8":
        table = m.operand((256,), "i8", name="table")
    else:
        # TOSA requires every slope t[i + 1] - t[i] of an i16 table to fit in i16.
        steps = m.rng.integers(-1000, 1000, size=512)
        table_values = np.concatenate([[m.rng.integers(-10000, 10000)], steps]).cumsum()
        table = m.b.const(np.clip(table_values, -32768, 32767), "i16")
    return m.finish(m.b.op(name, [x, table]))


# ------------------------------------------------------------------------------------ data movement

ANY_DTYPE = ("i1", "i8", "i16", "i32", "f32")


@case("tosa.identity")
def _identity(m: Maker, name: str):
    return m.finish(m.b.op(name, [m.input(m.shape(), m.choice(ANY_DTYPE, "dtype"))]))


@case("tosa.reshape")
def _reshape(m: Maker, name: str):
    dtype = m.choice(ANY_DTYPE, "dtype")
    shape = m.shape()
    size = int(np.prod(shape, dtype=np.int64))
    factors = [d for d in range(1, size + 1) if size % d == 0]
    new, rest = [], size
    for _ in range(m.draw(st.integers(0, 5), "new rank")):
        d = m.choice([f for f in factors if rest % f == 0], "new dim")
        new.append(d)
        rest //= d
    if rest != 1 or not new and size != 1:
        new.append(rest)
    x = m.input(shape, dtype)
    y = m.b.op(name, [x, m.b.shape(new)])
    return m.finish(m.b.op("tosa.add", [y, y]) if dtype == "i32" and m.draw(st.booleans(), "then add") else y)


@case("tosa.transpose")
def _transpose(m: Maker, name: str):
    shape = m.shape(min_rank=1)
    perms = m.draw(st.permutations(range(len(shape))), "perms")
    return m.finish(m.b.transpose(m.input(shape, m.choice(ANY_DTYPE, "dtype")), perms))


@case("tosa.slice")
def _slice(m: Maker, name: str):
    shape = m.shape(min_rank=1)
    start = [m.draw(st.integers(0, d - 1), "start") for d in shape]
    size = [m.draw(st.integers(1, d - s), "size") for d, s in zip(shape, start)]
    x = m.input(shape, m.choice(ANY_DTYPE, "dtype"))
    return m.finish(m.b.op(name, [x, m.b.shape(start), m.b.shape(size)]))


@case("tosa.pad")
def _pad(m: Maker, name: str):
    dtype = m.choice(["i8", "i16", "i32", "f32", "i1"], "dtype")
    shape = m.shape(min_rank=1)
    padding = m.draw(st.lists(st.integers(0, 2), min_size=2 * len(shape), max_size=2 * len(shape)), "padding")
    x = m.input(shape, dtype)
    pad_const = m.b.scalar(m.values((), dtype), dtype)
    return m.finish(m.b.op(name, [x, m.b.shape(padding), pad_const]))


@case("tosa.reverse")
def _reverse(m: Maker, name: str):
    shape = m.shape(min_rank=1)
    axis = m.draw(st.integers(0, len(shape) - 1), "axis")
    return m.finish(m.b.op(name, [m.input(shape, m.choice(ANY_DTYPE, "dtype"))], {"axis": axis}))


@case("tosa.tile")
def _tile(m: Maker, name: str):
    shape = m.shape(min_rank=1, max_rank=4, max_dim=3)
    multiples = m.draw(st.lists(st.integers(1, 3), min_size=len(shape), max_size=len(shape)), "multiples")
    return m.finish(m.b.op(name, [m.input(shape, m.choice(ANY_DTYPE, "dtype")), m.b.shape(multiples)]))


@case("tosa.concat")
def _concat(m: Maker, name: str):
    dtype = m.choice(ANY_DTYPE, "dtype")
    shape = m.shape(min_rank=1)
    axis = m.draw(st.integers(0, len(shape) - 1), "axis")
    parts = []
    for i in range(m.draw(st.integers(1, 3), "operands")):
        part = list(shape)
        part[axis] = m.draw(st.integers(1, 3), "size on axis")
        parts.append(m.operand(part, dtype, runtime=True if i == 0 else None, name="part"))
    return m.finish(m.b.op(name, parts, {"axis": axis}))


@case("tosa.gather")
def _gather(m: Maker, name: str):
    dtype = m.choice(["i8", "i16", "i32", "f32"], "dtype")
    n, k, c, w = (m.draw(st.integers(1, 4), d) for d in "NKCW")
    values = m.operand((n, k, c), dtype, name="values")
    indices = m.operand((n, w), "i32", 0, k - 1, name="indices")
    return m.finish(m.b.op(name, [values, indices]))


# ------------------------------------------------------------------------------- named structured ops


def _conv_geometry(m: Maker, transpose=False):
    """(input [N,H,W,C] shape, kernel, stride, dilation, pads) where the output size divides exactly."""
    n = m.draw(st.integers(1, 2), "N")
    kh, kw = m.draw(st.integers(1, 3), "KH"), m.draw(st.integers(1, 3), "KW")
    stride = (m.draw(st.integers(1, 2), "stride y"), m.draw(st.integers(1, 2), "stride x"))
    dilation = (1, 1) if transpose else (m.draw(st.integers(1, 2), "dilation y"), m.draw(st.integers(1, 2)))
    pads = m.draw(st.lists(st.integers(0, 2), min_size=4, max_size=4), "pads")
    sizes = []
    for axis in range(2):
        k, s, d = (kh, kw)[axis], stride[axis], dilation[axis]
        if transpose:
            sizes.append(m.draw(st.integers(1, 5), "size"))
            continue
        before, after = pads[2 * axis], pads[2 * axis + 1]
        outputs = m.draw(st.integers(1, 4), "output size")
        # in - 1 + before + after - (k - 1) * d == (outputs - 1) * s
        size = (outputs - 1) * s + (k - 1) * d + 1 - before - after
        if size < 1:
            pads[2 * axis + 1] = after = max(0, after + size - 1)
            size = (outputs - 1) * s + (k - 1) * d + 1 - before - after
        assume(size >= 1)
        sizes.append(size)
    return (n, sizes[0], sizes[1]), (kh, kw), stride, dilation, tuple(pads)


def _conv_types(m: Maker):
    """(activation, weight, accumulator) element types: 8x8, 16x8, or float (which the target refuses)."""
    dtype = m.choice(["i8", "i16", "f32"], "activation dtype")
    return dtype, ("f32" if dtype == "f32" else "i8"), {"i8": "i32", "i16": "i48", "f32": "f32"}[dtype]


@case("tosa.conv2d", "tosa.depthwise_conv2d", "tosa.transpose_conv2d")
def _conv(m: Maker, name: str):
    dtype, weight_dtype, acc = _conv_types(m)
    transpose = name == "tosa.transpose_conv2d"
    (n, h, w), (kh, kw), stride, dilation, pads = _conv_geometry(m, transpose)
    c = m.draw(st.integers(1, 5), "C")
    if name == "tosa.depthwise_conv2d":
        mult = m.draw(st.integers(1, 3), "multiplier")
        w_shape, out_c = (kh, kw, c, mult), c * mult
    else:
        out_c = m.draw(st.integers(1, 6), "OC")
        w_shape = (out_c, kh, kw, c)
    x = m.input((n, h, w, c), dtype)
    weights = m.operand(w_shape, weight_dtype, name="weights")
    bias_bound = 1 << (20 if acc == "i32" else 36)
    bias = m.operand((m.choice([1, out_c], "bias size"),), acc, -bias_bound, bias_bound, name="bias")
    weight_zp = 0 if weight_dtype == "f32" else m.draw(st.integers(-128, 127), "weight zp")
    zps = [m.b.scalar(m.zero_point(dtype), dtype), m.b.scalar(weight_zp, weight_dtype)]
    attrs = {"stride": stride, "acc_type": acc}
    if transpose:
        attrs["out_pad"] = tuple(m.draw(st.lists(st.integers(-1, 1), min_size=4, max_size=4), "out_pad"))
        assume(min(attrs["out_pad"]) > -min(kh, kw))
    else:
        attrs.update(pad=pads, dilation=dilation)
    try:
        out = m.b.op(name, [x, weights, bias, *zps], attrs)
    except VerifyError:
        assume(False)
    return m.finish(m.requantized(out))


@case("tosa.matmul")
def _matmul(m: Maker, name: str):
    dtype = m.choice(["i8", "i16", "f32"], "dtype")
    n, h, c, w = (m.draw(st.integers(1, 5), d) for d in "NHCW")
    a = m.operand((n, h, c), dtype, name="a")
    b = m.operand((n, c, w), dtype, name="b")
    zps = [m.b.scalar(m.zero_point(dtype), dtype) for _ in range(2)]
    return m.finish(m.requantized(m.b.op(name, [a, b, *zps])))


@case("tosa.avg_pool2d", "tosa.max_pool2d")
def _pool(m: Maker, name: str):
    dtype = m.choice(["i8", "i16", "f32"], "dtype")
    kernel = (m.draw(st.integers(1, 3), "KH"), m.draw(st.integers(1, 3), "KW"))
    stride = (m.draw(st.integers(1, 2), "stride y"), m.draw(st.integers(1, 2), "stride x"))
    pad = tuple(m.draw(st.integers(0, kernel[i // 2] - 1), "pad") for i in range(4))
    sizes = []
    for axis in range(2):
        outputs = m.draw(st.integers(1, 4), "output size")
        size = (outputs - 1) * stride[axis] + kernel[axis] - pad[2 * axis] - pad[2 * axis + 1]
        assume(size >= 1)
        sizes.append(size)
    x = m.input((m.draw(st.integers(1, 2), "N"), *sizes, m.draw(st.integers(1, 5), "C")), dtype)
    attrs = {"kernel": kernel, "stride": stride, "pad": pad}
    if name == "tosa.avg_pool2d":
        zps = [m.b.scalar(m.zero_point(dtype), dtype) for _ in range(2)]
        return m.finish(m.b.op(name, [x, *zps], {**attrs, "acc_type": "f32" if dtype == "f32" else "i32"}))
    return m.finish(m.b.op(name, [x], {**attrs, "nan_mode": m.choice(["PROPAGATE", "IGNORE"], "nan_mode")}))


# --------------------------------------------------------------------------------------- reductions

REDUCE_DTYPES = {"tosa.reduce_sum": ("i32", "f32"), "tosa.reduce_max": ("i8", "i16", "i32", "f32"),
                 "tosa.reduce_min": ("i8", "i16", "i32", "f32"), "tosa.reduce_product": ("f32",),
                 "tosa.reduce_all": ("i1",), "tosa.reduce_any": ("i1",)}


@case(*REDUCE_DTYPES)
def _reduce(m: Maker, name: str):
    dtype = m.choice(REDUCE_DTYPES[name], "dtype")
    shape = m.shape(min_rank=1)
    bound = (1 << 24) if name == "tosa.reduce_sum" and dtype == "i32" else None
    x = m.input(shape, dtype, -bound if bound else None, bound)
    attrs = {"axis": m.draw(st.integers(0, len(shape) - 1), "axis")}
    if name in ("tosa.reduce_max", "tosa.reduce_min"):
        attrs["nan_mode"] = m.choice(["PROPAGATE", "IGNORE"], "nan_mode")
    return m.finish(m.requantized(m.b.op(name, [x], attrs)))


@case("tosa.argmax")
def _argmax(m: Maker, name: str):
    dtype = m.choice(["i8", "i16", "f32"], "dtype")
    shape = m.shape(min_rank=1)
    axis = m.draw(st.integers(0, len(shape) - 1), "axis")
    return m.finish(m.b.op(name, [m.input(shape, dtype)], {"axis": axis, "nan_mode": "PROPAGATE"}))


@case("tosa.resize")
def _resize(m: Maker, name: str):
    dtype = m.choice(["i8", "i16"], "dtype")
    n, h, w, c = (m.draw(st.integers(1, 4), d) for d in "NHWC")
    scale, offset, border = [], [], []
    for size in (h, w):
        num = m.draw(st.integers(1, 8), "scale n")
        den = m.draw(st.integers(1, min(8, 16 * num - 1)), "scale d")
        off = m.draw(st.integers(-num, min(16 * num - 1, 8)), "offset")
        # border makes (size - 1) * num - off + border a multiple of den, within TOSA's bounds.
        border_value = -(((size - 1) * num - off) % den)
        assume(-16 * num <= border_value < num)
        scale += [num, den]
        offset.append(off)
        border.append(border_value)
    x = m.input((n, h, w, c), dtype)
    attrs = {"mode": m.choice(["NEAREST_NEIGHBOR", "BILINEAR"], "mode")}
    try:
        out = m.b.op(name, [x, m.b.shape(scale), m.b.shape(offset), m.b.shape(border)], attrs)
    except VerifyError:
        assume(False)
    return m.finish(m.requantized(out))


# ---------------------------------------------------------------------------------------- variables


@case("tosa.variable", "tosa.variable_read", "tosa.variable_write")
def _variable(m: Maker, name: str):
    """A running sum kept in an i8 variable, read and written once per run."""
    shape = m.shape(max_rank=3)
    initial = m.values(shape, "i8") if m.draw(st.booleans(), "initial value") else np.zeros(shape, np.int8)
    m.b.op_multi("tosa.variable", [], {"sym_name": "acc", "var_shape": shape, "type": "i8",
                                       "initial_value": initial})
    state = m.b.op("tosa.variable_read", [], {"name": "acc"}, dtype=TensorType(shape, "i8"))
    x = m.input(shape, "i8")
    total = m.b.op("tosa.add", [m.b.cast(state, "i32"), m.b.cast(x, "i32")])
    new = m.b.cast(m.b.clamp(total, -128, 127), "i8")
    m.b.op_multi("tosa.variable_write", [new], {"name": "acc"})
    return m.finish(state, new)


# ------------------------------------------------------------------------------------------ the rule


# The only refusals the rule allows: no exact kernel exists for these, and the message says so.
REFUSALS = {**{name: "float transcendental" for name in TRANSCENDENTAL}, "tosa.argmax": "only integer argmax",
            **{name: "float accumulation" for name in ("tosa.conv2d", "tosa.depthwise_conv2d",
                                                       "tosa.transpose_conv2d", "tosa.matmul", "tosa.avg_pool2d")}}


def test_every_lowered_op_has_a_case():
    assert set(LOWERINGS) == set(CASES), sorted(set(LOWERINGS) ^ set(CASES))


def _check(name: str, data) -> None:
    m = Maker(data)
    graph, inputs = CASES[name](m, name)
    runs = 2 if name.startswith("tosa.variable") else 1
    reference, expected = tosaic.compile(graph), []
    try:
        for _ in range(runs):
            expected.append(reference.run([x.copy() for x in inputs]))
    except (TosaRuntimeError, NotImplementedError):
        assume(False)   # a TOSA REQUIRE failed, or the interpreter has no such op: outside the rule
    try:
        model = tosaic.compile(graph, target="cpu", threads=1)
    except tosaic.LoweringError as error:
        assert name in str(error) and REFUSALS.get(name, "(not refused)") in str(error), error
        return
    for run, want in enumerate(expected):
        assert_same(model.run([x.copy() for x in inputs]), want, f"{name} run {run}")


EXAMPLES = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name", sorted(CASES))
@EXAMPLES
@given(data=st.data())
def test_cpu_equals_interpreter(name, data):
    _check(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_cpu_equals_interpreter_many(name, data):
    _check(name, data)


@pytest.mark.parametrize("name,dtype,why", [("tosa.exp", "f32", "transcendental"), ("tosa.abs", "f16", "f16")])
def test_refusal_names_the_op_and_why(name, dtype, why):
    graph = Graph("refused")
    x = graph.add_input(TensorType((3,), dtype), "x")
    graph.set_outputs([TosaBuilder(graph).op(name, [x])], ["y"])
    with pytest.raises(tosaic.LoweringError, match=f"{name}.*{why}"):
        tosaic.compile(graph, target="cpu")


def test_depthwise_with_runtime_weights_multiplier_and_per_channel_epilogue():
    """Regression: the generic kernel of a depthwise conv (runtime weights) indexed its epilogue's
    per-channel reads at channel 0 when the channel multiplier was above 1 (33 of 150 outputs wrong)."""
    rng = np.random.default_rng(0)
    graph = Graph("main")
    b = TosaBuilder(graph)
    x = graph.add_input(TensorType((1, 5, 5, 3), "i8"), "x")
    w = graph.add_input(TensorType((3, 3, 3, 2), "i8"), "w")
    acc = b.op("tosa.depthwise_conv2d", [x, w, b.const(rng.integers(-100, 100, 6), "i32"), b.scalar(3, "i8"),
                                         b.scalar(0, "i8")],
               {"pad": (1, 1, 1, 1), "stride": (1, 1), "dilation": (1, 1), "acc_type": "i32"})
    graph.set_outputs([b.rescale(acc, rng.integers(1 << 29, 1 << 31, 6), rng.integers(30, 36, 6), 0, 2, "i8")], ["y"])
    inputs = [rng.integers(-128, 128, shape).astype(np.int8) for shape in ((1, 5, 5, 3), (3, 3, 3, 2))]
    assert_same(tosaic.compile(graph, target="cpu").run(inputs), tosaic.compile(graph).run(inputs))
