"""Logic: SELECT_V2, the comparisons (EQUAL, NOT_EQUAL, LESS, LESS_EQUAL, GREATER, GREATER_EQUAL) and CAST.

TOSA compares only i32 and float tensors (EQUAL, GREATER, GREATER_EQUAL; LESS(a, b) is GREATER(b, a)) and
has no integer NOT_EQUAL (LOGICAL_NOT of EQUAL). TFLite aligns operand shapes at their trailing dimensions;
TOSA broadcasting needs equal ranks, so lower-rank operands are reshaped with leading 1s.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.fixed_point import (
    int8_range,
    per_tensor,
    quantized_multiplier_smaller_than_one,
    rescale_exact,
)
from tosaic.importers.tflite.registry import legalize, type_signature
from tosaic.ir import Value, integer_range


def _aligned(ctx, values: list[Value]) -> list[Value]:
    """The values reshaped to a common rank by leading 1s (TFLite broadcasting aligns trailing axes)."""
    rank = max(v.type.rank for v in values)
    return [ctx.builder.reshape(v, (1,) * (rank - v.type.rank) + v.type.shape) for v in values]


# ----------------------------------------------------------------------------------------- SELECT_V2


@legalize("SELECT_V2", types=("bool->int8", "bool->int16", "bool->int32", "bool->float32", "bool"))
def select_v2(ctx, op):
    """select.cc (kVersionTwo) + reference_ops::Select / BroadcastSelect5DSlow: `condition ? x : y` with numpy
    broadcasting, a copy of the chosen element's bits: scales and zero points are never read. When every
    operand and the output hold one element, LiteRT keeps the output's own shape."""
    condition, x, y, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    if x.dtype != y.dtype:
        raise ctx.error(f"SELECT_V2 operands differ in type: {x.describe()}, {y.describe()}")
    values = [ctx.value(t) for t in (condition, x, y)]
    b = ctx.builder
    if all(v.type.size == 1 for v in values) and int(np.prod(out.shape, dtype=np.int64)) == 1:
        values = [b.reshape(v, out.shape) for v in values]
    ctx.set_output(b.op("tosa.select", _aligned(ctx, values)))


# --------------------------------------------------------------------------------------- comparisons

# ComparisonWithScaling: each int8/int16 operand becomes `(q - zp) << 8`, requantized by its own scale.
LEFT_SHIFT = 8

COMPARISON_TYPES = ("int8->bool", "int16->bool", "int32->bool", "float32->bool")


def _scaled(ctx, t, value: Value, what: str) -> Value:
    """`MultiplyByQuantizedMultiplierSmallerThanOneExp((q - zp) << 8, m, e)` with (m, e) from the tensor's own
    scale (comparisons.cc QuantizeMultiplier: SmallerThanOneExp for scale < 1; for scale >= 1 the kernel divides
    by a negative power of two, undefined behaviour, so such models are refused). Two exact RESCALEs: the shift
    by 8, then the multiplier (DOUBLE_ROUND equals the double-rounding gemmlowp multiply)."""
    scale, zp = per_tensor(ctx, t)
    multiplier, shift = quantized_multiplier_smaller_than_one(ctx, scale, f"{what} scale")
    b = ctx.builder
    if t.dtype == "int8":
        low, high = int8_range(zp)
    else:
        low, high = -32768 - zp, 32767 - zp
        if zp != 0:  # TOSA allows a non-zero RESCALE zero point only on i8: subtract it in i32
            value = b.op("tosa.sub", [b.cast(value, "i32"), b.const(np.full((1,) * value.type.rank, zp), "i32")])
    shifted = rescale_exact(ctx, value, 1 << 30, 30 - LEFT_SHIFT, (low, high), zp if t.dtype == "int8" else 0, 0,
                            "i32", f"{what} << {LEFT_SHIFT}")
    return rescale_exact(ctx, shifted, multiplier, shift, (low << LEFT_SHIFT, high << LEFT_SHIFT), 0, 0, "i32",
                         f"{what} multiplier")


def _operands(ctx, op, scaled: bool) -> tuple[Value, Value]:
    a, c = ctx.input(0), ctx.input(1)
    if a.dtype != c.dtype:
        raise ctx.error(f"{op.opcode} operands differ in type: {a.describe()}, {c.describe()}")
    x, y = ctx.value(a), ctx.value(c)
    if scaled:
        x, y = _scaled(ctx, a, x, "input 1"), _scaled(ctx, c, y, "input 2")
    elif a.dtype in ("int8", "int16"):
        b = ctx.builder
        x, y = b.cast(x, "i32"), b.cast(y, "i32")
    return tuple(_aligned(ctx, [x, y]))


def _compare(ctx, op, tosa_op: str, swap: bool, negate: bool, scaled: bool) -> None:
    x, y = _operands(ctx, op, scaled)
    if swap:
        x, y = y, x
    b = ctx.builder
    result = b.op(tosa_op, [x, y])
    ctx.set_output(b.op("tosa.logical_not", [result]) if negate else result)


def _quantized(ctx, op) -> bool:
    """Whether LiteRT compares the operands through ComparisonQuantized (int8 always; int16 when quantized)."""
    t = ctx.input(0)
    if t.dtype == "int8" and not t.quantized:
        raise ctx.error(f"{op.opcode} of an unquantized int8 tensor {t.describe()}: LiteRT rescales it by a "
                        f"scale of 0")
    return t.dtype == "int8" or (t.dtype == "int16" and t.quantized)


