"""Unary activations: RELU, RELU6, LEAKY_RELU, LOGISTIC, TANH (int8 and int16), HARD_SWISH (int8).

RELU and RELU6 are one RESCALE and one CLAMP, the same two steps as LiteRT's ReluX. The other int8 ops are TOSA
TABLEs: each reference kernel maps one int8 value to one int8 value, so evaluating a faithful port of it
(tosaic.quant.tables) on all 256 inputs at import time reproduces it exactly, whatever arithmetic it uses
inside (float32 LUTs for LOGISTIC/TANH, int16 fixed point for HARD_SWISH, two multipliers for LEAKY_RELU).

int16 (zero points 0, as LiteRT requires): LEAKY_RELU is its two RESCALEs and a SELECT. LOGISTIC and TANH run
reference_integer_ops::Logistic / Tanh (integer_ops/logistic.h, tanh.h): the input is rescaled by
`(x * M + round) >> L` (M, L from the input scale, or 3 << L for power-of-two scales), then a 256-entry
sigmoid table is interpolated on 9 (LOGISTIC) or 8 (TANH) fractional bits of |x|, then rounded. Those knots
are not TOSA TABLE's (513 entries, 7 fractional bits of x itself), so the kernel's port is evaluated on all
65536 inputs at import time and looked up with a GATHER from that 65536-entry table (common.lookup_int16):
exact for every input by construction. HARD_SWISH has no int16 kernel in LiteRT.
"""

from __future__ import annotations

import math

import numpy as np

from tosaic.importers.tflite.common import lookup_int16, tflite_round
from tosaic.importers.tflite.fixed_point import (
    STORAGE,
    TYPE_RANGE,
    checked_log2,
    from_i32,
    per_tensor,
    quantized_multiplier,
    quantized_range,
    requantize,
    rescale_exact,
    scaled_range,
    to_i32,
)
from tosaic.importers.tflite.registry import legalize
from tosaic.quant import hard_swish_int8, int8_table, leaky_relu_int8, logistic_int8, tanh_int8


def _relu_x(ctx, act_min: float, act_max: float):
    """activations.cc QuantizedReluX<int8_t / int16_t> + reference_ops::ReluX:

        out = clamp(zp_o + MultiplyByQuantizedMultiplier(q - zp_in, m, e), q_min, q_max)

    (m, e) quantize `s_in / s_o` (float32 division, ReluPrepare). The bounds are
    `max(-128, zp_o + (int)roundf(act_min / s_o))` and `min(127, zp_o + (int)roundf(act_max / s_o))` (127 for
    an infinite act_max); int16 the same with its own limits. RESCALE saturates to the type before the CLAMP;
    since [q_min, q_max] lies inside it, clamping the saturated value equals clamping the exact one.
    """
    x_tensor, out = ctx.input(0), ctx.output()
    kind = _check_types(ctx, x_tensor, out)
    (s_in, zp_in), (so, zpo) = per_tensor(ctx, x_tensor), per_tensor(ctx, out)
    real = float(np.float32(s_in) / np.float32(so))
    result = requantize(ctx, ctx.value(x_tensor), real, quantized_range(kind, zp_in), zp_in, zpo, STORAGE[kind],
                        f"{ctx.op.opcode} multiplier")
    type_low, type_high = TYPE_RANGE[kind]
    low = max(type_low, zpo + _rounded_quotient(ctx, act_min, so))
    high = type_high if math.isinf(act_max) else min(type_high, zpo + _rounded_quotient(ctx, act_max, so))
    if low > high:
        raise ctx.error(f"activation range [{low}, {high}] is empty")
    ctx.set_output(ctx.builder.clamp(result, low, high))


def _check_types(ctx, x_tensor, out) -> str:
    """'int8' or 'int16'; int16 needs zero points 0 (LiteRT's Prepare rejects anything else)."""
    kind = x_tensor.dtype
    if kind not in ("int8", "int16") or out.dtype != kind:
        raise ctx.error(f"{ctx.op.opcode} needs int8 or int16 input and output of one type, got "
                        f"{x_tensor.describe()}, {out.describe()}")
    if kind == "int16" and (per_tensor(ctx, x_tensor)[1] or per_tensor(ctx, out)[1]):
        raise ctx.error(f"int16 {ctx.op.opcode} needs zero points 0 (LiteRT rejects the model)")
    return kind


def _rounded_quotient(ctx, bound: float, scale: float) -> int:
    """`static_cast<int32>(roundf(bound / scale))` in float32; out of int32 range the C++ is undefined."""
    rounded = tflite_round(np.float32(bound) / np.float32(scale))
    if not -(1 << 31) <= rounded < (1 << 31):
        raise ctx.error(f"activation bound {bound} / output scale {scale} overflows int32 in QuantizedReluX")
    return rounded


@legalize("RELU", types=("int8", "int16"))
def relu(ctx, op):
    """ReluEval: QuantizedReluX<T>(0, +inf)."""
    _relu_x(ctx, 0.0, math.inf)


@legalize("RELU6", types=("int8", "int16"))
def relu6(ctx, op):
    """Relu6Eval: QuantizedReluX<T>(0, 6)."""
    _relu_x(ctx, 0.0, 6.0)


