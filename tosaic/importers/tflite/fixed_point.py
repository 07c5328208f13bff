"""TFLite's fixed-point multiplies as TOSA RESCALEs, with the proof obligations checked at import time.

LiteRT's reference kernels (default double-rounding build) requantize with
`MultiplyByQuantizedMultiplier(x, m, e)`: `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << max(e, 0),
m), max(-e, 0))`, where `(m, e) = QuantizeMultiplier(real)` (tflite/kernels/internal/common.cc,
quantization_util.cc). One RESCALE with rounding_mode DOUBLE_ROUND, multiplier `m` and shift `31 - e` computes
the same bits, given two conditions that `requantize` checks for every value its input can hold:

- TOSA's `apply_scale_32` REQUIREs `-(1 << (shift-1)) <= value < 1 << (shift-1)`. That same bound keeps the
  kernel's `x << e` below 2^30, so the C++ never overflows either.
- The multiplier is non-negative (scales are positive) and `2 <= shift <= 62`.

When a parameter set breaks them, the import fails with a reason instead of computing other bits.

TOSA 1.0 allows a non-zero zero point only on i8 (and on the unsigned side of a RESCALE), never both sides
unsigned, and no unsigned side next to i32. `rescale_exact` keeps one RESCALE where those rules allow it and
otherwise goes through i32 (`to_i32`, `from_i32`), which computes the same integers. uint8 tensors travel as
i8 bits: a RESCALE reads or writes them with `input_unsigned` / `output_unsigned`.

The 16x8 kernels requantize an int64 accumulator with `MultiplyByQuantizedMultiplier(int64_t x, m, e)`
(kernels/internal/common.cc), which first reduces the multiplier to 16 bits, `(m + 2^15) >> 16` (0x7FFF from
0x7FFF0000 up), and computes `(x * m16 + 2^(14 - e)) >> (15 - e)`: exactly TOSA's `apply_scale_16`, a RESCALE
from i48 with scale32 = false, multiplier m16 and shift 15 - e (`rescale_48`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

from tosaic.importers.tflite.reader import TFLTensor
from tosaic.ir import Value
from tosaic.quant import quantize_multiplier

# RESCALE by exactly 1.0: (v * 2^30 + 2^29) >> 30 == v for every int32 v with |v| < 2^29.
UNIT_MULTIPLIER, UNIT_SHIFT = 1 << 30, 30


def per_tensor(ctx, t: TFLTensor) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized tensor; the scale is the stored float32, widened."""
    if not t.quantized or t.scale.size != 1:
        raise ctx.error(f"tensor {t.describe()} must be quantized per tensor")
    return float(t.scale[0]), int(t.zero_point[0])


# The integers each quantized TFLite type holds, and the TOSA element type that stores it.
TYPE_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
STORAGE = {"int8": "i8", "uint8": "i8", "int16": "i16", "int32": "i32"}


def quantized_range(dtype: str, zero_point: int) -> tuple[int, int]:
    """The values of `q - zero_point` over every `q` of the TFLite type `dtype` (int8, uint8, int16)."""
    low, high = TYPE_RANGE[dtype]
    return low - zero_point, high - zero_point


def int8_range(zero_point: int) -> tuple[int, int]:
    """The values of `q - zero_point` over every int8 `q`."""
    return quantized_range("int8", zero_point)


def tensor_range(ctx, t: TFLTensor) -> tuple[int, int]:
    """`quantized_range` of a per-tensor quantized int8, uint8 or int16 tensor."""
    if t.dtype not in TYPE_RANGE:
        raise ctx.error(f"tensor {t.describe()} must be int8, uint8 or int16")
    return quantized_range(t.dtype, per_tensor(ctx, t)[1])