@legalize("EQUAL", types=COMPARISON_TYPES + ("bool",))
def equal(ctx, op):
    """comparisons.cc EqualEval: quantized int8/int16 through ComparisonWithScaling (so values that differ by
    less than the rounding of `(q - zp) * 256 * scale` compare equal), everything else on raw values."""
    if ctx.input(0).dtype == "bool":
        b = ctx.builder
        x, y = _aligned(ctx, [ctx.value(ctx.input(0)), ctx.value(ctx.input(1))])
        ctx.set_output(b.op("tosa.logical_not", [b.op("tosa.logical_xor", [x, y])]))
        return
    _compare(ctx, op, "tosa.equal", swap=False, negate=False, scaled=_quantized(ctx, op))


@legalize("NOT_EQUAL", types=COMPARISON_TYPES + ("bool",))
def not_equal(ctx, op):
    """comparisons.cc NotEqualEval: as EQUAL, negated. For an unquantized int16 input the kernel writes nothing
    (its switch has no such case): the output is uninitialized memory, so such models are refused."""
    t = ctx.input(0)
    if t.dtype == "bool":
        x, y = _aligned(ctx, [ctx.value(t), ctx.value(ctx.input(1))])
        ctx.set_output(ctx.builder.op("tosa.logical_xor", [x, y]))
        return
    if t.dtype == "int16" and not t.quantized:
        raise ctx.error(f"NOT_EQUAL of an unquantized int16 tensor {t.describe()}: LiteRT writes no output")
    _compare(ctx, op, "tosa.equal", swap=False, negate=True, scaled=_quantized(ctx, op))


def _ordered(ctx, op, tosa_op: str, swap: bool) -> None:
    """comparisons.cc LessEval / LessEqualEval (GREATER and GREATER_EQUAL swap the operands): int8 through
    ComparisonWithScaling; int16 on the raw values even when quantized (no int16 scaling case there)."""
    _compare(ctx, op, tosa_op, swap, negate=False, scaled=_quantized(ctx, op) and ctx.input(0).dtype == "int8")


@legalize("LESS", types=COMPARISON_TYPES)
def less(ctx, op):
    """LESS(a, b) = GREATER(b, a)."""
    _ordered(ctx, op, "tosa.greater", swap=True)


@legalize("LESS_EQUAL", types=COMPARISON_TYPES)
def less_equal(ctx, op):
    """LESS_EQUAL(a, b) = GREATER_EQUAL(b, a)."""
    _ordered(ctx, op, "tosa.greater_equal", swap=True)


@legalize("GREATER", types=COMPARISON_TYPES)
def greater(ctx, op):
    """GREATER: LiteRT's LessEval with the operands swapped."""
    _ordered(ctx, op, "tosa.greater", swap=False)


@legalize("GREATER_EQUAL", types=COMPARISON_TYPES)
def greater_equal(ctx, op):
    """GREATER_EQUAL: LiteRT's LessEqualEval with the operands swapped."""
    _ordered(ctx, op, "tosa.greater_equal", swap=False)


# ----------------------------------------------------------------------------------------------- CAST

CAST_TYPES = ("int8", "int16", "int32", "float32", "bool")
TOSA_TYPES = {"int8": "i8", "int16": "i16", "int32": "i32", "float32": "f32", "bool": "i1"}


def _float_to_integer(ctx, value: Value, dtype: str) -> Value:
    """cast.cc SaturatingCastFloatingToInteger = SafeCast<ToT>(x, nan_result = max): NaN gives the type's
    maximum, values below or above the range saturate, the rest truncate toward zero. TOSA CAST rounds to
    nearest (and leaves NaN and infinities unspecified), so: NaN -> 2^31, truncate (FLOOR for x >= 0, CEIL
    below), CLAMP to the type's range in f32, then CAST the now integral value."""
    b = ctx.builder
    ones = (1,) * value.type.rank

    def f32(number):
        return b.const(np.full(ones, number, dtype=np.float32), "f32")

    is_number = b.op("tosa.equal", [value, value])
    value = b.op("tosa.select", [is_number, value, f32(2.0 ** 31)])
    non_negative = b.op("tosa.greater_equal", [value, f32(0.0)])
    value = b.op("tosa.select", [non_negative, b.op("tosa.floor", [value]), b.op("tosa.ceil", [value])])
    low, high = integer_range(dtype)
    value = b.op("tosa.clamp", [value], {"min_val": float(np.float32(low)), "max_val": float(np.float32(high)),
                                         "nan_mode": "PROPAGATE"})
    return b.cast(value, dtype)


@legalize("CAST", types=[type_signature(a, c) for a in CAST_TYPES for c in CAST_TYPES])
def cast(ctx, op):
    """cast.cc copyCast: `static_cast` of the stored values; scales and zero points are ignored. Integer
    narrowing wraps (TOSA CAST truncates the same way), widening sign-extends, int32 -> float32 rounds to
    nearest even (so does TOSA CAST), anything -> bool is `!= 0` (NaN -> true), bool -> number is 0 or 1.
    float32 -> integer truncates and saturates (see _float_to_integer). TOSA has no CAST between i1 and
    float: bool -> float32 goes through i8, float32 -> bool is NOT(EQUAL(x, 0.0))."""
    x, out = ctx.input(0), ctx.output()
    value = ctx.value(x)
    b = ctx.builder
    source, target = x.dtype, out.dtype
    if source == target:
        result = value
    elif source == "float32" and target == "bool":
        zero = b.const(np.zeros((1,) * value.type.rank, dtype=np.float32), "f32")
        result = b.op("tosa.logical_not", [b.op("tosa.equal", [value, zero])])
    elif source == "float32":
        result = _float_to_integer(ctx, value, TOSA_TYPES[target])
    elif source == "bool" and target == "float32":
        result = b.cast(b.cast(value, "i8"), "f32")
    else:
        result = b.cast(value, TOSA_TYPES[target])
    ctx.set_output(result)