def _table(ctx, kernel, *params):
    """TABLE holding `kernel(q, *params, s_in, zp_in, s_o, zp_o)` for every int8 q."""
    x_tensor, out = ctx.input(0), ctx.output()
    (s_in, zp_in), (so, zpo) = per_tensor(ctx, x_tensor), per_tensor(ctx, out)
    try:
        table = int8_table(lambda q: kernel(q, *params, s_in, zp_in, so, zpo))
    except ValueError as error:  # the port refuses what the kernel's Prepare refuses or leaves undefined
        raise ctx.error(str(error)) from None
    b = ctx.builder
    ctx.set_output(b.op("tosa.table", [ctx.value(x_tensor), b.const(table, "i8")]))


@legalize("LEAKY_RELU", types=("int8", "int16"))
def leaky_relu(ctx, op):
    """LeakyReluPrepare + reference_ops::QuantizeLeakyRelu: identity and alpha multipliers by sign of q - zp."""
    alpha = float(op.options["alpha"])
    if _check_types(ctx, ctx.input(0), ctx.output()) == "int8":
        _table(ctx, leaky_relu_int8, alpha)
        return
    _leaky_relu_int16(ctx, alpha)


def _leaky_relu_int16(ctx, alpha: float):
    """QuantizeLeakyRelu<int16_t>: `v >= 0 ? MBQM(v, m_id, e_id) : sign(m_a) * MBQM(v, |m_a|, e_a)`, clamped to
    int16, with `m_a` from `s_in * alpha / s_o` and `m_id` from `s_in / s_o` (float32 arithmetic, then
    QuantizeMultiplier, which keeps the sign of a negative alpha)."""
    x_tensor, out = ctx.input(0), ctx.output()
    (s_in, _), (so, _) = per_tensor(ctx, x_tensor), per_tensor(ctx, out)
    f32 = np.float32
    x = ctx.value(x_tensor)
    value_range = quantized_range("int16", 0)
    identity = requantize(ctx, x, float(f32(s_in) / f32(so)), value_range, 0, 0, "i16", "LEAKY_RELU identity")
    alpha_real = float(f32(f32(s_in) * f32(alpha)) / f32(so))
    if not np.isfinite(alpha_real):
        raise ctx.error(f"LEAKY_RELU alpha multiplier {alpha_real} is not finite")
    multiplier, shift = quantized_multiplier(ctx, abs(alpha_real), "LEAKY_RELU alpha")
    b = ctx.builder
    if alpha_real < 0:  # the kernel negates MBQM(v, |m|, e) of the magnitude
        scaled = rescale_exact(ctx, x, multiplier, shift, value_range, 0, 0, "i32", "LEAKY_RELU alpha")
        bounds = scaled_range(value_range, multiplier, shift)
        negated = b.op("tosa.sub", [b.const(np.zeros((1,) * x.type.rank), "i32"), scaled])
        scaled = from_i32(ctx, negated, (-bounds[1], -bounds[0]), 0, "int16")
    else:
        scaled = rescale_exact(ctx, x, multiplier, shift, value_range, 0, 0, "i16", "LEAKY_RELU alpha")
    non_negative = b.op("tosa.greater_equal", [to_i32(ctx, x), b.const(np.zeros((1,) * x.type.rank), "i32")])
    ctx.set_output(b.op("tosa.select", [non_negative, identity, scaled]))


@legalize("LOGISTIC", types=("int8", "int16"))
def logistic(ctx, op):
    """SigmoidPrepare/SigmoidEval (reference): int8, the float32 LUT of 1 / (1 + exp(-x)) with output scale
    1/256; int16, reference_integer_ops::Logistic (see the module docstring)."""
    if _check_types(ctx, ctx.input(0), ctx.output()) == "int8":
        _table(ctx, logistic_int8)
        return
    _int16_unary(ctx, logistic_int16, *_int16_sigmoid_params(ctx, tanh=False))


@legalize("TANH", types=("int8", "int16"))
def tanh(ctx, op):
    """TanhPrepare/TanhEval (reference): int8, the float32 LUT of tanh(x); int16,
    reference_integer_ops::Tanh (see the module docstring)."""
    if _check_types(ctx, ctx.input(0), ctx.output()) == "int8":
        _table(ctx, tanh_int8)
        return
    _int16_unary(ctx, tanh_int16, *_int16_sigmoid_params(ctx, tanh=True))


def _int16_unary(ctx, kernel, *params):
    """The int16 kernel's port evaluated on all 65536 inputs, looked up with one GATHER."""
    try:
        values = kernel(np.arange(-32768, 32768), *params)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    ctx.set_output(lookup_int16(ctx, ctx.value(ctx.input(0)), values))


# ------------------------------------------------------------------------------- int16 LOGISTIC, TANH