def product_range(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    products = [x * y for x in a for y in b]
    return min(products), max(products)


def quantized_multiplier(ctx, real: float, what: str) -> tuple[int, int]:
    """TFLite `QuantizeMultiplier(real)` as a RESCALE (multiplier, shift = 31 - exponent)."""
    if not (real >= 0.0 and np.isfinite(real)):
        raise ctx.error(f"{what}: multiplier {real!r} is not a finite non-negative number")
    multiplier, exponent = quantize_multiplier(real)
    return int(multiplier), 31 - int(exponent)


def quantized_multiplier_smaller_than_one(ctx, real: float, what: str) -> tuple[int, int]:
    """TFLite `QuantizeMultiplierSmallerThanOneExp(real)`, defined only for `0 < real < 1` with a rounded
    exponent <= 0. Outside that, LiteRT's ADD aborts in Prepare (TFLITE_CHECK) and its SUB shifts by a
    negative amount (undefined behaviour; seen returning only +-1): there is no reference to reproduce."""
    reason = "(QuantizeMultiplierSmallerThanOneExp is undefined there: LiteRT aborts or computes garbage)"
    if not 0.0 < real < 1.0:
        raise ctx.error(f"{what}: real multiplier {real!r} must lie in (0, 1) {reason}")
    multiplier, shift = quantized_multiplier(ctx, real, what)
    if shift < 31:
        raise ctx.error(f"{what}: real multiplier {real!r} rounds up to 1.0 {reason}")
    return multiplier, shift


def scaled_range(value_range: tuple[int, int], multiplier: int, shift: int) -> tuple[int, int]:
    """Bounds of `apply_scale_32` / `apply_scale_16` results over `value_range`, widened by one for the
    double rounding (every rounding mode is monotone and within one of the single-rounded value)."""
    def scale(v: int) -> int:
        return (v * multiplier + (1 << (shift - 1))) >> shift if shift >= 1 else v * multiplier
    return scale(value_range[0]) - 1, scale(value_range[1]) + 1


def _legal_rescale(in_dtype: str, out_dtype: str, input_zp: int, output_zp: int, input_unsigned: bool,
                   output_unsigned: bool) -> bool:
    """Whether TOSA 1.0 accepts a RESCALE with these operand types, zero points and signedness flags."""
    if input_unsigned and output_unsigned:
        return False
    if input_unsigned and (in_dtype != "i8" or out_dtype == "i32"):
        return False
    if output_unsigned and (out_dtype != "i8" or in_dtype in ("i32", "i48")):
        return False
    return (input_zp == 0 or in_dtype == "i8") and (output_zp == 0 or out_dtype == "i8")


def rescale_exact(ctx, x: Value, multiplier: int, shift: int, value_range: tuple[int, int], input_zp: int,
                  output_zp: int, dtype: str, what: str, input_unsigned: bool = False,
                  output_unsigned: bool = False) -> Value:
    """A DOUBLE_ROUND RESCALE after proving its REQUIREs over `value_range`, the range of `x - input_zp`.

    `dtype` is the TOSA result type (i8 with `output_unsigned` for uint8). Where TOSA forbids the zero points
    or signedness flags on one RESCALE (an i16 zero point, unsigned on both sides or next to i32), the same
    integers are computed through i32."""
    low, high = value_range
    limit = 1 << (shift - 1) if shift >= 1 else 0
    if not (0 <= multiplier < (1 << 31) and 2 <= shift <= 62 and -limit <= low and high < limit):
        raise ctx.error(f"{what}: multiplier {multiplier} with shift {shift} cannot rescale values in "
                        f"[{low}, {high}] exactly (TOSA apply_scale_32 needs |value| < 2^(shift-1); the "
                        f"reference kernel would overflow int32)")
    b = ctx.builder
    if _legal_rescale(x.type.dtype, dtype, input_zp, output_zp, input_unsigned, output_unsigned):
        return b.rescale(x, multiplier, shift, input_zp, output_zp, dtype, rounding="DOUBLE_ROUND",
                         input_unsigned=input_unsigned, output_unsigned=output_unsigned)
    if not _legal_rescale(x.type.dtype, "i32", input_zp, 0, input_unsigned, False):
        x, input_zp, input_unsigned = to_i32(ctx, x, input_zp, input_unsigned), 0, False
    scaled = b.rescale(x, multiplier, shift, input_zp, 0, "i32", rounding="DOUBLE_ROUND")
    if dtype == "i32":
        return from_i32(ctx, scaled, scaled_range(value_range, multiplier, shift), output_zp, "int32")
    tflite_dtype = "uint8" if output_unsigned else {"i8": "int8", "i16": "int16"}[dtype]
    return from_i32(ctx, scaled, scaled_range(value_range, multiplier, shift), output_zp, tflite_dtype)


def requantize(ctx, x: Value, real: float, value_range: tuple[int, int], input_zp: int, output_zp: int,
               dtype: str, what: str, input_unsigned: bool = False, output_unsigned: bool = False) -> Value:
    """`saturate(output_zp + MultiplyByQuantizedMultiplier(x - input_zp, QuantizeMultiplier(real)))`."""
    multiplier, shift = quantized_multiplier(ctx, real, what)
    return rescale_exact(ctx, x, multiplier, shift, value_range, input_zp, output_zp, dtype, what,
                         input_unsigned, output_unsigned)


def reduced_multiplier(multiplier):
    """The 16-bit multiplier of `MultiplyByQuantizedMultiplier(int64_t, ...)`: `(m + 2^15) >> 16`, 0x7FFF from
    0x7FFF0000 up (scalars or arrays)."""
    m = np.asarray(multiplier, dtype=np.int64)
    return np.where(m >= 0x7FFF0000, 0x7FFF, (m + (1 << 15)) >> 16)


def rescale_48(ctx, acc: Value, multipliers, exponents, acc_low, acc_high, dtype: str, what: str) -> Value:
    """`MultiplyByQuantizedMultiplier(int64_t acc, m, e)` of an i48 accumulator, saturated to `dtype` (i16 or
    i32), per channel of the last axis when given arrays: one RESCALE with scale32 = false (apply_scale_16),
    multiplier `(m + 2^15) >> 16` and shift `15 - e`. Proves the REQUIREs over [acc_low, acc_high] (per
    channel): the accumulator fits int48 and the scaled value int32 (beyond it the C++ truncates to int32,
    which TOSA cannot express)."""
    multipliers = np.atleast_1d(np.asarray(multipliers, dtype=np.int64))
    shifts = 15 - np.atleast_1d(np.asarray(exponents, dtype=np.int64))
    low = np.broadcast_to(np.asarray(acc_low, dtype=object), multipliers.shape)
    high = np.broadcast_to(np.asarray(acc_high, dtype=object), multipliers.shape)
    reduced = reduced_multiplier(multipliers)
    for c in range(multipliers.size):
        where = f"{what} (channel {c})" if multipliers.size > 1 else what
        m, shift, lo, hi = int(reduced[c]), int(shifts[c]), int(low[c]), int(high[c])
        if not (0 <= int(multipliers[c]) < (1 << 31) and 2 <= shift <= 62):
            raise ctx.error(f"{where}: exponent {15 - shift} needs a RESCALE shift of {shift}, outside [2, 62]")
        if not (-(1 << 47) <= lo and hi < (1 << 47)):
            raise ctx.error(f"{where}: the accumulator can reach [{lo}, {hi}], beyond int48 (TOSA's 16x8 "
                            f"accumulator; LiteRT assumes |acc| < 2^47 too)")
        scaled_low, scaled_high = scaled_range((lo, hi), m, shift)
        if not (-(1 << 31) <= scaled_low and scaled_high < (1 << 31)):
            raise ctx.error(f"{where}: accumulators in [{lo}, {hi}] scale to [{scaled_low}, {scaled_high}], "
                            f"beyond int32 (the kernel truncates them; TOSA apply_scale_16 requires int32)")
    if np.all(reduced == reduced[0]) and np.all(shifts == shifts[0]):
        reduced, shifts = reduced[:1], shifts[:1]
    return ctx.builder.rescale(acc, reduced, shifts, 0, 0, dtype, scale32=False, rounding="SINGLE_ROUND")


def rescale_channels(ctx, x: Value, multipliers, shifts, acc_low, acc_high, output_zp: int, dtype: str,
                     what: str) -> Value:
    """A per-channel (last axis) DOUBLE_ROUND RESCALE of an i32 value after proving apply_scale_32's value
    range for each channel's [acc_low, acc_high]; one (multiplier, shift) when all channels share it."""
    multipliers = np.atleast_1d(np.asarray(multipliers, dtype=np.int64))
    shifts = np.atleast_1d(np.asarray(shifts, dtype=np.int64))
    low = np.broadcast_to(np.asarray(acc_low, dtype=object), multipliers.shape)
    high = np.broadcast_to(np.asarray(acc_high, dtype=object), multipliers.shape)
    for c in range(multipliers.size):
        shift, lo, hi = int(shifts[c]), int(low[c]), int(high[c])
        limit = 1 << (shift - 1) if shift >= 1 else 0
        if not (0 <= int(multipliers[c]) < (1 << 31) and 2 <= shift <= 62 and -limit <= lo and hi < limit):
            raise ctx.error(f"{what} (channel {c}): multiplier {int(multipliers[c])} with shift {shift} cannot "
                            f"rescale accumulators in [{lo}, {hi}] exactly (TOSA apply_scale_32 needs |value| < "
                            f"2^(shift-1); the reference kernel would overflow int32)")
    if np.all(multipliers == multipliers[0]) and np.all(shifts == shifts[0]):
        multipliers, shifts = multipliers[:1], shifts[:1]
    return ctx.builder.rescale(x, multipliers, shifts, 0, output_zp, dtype, rounding="DOUBLE_ROUND")


def narrow_48(ctx, acc: Value, acc_low, acc_high, what: str) -> Value:
    """An i48 accumulator as i32, exactly (apply_scale_16 by 1.0: multiplier 2^14, shift 14), after proving
    that every value in [acc_low, acc_high] (scalars or per-channel arrays) fits int32."""
    low, high = int(np.min(acc_low)), int(np.max(acc_high))
    if not (-(1 << 31) <= low and high < (1 << 31)):
        raise ctx.error(f"{what}: the accumulator can reach [{low}, {high}], beyond int32")
    return ctx.builder.rescale(acc, 1 << 14, 14, 0, 0, "i32", scale32=False, rounding="SINGLE_ROUND")


def to_i32(ctx, x: Value, zero_point: int = 0, unsigned: bool = False) -> Value:
    """`x - zero_point` as i32, exactly, for i8 (signed, or unsigned: uint8), i16 and i32 values."""
    b = ctx.builder
    dtype = x.type.dtype
    if dtype == "i8" and not unsigned:
        return b.rescale(x, UNIT_MULTIPLIER, UNIT_SHIFT, zero_point, 0, "i32", rounding="SINGLE_ROUND")
    if dtype == "i8":  # uint8: TOSA has no unsigned RESCALE to i32, so through i16 ([-255, 255] fits)
        return b.cast(b.rescale(x, UNIT_MULTIPLIER, UNIT_SHIFT, zero_point, 0, "i16", rounding="SINGLE_ROUND",
                                input_unsigned=True), "i32")
    if unsigned:
        raise ctx.error(f"unsigned {dtype} values are not supported")
    wide = x if dtype == "i32" else b.cast(x, "i32")
    if zero_point:
        wide = b.op("tosa.sub", [wide, b.const(np.full((1,) * x.type.rank, zero_point), "i32")])
    return wide


def from_i32(ctx, v: Value, value_range: tuple[int, int], zero_point: int, dtype: str) -> Value:
    """`clamp(v + zero_point)` into the TFLite type `dtype` (int8, uint8, int16, or int32 unclamped), where
    `value_range` bounds v. A RESCALE by 1.0 when TOSA allows it and v is small enough (|v| < 2^29),
    otherwise MAXIMUM/MINIMUM to the type's range less the zero point, ADD and a CAST (then exact)."""
    b = ctx.builder
    low, high = value_range
    if dtype == "int32":
        if zero_point:
            if not (-(1 << 31) <= low + zero_point and high + zero_point < (1 << 31)):
                raise ctx.error(f"adding zero point {zero_point} to values in [{low}, {high}] overflows int32")
            v = b.op("tosa.add", [v, b.const(np.full((1,) * v.type.rank, zero_point), "i32")])
        return v
    out = STORAGE[dtype]
    small = -(1 << 29) <= low and high < (1 << 29)
    if small and dtype != "uint8" and (zero_point == 0 or out == "i8"):
        return b.rescale(v, UNIT_MULTIPLIER, UNIT_SHIFT, 0, zero_point, out, rounding="SINGLE_ROUND")
    type_low, type_high = TYPE_RANGE[dtype]
    ones = (1,) * v.type.rank
    if low < type_low - zero_point:
        v = b.op("tosa.maximum", [v, b.const(np.full(ones, type_low - zero_point), "i32")])
    if high > type_high - zero_point:
        v = b.op("tosa.minimum", [v, b.const(np.full(ones, type_high - zero_point), "i32")])
    if zero_point:
        v = b.op("tosa.add", [v, b.const(np.full(ones, zero_point), "i32")])
    return b.cast(v, out)  # a value of the type's range: the truncating CAST keeps it (uint8 as its i8 bits)


def widen(ctx, x: Value, zero_point: int) -> Value:
    """int8 `x - zero_point` as i32: a RESCALE by exactly 1.0."""
    return to_i32(ctx, x, zero_point)


def rounding_divide_by_pot(ctx, v: Value, exponent: int) -> Value:
    """gemmlowp RoundingDivideByPOT of an i32 value: `v / 2^exponent` rounded half away from zero. TOSA's
    rounding ARITHMETIC_RIGHT_SHIFT rounds half up, so negative values are first lowered by one:
    `floor((v - [v < 0] + 2^(exponent-1)) / 2^exponent)`."""
    if exponent == 0:
        return v
    b = ctx.builder
    ones = (1,) * v.type.rank
    negative = b.cast(b.op("tosa.greater", [b.const(np.zeros(ones), "i32"), v]), "i32")
    lowered = b.op("tosa.sub", [v, negative])
    return b.op("tosa.arithmetic_right_shift", [lowered, b.const(np.full(ones, exponent), "i32")], {"round": True})


@functools.cache
def _logf():
    lib = ctypes.CDLL(ctypes.util.find_library("m") or ctypes.util.find_library("c"))
    fn = lib.logf
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


def checked_log2(x: float) -> int | None:
    """TFLite `CheckedLog2(float x, int*)` (quantization_util.cc): `logf(x) * (1.0f / logf(2.0f))` in float32,
    rounded half away from zero; the rounded value when the fractional part is below 1e-3f (a "power of two"
    within that tolerance), else None. Uses the C library's logf, as LiteRT's binary does."""
    f32 = np.float32
    x_log2 = f32(_logf()(float(f32(x)))) * (f32(1.0) / f32(_logf()(2.0)))
    rounded = f32(np.trunc(x_log2) + (np.sign(x_log2) if abs(x_log2 - np.trunc(x_log2)) >= 0.5 else 0))
    if abs(f32(x_log2 - rounded)) < f32(1e-3):
        return int(rounded)
    return None
