"""Math ops on int8 and int16: SQUARED_DIFFERENCE, DIV, RSQRT, SQRT, EXP, LOG, GELU, LOG_SOFTMAX.

What LiteRT 2.3.0's reference resolver (tflite/kernels/register_ref.cc) runs, and how each becomes TOSA:

- Unary ops map one input value to one output value, so a faithful port of the kernel (tosaic.quant.tables)
  evaluated at import time gives a TABLE. int8: 256 entries, exact by construction, whatever the kernel
  computes inside: EXP, LOG, GELU (float32 LUTs of LUTPopulate<int8_t>), RSQRT (gemmlowp fixed point), SQRT
  (float32 per element, truncating). int16: EXP, LOG, RSQRT and GELU are themselves 513-entry interpolated
  LUTs (LUTPopulate<int16_t> + LUTLookup); TOSA's i16 TABLE interpolates the same way in int32, and a
  RESCALE by 1/128 rounding half up gives LUTLookup's `(slope * offset + 64) >> 7`. The two agree unless a
  slope wraps in LUTLookup's int16 (then the legalization refuses). int16 SQRT computes in float per element
  (no LUT): no 513-entry TABLE reproduces it, so it is refused.
- SQUARED_DIFFERENCE, DIV and LOG_SOFTMAX are the kernels' integer arithmetic in TOSA i32 ops: RESCALE for
  MultiplyByQuantizedMultiplier, MUL with shift 31 for gemmlowp's SaturatingRoundingDoublingHighMul (both round
  half up; the saturating case INT32_MIN * INT32_MIN never occurs here), CLZ, shifts and SELECT for the rest.
  Where the C++ shifts or wraps outside what its authors intended, the import proves the case unreachable
  or reproduces what LiteRT's x86 binary does (measured, see DIV), or refuses.

LiteRT has no int16 SQUARED_DIFFERENCE or LOG_SOFTMAX kernel, so neither is legalized for int16.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.common import activation_range, check_same_type
from tosaic.importers.tflite.fixed_point import (
    UNIT_MULTIPLIER,
    UNIT_SHIFT,
    int8_range,
    per_tensor,
    rescale_exact,
)
from tosaic.importers.tflite.registry import legalize
from tosaic.ir import Value
from tosaic.quant.tables import (
    LOG_SOFTMAX_ACCUMULATION_INTEGER_BITS,
    LOG_SOFTMAX_INPUT_INTEGER_BITS,
    LOG_SOFTMAX_OUTPUT_INTEGER_BITS,
    count_leading_sign_bits32,
    div_multiplier,
    exp_int8,
    exp_int16_lut,
    gelu_int8,
    gelu_int16_lut,
    int8_table,
    int16_lut_is_tosa_exact,
    log_int8,
    log_int16_lut,
    log_softmax_int8_params,
    log_softmax_terms,
    rsqrt_int8,
    rsqrt_int16_lut,
    sqrt_int8,
    squared_difference_multipliers,
)
from tosaic.quant.tflite_fixedpoint import get_reciprocal, multiply_by_quantized_multiplier

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
TOSA_TYPES = {"int8": "i8", "int16": "i16"}


class IntOps:
    """TOSA i32 arithmetic on tensors of one rank, spelled like the gemmlowp/TFLite helpers it emulates.
    Constants are [1, ..., 1] tensors that broadcast against any operand."""

    def __init__(self, builder, rank: int):
        self.b = builder
        self.rank = rank

    def k(self, value: int, dtype: str = "i32") -> Value:
        return self.b.const(np.full((1,) * self.rank, value), dtype)

    def op(self, name: str, *operands, **attrs) -> Value:
        return self.b.op(name, list(operands), attrs)

    def add(self, x, y):
        return self.op("tosa.add", x, y)

    def sub(self, x, y):
        return self.op("tosa.sub", x, y)

    def select(self, condition, x, y):
        return self.op("tosa.select", condition, x, y)

    def greater(self, x, y):
        return self.op("tosa.greater", x, y)

    def bool_to_int(self, condition):
        return self.b.cast(condition, "i32")

    def shl(self, x, y):
        """`x << y` on the int32 bits (wraps, like the C++ `x * (1 << y)` does in practice); y in [0, 31]."""
        return self.op("tosa.logical_left_shift", x, y)

    def ars(self, x, y):
        """Arithmetic `x >> y` (rounding toward minus infinity); y in [0, 31]."""
        return self.op("tosa.arithmetic_right_shift", x, y, round=False)

    def srdhm(self, x, y):
        """gemmlowp SaturatingRoundingDoublingHighMul: TOSA MUL with shift 31, `(x * y + 2^30) >> 31`, which is
        `x * y / 2^31` rounded half up, as gemmlowp's nudge-and-truncate is. Callers never pass two INT32_MINs."""
        return self.b.mul_shift(x, y, 31)

    def saturating_shl(self, x, exponent: int):
        """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> for exponent > 0: saturating `x << exponent`."""
        threshold = (1 << (31 - exponent)) - 1
        shifted = self.shl(x, self.k(exponent))
        shifted = self.select(self.greater(x, self.k(threshold)), self.k(INT32_MAX), shifted)
        return self.select(self.greater(self.k(-threshold), x), self.k(INT32_MIN), shifted)

    def rounding_divide_by_pot(self, x, exponent: int):
        """gemmlowp RoundingDivideByPOT (half away from zero) by a constant 1 <= exponent <= 31, as
        `(x + 2^(e-1) - [x < 0]) >> e`; the caller guarantees `x + 2^(e-1)` does not overflow."""
        half = 1 << (exponent - 1)
        negative = self.greater(self.k(0), x)
        nudged = self.add(x, self.select(negative, self.k(half - 1), self.k(half)))
        return self.ars(nudged, self.k(exponent))

    def one_over_one_plus_x_for_x_in_0_1(self, a):
        """gemmlowp one_over_one_plus_x_for_x_in_0_1 for a raw Q0.31 `a` in [0, 2^31): three Newton-Raphson
        steps on the half denominator `(1 + a) / 2` in Q2.29."""
        # RoundingHalfSum(a, F0::One()) = (a + 2^31 - 1 + 1) / 2 = (a >> 1) + 2^30 for a >= 0.
        half_denominator = self.add(self.ars(a, self.k(1)), self.k(1 << 30))
        x = self.add(self.k(1515870810), self.srdhm(half_denominator, self.k(-1010580540)))  # 48/17 - 32/17 d
        for _ in range(3):
            one_minus_half_denominator_times_x = self.sub(self.k(1 << 29), self.srdhm(half_denominator, x))
            # Rescale<2> of the F4 product: a saturating << 2.
            x = self.add(x, self.saturating_shl(self.srdhm(x, one_minus_half_denominator_times_x), 2))
        return self.saturating_shl(x, 1)  # Rescale<0>(ExactMulByPot<-1>(x)): F1 raw to F0

    def log_x_for_x_greater_than_or_equal_to_1(self, z, input_integer_bits: int, output_integer_bits: int):
        """TFLite log_x_for_x_greater_than_or_equal_to_1_impl (tosaic.quant.tables has the port) for raw
        `z` >= 1.0 of FixedPoint<int32, input_integer_bits>, i.e. z in [2^(31 - bits), 2^31)."""
        accum_bits = output_integer_bits + 1
        log_2, sqrt_sqrt_half, sqrt_half = 1488522236, 1805811301, 1518500250
        alpha_n, alpha_d, alpha_i, alpha_f = 117049297, 127690142, 1057819769, 638450708
        shifted_quarter = 1 << (31 - accum_bits - 2)  # Rescale<accum>(1/4), exact
        k = self.k

        # z >= 1.0 has at most input_integer_bits + 1 leading zeros, so every power-of-two term below is
        # exact (SaturatingRoundingMultiplyByPOTParam of a value in [0, 2^6) by 31 - accum_bits never
        # saturates, and the SaturatingAdd/Sub with 1/4 never saturate).
        z_a_headroom_plus_1 = self.op("tosa.clz", z)
        # z << (headroom_plus_1 - 1) puts the leading one at bit 30: it never saturates.
        r_a_tmp = self.shl(z, self.sub(z_a_headroom_plus_1, k(1)))
        r_a_raw = self.saturating_shl(self.srdhm(r_a_tmp, k(sqrt_half)), 1)
        z_a_pow_2_adj = self.add(self.shl(self.sub(k(input_integer_bits), z_a_headroom_plus_1), k(31 - accum_bits)),
                                 k(shifted_quarter))
        z_b = self.srdhm(z, k(sqrt_half))
        z_b_headroom = self.sub(self.op("tosa.clz", z_b), k(1))
        # SaturatingRoundingMultiplyByPOTParam(z, z_b_headroom): z << h, saturating when z > (2^31 - 1) >> h
        # (which also covers h == 0, where the C++ returns z).
        threshold = self.op("tosa.logical_right_shift", k(INT32_MAX), z_b_headroom)
        r_b_raw = self.select(self.greater(z, threshold), k(INT32_MAX), self.shl(z, z_b_headroom))
        z_b_pow_2_adj = self.sub(self.shl(self.sub(k(input_integer_bits), z_b_headroom), k(31 - accum_bits)),
                                 k(shifted_quarter))
        r = self.op("tosa.minimum", r_a_raw, r_b_raw)
        z_pow_2_adj = self.op("tosa.maximum", z_a_pow_2_adj, z_b_pow_2_adj)

        # r is the mantissa in [sqrt(1/2), 1) (raw about [1.5e9, 2^31)): nothing below wraps.
        # RoundingHalfSum(r, sqrt_sqrt_half) = (r + odd + 1) / 2 = (r >> 1) + (odd + 1) / 2 for r >= 0.
        p = self.add(self.ars(r, k(1)), k((sqrt_sqrt_half + 1) // 2))
        q = self.sub(r, k(sqrt_sqrt_half))
        q = self.add(q, q)
        common_sq = self.srdhm(q, q)
        num = self.add(self.srdhm(q, r), self.srdhm(self.srdhm(q, common_sq), k(alpha_n)))
        denom_minus_one_0 = self.add(
            self.srdhm(p, self.add(self.add(k(alpha_i), q), self.srdhm(k(alpha_d), common_sq))),
            self.srdhm(k(alpha_f), q))
        recip_denom = self.one_over_one_plus_x_for_x_in_0_1(denom_minus_one_0)
        num_scaled = self.rounding_divide_by_pot(num, accum_bits)  # Rescale<accum_bits> from F0
        total = self.add(self.srdhm(z_pow_2_adj, k(log_2)), self.srdhm(num_scaled, recip_denom))
        return self.saturating_shl(total, accum_bits - output_integer_bits)  # Rescale<output_integer_bits>


def _broadcast_operands(ctx):
    """The op's two input tensors and values, the lower-rank one reshaped to the higher rank."""
    a, b = ctx.input(0), ctx.input(1)
    check_same_type(ctx, (a, b))
    x, y = ctx.value(a), ctx.value(b)
    rank = max(x.type.rank, y.type.rank)
    reshape = ctx.builder.reshape
    return a, b, reshape(x, (1,) * (rank - x.type.rank) + x.type.shape), \
        reshape(y, (1,) * (rank - y.type.rank) + y.type.shape)


def _check_broadcast_rank(ctx, a, b, max_rank: int, kernel: str):
    if tuple(a.shape) != tuple(b.shape) and max(len(a.shape), len(b.shape)) > max_rank:
        raise ctx.error(f"broadcasting {a.describe()} with {b.describe()}: LiteRT's {kernel} handles at most "
                        f"{max_rank} dimensions")


# ------------------------------------------------------------------------------------ SQUARED_DIFFERENCE

SQUARED_DIFFERENCE_LEFT_SHIFT = 7  # arithmetic_params.left_shift in squared_difference.cc


@legalize("SQUARED_DIFFERENCE", types=("int8",))
def squared_difference(ctx, op):
    """squared_difference.cc (int8; the only kernel, BroadcastBinaryFunction4DSlow when shapes differ):

        scaled_i = MultiplyByQuantizedMultiplierSmallerThanOneExp((q_i - zp_i) << 7, m_i, e_i)
        out      = clamp(MultiplyByQuantizedMultiplierSmallerThanOneExp((scaled_1 - scaled_2)^2, m_o, e_o) + zp_o)

    with m_i from `s_i / (2 max(s_1, s_2))` and m_o from `(2 max)^2 / (2^14 s_o)`. The `<< 7` is its own exact
    RESCALE, the square a MUL: |scaled_i| <= 255 * 2^7 / 2, so the square stays below 2^30."""
    a, b, x, y = _broadcast_operands(ctx)
    out = ctx.output()
    _check_broadcast_rank(ctx, a, b, 4, "BroadcastBinaryFunction4DSlow")
    (s1, zp1), (s2, zp2), (so, zpo) = per_tensor(ctx, a), per_tensor(ctx, b), per_tensor(ctx, out)
    try:
        (m1, e1), (m2, e2), (mo, eo) = squared_difference_multipliers(s1, s2, so)
    except ValueError as error:
        raise ctx.error(f"SQUARED_DIFFERENCE {error}") from None
    shift = SQUARED_DIFFERENCE_LEFT_SHIFT
    scaled = []
    for value, zp, m, e, which in ((x, zp1, m1, e1, "input 1"), (y, zp2, m2, e2, "input 2")):
        low, high = int8_range(zp)
        shifted = rescale_exact(ctx, value, 1 << 30, 30 - shift, (low, high), zp, 0, "i32",
                                f"SQUARED_DIFFERENCE {which} << {shift}")
        scaled.append(rescale_exact(ctx, shifted, m, 31 - e, (low << shift, high << shift), 0, 0, "i32",
                                    f"SQUARED_DIFFERENCE {which} multiplier"))
    bound = 255 << (shift - 1)  # a multiplier below 1/2 halves |(q - zp) << 7| <= 255 * 2^7, rounding up
    raw_diff = ctx.builder.op("tosa.sub", scaled)
    square = ctx.builder.mul_shift(raw_diff, raw_diff, 0)
    result = rescale_exact(ctx, square, mo, 31 - eo, (0, (2 * bound + 2) ** 2), 0, zpo, "i8",
                           "SQUARED_DIFFERENCE output multiplier")
    ctx.set_output(result)


# ------------------------------------------------------------------------------------------------ DIV


@legalize("DIV", types=("int8", "int16"))
def div(ctx, op):
    """reference_ops::DivElementwise / BroadcastDivSlowQuantized (div.cc, int8 and int16), per element:

        v1, v2   = q_1 - zp_1, q_2 - zp_2       (both negated when v2 < 0)
        inv, rs  = GetReciprocal(v2, 31)        (CLZ, then 1/(1+x) by Newton-Raphson: integer ops here)
        hr       = CountLeadingSignBits(v1)     (GCC's __builtin_clrsb: clz(v1 ^ (v1 >> 31)) - 1)
        quotient = SRDHM(v1 << hr, inv)
        out      = clamp(zp_o + RoundingDivideByPOT(SRDHM(quotient, m), hr + rs - e))

    with (m, e) = QuantizeMultiplier(s_1 / (s_2 * s_o)) in float. The exponent hr + rs - e passes 31 whenever
    |v1| is small (0 / 64 with equal scales: exponent 36): gemmlowp asserts it stays below 32, and LiteRT's
    x86 binary then computes `(x >> (exponent - 32)) + (x >= 0)` (the int32 mask `(1ll << e) - 1` becomes -1
    and SAR shifts modulo 32). Measured on all int8 pairs (e.g. 0 / 64 gives zp_o + 1, -1 / 64 gives -128 with
    unit scales), this is reproduced exactly. LiteRT fails the invocation when some q_2 equals zp_2; tosaic
    divides by 1 there.
    """
    a, b, x, y = _broadcast_operands(ctx)
    out = ctx.output()
    _check_broadcast_rank(ctx, a, b, 5, "BroadcastDivSlow")
    (s1, zp1), (s2, zp2), (so, zpo) = per_tensor(ctx, a), per_tensor(ctx, b), per_tensor(ctx, out)
    act_min, act_max = activation_range(ctx, out, op.options.get("fused_activation_function", 0))
    multiplier, exponent = div_multiplier(s1, s2, so)
    dtype_min, dtype_max = {"int8": (-128, 127), "int16": (-32768, 32767)}[a.dtype]

    # Import-time proof that the kernel's shifts stay where this graph reproduces them.
    v1_low, v1_high = dtype_min - zp1, dtype_max - zp1
    v1_low, v1_high = min(v1_low, -v1_high), max(v1_high, -v1_low)  # v1 is negated with v2
    v2_max = max(abs(dtype_min - zp2), abs(dtype_max - zp2))
    divisors = np.arange(1, v2_max + 1)
    recip_shift = np.asarray(get_reciprocal(divisors, 31)[1])
    # CountLeadingSignBits is smallest at the extremes of the range and 31 at 0 (v1 = 0 always occurs).
    head_min = int(count_leading_sign_bits32(np.array([v1_low, v1_high])).min())
    exponent_min, exponent_max = head_min - exponent, 31 + int(recip_shift.max()) - exponent
    if multiplier <= 0 or exponent_min < 0 or exponent_max > 63:
        raise ctx.error(f"DIV multiplier {s1} / ({s2} * {so}) gives RoundingDivideByPOT exponents in "
                        f"[{exponent_min}, {exponent_max}]; LiteRT's result there is a negative or 64-bit-wide "
                        f"shift (undefined) that tosaic does not reproduce")
    if multiplier + 2 + abs(zpo) > INT32_MAX:
        raise ctx.error(f"DIV output multiplier {multiplier} with zero point {zpo}: zp + quotient can wrap int32")

    b_ = ctx.builder
    rank = x.type.rank
    r = IntOps(b_, rank)
    k = r.k
    v1 = r.sub(b_.cast(x, "i32"), k(zp1))
    v2 = r.sub(b_.cast(y, "i32"), k(zp2))
    negative = r.greater(k(0), v2)
    v1 = r.select(negative, r.sub(k(0), v1), v1)
    v2 = r.op("tosa.maximum", r.op("tosa.abs", v2), k(1))  # v2 == 0 (LiteRT refuses the input) divides by 1
    # GetReciprocal(v2, 31): normalise v2 to 1 + f with f in [0, 1), num_bits_over_unit = 31 - clz.
    headroom_plus_one = r.op("tosa.clz", v2)
    recip_shift_v = r.sub(k(31), headroom_plus_one)
    fraction = r.op("tosa.bitwise_and", r.shl(v2, headroom_plus_one), k(INT32_MAX))
    inverse = r.one_over_one_plus_x_for_x_in_0_1(fraction)
    # CountLeadingSignBits(v1), then MultiplyByQuantizedMultiplierGreaterThanOne(v1, inv, headroom).
    headroom = r.sub(r.op("tosa.clz", r.op("tosa.bitwise_xor", v1, r.ars(v1, k(31)))), k(1))
    quotient = r.srdhm(r.shl(v1, headroom), inverse)
    scaled = r.srdhm(quotient, k(multiplier))
    # RoundingDivideByPOT(scaled, e) with the x86 behaviour for e in [32, 63] (docstring); scaled <= 2^31 - 2.
    e = r.sub(r.add(headroom, recip_shift_v), k(exponent))
    e_low = r.op("tosa.bitwise_and", e, k(31))
    mask = r.op("tosa.bitwise_not", r.shl(k(-1), e_low))
    mask = r.select(r.greater(e, k(31)), k(-1), mask)
    threshold = r.add(r.ars(mask, k(1)), r.bool_to_int(r.greater(k(0), scaled)))
    remainder = r.op("tosa.bitwise_and", scaled, mask)
    rounded = r.add(r.ars(scaled, e_low), r.bool_to_int(r.greater(remainder, threshold)))
    # clamp(zp_o + q) == clamp(q, lo - zp_o, hi - zp_o) + zp_o: |q| <= multiplier + 1, so zp_o + q never wraps.
    clamped = r.op("tosa.minimum", r.op("tosa.maximum", rounded, k(act_min - zpo)), k(act_max - zpo))
    ctx.set_output(b_.cast(r.add(clamped, k(zpo)), TOSA_TYPES[out.dtype]))


# ----------------------------------------------------------------------------------------- unary: TABLE


def _int8_table(ctx, kernel, *extra):
    """TABLE holding `kernel(q, s_in, zp_in, s_o, zp_o, *extra)` for every int8 q."""
    x_tensor, out = ctx.input(0), ctx.output()
    (s_in, zp_in), (so, zpo) = per_tensor(ctx, x_tensor), per_tensor(ctx, out)
    try:
        table = int8_table(lambda q: kernel(q, s_in, zp_in, so, zpo, *extra))
    except ValueError as error:  # the port refuses what the kernel's Prepare refuses or leaves undefined
        raise ctx.error(str(error)) from None
    b = ctx.builder
    ctx.set_output(b.op("tosa.table", [ctx.value(x_tensor), b.const(table, "i8")]))


def _int16_table(ctx, lut_of, *extra, zero_points_zero: bool = True):
    """LUTLookup of LiteRT's 513-entry int16 LUT: TOSA TABLE (i16 -> i32, `(t[i] << 7) + slope * frac`) and a
    RESCALE by 2^-7 rounding half up (multiplier 2^30, shift 37, single rounding): `base + (slope * frac +
    64) >> 7`, LUTLookup's arithmetic, whenever no slope wraps in int16."""
    x_tensor, out = ctx.input(0), ctx.output()
    (s_in, zp_in), (so, zpo) = per_tensor(ctx, x_tensor), per_tensor(ctx, out)
    if zero_points_zero and (zp_in, zpo) != (0, 0):
        raise ctx.error(f"int16 {ctx.op.opcode} needs zero points 0, got {zp_in} and {zpo} (LiteRT's Prepare "
                        f"rejects the model)")
    try:
        lut = lut_of(s_in, zp_in, so, zpo, *extra)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    if not int16_lut_is_tosa_exact(lut):
        raise ctx.error(f"LiteRT's int16 LUT for {x_tensor.describe()} -> {out.describe()} has a step of more "
                        f"than 32767 between entries, which LUTLookup wraps in int16; a TOSA TABLE interpolates "
                        f"without wrapping, so the bits would differ (the input range reaches where the "
                        f"function leaves the output range)")
    b = ctx.builder
    interpolated = b.op("tosa.table", [ctx.value(x_tensor), b.const(lut, "i16")])
    ctx.set_output(b.rescale(interpolated, 1 << 30, 37, 0, 0, "i16", rounding="SINGLE_ROUND"))


@legalize("RSQRT", types=("int8", "int16"))
def rsqrt(ctx, op):
    """int8: RsqrtEvalQuantizedInt8 (elementwise.cc; GetInvSqrtQuantizedMultiplierExp and two
    MultiplyByQuantizedMultiplier) as a TABLE. int16: the LUT of `1.0f / sqrtf(v)` (GenericPrepare). LiteRT
    fails the invocation for an input below the zero point; the TABLE gives 127 (int8) or the LUT's value."""
    if ctx.input(0).dtype == "int8":
        _int8_table(ctx, rsqrt_int8)
    else:
        _int16_table(ctx, rsqrt_int16_lut)


@legalize("SQRT", types=("int8",))
def sqrt(ctx, op):
    """SqrtEvalQuantized<int8_t> (elementwise.cc): `(int)(sqrtf(s_in * (q - zp_in)) / s_o) + zp_o` in float32,
    truncated, clamped. LiteRT fails the invocation for q < zp_in; the TABLE gives the output of sqrt(0).
    int16 SQRT runs the same float code on 65536 values, which no 513-entry TABLE reproduces: not legalized."""
    _int8_table(ctx, sqrt_int8)


@legalize("EXP", types=("int8", "int16"))
def exp(ctx, op):
    """exp.cc (reference, the only kernel): LUTPopulate of `expf` (int8: 256 entries; int16: 513)."""
    if ctx.input(0).dtype == "int8":
        _int8_table(ctx, exp_int8)
    else:
        _int16_table(ctx, exp_int16_lut)


@legalize("LOG", types=("int8", "int16"))
def log(ctx, op):
    """LogLUTPrepare + LookupTable (elementwise.cc): LUTPopulate of `logf`, or of the output's dequantized
    minimum for v <= 0."""
    if ctx.input(0).dtype == "int8":
        _int8_table(ctx, log_int8)
    else:
        _int16_table(ctx, log_int16_lut)


@legalize("GELU", types=("int8", "int16"))
def gelu(ctx, op):
    """GeluPrepare (activations.cc): LUTPopulate of reference_ops::GeluTransformApproximate (tanh form) or
    GeluTransform (erfc form), 256 entries for int8, 513 for int16 (whose Prepare accepts any zero points)."""
    approximate = bool(op.options.get("approximate", False))
    if ctx.input(0).dtype == "int8":
        _int8_table(ctx, gelu_int8, approximate)
    else:
        _int16_table(ctx, gelu_int16_lut, approximate, zero_points_zero=False)


# ---------------------------------------------------------------------------------------- LOG_SOFTMAX

# The sum of exps is int32 in Q12.19 and each term is at most 2^19: rows of 4096 or more can wrap it.
LOG_SOFTMAX_MAX_DEPTH = 4095
# The Q5.26 log of a Q12.19 value below 2^12 is below 8.4, i.e. below 2^30 raw.
LOG_SUM_BOUND = 1 << 30


def _gather_table(b, table: np.ndarray, index: Value) -> Value:
    """`table[index]` for an i32 `index` of shape [rows, depth], by GATHER on a [1, K, 1] constant."""
    rows, depth = index.type.shape
    values = b.const(np.asarray(table, dtype=np.int64).reshape(1, -1, 1), "i32")
    gathered = b.op("tosa.gather", [values, b.reshape(index, (1, rows * depth))])
    return b.reshape(gathered, (rows, depth))


@legalize("LOG_SOFTMAX", types=("int8",))
def log_softmax(ctx, op):
    """LogSoftmaxPrepare<kReference> + reference_integer_ops::LogSoftmax (activations.cc,
    integer_ops/log_softmax.h), per row of the last axis:

        diff    = q - max(row)                                           in [-255, 0]
        sum     = sum over diff >= diff_min of Rescale<12>(exp_on_negative_values(MBQM(diff, m, left_shift)))
        log_sum = log_x_for_x_greater_than_or_equal_to_1<5>(sum)         (Q5.26)
        adj     = max(diff_min - 1, MBQM(log_sum + INT32_MIN, reverse_divisor, -reverse_shift))
        out     = diff > adj ? clamp(RoundingDivideByPOT(MBQM(diff, m, left_shift) - log_sum, 22) + 127) : -128

    The two per-difference values (the Q5.26 difference and the exp term) take 256 values each: GATHERs from
    constant tables computed by the port. The per-row log is the kernel's integer program in TOSA ops.
    """
    x_tensor, out = ctx.input(0), ctx.output()
    s_in, _ = per_tensor(ctx, x_tensor)
    s_out, zp_out = per_tensor(ctx, out)
    if np.float32(s_out) != np.float32(16.0 / 256) or zp_out != 127:
        raise ctx.error(f"int8 LOG_SOFTMAX needs output scale 16/256 and zero point 127, got {out.describe()} "
                        f"(LiteRT's Prepare rejects the model)")
    try:
        params = log_softmax_int8_params(s_in)
    except ValueError as error:
        raise ctx.error(f"input scale {s_in}: {error}") from None
    shape = tuple(x_tensor.shape)
    if not shape:
        raise ctx.error("LOG_SOFTMAX needs an input of rank 1 or more")
    depth, rows = shape[-1], int(np.prod(shape[:-1], dtype=np.int64))
    if depth > LOG_SOFTMAX_MAX_DEPTH:
        raise ctx.error(f"rows of {depth} elements: the kernel's int32 sum of exps can wrap beyond "
                        f"{LOG_SOFTMAX_MAX_DEPTH} (LiteRT then takes the log of a negative number)")
    if not 0 <= params.reverse_scaling_right_shift <= 31:
        raise ctx.error(f"input scale {s_in}: reverse scaling shift {params.reverse_scaling_right_shift} is "
                        f"outside [0, 31] (RoundingDivideByPOT is undefined there)")
    in_q5, terms = log_softmax_terms(params)
    diffs = np.arange(-255, 1)
    used = diffs >= params.diff_min
    in_q5 = np.where(used, in_q5, 0)
    _prove_no_wrap(ctx, params, in_q5[used], diffs[used])

    b = ctx.builder
    r = IntOps(b, 2)
    k = r.k
    x = b.reshape(ctx.value(x_tensor), (rows, depth))
    row_max = b.op("tosa.reduce_max", [x], {"axis": 1})
    diff = r.sub(b.cast(x, "i32"), b.cast(row_max, "i32"))
    index = r.add(diff, k(255))
    diff_in_q5 = _gather_table(b, in_q5, index)
    sum_of_exps = b.op("tosa.reduce_sum", [_gather_table(b, terms, index)], {"axis": 1})
    log_sum = r.log_x_for_x_greater_than_or_equal_to_1(sum_of_exps, LOG_SOFTMAX_ACCUMULATION_INTEGER_BITS,
                                                       LOG_SOFTMAX_INPUT_INTEGER_BITS)
    # MBQM(log_sum + INT32_MIN, reverse_divisor, -reverse_shift) = RoundingDivideByPOT(SRDHM(.), reverse_shift).
    # Its operand lies in [-2^31, -2^31 + 2^30), outside what a RESCALE may take for small shifts, so the two
    # steps are spelled out (the divisor is positive: SRDHM never saturates).
    reverse = r.srdhm(r.add(log_sum, k(INT32_MIN)), k(params.reverse_scaling_divisor))
    if params.reverse_scaling_right_shift > 0:
        reverse = r.rounding_divide_by_pot(reverse, params.reverse_scaling_right_shift)
    adjusted_diff_min = r.op("tosa.maximum", k(params.diff_min - 1), reverse)
    passed = r.greater(diff, adjusted_diff_min)
    # Only passing elements reach the subtraction in the C++; the others subtract from 0 here.
    delta = r.sub(r.select(passed, diff_in_q5, k(0)), log_sum)
    shift = 31 - LOG_SOFTMAX_INPUT_INTEGER_BITS - LOG_SOFTMAX_OUTPUT_INTEGER_BITS
    shifted = r.rounding_divide_by_pot(delta, shift)
    result = b.rescale(shifted, UNIT_MULTIPLIER, UNIT_SHIFT, 0, 127, "i8", rounding="SINGLE_ROUND")
    result = r.select(passed, result, k(-128, "i8"))
    ctx.set_output(b.reshape(result, shape))


def _prove_no_wrap(ctx, params, in_q5: np.ndarray, diffs: np.ndarray) -> None:
    """`diff_in_q5 - log_sum` wraps int32 only when log_sum > diff_in_q5 + 2^31; the kernel lets a difference
    through only when diff > adj(log_sum), and adj grows with log_sum. So it suffices that the smallest wrapping
    log_sum already stops every difference: adj(diff_in_q5 + 2^31 + 1) >= diff wherever that is below the
    largest log_sum."""
    smallest_wrapping = in_q5 + (1 << 31) + 1
    reachable = smallest_wrapping < LOG_SUM_BOUND
    if not reachable.any():
        return
    adj = np.maximum(params.diff_min - 1, np.asarray(multiply_by_quantized_multiplier(
        smallest_wrapping[reachable] + INT32_MIN, params.reverse_scaling_divisor,
        -params.reverse_scaling_right_shift)))
    if np.any(adj < diffs[reachable]):
        raise ctx.error("the kernel's diff_in_q5 - log_sum can wrap int32 for this input scale (LiteRT wraps; "
                        "tosaic does not reproduce it)")
