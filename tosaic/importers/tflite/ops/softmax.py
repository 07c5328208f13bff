"""SOFTMAX int8 -> int8 and int16 -> int16: LiteRT's reference kernels as TOSA integer ops.

int8 uses gemmlowp fixed point; int16 uses two interpolated 513-entry LUTs, which are TOSA TABLE i16 (see the
int16 section at the end).

What BUILTIN_REF runs (tflite/kernels/activations.cc `SoftmaxPrepare<kReference>` and
`reference_ops::Softmax` in kernels/internal/reference/softmax.h; the float lookup table of
`PopulateSoftmaxLookupTable` belongs to the optimized kernel only), per row of the last axis:

    diff = q - max(row)                                 in [-255, 0]
    exp  = diff >= diff_min ? exp_on_negative_values(SRDHM(diff << left_shift, multiplier)) : 0   (Q0.31)
    sum  = sum(RoundingDivideByPOT(exp, 12))            (Q12.19)
    scale, num_bits_over_unit = GetReciprocal(sum, 12)  (CLZ, then 1/(1+x) by three Newton-Raphson steps)
    out  = clamp(RoundingDivideByPOT(SRDHM(scale, exp), num_bits_over_unit + 23) - 128)

How each step becomes TOSA:
- `exp` depends on `diff` alone, which takes 256 values: it is computed at import time by the port in
  tosaic.quant and looked up with two i16 TABLEs (the high and low 16 bits of the Q0.31 value). The TABLE
  index is `128 * (diff - 1)`, so the interpolation fraction is 0 and the TABLE returns `entry << 7`.
  An excluded element (`diff < diff_min`) has table value 0, which gives a zero term and the output -128,
  exactly what the kernel writes for it.
- gemmlowp's SaturatingRoundingDoublingHighMul rounds `a*b / 2^31` half up: TOSA MUL with shift 31. Its one
  saturating case (INT32_MIN * INT32_MIN) cannot occur: no operand here is INT32_MIN.
- RoundingDivideByPOT of a non-negative value is ARITHMETIC_RIGHT_SHIFT with round = true.
- The reciprocal is the per-row integer program of GetReciprocal / one_over_one_plus_x_for_x_in_0_1.

Where LiteRT has no answer: the kernel's TFLITE_CHECK(exponent <= 31) aborts the process when a row's sum
reaches 2^28 (for instance 512 or more elements equal to the row maximum). tosaic continues the arithmetic
exactly instead: a rounding division by 2^32 or more of a value below 2^31 is 0, so such rows give -128
everywhere. Partial sums are capped at 2^28 so that rows longer than 4095 never overflow int32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

from tosaic.importers.tflite.fixed_point import (
    UNIT_MULTIPLIER,
    UNIT_SHIFT,
    from_i32,
    per_tensor,
    quantized_multiplier,
    rescale_exact,
    scaled_range,
)
from tosaic.importers.tflite.registry import legalize
from tosaic.ir import Value
from tosaic.quant import (
    exp_on_negative_values,
    multiply_by_quantized_multiplier_greater_than_one,
    round_half_away,
    softmax_int8_params,
)

SCALED_DIFF_INTEGER_BITS = 5  # kScaledDiffIntegerBits: exp() takes Q5.26
ACCUMULATION_INTEGER_BITS = 12  # kAccumulationIntegerBits: the sum of exps is Q12.19
INT32_MAX = (1 << 31) - 1
# The kernel aborts once a row's sum reaches 2^28 (exponent = 35 - clz(sum) > 31); a term is at most 2^19.
SUM_LIMIT = 1 << 28
TERM_MAX = 1 << 19


def exp_table(params) -> np.ndarray:
    """The kernel's Q0.31 `exp_in_0` for diff = -255 .. 0 (0 where diff < diff_min: excluded)."""
    diffs = np.arange(-255, 1, dtype=np.int64)
    used = diffs >= params.diff_min
    rescaled = np.zeros_like(diffs)
    # diff 0 rescales to 0 under any shift; left_shift 31 (beta * scale >= 16) only ever keeps diff 0.
    moving = used & (diffs != 0)
    if moving.any():
        rescaled[moving] = multiply_by_quantized_multiplier_greater_than_one(
            diffs[moving], params.input_multiplier, params.input_left_shift)
    exps = np.asarray(exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS), dtype=np.int64)
    return np.where(used, exps, 0)


