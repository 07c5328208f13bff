"""QUANTIZE and DEQUANTIZE: integer requantization, and the float32 edges of float-in/float-out models.

What LiteRT's reference kernels compute (kernels/quantize.cc, dequantize.cc, dequantize.h with kReference):

- QUANTIZE between integer types, `reference_ops::Requantize`:
  `clamp(zp_o + MultiplyByQuantizedMultiplier(q - zp_i, m, e))` with `(m, e) = QuantizeMultiplier(double(s_i) /
  double(s_o))`. Its fast path for equal scales (`q ^ 0x80` between int8 and uint8 whose zero points differ by
  128) gives the same bits as the general formula, whose multiplier is then exactly 1.
- QUANTIZE float32 -> int8/uint8/int16, `reference_ops::AffineQuantize`:
  `clamp(static_cast<int32_t>(TfLiteRound(x / static_cast<float>(scale))) + zp)`: a float32 division
  (correctly rounded), rounding half away from zero, a float -> int32 conversion and an int32 addition. Beyond
  int32 (and for NaN) the conversion is undefined in C++; LiteRT 2.3.0's x86-64 binary yields INT32_MIN there
  (cvttss2si), and the addition of the zero point wraps. Measured on `tests/test_float_edges.py`: inf, NaN and
  1e30 quantize to the type's minimum when zp >= 0 and to its maximum when zp < 0.
- DEQUANTIZE int8/uint8/int16 -> float32: `static_cast<float>(double(scale) * (q - zp))`: the double product
  of a float32 and an integer below 2^24 is exact, so the result is the float32 product correctly rounded.

How they become TOSA:

- Integer requantization is one DOUBLE_ROUND RESCALE (through i32 where TOSA's zero-point and signedness rules
  forbid a single one; uint8 uses `input_unsigned` / `output_unsigned`).
- DEQUANTIZE is `CAST(q - zp)` to f32 (exact) and one f32 MUL by the scale: TOSA requires MUL to be within half
  an ulp of the exact product, i.e. correctly rounded (an exact tie may go either way; numpy's and LiteRT's go
  to even), except that a subnormal result may be flushed to zero.
- QUANTIZE from float32 is a monotone step function of x (apart from the undefined region): the result is
  `clamp(k + zp)` with `k` the number of thresholds `T_j` (the least float32 x with `round(x / s) >= j`) at
  or below x. The thresholds are found at import time by bisection over float32 values with the kernel's own
  arithmetic. At run time `Q = CAST(x * fl(1/s))` lands within one of k (its relative error is a few ulps and
  the clamp keeps |k| far below 2^22), so two GATHERs of the thresholds next to Q and two float comparisons
  settle k exactly. Those comparisons and GATHER are exact in every TOSA implementation; the MUL and CAST only
  need to be within an ulp. The kernel's undefined region (NaN, and x past the thresholds where the C++
  conversion overflows or the zero-point addition wraps) is a SELECT of the value LiteRT produces there.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.fixed_point import (
    STORAGE,
    TYPE_RANGE,
    per_tensor,
    quantized_range,
    requantize,
    to_i32,
)
from tosaic.importers.tflite.registry import legalize, type_signature

INTEGER_TYPES = ("int8", "uint8", "int16")
# LiteRT's Requantize directions (quantize.cc Prepare and Eval), and float32 AffineQuantize.
REQUANTIZE = [("int8", "int8"), ("int8", "uint8"), ("int8", "int16"), ("uint8", "int8"), ("uint8", "uint8"),
              ("uint8", "int16"), ("int16", "int8"), ("int16", "int16")]
QUANTIZE_TYPES = [type_signature(a, b) for a, b in REQUANTIZE] + [f"float32->{t}" for t in INTEGER_TYPES]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@legalize("QUANTIZE", types=QUANTIZE_TYPES)
def quantize(ctx, op):
    """kernels/quantize.cc with kReference: Requantize between integer types, AffineQuantize from float32."""
    x_tensor, out = ctx.input(0), ctx.output()
    if x_tensor.dtype == "float32":
        ctx.set_output(affine_quantize(ctx, ctx.value(x_tensor), out))
        return
    if (x_tensor.dtype, out.dtype) not in REQUANTIZE:
        raise ctx.error(f"QUANTIZE from {x_tensor.dtype} to {out.dtype} has no LiteRT kernel")
    (s_in, zp_in), (s_out, zp_out) = per_tensor(ctx, x_tensor), per_tensor(ctx, out)
    if x_tensor.dtype == "int16" and out.dtype == "int16" and (zp_in or zp_out):
        raise ctx.error("int16 -> int16 QUANTIZE needs zero points 0 (LiteRT rejects the model)")
    # Prepare: QuantizeMultiplier(double(s_in) / double(s_out)).
    ctx.set_output(requantize(ctx, ctx.value(x_tensor), s_in / s_out, quantized_range(x_tensor.dtype, zp_in),
                              zp_in, zp_out, STORAGE[out.dtype], "QUANTIZE multiplier",
                              input_unsigned=x_tensor.dtype == "uint8", output_unsigned=out.dtype == "uint8"))


# ------------------------------------------------------------------------------- float32 -> integer


def _ordered(f: np.ndarray) -> np.ndarray:
    """float32 values as int64 keys whose order is the float order (-0.0 and +0.0 share the key 0)."""
    bits = np.asarray(f, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _unordered(key: np.ndarray) -> np.ndarray:
    key = np.asarray(key, dtype=np.int64)
    bits = np.where(key < 0, (-key) | np.int64(0x80000000), key)
    return bits.astype(np.uint32).view(np.float32)


INFINITY_KEY = int(_ordered(np.float32(np.inf)))


def least_float_where(predicate, count: int) -> np.ndarray:
    """For a predicate over float32 arrays that is monotone (false, then true) along the float order, the
    least float32 (from -inf to +inf) where each of `count` vectorized predicates holds; +inf where only
    +inf satisfies it, and NaN where none does. `predicate(x)` maps a [count] float32 array to [count] bools."""
    low = np.full(count, -INFINITY_KEY, dtype=np.int64)  # invariant: the answer is in (low, high]
    high = np.full(count, INFINITY_KEY, dtype=np.int64)
    never = ~predicate(_unordered(high))
    starts_true = predicate(_unordered(low))
    for _ in range(34):
        middle = (low + high) // 2
        holds = predicate(_unordered(middle))
        high = np.where(holds, middle, high)
        low = np.where(holds, low, middle)
    result = _unordered(high)
    result = np.where(starts_true, np.float32(-np.inf), result)
    return np.where(never, np.float32(np.nan), result)


def quotient(x: np.ndarray, scale: np.float32) -> np.ndarray:
    """The kernel's `x / static_cast<float>(scale)` in float32 (numpy divides IEEE-correctly)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        return np.asarray(x, dtype=np.float32) / scale


