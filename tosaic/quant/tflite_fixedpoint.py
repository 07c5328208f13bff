"""Faithful ports of TFLite's and gemmlowp's integer helpers, as LiteRT's reference kernels use them
(double-rounding build, i.e. without TFLITE_SINGLE_ROUNDING, unless a name says otherwise).

Sources: tflite/kernels/internal/common.h, common.cc, quantization_util.cc, cppmath.h
(google-ai-edge/LiteRT; the same code as tensorflow/lite/kernels/internal) and gemmlowp's
fixedpoint/fixedpoint.h. The integer functions take Python ints or numpy integer arrays and
return Python ints or int64 arrays holding what the C++ would hold in its int32_t/int16_t
variables (C++ wrap-around is emulated where the kernels can reach it). Fixed-point values are raw
integers; their number of integer bits is passed explicitly where gemmlowp has it as a template
argument. The multiplier-quantizing functions take floats: they run at prepare time, like the C++.
"""

from __future__ import annotations

import math

import numpy as np

from ._ints import (
    INT16_MAX,
    INT32_MAX,
    INT32_MIN,
    INT48_MAX,
    INT48_MIN,
    check_range,
    int64,
    int_bounds,
    is_scalar,
    result,
    trunc_shift,
    wrap,
)
from .tosa_scale import count_leading_zeros32

__all__ = [
    "round_half_away",
    "quantize_multiplier",
    "quantize_multiplier_tosa",
    "quantize_multiplier_greater_than_one",
    "quantize_multiplier_smaller_than_one_exp",
    "downscale_int32_to_int16_multiplier",
    "saturating_rounding_doubling_high_mul",
    "saturating_doubling_high_mul",
    "rounding_divide_by_pot",
    "saturating_rounding_multiply_by_pot",
    "saturating_left_shift",
    "multiply_by_quantized_multiplier",
    "multiply_by_quantized_multiplier_single_round",
    "multiply_by_quantized_multiplier_64",
    "multiply_by_quantized_multiplier_greater_than_one",
    "multiply_by_quantized_multiplier_smaller_than_one_exp",
    "rounding_half_sum",
    "rescale",
    "exp_on_interval_between_negative_one_quarter_and_0_excl",
    "exp_on_negative_values",
    "one_over_one_plus_x_for_x_in_0_1",
    "get_reciprocal",
    "get_inv_sqrt_quantized_multiplier_exp",
    "preprocess_softmax_scaling",
    "calculate_input_radius",
]


# ------------------------------------------------------------------ multiplier quantization (floats)


def round_half_away(x):
    """``std::round`` / ``TfLiteRound`` on a float or float array: half away from zero (Python's
    ``round`` is half-to-even). Exact: ``x - trunc(x)`` is representable for every float."""
    x = np.asarray(x)
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), 0).astype(x.dtype)