def i16_tables(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 513-entry i16 TABLEs holding the high and the low 16 bits of 256 non-negative int32 values."""
    high = np.zeros(513, dtype=np.int64)
    low = np.zeros(513, dtype=np.int64)
    high[:256] = values >> 16
    low[:256] = ((values & 0xFFFF) ^ 0x8000) - 0x8000  # the low half, as the int16 that stores its bits
    return high, low


class RowOps:
    """TOSA i32 arithmetic on per-row values of shape [rows, 1] (constants broadcast as [1, 1])."""

    def __init__(self, builder):
        self.b = builder

    def k(self, value: int) -> Value:
        return self.b.const(np.full((1, 1), value), "i32")

    def op(self, name, *operands, **attrs) -> Value:
        return self.b.op(name, list(operands), attrs)

    def add(self, x, y):
        return self.op("tosa.add", x, y)

    def sub(self, x, y):
        return self.op("tosa.sub", x, y)

    def srdhm(self, x, y):
        """gemmlowp SaturatingRoundingDoublingHighMul (operands never both INT32_MIN)."""
        return self.b.mul_shift(x, y, 31)

    def shl(self, x, y):
        return self.op("tosa.logical_left_shift", x, y)

    def rounding_shr(self, x, y):
        """RoundingDivideByPOT of a non-negative value."""
        return self.op("tosa.arithmetic_right_shift", x, y, round=True)


def reciprocal(b, row_sum: Value) -> tuple[Value, Value]:
    """GetReciprocal(sum, 12) and the output exponent `num_bits_over_unit + 31 - 8`, for 2^19 <= sum < 2^31.

    Returns (shifted_scale, exponent) with the kernel's values where the kernel runs (sum < 2^28), and
    (0, 31) where it aborts, which makes every output of the row -128.
    """
    r = RowOps(b)
    headroom_plus_one = r.op("tosa.clz", row_sum)  # in [1, 12]
    # (uint32(sum) << headroom_plus_one) - 2^31: the shift sets bit 31, which the AND clears.
    a = r.op("tosa.bitwise_and", r.shl(row_sum, headroom_plus_one), r.k(INT32_MAX))
    # one_over_one_plus_x_for_x_in_0_1(a), with F0 = Q0.31, F2 = Q2.29, F4 = Q4.27 raw values.
    # RoundingHalfSum(a, F0::One()) = (a + 2^31) / 2 for a >= 0.
    half_denominator = r.add(r.op("tosa.arithmetic_right_shift", a, r.k(1), round=False), r.k(1 << 30))
    x = r.add(r.k(1515870810), r.srdhm(half_denominator, r.k(-1010580540)))  # 48/17 - 32/17 * d, in F2
    for _ in range(3):
        one_minus_half_denominator_times_x = r.sub(r.k(1 << 29), r.srdhm(half_denominator, x))
        # Rescale<2> of an F4 product is a saturating << 2; |product| < 2^27 here, so it never saturates.
        x = r.add(x, r.shl(r.srdhm(x, one_minus_half_denominator_times_x), r.k(2)))
    # Rescale<0>(ExactMulByPot<-1>(x)): a saturating << 1 of the raw F2 value.
    saturates = r.op("tosa.greater", x, r.k((1 << 30) - 1))
    shifted_scale = r.op("tosa.select", saturates, r.k(INT32_MAX), r.shl(x, r.k(1)))
    # exponent = (12 - headroom_plus_one) + 31 - 8; beyond 31 (sum >= 2^28) the kernel aborts.
    aborts = r.op("tosa.greater", r.k(4), headroom_plus_one)
    shifted_scale = r.op("tosa.select", aborts, r.k(0), shifted_scale)
    exponent = r.sub(r.k(ACCUMULATION_INTEGER_BITS + 31 - 8), r.op("tosa.maximum", headroom_plus_one, r.k(4)))
    return shifted_scale, exponent


def row_sum(b, terms: Value) -> Value:
    """REDUCE_SUM over axis 1 of [rows, n] terms in [0, 2^19] that cannot overflow int32.

    The kernel's own int32 sum is exact below 2^28 and the kernel aborts above, so partial sums are capped
    at 2^28: the total is then exact below 2^28 and at least 2^28 otherwise.
    """
    rows, n = terms.type.shape
    bound = TERM_MAX
    while n * bound > INT32_MAX:
        group = INT32_MAX // bound
        chunks = -(-n // group)
        if chunks * group != n:
            terms = b.op("tosa.pad", [terms, b.shape([0, 0, 0, chunks * group - n]), b.scalar(0, "i32")])
        partial = b.op("tosa.reduce_sum", [b.reshape(terms, (rows, chunks, group))], {"axis": 2})
        partial = b.op("tosa.minimum", [partial, b.const(np.full((1, 1, 1), SUM_LIMIT), "i32")])
        terms, n, bound = b.reshape(partial, (rows, chunks)), chunks, SUM_LIMIT
    return b.op("tosa.reduce_sum", [terms], {"axis": 1})


@legalize("SOFTMAX", types=("int8", "int16"))
def softmax(ctx, op):
    """SoftmaxPrepare<kReference> + reference_ops::Softmax<int8_t, int8_t> (see the module docstring), or
    reference_ops::SoftmaxInt16 (see the int16 section below)."""
    x_tensor, out = ctx.input(0), ctx.output()
    if x_tensor.dtype == "int16" and out.dtype == "int16":
        _softmax_int16(ctx, op, x_tensor, out)
        return
    if x_tensor.dtype != "int8" or out.dtype != "int8":
        raise ctx.error(f"SOFTMAX from {x_tensor.dtype} to {out.dtype} is not supported")
    s_in, _ = per_tensor(ctx, x_tensor)
    s_out, zp_out = per_tensor(ctx, out)
    # SoftmaxPrepare: TF_LITE_ENSURE_EQ(zero_point, -128), TF_LITE_ENSURE_NEAR(scale, 1/256, 0.001/256) in float.
    delta = abs(np.float32(s_out) - np.float32(1.0 / 256))
    if zp_out != -128 or delta > np.float32(0.001) * np.float32(1.0 / 256):
        raise ctx.error(f"int8 SOFTMAX needs output scale 1/256 and zero point -128, got {out.describe()} "
                        f"(LiteRT rejects the model)")
    beta = float(op.options.get("beta", 0.0))
    try:
        params = softmax_int8_params(beta, s_in)
    except ValueError as error:
        raise ctx.error(f"beta {beta} with input scale {s_in}: {error} (QuantizeMultiplierGreaterThanOne "
                        f"needs beta * input_scale * 2^26 > 1; LiteRT aborts on this model)") from None

    b = ctx.builder
    shape = tuple(x_tensor.shape)
    if not shape:
        raise ctx.error("SOFTMAX needs an input of rank 1 or more (LiteRT rejects the model)")
    depth, rows = shape[-1], int(np.prod(shape[:-1], dtype=np.int64))
    x = b.reshape(ctx.value(x_tensor), (rows, depth))

    # Per-element exp_in_0 from two TABLE lookups indexed by 128 * (q - max - 1), in [-32768, -128].
    row_max = b.op("tosa.reduce_max", [x], {"axis": 1})
    max_plus_one = b.rescale(row_max, UNIT_MULTIPLIER, UNIT_SHIFT, -1, 0, "i32", rounding="SINGLE_ROUND")
    diff_minus_one = b.op("tosa.sub", [b.cast(x, "i32"), max_plus_one])
    index = b.rescale(diff_minus_one, UNIT_MULTIPLIER, UNIT_SHIFT - 7, 0, 0, "i16", rounding="SINGLE_ROUND")
    high, low = i16_tables(exp_table(params))
    high = b.op("tosa.table", [index, b.const(high, "i16")])  # (exp >> 16) << 7
    low = b.op("tosa.table", [index, b.const(low, "i16")])  # int16(exp & 0xffff) << 7
    r = RowOps(b)
    low_bits = r.op("tosa.bitwise_and", r.op("tosa.arithmetic_right_shift", low, r.k(7), round=False),
                    r.k(0xFFFF))
    exp_in_0 = r.op("tosa.bitwise_or", r.shl(high, r.k(9)), low_bits)

    # sum_of_exps += Rescale<12>(exp_in_0); then the per-row reciprocal.
    terms = r.rounding_shr(exp_in_0, r.k(ACCUMULATION_INTEGER_BITS))
    shifted_scale, exponent = reciprocal(b, row_sum(b, terms))

    # RoundingDivideByPOT(SRDHM(shifted_scale, exp_in_0), exponent) - 128, clamped to int8 by the RESCALE.
    unsat = r.rounding_shr(r.srdhm(exp_in_0, shifted_scale), exponent)
    result = b.rescale(unsat, UNIT_MULTIPLIER, UNIT_SHIFT, 0, -128, "i8", rounding="SINGLE_ROUND")
    ctx.set_output(b.reshape(result, shape))


# ---------------------------------------------------------------------------------------- SOFTMAX int16
#
# What BUILTIN_REF runs for int16 (activations.cc SoftmaxPrepare, reference_ops::SoftmaxInt16 in
# kernels/internal/reference/softmax.h), per row of the last axis:
#
#     diff    = q - max(row)                                       in [-65535, 0]
#     sym     = sat16(MultiplyByQuantizedMultiplier(diff, m, e) + 32767)
#     exp     = LUTLookup(sym, exp_lut)                           (Q0.15)
#     sum     = sum(exp);  h = clz(sum)
#     shifted = ((sum << (h - 1)) + 2^13) >> 14                   in [2^16, 2^17]
#     recip   = LUTLookup(sat16(shifted - 3 * 2^15), one_over_one_plus_x_lut)
#     out     = clamp((exp * recip + 2^(30 - h)) >> (31 - h), 0, 32767)
#
# with (m, e) = QuantizeMultiplier(float(s_in * beta) / (10 / 65535)), and both 513-entry LUTs made by
# LUTPopulate<int16_t> in double precision (the deprecated `double (*)(double)` overload) of exp on
# [-10, 0] and of 1 / (1 + x) on [0, 1]. LUTLookup(v, lut) is `base + ((slope * (v & 127) + 64) >> 7)` on
# entry `256 + (v >> 7)`: exactly TOSA TABLE i16 (which returns `(base << 7) + slope * frac`) followed by a
# rounding ARITHMETIC_RIGHT_SHIFT by 7, as long as no slope leaves int16 (checked). Everything else is i32
# arithmetic: CLZ, shifts by per-row amounts, MUL (the product of two Q0.15 values fits i32).

INT16_RANGE = 65535  # std::numeric_limits<int16_t>::max() - min()


@functools.cache
def _exp_double():
    lib = ctypes.CDLL(ctypes.util.find_library("m") or ctypes.util.find_library("c"))
    fn = lib.exp
    fn.restype = ctypes.c_double
    fn.argtypes = [ctypes.c_double]
    return fn


def _exp(values: np.ndarray) -> np.ndarray:
    """std::exp(double) from the C library, as LiteRT's binary calls it."""
    fn = _exp_double()
    return np.array([fn(float(v)) for v in np.ravel(values)], dtype=np.float64).reshape(np.shape(values))


def _one_over_one_plus(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + values)


def lut_populate_int16_double(transform, input_scale: float, input_zero_point: int, output_scale: float,
                              output_zero_point: int) -> np.ndarray:
    """detail::LUTPopulateInt16<double> (internal/common.h): 512 samples of the transform over the input range,
    each biased by half the interpolation error at its segment's midpoint, plus the last value; double
    arithmetic in the C++'s order, TfLiteRound = round half away from zero."""
    input_min = input_scale * (-32768 - input_zero_point)
    input_max = input_scale * (32767 - input_zero_point)
    output_min = output_scale * (-32768 - output_zero_point)
    output_max = output_scale * (32767 - output_zero_point)
    step = (input_max - input_min) / 512
    half_step = step / 2
    output_scaling_inv = 65536.0 / (output_max - output_min)
    i = np.arange(512, dtype=np.float64)
    start = input_min + i * step
    val = transform(start)
    val_midpoint = transform(start + half_step)
    val_next = transform(input_min + (i + 1) * step)
    sample_val = round_half_away(val * output_scaling_inv)
    midpoint_interp_val = round_half_away((val_next * output_scaling_inv + round_half_away(val * output_scaling_inv))
                                          / 2)
    midpoint_val = round_half_away(val_midpoint * output_scaling_inv)
    bias = round_half_away((midpoint_interp_val - midpoint_val) / 2)
    last = round_half_away(transform(np.array([input_max])) * output_scaling_inv)
    entries = np.append(sample_val - bias, last)
    return np.clip(entries, -32768, 32767).astype(np.int64)


def lut_lookup_int16(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """LUTLookup(int16_t, const int16_t*): entry 256 + (v >> 7), slope held in int16, `(slope * (v & 127) + 64)
    >> 7`, the sum cast to int16."""
    v = np.asarray(values, dtype=np.int64)
    index = 256 + (v >> 7)
    base = lut[index]
    slope = ((lut[index + 1] - base + 32768) & 0xFFFF) - 32768
    out = base + ((slope * (v & 0x7F) + 64) >> 7)
    return ((out + 32768) & 0xFFFF) - 32768


def softmax_int16_luts() -> tuple[np.ndarray, np.ndarray]:
    """SoftmaxPrepare's exp LUT (input [-10, 0]) and 1 / (1 + x) LUT (input [0, 1])."""
    exp_lut = lut_populate_int16_double(_exp, 10.0 / INT16_RANGE, 32767, 2.0 / INT16_RANGE, 0)
    reciprocal_lut = lut_populate_int16_double(_one_over_one_plus, 1.0 / INT16_RANGE, -32768, 2.0 / INT16_RANGE, 0)
    return exp_lut, reciprocal_lut


def _table_lookup(ctx, x: Value, lut: np.ndarray) -> tuple[Value, int, int]:
    """LUTLookup as TABLE i16 and a rounding shift by 7; returns the i32 result and its bounds over every int16
    input (refuses when a slope leaves int16, where TOSA's TABLE is unpredictable and LUTLookup wraps)."""
    slopes = np.diff(lut)
    if slopes.min() < -32768 or slopes.max() > 32767:
        raise ctx.error("an int16 LUT has a slope beyond int16 (TOSA TABLE requires it to fit)")
    outputs = lut_lookup_int16(np.arange(-32768, 32768), lut)
    b = ctx.builder
    table = b.op("tosa.table", [x, b.const(lut, "i16")])
    rank = x.type.rank
    rounded = b.op("tosa.arithmetic_right_shift", [table, b.const(np.full((1,) * rank, 7), "i32")], {"round": True})
    return rounded, int(outputs.min()), int(outputs.max())


def _softmax_int16(ctx, op, x_tensor, out):
    s_in, zp_in = per_tensor(ctx, x_tensor)
    s_out, zp_out = per_tensor(ctx, out)
    delta = abs(np.float32(s_out) - np.float32(1.0 / 32768))
    if zp_in or zp_out or delta > np.float32(0.001) * np.float32(1.0 / 32768):
        raise ctx.error(f"int16 SOFTMAX needs zero points 0 and output scale 1/32768, got {x_tensor.describe()}, "
                        f"{out.describe()} (LiteRT rejects the model)")
    beta = float(np.float32(op.options.get("beta", 0.0)))
    # SoftmaxPrepare: input->params.scale * params->beta in float, then / (10.0 / 65535.0) in double.
    real = float(np.float32(np.float32(s_in) * np.float32(beta))) / (10.0 / 65535.0)
    multiplier, shift = quantized_multiplier(ctx, real, "SOFTMAX input multiplier")
    shape = tuple(x_tensor.shape)
    if not shape:
        raise ctx.error("SOFTMAX needs an input of rank 1 or more (LiteRT rejects the model)")
    depth, rows = shape[-1], int(np.prod(shape[:-1], dtype=np.int64))
    exp_lut, reciprocal_lut = softmax_int16_luts()

    b = ctx.builder
    r = RowOps(b)
    x = b.reshape(ctx.value(x_tensor), (rows, depth))
    row_max = b.op("tosa.reduce_max", [x], {"axis": 1})
    diff = r.sub(b.cast(x, "i32"), b.cast(row_max, "i32"))  # in [-65535, 0]
    scaled = rescale_exact(ctx, diff, multiplier, shift, (-65535, 0), 0, 0, "i32", "SOFTMAX input multiplier")
    scaled_low = scaled_range((-65535, 0), multiplier, shift)[0]
    sym = from_i32(ctx, r.add(scaled, r.k(32767)), (scaled_low + 32767, 32768), 0, "int16")
    exps, exp_low, exp_high = _table_lookup(ctx, sym, exp_lut)
    if exp_low < 0 or depth * exp_high > INT32_MAX:
        raise ctx.error(f"the int32 sum of {depth} exp values in [{exp_low}, {exp_high}] can overflow (LiteRT's "
                        f"sum wraps)")
    # The row maximum has diff 0: its exp is the LUT at 32767, which must be positive for the CLZ below.
    if int(lut_lookup_int16(np.array([32767]), exp_lut)[0]) <= 0:
        raise ctx.error("the exp LUT is not positive at 0")
    total = b.op("tosa.reduce_sum", [exps], {"axis": 1})
    headroom_plus_one = r.op("tosa.clz", total)
    shifted_sum = r.rounding_shr(r.shl(total, r.sub(headroom_plus_one, r.k(1))), r.k(14))
    recip_index = from_i32(ctx, r.sub(shifted_sum, r.k((1 << 15) + (1 << 16))), (-32768, 32768), 0, "int16")
    recips, _, _ = _table_lookup(ctx, recip_index, reciprocal_lut)
    # (exp * recip + 2^(right_shift - 1)) >> right_shift with right_shift = 31 - headroom_plus_one >= 14.
    right_shift = r.sub(r.k(31), headroom_plus_one)
    result = r.rounding_shr(b.mul_shift(exps, recips, 0), right_shift)
    ctx.set_output(b.reshape(from_i32(ctx, result, (-(1 << 15), 1 << 15), 0, "int16"), shape))
