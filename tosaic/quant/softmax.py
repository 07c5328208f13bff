"""Faithful port of LiteRT's int8 -> int8 reference SOFTMAX (``SoftmaxPrepare<kReference>`` in
tflite/kernels/activations.cc and ``reference_ops::Softmax`` in internal/reference/softmax.h):
gemmlowp fixed point, exp of the input differences in Q5.26, sum in Q12.19, one reciprocal per row.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._ints import INT8_MAX, INT8_MIN, check_range, int64, wrap
from .tflite_fixedpoint import (
    calculate_input_radius,
    exp_on_negative_values,
    get_reciprocal,
    multiply_by_quantized_multiplier_greater_than_one,
    preprocess_softmax_scaling,
    rescale,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

__all__ = ["SoftmaxInt8Params", "softmax_int8_params", "softmax_int8"]

_SCALED_DIFF_INTEGER_BITS = 5  # kScaledDiffIntegerBits: exp() input is Q5.26
_ACCUMULATION_INTEGER_BITS = 12  # kAccumulationIntegerBits: sum of exps is Q12.19


class SoftmaxInt8Params(NamedTuple):
    input_multiplier: int
    input_left_shift: int
    diff_min: int


def softmax_int8_params(beta: float, input_scale: float) -> SoftmaxInt8Params:
    """``SoftmaxPrepare<kReference>`` for int8: ``PreprocessSoftmaxScaling(beta, input_scale, 5)``
    and ``diff_min = -CalculateInputRadius(5, input_left_shift)``. ``beta`` and ``input_scale`` are
    the model's float32 values (widened to double, as the C++ does)."""
    multiplier, left_shift = preprocess_softmax_scaling(
        float(np.float32(beta)), float(np.float32(input_scale)), _SCALED_DIFF_INTEGER_BITS)
    diff_min = -calculate_input_radius(_SCALED_DIFF_INTEGER_BITS, left_shift)
    return SoftmaxInt8Params(multiplier, left_shift, diff_min)


def softmax_int8(x, params: SoftmaxInt8Params, axis: int = -1) -> np.ndarray:
    """int8 SOFTMAX of an int8-valued array along ``axis`` (TFLite uses the last axis); the output
    has zero point -128 and scale 1/256, as the kernel requires. Returns an int8 array."""
    q = int64("x", x)
    check_range("x", q, INT8_MIN, INT8_MAX)
    q = np.moveaxis(q, axis, -1)
    diff = q - q.max(axis=-1, keepdims=True)
    used = diff >= params.diff_min
    rescaled = multiply_by_quantized_multiplier_greater_than_one(
        diff, params.input_multiplier, params.input_left_shift)
    exp_q0 = np.asarray(exp_on_negative_values(rescaled, _SCALED_DIFF_INTEGER_BITS))
    terms = np.asarray(rescale(exp_q0, 0, _ACCUMULATION_INTEGER_BITS))
    # FixedPointAccum additions are plain int32 additions: wrap the exact sum the same way.
    sum_of_exps = wrap(np.where(used, terms, 0).sum(axis=-1, keepdims=True), 32)
    reciprocal, num_bits_over_unit = get_reciprocal(sum_of_exps, _ACCUMULATION_INTEGER_BITS)
    exponent = np.asarray(num_bits_over_unit) + 31 - 8
    check_range("softmax output exponent (TFLITE_CHECK)", exponent, 0, 31)
    unsat = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(reciprocal, exp_q0), exponent)
    out = np.clip(np.asarray(unsat) + INT8_MIN, INT8_MIN, INT8_MAX)
    out = np.where(used, out, INT8_MIN)
    return np.moveaxis(out, -1, axis).astype(np.int8)