def quantize_multiplier(real):
    """TFLite ``QuantizeMultiplier(double)`` -> ``(quantized_multiplier, exponent)`` with
    ``real ~= multiplier * 2**(exponent - 31)``: ``q, e = frexp(real)``, ``m = round(q * 2**31)``
    (half away from zero); ``m == 2**31`` becomes ``2**30`` with ``e + 1``; ``e < -31`` flushes to
    ``(0, 0)``; ``real == 0`` gives ``(0, 0)``. Negative reals give negative multipliers, as in the
    C++. ``real`` may be a float (a float32 is widened exactly, as C++ does) or a float array."""
    scalar = np.ndim(real) == 0
    r = np.asarray(real, dtype=np.float64)
    if not np.all(np.isfinite(r)):
        raise ValueError("quantize_multiplier needs finite reals")
    q, e = np.frexp(r)
    m = round_half_away(q * float(1 << 31)).astype(np.int64)
    e = e.astype(np.int64)
    up = m == (1 << 31)
    m = np.where(up, m // 2, m)
    e = np.where(up, e + 1, e)
    tiny = e < -31
    m = np.where(tiny, 0, m)
    e = np.where(tiny, 0, e)
    return result(scalar, m), result(scalar, e)


def quantize_multiplier_tosa(real):
    """``quantize_multiplier`` in TOSA RESCALE terms: ``(multiplier, shift)`` with
    ``shift = 31 - exponent`` so ``real ~= multiplier / 2**shift``. TOSA needs
    ``multiplier >= 0`` and ``2 <= shift <= 62``: negative reals and reals of ``2**29`` or more
    raise ValueError; tiny reals flushed to multiplier 0 get shift 31."""
    m, e = quantize_multiplier(real)
    m_arr, e_arr = np.asarray(m), np.asarray(e)
    if np.any(m_arr < 0):
        raise ValueError("TOSA RESCALE multipliers must be non-negative")
    shift = 31 - e_arr
    check_range("shift (31 - exponent)", shift, 2, 62)
    return m, result(np.ndim(real) == 0, shift)


def quantize_multiplier_greater_than_one(real: float) -> tuple[int, int]:
    """``QuantizeMultiplierGreaterThanOne``: requires ``real > 1``; returns ``(m, left_shift >= 0)``."""
    if not real > 1.0:
        raise ValueError(f"real multiplier must be > 1, got {real}")
    return quantize_multiplier(float(real))


def quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    """``QuantizeMultiplierSmallerThanOneExp``: requires ``0 < real < 1``; returns
    ``(m, left_shift <= 0)``."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"real multiplier must be in (0, 1), got {real}")
    return quantize_multiplier(float(real))


def downscale_int32_to_int16_multiplier(multiplier):
    """``DownScaleInt32ToInt16Multiplier``: ``(m + (1 << 15)) >> 16``, or ``INT16_MAX`` when
    ``m >= INT32_MAX - (1 << 15)`` (the sum would overflow). ``m`` must be non-negative."""
    scalar = is_scalar(multiplier)
    m = int64("multiplier", multiplier)
    check_range("multiplier", m, 0, INT32_MAX)
    out = np.where(m >= INT32_MAX - (1 << 15), INT16_MAX, (m + (1 << 15)) >> 16)
    return result(scalar, out)


# ----------------------------------------------------------------------- gemmlowp integer primitives


def _bits_ok(bits: int) -> None:
    if bits not in (16, 32):
        raise ValueError(f"bits must be 16 or 32, got {bits}")


def saturating_rounding_doubling_high_mul(a, b, bits: int = 32):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 (or int16 with ``bits=16``):
    ``(a*b + nudge) / 2**(bits-1)`` truncating, ``nudge = 2**(bits-2)`` for ``a*b >= 0`` else
    ``1 - 2**(bits-2)`` -- i.e. ``a*b / 2**(bits-1)`` rounded half up (ARM VQRDMULH); ``MIN * MIN``
    saturates to MAX."""
    _bits_ok(bits)
    scalar = is_scalar(a, b)
    lo, hi = int_bounds(bits)
    x = int64("a", a)
    y = int64("b", b)
    check_range("a", x, lo, hi)
    check_range("b", y, lo, hi)
    ab = x * y
    nudge = np.where(ab >= 0, 1 << (bits - 2), 1 - (1 << (bits - 2)))
    out = trunc_shift(ab + nudge, bits - 1)
    out = np.where((x == lo) & (y == lo), hi, out)
    return result(scalar, out)


def saturating_doubling_high_mul(a, b, bits: int = 16):
    """TFLite ``reference_ops::SaturatingDoublingHighMul`` (hard_swish.h; ARM SQDMULH): like
    ``saturating_rounding_doubling_high_mul`` but the division truncates toward zero, no nudge."""
    _bits_ok(bits)
    scalar = is_scalar(a, b)
    lo, hi = int_bounds(bits)
    x = int64("a", a)
    y = int64("b", b)
    check_range("a", x, lo, hi)
    check_range("b", y, lo, hi)
    out = trunc_shift(x * y, bits - 1)
    out = np.where((x == lo) & (y == lo), hi, out)
    return result(scalar, out)


def rounding_divide_by_pot(x, exponent, bits: int = 32):
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded to nearest, ties away from
    zero, computed as ``(x >> e) + (remainder > threshold)`` with the mask held in the ``bits``-wide
    type, as the C++ does. ``exponent`` (scalar or array) must be in [0, 31] (gemmlowp asserts it)."""
    _bits_ok(bits)
    scalar = is_scalar(x, exponent)
    lo, hi = int_bounds(bits)
    v = int64("x", x)
    e = int64("exponent", exponent)
    check_range("x", v, lo, hi)
    check_range("exponent", e, 0, 31)
    # Dup<IntegerType>((1ll << exponent) - 1): for int16 and exponent >= 16 the mask wraps to -1.
    mask = wrap(np.left_shift(1, e) - 1, bits)
    remainder = v & mask
    threshold = (mask >> 1) + (v < 0)
    out = wrap((v >> e) + (remainder > threshold), bits)
    return result(scalar, out)


def saturating_rounding_multiply_by_pot(x, exponent: int, bits: int = 32):
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` (and TFLite's
    ``SaturatingRoundingMultiplyByPOTParam`` for ``exponent > 0``): a saturating left shift for a
    positive exponent, ``rounding_divide_by_pot`` for a negative one, identity for zero."""
    _bits_ok(bits)
    exponent = int(exponent)
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent, bits)
    scalar = is_scalar(x)
    lo, hi = int_bounds(bits)
    v = int64("x", x)
    check_range("x", v, lo, hi)
    if exponent == 0:
        return result(scalar, v)
    if exponent >= bits:
        raise ValueError(f"exponent {exponent} too large for {bits}-bit values")
    threshold = (1 << (bits - 1 - exponent)) - 1
    out = np.clip(v << exponent, lo, hi)
    out = np.where(v > threshold, hi, np.where(v < -threshold, lo, out))
    return result(scalar, out)


