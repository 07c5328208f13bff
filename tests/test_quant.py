"""tosaic.quant integer arithmetic against independent big-integer restatements of the TOSA 1.0
spec (scale_helpers.tosac) and of TFLite's / gemmlowp's documented rounding behaviour."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tosaic.quant as Q

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I16_MIN, I16_MAX = -(2**15), 2**15 - 1

int32s = st.integers(I32_MIN, I32_MAX)


# ------------------------------------------------------------------ reference formulas (Python ints)


def ref_apply_scale_32(value: int, multiplier: int, shift: int, double_round: bool) -> int:
    rnd = 1 << (shift - 1)
    if double_round and shift > 31:
        rnd += (1 << 30) if value >= 0 else -(1 << 30)
    return (value * multiplier + rnd) >> shift  # Python >> on ints is an arithmetic shift


def ref_round_half_up(q: Fraction) -> int:
    return math.floor(q + Fraction(1, 2))


def ref_round_half_away(q: Fraction) -> int:
    r = math.floor(abs(q) + Fraction(1, 2))
    return r if q >= 0 else -r


def ref_srdhm(a: int, b: int, bits: int = 32) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if a == lo and b == lo:
        return hi
    return ref_round_half_up(Fraction(a * b, 1 << (bits - 1)))


def ref_rdbp(x: int, exponent: int) -> int:
    return ref_round_half_away(Fraction(x, 1 << exponent))


def ref_quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0:
        return 0, 0
    q, e = math.frexp(real)
    m = ref_round_half_away(Fraction(q) * 2**31)
    if m == 2**31:
        m, e = m // 2, e + 1
    if e < -31:
        return 0, 0
    return m, e


def valid_tosa_value(data, shift: int) -> int:
    lo = max(I32_MIN, -(1 << (shift - 1)))
    hi = min(I32_MAX, (1 << (shift - 1)) - 1)
    return data.draw(st.integers(lo, hi))


# ------------------------------------------------------------------------------ TOSA apply_scale


@settings(max_examples=300)
@given(st.data(), st.integers(2, 62), st.integers(0, I32_MAX), st.booleans())
def test_apply_scale_32_matches_spec(data, shift, multiplier, double_round):
    value = valid_tosa_value(data, shift)
    assert Q.apply_scale_32(value, multiplier, shift, double_round) == ref_apply_scale_32(
        value, multiplier, shift, double_round)


@pytest.mark.parametrize("double_round", [False, True])
@pytest.mark.parametrize(
    "value,multiplier,shift",
    [
        (-2, I32_MAX, 2), (1, I32_MAX, 2), (-1, 1 << 30, 2), (0, I32_MAX, 2),
        (I32_MIN, I32_MAX, 62), (I32_MAX, I32_MAX, 62), (I32_MIN, 0, 62), (I32_MAX, 1, 62),
        (I32_MIN, I32_MAX, 32), (I32_MAX, I32_MAX, 32), (-(1 << 30), I32_MAX, 31),
        ((1 << 30) - 1, I32_MAX, 31), (-3, 1 << 30, 31), (3, 1 << 30, 33), (-3, 1 << 30, 33),
        (I32_MIN, 1 << 30, 40), (-(1 << 31), I32_MAX, 63 - 1),
    ],
)
def test_apply_scale_32_boundaries(value, multiplier, shift, double_round):
    got = Q.apply_scale_32(value, multiplier, shift, double_round)
    assert type(got) is int
    assert got == ref_apply_scale_32(value, multiplier, shift, double_round)
    assert I32_MIN <= got <= I32_MAX


def test_apply_scale_32_double_round_only_above_shift_31():
    # 0.5 at shift 31 rounds once; at shift 32 the extra +-2^30 decides the tie.
    assert Q.apply_scale_32(1, 1 << 30, 31, True) == Q.apply_scale_32(1, 1 << 30, 31, False) == 1
    # -0.375: single rounding gives 0; double rounding first rounds -0.75 to -1 (half up at
    # 2^-31 resolution), then -0.5 away from zero to -1, as TFLite does.
    assert Q.apply_scale_32(-1, 3 << 29, 32, False) == 0
    assert Q.apply_scale_32(-1, 3 << 29, 32, True) == -1
    assert Q.apply_scale_32(5, 1 << 30, 30) == 5  # scale 1.0


@pytest.mark.parametrize(
    "value,multiplier,shift,msg",
    [
        (0, 1, 1, "shift"), (0, 1, 63, "shift"), (2, 1, 2, "value"), (-3, 1, 2, "value"),
        (1 << 30, 1, 31, "value"), (-(1 << 30) - 1, 1, 31, "value"), (0, -1, 10, "multiplier"),
        (0, 1 << 31, 10, "multiplier"), (1 << 31, 1, 40, "value"), (I32_MIN - 1, 1, 40, "value"),
    ],
)
def test_apply_scale_32_requires(value, multiplier, shift, msg):
    with pytest.raises(ValueError, match=msg):
        Q.apply_scale_32(value, multiplier, shift)


def test_apply_scale_32_rejects_floats():
    with pytest.raises(TypeError):
        Q.apply_scale_32(np.array([1.5]), 1 << 30, 30)


@settings(max_examples=400)
@given(st.integers(-(2**47), 2**47 - 1), st.integers(0, I16_MAX), st.integers(2, 62))
def test_apply_scale_16_matches_spec(value, multiplier, shift):
    expect = (value * multiplier + (1 << (shift - 1))) >> shift
    if I32_MIN <= expect <= I32_MAX:
        assert Q.apply_scale_16(value, multiplier, shift) == expect
    else:
        with pytest.raises(ValueError, match="result"):
            Q.apply_scale_16(value, multiplier, shift)


def test_apply_scale_16_requires():
    with pytest.raises(ValueError, match="value"):
        Q.apply_scale_16(2**47, 1, 40)
    with pytest.raises(ValueError, match="multiplier"):
        Q.apply_scale_16(1, 1 << 15, 20)
    assert Q.apply_scale_16(-(2**47), I16_MAX, 62) == ref_apply_scale_32(-(2**47), I16_MAX, 62, False)


# ------------------------------------------------------------------------ reciprocal_scale, clz


@given(st.integers(0, 2**32 - 1))
def test_count_leading_zeros32(x):
    assert Q.count_leading_zeros32(x) == 32 - x.bit_length()


# Counts are pooling window areas, at most MAX_KERNEL^2 = 2^26 at TOSA level 8k. The spec's bound on the
# multiplier holds up to 2^30: at count = 2^30 + 1 (k = 31) the quotient is exactly 2^31, which no longer
# fits int32, so the domain stops at 2^30.
@given(st.integers(1, 2**30))
def test_reciprocal_scale_matches_spec(count):
    m, s = Q.reciprocal_scale(count)
    k = (count - 1).bit_length()  # 2^(k-1) < count <= 2^k
    assert (m, s) == ((((1 << 30) + 1) << k) // count, 30 + k)
    assert 1 << 30 <= m < 1 << 31
    # m / 2^s approximates 1/count from above, within 2^k / 2^s.
    assert 0 < m * count - (1 << s) <= 1 << k


@settings(max_examples=300)
@given(st.data(), st.integers(1, 4096))
def test_reciprocal_scale_divides_int8_window_sums_round_half_away(data, count):
    acc = data.draw(st.integers(-128 * count, 127 * count))
    m, s = Q.reciprocal_scale(count)
    assert Q.apply_scale_32(acc, m, s) == ref_round_half_away(Fraction(acc, count))


def test_reciprocal_scale_small_counts():
    assert Q.reciprocal_scale(1) == ((1 << 30) + 1, 30)
    assert Q.reciprocal_scale(2) == ((1 << 30) + 1, 31)
    assert Q.reciprocal_scale(9) == ((((1 << 30) + 1) << 4) // 9, 34)
    with pytest.raises(ValueError):
        Q.reciprocal_scale(0)


# ------------------------------------------------------------------------- multiplier quantization


@settings(max_examples=300)
@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_subnormal=True))
def test_quantize_multiplier_matches_frexp_reference(real):
    m, e = Q.quantize_multiplier(real)
    assert (m, e) == ref_quantize_multiplier(real)
    if m:
        # |m * 2^(e-31) - real| <= half a unit of the 31-bit mantissa.
        assert abs(Fraction(m) * Fraction(2) ** (e - 31) - Fraction(real)) <= Fraction(2) ** (e - 32)


def test_quantize_multiplier_special_cases():
    assert Q.quantize_multiplier(0.0) == (0, 0)
    assert Q.quantize_multiplier(1.0) == (1 << 30, 1)
    assert Q.quantize_multiplier(0.5) == (1 << 30, 0)
    assert Q.quantize_multiplier(-0.75) == (-(3 << 29), 0)
    assert Q.quantize_multiplier(2.0**-40) == (0, 0)  # exponent < -31 flushes to zero
    assert Q.quantize_multiplier(2.0**-32) == (1 << 30, -31)
    # q * 2^31 rounds up to 2^31: the multiplier is halved and the exponent bumped.
    assert Q.quantize_multiplier(1.0 - 2.0**-40) == (1 << 30, 1)
    assert Q.quantize_multiplier_tosa(1.0 - 2.0**-40) == (1 << 30, 30)
    assert Q.quantize_multiplier(np.float32(0.1)) == Q.quantize_multiplier(float(np.float32(0.1)))
    assert Q.quantize_multiplier_tosa(0.0) == (0, 31)


def test_quantize_multiplier_tosa_limits():
    assert Q.quantize_multiplier_tosa(2.0**29 - 1) == (2**31 - 4, 2)
    assert Q.quantize_multiplier_tosa(2.0**-32) == (1 << 30, 62)
    with pytest.raises(ValueError):
        Q.quantize_multiplier_tosa(2.0**29)
    with pytest.raises(ValueError):
        Q.quantize_multiplier_tosa(-0.5)
    with pytest.raises(ValueError):
        Q.quantize_multiplier(float("inf"))


def test_quantize_multiplier_vectorised():
    reals = np.array([0.0, 1e-12, 0.3, 1.0 - 2.0**-40, 7.5, 123456.0])
    m, e = Q.quantize_multiplier(reals)
    assert m.dtype == np.int64 and e.dtype == np.int64
    assert [(int(a), int(b)) for a, b in zip(m, e)] == [ref_quantize_multiplier(r) for r in reals]


def test_quantize_multiplier_range_checked_variants():
    assert Q.quantize_multiplier_greater_than_one(3.0) == (3 << 29, 2)
    assert Q.quantize_multiplier_smaller_than_one_exp(0.375) == (3 << 29, -1)
    with pytest.raises(ValueError):
        Q.quantize_multiplier_greater_than_one(1.0)
    with pytest.raises(ValueError):
        Q.quantize_multiplier_smaller_than_one_exp(1.0)


@given(st.integers(0, I32_MAX))
def test_downscale_int32_to_int16_multiplier(m):
    expect = I16_MAX if m >= I32_MAX - (1 << 15) else (m + (1 << 15)) >> 16
    assert Q.downscale_int32_to_int16_multiplier(m) == expect


# --------------------------------------------------------------------- gemmlowp integer primitives


@settings(max_examples=300)
@given(int32s, int32s)
def test_saturating_rounding_doubling_high_mul_rounds_half_up(a, b):
    assert Q.saturating_rounding_doubling_high_mul(a, b) == ref_srdhm(a, b)


@given(st.integers(I16_MIN, I16_MAX), st.integers(I16_MIN, I16_MAX))
def test_saturating_rounding_doubling_high_mul_16(a, b):
    assert Q.saturating_rounding_doubling_high_mul(a, b, bits=16) == ref_srdhm(a, b, 16)


def test_saturating_rounding_doubling_high_mul_saturates():
    assert Q.saturating_rounding_doubling_high_mul(I32_MIN, I32_MIN) == I32_MAX
    assert Q.saturating_rounding_doubling_high_mul(I16_MIN, I16_MIN, bits=16) == I16_MAX
    assert Q.saturating_rounding_doubling_high_mul(-(1 << 15), 1 << 15) == 0  # -0.5 rounds up


@given(st.integers(I16_MIN, I16_MAX), st.integers(I16_MIN, I16_MAX))
def test_saturating_doubling_high_mul_truncates(a, b):
    expect = I16_MAX if a == b == I16_MIN else int(Fraction(a * b, 1 << 15))  # int() truncates
    assert Q.saturating_doubling_high_mul(a, b, bits=16) == expect


@settings(max_examples=300)
@given(int32s, st.integers(0, 31))
def test_rounding_divide_by_pot_rounds_half_away(x, e):
    assert Q.rounding_divide_by_pot(x, e) == ref_rdbp(x, e)


@given(st.integers(I16_MIN, I16_MAX), st.integers(0, 15))
def test_rounding_divide_by_pot_16(x, e):
    assert Q.rounding_divide_by_pot(x, e, bits=16) == ref_rdbp(x, e)


def test_rounding_divide_by_pot_array_exponent():
    x = np.array([5, -5, 6, -6, 7, -7], dtype=np.int32)
    e = np.array([1, 1, 2, 2, 0, 3])
    assert Q.rounding_divide_by_pot(x, e).tolist() == [ref_rdbp(int(a), int(b)) for a, b in zip(x, e)]
    with pytest.raises(ValueError):
        Q.rounding_divide_by_pot(1, 32)


@given(int32s, st.integers(-31, 31))
def test_saturating_rounding_multiply_by_pot(x, e):
    if e >= 0:
        expect = min(max(x * 2**e, I32_MIN), I32_MAX)
    else:
        expect = ref_rdbp(x, -e)
    assert Q.saturating_rounding_multiply_by_pot(x, e) == expect


@given(st.integers(I16_MIN, I16_MAX), st.integers(0, 31))
def test_saturating_left_shift(x, n):
    assert Q.saturating_left_shift(x, n) == min(max(x * 2**n, I16_MIN), I16_MAX)


@given(int32s, int32s)
def test_rounding_half_sum(a, b):
    assert Q.rounding_half_sum(a, b) == ref_round_half_away(Fraction(a + b, 2))


# --------------------------------------------------------------- MultiplyByQuantizedMultiplier


def tflite_case(data):
    """A TFLite (multiplier, exponent) and an x inside TOSA's value range for shift 31 - exponent."""
    exponent = data.draw(st.integers(-31, 29))
    multiplier = data.draw(st.integers(1 << 30, I32_MAX) | st.integers(0, I32_MAX))
    x = valid_tosa_value(data, 31 - exponent)
    return x, multiplier, exponent