# internal/common.h sigmoid_table_uint16: sigmoid(i / 24) in 0.16 format, shared by int16 LOGISTIC and TANH.
SIGMOID_TABLE_UINT16 = np.array([
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064,
    42688, 43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464,
    50942, 51409, 51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503,
    56823, 57133, 57433, 57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370,
    60565, 60753, 60935, 61110, 61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666,
    62778, 62886, 62990, 63090, 63186, 63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968,
    64030, 64090, 64148, 64204, 64257, 64308, 64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687,
    64721, 64754, 64786, 64816, 64845, 64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079,
    65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258, 65269, 65280, 65291,
    65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367, 65374, 65381, 65387, 65393, 65399, 65404,
    65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465,
    65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491, 65493, 65495, 65497, 65498,
    65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513, 65514, 65515, 65516,
    65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524, 65525, 65525,
    65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530, 65530,
    65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
    65535], dtype=np.int64)


def _int16_sigmoid_params(ctx, tanh: bool) -> tuple[int, int]:
    """SigmoidPrepare / TanhPrepare for int16: (input_multiplier, input_left_shift). Power-of-two input scales
    (CheckedLog2) with left shift 0 (or 1 for TANH) keep multiplier 0 (the kernel then uses 3 << shift);
    others get `multiplier = s_in * 4096 * 3` (double), doubled with the shift until above 32767 / 2 (at most
    31 shifts), truncated. The output scale must be 2^-15 (LOGISTIC: exactly 1 / 32768)."""
    x_tensor, out = ctx.input(0), ctx.output()
    s_in, s_out = per_tensor(ctx, x_tensor)[0], per_tensor(ctx, out)[0]
    if checked_log2(s_out) != -15 or (not tanh and float(np.float32(s_out)) != 1.0 / 32768):
        raise ctx.error(f"int16 {ctx.op.opcode} needs output scale 2^-15, got {s_out} (LiteRT rejects the model)")
    log2 = checked_log2(s_in)
    left_shift = 12 + log2 if log2 is not None else None
    if left_shift in ((0, 1) if tanh else (0,)):
        return 0, left_shift
    multiplier = float(np.float32(s_in)) * 4096.0 * 3.0
    left_shift = 0
    while multiplier <= 32767.0 / 2.0 and left_shift <= 30:
        left_shift += 1
        multiplier *= 2.0
    if not multiplier < 2.0**31:
        raise ctx.error(f"int16 {ctx.op.opcode} input scale {s_in} makes the kernel's int32 multiplier overflow")
    return int(multiplier), left_shift


def _rescaled_input(x: np.ndarray, multiplier: int, left_shift: int) -> np.ndarray:
    """The kernels' `((x * M + round) >> L)` in int32 (power-of-two case: M = 3 << L, L = 0)."""
    if multiplier == 0:
        multiplier, left_shift = 3 << left_shift, 0
    rounding = 1 << (left_shift - 1) if left_shift > 0 else 0
    product = x.astype(np.int64) * multiplier + rounding
    if np.abs(product).max() >= 2**31:
        raise ValueError("the kernel's int32 input rescaling overflows")
    return product >> left_shift


def logistic_int16(x, multiplier: int, left_shift: int) -> np.ndarray:
    """reference_integer_ops::Logistic(int16): interpolation of sigmoid_table_uint16 on |input| with 9
    fractional bits, `(result + 2^9) >> 10` or its mirror for negative inputs, as uint32 arithmetic."""
    data = _rescaled_input(np.asarray(x), multiplier, left_shift)
    magnitude = np.abs(data)
    uh = magnitude >> 9
    inside = uh < 255
    index = np.minimum(uh, 254)
    ua, ub = SIGMOID_TABLE_UINT16[index], SIGMOID_TABLE_UINT16[index + 1]
    ut = magnitude & 0x1FF
    result = np.where(inside, (ua << 9) + ut * (ub - ua), 0x7FFF << 10)
    result = np.where(data >= 0, result + (1 << 9), (1 << 25) - result + (1 << 9) - 1) & 0xFFFFFFFF
    return ((result >> 10) & 0xFFFF).astype(np.uint16).view(np.int16).astype(np.int64)


def tanh_int16(x, multiplier: int, left_shift: int) -> np.ndarray:
    """reference_integer_ops::Tanh(int16): interpolation of sigmoid_table_uint16 on |input| with 8 fractional
    bits, then `2 * sigmoid - 1` around zero and `>> 8` in int32."""
    data = _rescaled_input(np.asarray(x), multiplier, left_shift)
    magnitude = np.abs(data)
    uh = magnitude >> 8
    inside = uh < 255
    index = np.minimum(uh, 254)
    ua, ub = SIGMOID_TABLE_UINT16[index], SIGMOID_TABLE_UINT16[index + 1]
    ut = magnitude & 0xFF
    result = np.where(inside, ((ua << 8) + ut * (ub - ua)) & 0xFFFFFFFF, 0xFFFF << 8)
    result = np.where(data >= 0, result - (1 << 23) + (1 << 7), -result + (1 << 23) + (1 << 7) - 1)
    return ((result >> 8) & 0xFFFF).astype(np.uint16).view(np.int16).astype(np.int64)


@legalize("HARD_SWISH", types=("int8",))
def hard_swish(ctx, op):
    """HardSwishPrepare + reference_ops::HardSwish: int16 fixed point with float32-derived multipliers."""
    _table(ctx, hard_swish_int8)