def saturating_left_shift(value, amount: int, bits: int = 16):
    """TFLite ``reference_ops::SaturatingLeftShift`` (hard_swish.h): ``value * 2**amount``
    saturated to the ``bits``-wide range; ``amount`` must be in [0, 31] (``1 << amount`` is an int
    in the C++)."""
    _bits_ok(bits)
    scalar = is_scalar(value)
    lo, hi = int_bounds(bits)
    v = int64("value", value)
    check_range("value", v, lo, hi)
    if not 0 <= int(amount) <= 31:
        raise ValueError(f"amount must be in [0, 31], got {amount}")
    return result(scalar, np.clip(v << int(amount), lo, hi))


# ------------------------------------------------------------------ MultiplyByQuantizedMultiplier


def _int32_operands(x, multiplier, shift, shift_lo: int, shift_hi: int):
    v = int64("x", x)
    m = int64("multiplier", multiplier)
    s = int64("shift", shift)
    check_range("x", v, INT32_MIN, INT32_MAX)
    check_range("multiplier", m, INT32_MIN, INT32_MAX)
    check_range("shift", s, shift_lo, shift_hi)
    return v, m, s


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite ``MultiplyByQuantizedMultiplier(int32 x, int32 m, int shift)``, default
    (double-rounding) build: ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**left,
    m), right)`` with ``left = max(shift, 0)``, ``right = max(-shift, 0)``; ``x * 2**left`` wraps in
    int32 as the compiled C++ does. ``shift`` in [-31, 30]. Equals TOSA ``apply_scale_32`` with
    DOUBLE_ROUND and shift ``31 - shift`` wherever TOSA's value range holds."""
    scalar = is_scalar(x, multiplier, shift)
    v, m, s = _int32_operands(x, multiplier, shift, -31, 30)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    high = saturating_rounding_doubling_high_mul(wrap(v << left, 32), m)
    return result(scalar, rounding_divide_by_pot(high, right))


