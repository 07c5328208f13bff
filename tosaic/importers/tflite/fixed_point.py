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
"""

from __future__ import annotations

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


def int8_range(zero_point: int) -> tuple[int, int]:
    """The values of `q - zero_point` over every int8 `q`."""
    return -128 - zero_point, 127 - zero_point


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


def rescale_exact(ctx, x: Value, multiplier: int, shift: int, value_range: tuple[int, int], input_zp: int,
                  output_zp: int, dtype: str, what: str) -> Value:
    """A DOUBLE_ROUND RESCALE after proving its REQUIREs over `value_range`, the range of `x - input_zp`."""
    low, high = value_range
    limit = 1 << (shift - 1) if shift >= 1 else 0
    if not (0 <= multiplier < (1 << 31) and 2 <= shift <= 62 and -limit <= low and high < limit):
        raise ctx.error(f"{what}: multiplier {multiplier} with shift {shift} cannot rescale values in "
                        f"[{low}, {high}] exactly (TOSA apply_scale_32 needs |value| < 2^(shift-1); the "
                        f"reference kernel would overflow int32)")
    return ctx.builder.rescale(x, multiplier, shift, input_zp, output_zp, dtype, rounding="DOUBLE_ROUND")


def requantize(ctx, x: Value, real: float, value_range: tuple[int, int], input_zp: int, output_zp: int,
               dtype: str, what: str) -> Value:
    """`saturate(output_zp + MultiplyByQuantizedMultiplier(x - input_zp, QuantizeMultiplier(real)))`."""
    multiplier, shift = quantized_multiplier(ctx, real, what)
    return rescale_exact(ctx, x, multiplier, shift, value_range, input_zp, output_zp, dtype, what)


def widen(ctx, x: Value, zero_point: int) -> Value:
    """int8 `x - zero_point` as i32: a RESCALE by exactly 1.0."""
    return ctx.builder.rescale(x, UNIT_MULTIPLIER, UNIT_SHIFT, zero_point, 0, "i32", rounding="SINGLE_ROUND")