@settings(max_examples=400)
@given(st.data())
def test_tosa_double_round_equals_tflite_mbqm(data):
    x, m, e = tflite_case(data)
    got = Q.multiply_by_quantized_multiplier(x, m, e)
    left, right = max(e, 0), max(-e, 0)
    assert got == ref_rdbp(ref_srdhm(x << left, m), right)
    assert got == Q.apply_scale_32(x, m, 31 - e, double_round=True)


@settings(max_examples=300)
@given(st.data())
def test_tosa_single_round_equals_tflite_single_rounding(data):
    x, m, e = tflite_case(data)
    expect = ref_round_half_up(Fraction(x * m, 2 ** (31 - e)))
    assert Q.multiply_by_quantized_multiplier_single_round(x, m, e) == expect
    assert expect == Q.apply_scale_32(x, m, 31 - e, double_round=False)


def test_tosa_double_round_equals_tflite_mbqm_million_samples():
    rng = np.random.default_rng(1234)
    n = 1_000_000
    e = rng.integers(-31, 30, n)
    m = rng.integers(1 << 30, 1 << 31, n)
    limit = np.left_shift(1, 30 - np.maximum(e, 0))  # TOSA: |x| < 2^(shift-1), shift = 31 - e
    x = np.clip(rng.integers(I32_MIN, I32_MAX, n, endpoint=True), -limit, limit - 1)
    x[: n // 2] >>= rng.integers(0, 31, n // 2)  # plenty of small values and ties
    tfl = Q.multiply_by_quantized_multiplier(x, m, e)
    tosa = Q.apply_scale_32(x, m, 31 - e, double_round=True)
    assert np.array_equal(tfl, tosa)


def test_mbqm_left_shift_wraps_like_int32():
    # x * 2^left overflows int32 in the C++ (compiled as a wrapping multiply).
    x, m, e = 1 << 19, 1 << 30, 12  # 2^31 wraps to INT32_MIN
    assert Q.multiply_by_quantized_multiplier(x, m, e) == ref_srdhm(-(1 << 31), m)


@given(st.data())
def test_mbqm_greater_and_smaller_than_one(data):
    m = data.draw(st.integers(1 << 30, I32_MAX))
    ls = data.draw(st.integers(0, 20))
    x = data.draw(st.integers(-(2 ** (30 - ls)), 2 ** (30 - ls) - 1))
    assert Q.multiply_by_quantized_multiplier_greater_than_one(x, m, ls) == \
        Q.multiply_by_quantized_multiplier(x, m, ls)
    rs = data.draw(st.integers(-31, 0))
    y = data.draw(int32s)
    assert Q.multiply_by_quantized_multiplier_smaller_than_one_exp(y, m, rs) == \
        Q.multiply_by_quantized_multiplier(y, m, rs)


@settings(max_examples=300)
@given(st.data())
def test_mbqm_64_is_tosa_apply_scale_16(data):
    # TFLite's int64 (16x8) path reduces the multiplier to 16 bits and rounds once: TOSA
    # RESCALE with scale32=false and shift 15 - shift reproduces it.
    m = data.draw(st.integers(0, I32_MAX))
    shift = data.draw(st.integers(-31, 7))
    x = data.draw(st.integers(-(2**47), 2**47 - 1))
    m16 = (m + (1 << 15)) >> 16 if m < 0x7FFF0000 else 0x7FFF
    expect = (x * m16 + (1 << (14 - shift))) >> (15 - shift)
    if I32_MIN <= expect <= I32_MAX:
        assert Q.multiply_by_quantized_multiplier_64(x, m, shift) == expect
        assert Q.apply_scale_16(x, m16, 15 - shift) == expect


# -------------------------------------------------------------- gemmlowp fixed-point functions


# Accuracy checks of the approximations, on many points at once (the vectorised path); exactness
# against LiteRT comes from the SOFTMAX and RSQRT tests in test_quant_tables.py.


def _samples(lo: int, hi: int, n: int = 200_000) -> np.ndarray:
    rng = np.random.default_rng(lo % 997 + hi % 991)
    edges = np.array([lo, lo + 1, hi - 1, hi], dtype=np.int64)
    return np.concatenate([edges, rng.integers(lo, hi, n, endpoint=True)])


def test_exp_on_interval_between_negative_one_quarter_and_0_excl():
    a = _samples(-(2**29), -1)
    got = Q.exp_on_interval_between_negative_one_quarter_and_0_excl(a)
    assert np.max(np.abs(got / 2**31 - np.exp(a / 2**31))) < 3e-7  # gemmlowp's polynomial error


@pytest.mark.parametrize("integer_bits", [0, 1, 3, 5, 6, 12, 20, 29])
def test_exp_on_negative_values_accuracy(integer_bits):
    a = _samples(I32_MIN, 0)
    got = Q.exp_on_negative_values(a, integer_bits)
    assert got.min() >= 0 and got.max() <= I32_MAX
    assert np.max(np.abs(got / 2**31 - np.exp(a / 2.0 ** (31 - integer_bits)))) < 3e-7


def test_exp_on_negative_values_exact_points():
    assert Q.exp_on_negative_values(0, 5) == I32_MAX
    assert abs(Q.exp_on_negative_values(-(1 << 26), 5) / 2**31 - math.exp(-1)) < 3e-7  # -1.0
    assert Q.exp_on_negative_values(-(33 << 25), 6) == 0  # below -32 with > 5 integer bits
    with pytest.raises(ValueError):
        Q.exp_on_negative_values(-1, 30)


def test_one_over_one_plus_x_for_x_in_0_1():
    a = _samples(0, I32_MAX)
    got = Q.one_over_one_plus_x_for_x_in_0_1(a)
    assert np.max(np.abs(got / 2**31 - 1 / (1 + a / 2**31))) < 1e-8


def test_get_reciprocal():
    x = _samples(1, I32_MAX)
    r, bits_over_unit = Q.get_reciprocal(x, 12)
    assert bits_over_unit.tolist() == [12 - (32 - int(v).bit_length()) for v in x]
    # 1 / (x in Q12.19, scaled by 2^-bits_over_unit into [1, 2)) in Q0.31
    expect = 2.0**bits_over_unit / (x / 2**19)
    assert np.max(np.abs(r / 2**31 - expect)) < 1e-8


def test_get_inv_sqrt_quantized_multiplier_exp():
    x = _samples(2, I32_MAX)
    m, shift = Q.get_inv_sqrt_quantized_multiplier_exp(x, -1)
    assert m.min() > 0
    assert np.max(np.abs(m / 2**31 * 2.0**shift * np.sqrt(x) - 1)) < 2e-6
    assert Q.get_inv_sqrt_quantized_multiplier_exp(np.array([0, 1]), -1)[0].tolist() == [I32_MAX] * 2


def test_softmax_prepare_helpers():
    assert Q.calculate_input_radius(5, 21) == math.floor(31 * 2**26 / 2**21)
    assert Q.calculate_input_radius(4, 20, 15) == 0
    m, ls = Q.preprocess_softmax_scaling(1.0, float(np.float32(0.03108392097055912)), 5)
    assert (m, ls) == Q.quantize_multiplier(float(np.float32(0.03108392097055912)) * 2**26)


# ----------------------------------------------------------------------- vectorised == scalar


def _random_case(rng, n):
    e = rng.integers(-31, 30, n)
    m = rng.integers(0, 1 << 31, n)
    limit = np.left_shift(1, 30 - np.maximum(e, 0))
    x = np.clip(rng.integers(I32_MIN, I32_MAX, n, endpoint=True) >> rng.integers(0, 31, n),
                -limit, limit - 1)
    return x, m, e


VECTOR_CASES = {
    "apply_scale_32": lambda x, m, e: Q.apply_scale_32(x, m, 31 - e, True),
    "apply_scale_32_single": lambda x, m, e: Q.apply_scale_32(x, m, 31 - e),
    "apply_scale_16": lambda x, m, e: Q.apply_scale_16(x, m >> 16, 31 - e),
    "mbqm": Q.multiply_by_quantized_multiplier,
    "mbqm_single": Q.multiply_by_quantized_multiplier_single_round,
    "srdhm": lambda x, m, e: Q.saturating_rounding_doubling_high_mul(x, m),
    "rdbp": lambda x, m, e: Q.rounding_divide_by_pot(x, abs(e)),
    "rounding_half_sum": lambda x, m, e: Q.rounding_half_sum(x, m),
    "exp_on_negative_values": lambda x, m, e: Q.exp_on_negative_values(-np.abs(x), 5),
    "one_over_one_plus_x": lambda x, m, e: Q.one_over_one_plus_x_for_x_in_0_1(m),
    "clz": lambda x, m, e: Q.count_leading_zeros32(m),
    "reciprocal_scale": lambda x, m, e: Q.reciprocal_scale(m + 1)[0],
    "get_reciprocal": lambda x, m, e: Q.get_reciprocal(np.maximum(m, 1), 12)[0],
    "inv_sqrt": lambda x, m, e: Q.get_inv_sqrt_quantized_multiplier_exp(m, -1)[0],
    "downscale16": lambda x, m, e: Q.downscale_int32_to_int16_multiplier(m),
}


@pytest.mark.parametrize("name", sorted(VECTOR_CASES))
def test_vectorised_equals_scalar(name):
    fn = VECTOR_CASES[name]
    rng = np.random.default_rng(7)
    x, m, e = _random_case(rng, 300)
    vec = fn(x, m, e)
    assert isinstance(vec, np.ndarray) and vec.dtype == np.int64 and vec.shape == x.shape
    for i in range(x.size):
        s = fn(int(x[i]), int(m[i]), int(e[i]))
        assert type(s) is int and s == vec[i], (name, i)


def test_per_channel_broadcasting():
    x = np.arange(-6, 6, dtype=np.int32).reshape(4, 3)
    m = np.array([1 << 30, 3 << 29, 1 << 30])
    s = np.array([31, 32, 33])
    got = Q.apply_scale_32(x, m, s, True)
    assert got.shape == (4, 3)
    for (i, j), v in np.ndenumerate(x):
        assert got[i, j] == ref_apply_scale_32(int(v), int(m[j]), int(s[j]), True)