def multiply_by_quantized_multiplier_single_round(x, multiplier, shift):
    """TFLite ``MultiplyByQuantizedMultiplier`` built with ``TFLITE_SINGLE_ROUNDING``:
    ``(x * m + 2**(30 - shift)) >> (31 - shift)``; ``m >= 0``, ``shift`` in [-31, 30]. Equals TOSA
    SINGLE_ROUND with shift ``31 - shift``."""
    scalar = is_scalar(x, multiplier, shift)
    v, m, s = _int32_operands(x, multiplier, shift, -31, 30)
    check_range("multiplier", m, 0, INT32_MAX)
    total = 31 - s
    out = (v * m + np.left_shift(1, total - 1)) >> total
    return result(scalar, wrap(out, 32))


def multiply_by_quantized_multiplier_64(x, multiplier, shift):
    """TFLite ``MultiplyByQuantizedMultiplier(int64 x, int32 m, int shift)`` (16x8 kernels): the
    multiplier is reduced to 16 bits, ``(m + 2**15) >> 16`` (``0x7FFF`` from ``0x7FFF0000`` up), then
    ``(x * m16 + 2**(14 - shift)) >> (15 - shift)``, truncated to int32. ``x`` in
    [-2**47, 2**47), ``m >= 0``, ``shift`` in [-31, 7]."""
    scalar = is_scalar(x, multiplier, shift)
    v = int64("x", x)
    m = int64("multiplier", multiplier)
    s = int64("shift", shift)
    check_range("x", v, INT48_MIN, INT48_MAX)
    check_range("multiplier", m, 0, INT32_MAX)
    check_range("shift", s, -31, 7)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - s
    out = (v * reduced + np.left_shift(1, total - 1)) >> total
    return result(scalar, wrap(out, 32))


def multiply_by_quantized_multiplier_greater_than_one(x, multiplier, left_shift):
    """``MultiplyByQuantizedMultiplierGreaterThanOne`` (double rounding):
    ``SaturatingRoundingDoublingHighMul(x * 2**left_shift, m)``, the product wrapping in int32."""
    scalar = is_scalar(x, multiplier, left_shift)
    v, m, s = _int32_operands(x, multiplier, left_shift, 0, 30)
    return result(scalar, saturating_rounding_doubling_high_mul(wrap(v << s, 32), m))


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, left_shift):
    """``MultiplyByQuantizedMultiplierSmallerThanOneExp`` (double rounding):
    ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, m), -left_shift)``."""
    scalar = is_scalar(x, multiplier, left_shift)
    v, m, s = _int32_operands(x, multiplier, left_shift, -31, 0)
    high = saturating_rounding_doubling_high_mul(v, m)
    return result(scalar, rounding_divide_by_pot(high, -s))


# ---------------------------------------------------------- gemmlowp FixedPoint<int32_t, N> functions


def rounding_half_sum(a, b, bits: int = 32):
    """gemmlowp ``RoundingHalfSum`` (ARM VRHADD as specialised for int32/int16):
    ``(a + b + sign) / 2`` truncating, ``sign = +1`` if ``a + b >= 0`` else ``-1``."""
    _bits_ok(bits)
    scalar = is_scalar(a, b)
    lo, hi = int_bounds(bits)
    x = int64("a", a)
    y = int64("b", b)
    check_range("a", x, lo, hi)
    check_range("b", y, lo, hi)
    s = x + y
    return result(scalar, trunc_shift(s + np.where(s >= 0, 1, -1), 1))