def tflite_round_f32(q: np.ndarray) -> np.ndarray:
    """TfLiteRound (std::round, half away from zero) of float32 values, as exact floats."""
    with np.errstate(invalid="ignore"):
        t = np.trunc(q)
        return t + np.where(np.abs(q - t) >= 0.5, np.sign(q), 0).astype(np.float32)


def affine_quantize_reference(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """What LiteRT 2.3.0's AffineQuantize computes on x86-64, for tests and for the thresholds: the float32
    quotient, TfLiteRound, the conversion to int32 (INT32_MIN when out of range or NaN), the wrapping
    addition of the zero point, the clamp."""
    rounded = tflite_round_f32(quotient(x, np.float32(scale)))
    inside = (rounded >= INT32_MIN) & (rounded < 2.0**31)  # false for NaN
    k = np.where(inside, np.nan_to_num(rounded), INT32_MIN).astype(np.int64)
    u = k + zero_point
    u = (u - INT32_MIN) % (1 << 32) + INT32_MIN  # int32 wrap-around
    low, high = TYPE_RANGE[dtype]
    return np.clip(u, low, high)


def quantize_thresholds(scale: float, zero_point: int, dtype: str):
    """The floats where AffineQuantize's output changes, for `affine_quantize`.

    Returns (steps, k_min, undefined_low, undefined_high, undefined_value): `steps[j]` is the least float32
    x whose rounded quotient reaches `k_min + j` (j >= 1), with `steps[0] = -inf` and a last `+inf`; the
    output is `clamp(k + zp)` where k counts the steps at or below x, except at NaN, at x <= undefined_low
    and at x >= undefined_high, where it is `undefined_value`."""
    s = np.float32(scale)
    low, high = TYPE_RANGE[dtype]
    k_min, k_max = low - zero_point, high - zero_point
    targets = np.arange(k_min + 1, k_max + 1, dtype=np.float64)
    rounded = lambda x: tflite_round_f32(quotient(x, s)).astype(np.float64)  # noqa: E731
    steps = least_float_where(lambda x: rounded(x) >= targets, targets.size)
    steps = np.concatenate([[np.float32(-np.inf)], steps, [np.float32(np.inf)]]).astype(np.float32)
    # Where the C++ leaves int32: the quotient rounds to 2^31 or more (the conversion overflows), or to
    # -2^31 or less (INT32_MIN, exactly or by overflow); then INT32_MIN + zp wraps for zp < 0. And where the
    # zero-point addition itself wraps: k >= 2^31 - zp (zp > 0) or k < -2^31 - zp (zp < 0).
    top = float(INT32_MAX - zero_point + 1) if zero_point > 0 else 2.0**31
    bottom = float(INT32_MIN - zero_point - 1) if zero_point < 0 else float(INT32_MIN)
    undefined_high = least_float_where(lambda x: rounded(x) >= top, 1)[0]
    above_bottom = least_float_where(lambda x: rounded(x) > bottom, 1)[0]
    undefined_low = np.nextafter(above_bottom, np.float32(-np.inf)) if np.isfinite(above_bottom) else above_bottom
    undefined_value = low if zero_point >= 0 else high  # clamp(wrap(INT32_MIN + zp))
    return steps, k_min, np.float32(undefined_low), np.float32(undefined_high), undefined_value


def affine_quantize(ctx, x, out):
    """AffineQuantize (float32 -> int8/uint8/int16, per tensor) as TOSA; see the module docstring."""
    if out.dtype not in INTEGER_TYPES:
        raise ctx.error(f"QUANTIZE from float32 to {out.dtype} is not supported")
    if out.quantized and out.scale.size > 1:
        raise ctx.error(f"per-channel QUANTIZE of float32 ({out.describe()}) is not supported")
    scale, zero_point = per_tensor(ctx, out)
    s = np.float32(scale)
    if not (2.0**-100 <= float(s) <= 2.0**100):
        raise ctx.error(f"QUANTIZE scale {float(s)!r} is outside [2^-100, 2^100]; tosaic's float edge needs "
                        f"1/scale far from float32's subnormals and overflow")
    steps, k_min, undefined_low, undefined_high, undefined_value = quantize_thresholds(float(s), zero_point,
                                                                                       out.dtype)
    b = ctx.builder
    shape = x.type.shape
    ones = (1,) * len(shape)
    size = int(np.prod(shape, dtype=np.int64))
    fconst = lambda v: b.const(np.full(ones, v, dtype=np.float32), "f32")  # noqa: E731
    iconst = lambda v: b.const(np.full(ones, v), "i32")  # noqa: E731

    is_nan = b.op("tosa.logical_not", [b.op("tosa.equal", [x, x])])
    # NaN becomes 0 and |x| is clamped to 2^20 * s: beyond it Q saturates at k_min or k_max anyway, and the
    # product then never overflows. Q = CAST(x * fl(1/s)) rounds to nearest: within one of k.
    bound = float(np.float32(s * np.float32(1 << 20)))
    clamped = b.op("tosa.clamp", [b.op("tosa.select", [is_nan, fconst(0.0), x])],
                   {"min_val": -bound, "max_val": bound, "nan_mode": "PROPAGATE"})
    approx = b.cast(b.mul_shift(clamped, fconst(np.float32(1.0) / s)), "i32")
    k_max = k_min + steps.size - 2
    approx = b.op("tosa.minimum", [b.op("tosa.maximum", [approx, iconst(k_min)]), iconst(k_max)])
    index = b.reshape(b.op("tosa.sub", [approx, iconst(k_min)]), (1, size))
    table = b.const(steps.reshape(1, -1, 1), "f32")
    below = b.reshape(b.op("tosa.gather", [table, index]), shape)  # steps[Q - k_min]: the step to Q
    next_index = b.op("tosa.add", [index, b.const(np.ones((1, 1)), "i32")])
    above = b.reshape(b.op("tosa.gather", [table, next_index]), shape)  # the step to Q + 1
    down = b.cast(b.op("tosa.greater", [below, x]), "i32")
    up = b.cast(b.op("tosa.greater_equal", [x, above]), "i32")
    k = b.op("tosa.add", [b.op("tosa.sub", [approx, down]), up])
    undefined = b.op("tosa.logical_or", [is_nan, b.op("tosa.logical_or", [
        b.op("tosa.greater_equal", [x, fconst(undefined_high)]),
        b.op("tosa.greater_equal", [fconst(undefined_low), x])])])
    k = b.op("tosa.select", [undefined, iconst(undefined_value - zero_point), k])
    if zero_point:
        k = b.op("tosa.add", [k, iconst(zero_point)])
    return b.cast(k, STORAGE[out.dtype])  # k + zp lies in the type's range (uint8 keeps its i8 bits)


# -------------------------------------------------------------------------------------- DEQUANTIZE


@legalize("DEQUANTIZE", types=[f"{t}->float32" for t in INTEGER_TYPES])
def dequantize(ctx, op):
    """dequantize.h DequantizeImpl with kReference: `reference_integer_ops::Dequantize` (int8, int16) and
    `reference_ops::Dequantize` (uint8), `static_cast<float>(double(scale) * (q - zp))`; per-channel tensors
    (`PerChannelDequantize`, `float(scale[c] * (q - zp[c]))` in float) when the input is a constant."""
    x_tensor, out = ctx.input(0), ctx.output()
    if out.dtype != "float32" or x_tensor.dtype not in INTEGER_TYPES:
        raise ctx.error(f"DEQUANTIZE from {x_tensor.dtype} to {out.dtype} is not supported")
    if not x_tensor.quantized:
        raise ctx.error(f"DEQUANTIZE input {x_tensor.describe()} is not quantized")
    b = ctx.builder
    if x_tensor.scale.size > 1:
        if x_tensor.data is None:
            raise ctx.error(f"per-channel DEQUANTIZE of a runtime tensor ({x_tensor.describe()}) is not supported")
        ctx.set_output(b.const(_dequantize_constant(x_tensor), "f32"))
        return
    scale, zero_point = per_tensor(ctx, x_tensor)
    if x_tensor.dtype == "int16" and zero_point:
        raise ctx.error("int16 DEQUANTIZE needs zero point 0 (LiteRT rejects the model)")
    x = ctx.value(x_tensor)
    values = b.cast(to_i32(ctx, x, zero_point, unsigned=x_tensor.dtype == "uint8"), "f32")  # |q - zp| < 2^24
    ones = (1,) * x.type.rank
    ctx.set_output(b.mul_shift(values, b.const(np.full(ones, np.float32(scale)), "f32")))


def _dequantize_constant(t) -> np.ndarray:
    """PerChannelDequantize at import time: float32 `scale[c] * float(q - zp[c])`, correctly rounded."""
    data = t.data.astype(np.int64)
    axis = t.quantized_dimension
    shape = [1] * data.ndim
    shape[axis] = -1
    scales = t.scale.astype(np.float32).reshape(shape)
    zero_points = t.zero_point.astype(np.int64).reshape(shape)
    return (scales * (data - zero_points).astype(np.float32)).astype(np.float32)