def rescale(x, src_integer_bits: int, dst_integer_bits: int):
    """gemmlowp ``Rescale<dst>(FixedPoint<int32_t, src>)``: the raw value times
    ``2**(src - dst)``, saturating when it grows, rounding when it shrinks."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits)


def _mul(a, b):
    # FixedPoint operator*: integer bits add up, the raw op is SaturatingRoundingDoublingHighMul.
    return np.asarray(saturating_rounding_doubling_high_mul(a, b), dtype=np.int64)


def _add(a, b):
    # FixedPoint operator+ / operator- are plain int32 additions (wrapping, never saturating).
    return wrap(np.asarray(a, dtype=np.int64) + b, 32)


def _q0(x):
    v = int64("a", x)
    check_range("a", v, INT32_MIN, INT32_MAX)
    return v


def exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """gemmlowp: ``exp(a)`` for a Q0.31 raw ``a`` in [-1/4, 0), as Q0.31: a degree-4 Taylor
    expansion around -1/8."""
    scalar = is_scalar(a)
    v = _q0(a)
    constant_term = 1895147668  # exp(-1/8) in Q0.31
    constant_1_over_3 = 715827883
    x = _add(v, 1 << 28)  # a + 1/8
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_add(_mul(_add(x4_over_4, x3), constant_1_over_3), x2), 1)
    out = _add(constant_term, _mul(constant_term, _add(x, poly)))
    return result(scalar, out)


# exp(-2**k) in Q0.31 for the barrel shifter of exp_on_negative_values, k = -2 .. 4.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits: int):
    """gemmlowp ``exp_on_negative_values(FixedPoint<int32_t, integer_bits>)``: ``exp(a)`` for
    ``a <= 0`` as Q0.31 (``a == 0`` gives INT32_MAX). ``a mod 1/4`` goes through the Taylor
    expansion; each set bit of the remainder multiplies by a constant ``exp(-2**k)``; inputs below
    -32 give 0 when ``integer_bits > 5``."""
    if not 0 <= integer_bits <= 29:  # ConstantPOT<-2> (1/4) must be representable
        raise ValueError(f"integer_bits must be in [0, 29], got {integer_bits}")
    scalar = is_scalar(a)
    v = _q0(a)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = _add(v & (one_quarter - 1), -one_quarter)
    out = np.asarray(exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0)), dtype=np.int64)
    remainder = _add(a_mod_quarter_minus_one_quarter, -v)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            out = np.where(remainder & bit, _mul(out, multiplier), out)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))  # -32 in this format
        out = np.where(v < clamp, 0, out)
    out = np.where(v == 0, INT32_MAX, out)
    return result(scalar, out)


def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1``: ``1 / (1 + a)`` for a Q0.31 raw ``a`` in
    [0, 1), as Q0.31, by three Newton-Raphson steps on ``(1 + a) / 2`` in Q2.29 starting from
    ``48/17 - 32/17 * d``."""
    scalar = is_scalar(a)
    v = _q0(a)
    half_denominator = np.asarray(rounding_half_sum(v, INT32_MAX), dtype=np.int64)  # F0::One()
    constant_48_over_17 = 1515870810  # Q2.29
    constant_neg_32_over_17 = -1010580540  # Q2.29
    one_q2 = 1 << 29
    x = _add(constant_48_over_17, _mul(half_denominator, constant_neg_32_over_17))
    for _ in range(3):
        one_minus_half_denominator_times_x = _add(one_q2, -_mul(half_denominator, x))
        x = _add(x, rescale(_mul(x, one_minus_half_denominator_times_x), 4, 2))
    # ExactMulByPot<-1> turns Q2.29 into Q1.30 with the same raw value; then Rescale<0>.
    return result(scalar, rescale(x, 1, 0))


def get_reciprocal(x, x_integer_digits: int):
    """TFLite ``GetReciprocal(x, x_integer_digits, &num_bits_over_unit)`` -> ``(reciprocal,
    num_bits_over_unit)``: normalises ``x`` (a positive ``FixedPoint<int32, x_integer_digits>``
    raw) to ``1 + f``, f in [0, 1), and returns ``1 / (1 + f)`` in Q0.31 with
    ``num_bits_over_unit = x_integer_digits - clz(x)``."""
    scalar = is_scalar(x)
    v = int64("x", x)
    check_range("x", v, 1, INT32_MAX)
    headroom_plus_one = np.asarray(count_leading_zeros32(v), dtype=np.int64)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    # (uint32(x) << headroom_plus_one) - (1u << 31), reinterpreted as int32.
    shifted_sum_minus_one = wrap(((v << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31), 32)
    reciprocal = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    return result(scalar, reciprocal), result(scalar, num_bits_over_unit)


def get_inv_sqrt_quantized_multiplier_exp(value, reverse_shift: int):
    """TFLite ``GetInvSqrtQuantizedMultiplierExp(input, reverse_shift, &inv_sqrt, &shift)`` ->
    ``(inv_sqrt, shift)`` with ``1 / sqrt(value) ~= inv_sqrt * 2**(shift * reverse_shift - 31)``:
    ``value`` is normalised by pairs of bits into [2**27, 2**29) and five Newton-Raphson steps run in
    ``FixedPoint<int32, 3>``. ``value <= 1`` gives ``(INT32_MAX, 0)``, as in the C++."""
    scalar = is_scalar(value)
    v = int64("value", value)
    check_range("value", v, 0, INT32_MAX)
    special = v <= 1
    v = np.where(special, 2, v)  # any value keeps the general path defined; overridden below
    shift = np.full_like(v, 11)
    while True:
        big = v >= (1 << 29)
        if not big.any():
            break
        v = np.where(big, v // 4, v)
        shift = shift + big
    max_left_shift_bits = np.asarray(count_leading_zeros32(v), dtype=np.int64) - 1
    left_shift_bit_pairs = max_left_shift_bits // 2 - 1
    shift = shift - left_shift_bit_pairs
    v = v << (2 * left_shift_bit_pairs)
    fixedpoint_input = v >> 1  # Q3.28
    fixedpoint_half_input = rounding_divide_by_pot(fixedpoint_input, 1)
    fixedpoint_half_three = (1 << 28) + (1 << 27)  # 1.5 in Q3.28
    x = np.full_like(v, 1 << 28)  # F3::One()
    for _ in range(5):
        x3 = rescale(_mul(_mul(x, x), x), 9, 3)
        x = rescale(_add(_mul(fixedpoint_half_three, x), -_mul(fixedpoint_half_input, x3)), 6, 3)
    x = _mul(x, 1518500250)  # sqrt(2)/2 in Q0.31
    negative = shift < 0
    x = np.where(negative, wrap(x << np.where(negative, -shift, 0), 32), x)
    shift = np.where(negative, 0, shift) * reverse_shift
    x = np.where(special, INT32_MAX, x)
    shift = np.where(special, 0, shift)
    return result(scalar, x), result(scalar, shift)


# ---------------------------------------------------------------------- softmax prepare-time helpers


def preprocess_softmax_scaling(beta: float, input_scale: float, input_integer_bits: int) -> tuple[int, int]:
    """TFLite ``PreprocessSoftmaxScaling`` (double rounding): quantizes
    ``min(beta * input_scale * 2**(31 - input_integer_bits), 2**31 - 1)`` (double arithmetic) with
    ``QuantizeMultiplierGreaterThanOne`` -> ``(input_multiplier, input_left_shift)``. Pass float32
    parameters (as stored in the model) as they are: they widen to double exactly, as in C++."""
    max_real_multiplier = float((1 << 31) - 1)
    real = min(float(beta) * float(input_scale) * float(1 << (31 - input_integer_bits)),
               max_real_multiplier)
    return quantize_multiplier_greater_than_one(real)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int,
                           total_signed_bits: int = 31) -> int:
    """TFLite ``CalculateInputRadius``: ``floor((2**iib - 1) * 2**(tsb - iib) / 2**left_shift)``,
    the largest input difference whose rescaled value still fits."""
    max_input_rescaled = (1.0 * ((1 << input_integer_bits) - 1)
                          * float(1 << (total_signed_bits - input_integer_bits))
                          / float(1 << input_left_shift))
    return math.floor(max_input_rescaled)
