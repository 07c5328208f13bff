"""Binary elementwise ops on int8: ADD, SUB, MUL, MAXIMUM, MINIMUM, PRELU.

TOSA's ADD, SUB, MUL, MAXIMUM, MINIMUM, GREATER_EQUAL compute on i32, so int8 operands are RESCALEd to i32 first
and the result RESCALEd back. TOSA broadcasting needs equal ranks: TFLite aligns shapes at their trailing
dimensions (numpy rules), so the operand of lower rank is reshaped with leading 1s.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.common import clamp_to_activation
from tosaic.importers.tflite.fixed_point import (
    int8_range,
    per_tensor,
    product_range,
    quantized_multiplier_smaller_than_one,
    requantize,
    rescale_exact,
    widen,
)
from tosaic.importers.tflite.registry import legalize
from tosaic.ir import Value

# ADD/SUB: int8 inputs are shifted left by 20 bits before their multipliers (kernels add.cc and sub.cc).
LEFT_SHIFT = 20


def _operands(ctx):
    """The op's two input tensors and TOSA values, the lower-rank value reshaped to the higher rank."""
    a, b = ctx.input(0), ctx.input(1)
    x, y = ctx.value(a), ctx.value(b)
    rank = max(x.type.rank, y.type.rank)
    return a, b, _with_rank(ctx, x, rank), _with_rank(ctx, y, rank)


def _with_rank(ctx, x: Value, rank: int) -> Value:
    return ctx.builder.reshape(x, (1,) * (rank - x.type.rank) + x.type.shape)


def _add_or_sub(ctx, op, tosa_op: str):
    """reference_integer_ops::AddFunc and reference_ops::SubElementwise / BroadcastQuantSubSlow for int8:

        shifted_i = (q_i - zp_i) << 20
        scaled_i  = MultiplyByQuantizedMultiplierSmallerThanOneExp(shifted_i, m_i, e_i)
        out       = clamp(MultiplyByQuantizedMultiplierSmallerThanOneExp(scaled_1 -+ scaled_2, m_o, e_o) + zp_o)

    with m_i from `s_i / (2 max(s_1, s_2))` and m_o from `2 max(s_1, s_2) / (2^20 s_o)`, all in double as in
    Prepare. The `<< 20` is its own exact RESCALE (multiplier 2^30, shift 10): folding it into the input
    multiplier would move the first rounding of the double-rounding multiply and change results (TF PR #59859).
    """
    a, b, x, y = _operands(ctx)
    out = ctx.output()
    (s1, zp1), (s2, zp2), (so, zpo) = per_tensor(ctx, a), per_tensor(ctx, b), per_tensor(ctx, out)
    twice_max_input_scale = 2 * max(s1, s2)
    name = op.opcode
    # SUB's Prepare takes QuantizeMultiplierGreaterThanOne for an output multiplier above 1 but its kernel still
    # calls MultiplyByQuantizedMultiplierSmallerThanOneExp, i.e. RoundingDivideByPOT with a negative exponent
    # (undefined behaviour); ADD's Prepare aborts. Both are refused by the smaller-than-one check.
    m_out, shift_out = quantized_multiplier_smaller_than_one(
        ctx, twice_max_input_scale / ((1 << LEFT_SHIFT) * so), f"{name} output multiplier")
    scaled = []
    for value, scale, zp, which in ((x, s1, zp1, "input 1"), (y, s2, zp2, "input 2")):
        m, shift = quantized_multiplier_smaller_than_one(ctx, scale / twice_max_input_scale, f"{name} {which}")
        low, high = int8_range(zp)
        shifted = rescale_exact(ctx, value, 1 << 30, 30 - LEFT_SHIFT, (low, high), zp, 0, "i32",
                                f"{name} {which} << {LEFT_SHIFT}")
        scaled.append(rescale_exact(ctx, shifted, m, shift, (low << LEFT_SHIFT, high << LEFT_SHIFT), 0, 0, "i32",
                                    f"{name} {which} multiplier"))
    # A multiplier below 1 never grows a value, so the sum or difference stays within 2 * 255 * 2^20 < 2^29.
    raw = ctx.builder.op(tosa_op, scaled)
    bound = 2 * (255 << LEFT_SHIFT)
    result = rescale_exact(ctx, raw, m_out, shift_out, (-bound, bound), 0, zpo, "i8", f"{name} output multiplier")
    ctx.set_output(clamp_to_activation(ctx, result, out, op.options.get("fused_activation_function", 0)))


@legalize("ADD", types=("int8",))
def add(ctx, op):
    """reference_integer_ops::Add / BroadcastAdd6DSlow (kernels/add.cc, int8 general path)."""
    _add_or_sub(ctx, op, "tosa.add")


@legalize("SUB", types=("int8",))
def sub(ctx, op):
    """reference_ops::Sub / BroadcastQuantSubSlow (kernels/sub.cc, int8 path)."""
    _add_or_sub(ctx, op, "tosa.sub")


@legalize("MUL", types=("int8",))
def mul(ctx, op):
    """reference_integer_ops::MulElementwise / BroadcastMul6DSlow (kernels/mul.cc):

        out = clamp(zp_o + MultiplyByQuantizedMultiplier((q_1 - zp_1) * (q_2 - zp_2), m, e))

    with (m, e) = QuantizeMultiplier(s_1 * s_2 / s_o), where Prepare evaluates `s_1 * s_2 / s_o` in float32
    (the tensors' float scales) and widens only the result to double.
    """
    a, b, x, y = _operands(ctx)
    out = ctx.output()
    (s1, zp1), (s2, zp2), (so, zpo) = per_tensor(ctx, a), per_tensor(ctx, b), per_tensor(ctx, out)
    real = float(np.float32(np.float32(s1) * np.float32(s2)) / np.float32(so))
    product = ctx.builder.mul_shift(widen(ctx, x, zp1), widen(ctx, y, zp2), 0)
    result = requantize(ctx, product, real, product_range(int8_range(zp1), int8_range(zp2)), 0, zpo, "i8",
                        "MUL output multiplier")
    ctx.set_output(clamp_to_activation(ctx, result, out, op.options.get("fused_activation_function", 0)))


def _maximum_or_minimum(ctx, tosa_op: str):
    """reference_ops::MaximumMinimumBroadcastSlow on int8: `el1 > el2 ? el1 : el2` (or `<`) on the raw stored
    values. The kernel never reads scales or zero points (the converter gives all three tensors the same ones),
    so neither does this: the raw values are widened to i32 (TOSA MAXIMUM/MINIMUM are i32-only), compared,
    and narrowed back, all exactly."""
    _, _, x, y = _operands(ctx)
    b = ctx.builder
    result = b.op(tosa_op, [b.cast(x, "i32"), b.cast(y, "i32")])
    ctx.set_output(b.cast(result, "i8"))


@legalize("MAXIMUM", types=("int8",))
def maximum(ctx, op):
    """MAXIMUM (kernels/maximum_minimum.cc, reference kernel)."""
    _maximum_or_minimum(ctx, "tosa.maximum")


@legalize("MINIMUM", types=("int8",))
def minimum(ctx, op):
    """MINIMUM (kernels/maximum_minimum.cc, reference kernel)."""
    _maximum_or_minimum(ctx, "tosa.minimum")


@legalize("PRELU", types=("int8",))
def prelu(ctx, op):
    """reference_ops::Prelu / BroadcastPrelu4DSlow (kernels/activations.cc PreluPrepare/PreluEval):

        v   = q - zp_in
        out = clamp_int8(zp_o + (v >= 0 ? MBQM(v, m_1, e_1) : MBQM(v * (alpha - zp_alpha), m_2, e_2)))

    with m_1 from `s_in / s_o` and m_2 from `s_in * s_alpha / s_o`, each evaluated in float32. Both branches are
    computed for every element (each RESCALE is exact on all values it can see) and SELECT picks one.
    """
    x_tensor, alpha_tensor = ctx.input(0), ctx.input(1)
    out = ctx.output()
    (s_in, zp_in), (s_alpha, zp_alpha), (so, zpo) = (per_tensor(ctx, x_tensor), per_tensor(ctx, alpha_tensor),
                                                    per_tensor(ctx, out))
    x = ctx.value(x_tensor)
    if x.type.shape != out.shape:
        raise ctx.error(f"input {x_tensor.describe()} and output {out.describe()} differ in shape")
    alpha = _with_rank(ctx, ctx.value(alpha_tensor), x.type.rank)
    b = ctx.builder
    value = widen(ctx, x, zp_in)
    value_range = int8_range(zp_in)
    real_1 = float(np.float32(s_in) / np.float32(so))
    real_2 = float(np.float32(np.float32(s_in) * np.float32(s_alpha)) / np.float32(so))
    identity = requantize(ctx, value, real_1, value_range, 0, zpo, "i8", "PRELU multiplier 1")
    product = b.mul_shift(value, widen(ctx, alpha, zp_alpha), 0)
    scaled = requantize(ctx, product, real_2, product_range(value_range, int8_range(zp_alpha)), 0, zpo, "i8",
                        "PRELU multiplier 2")
    non_negative = b.op("tosa.greater_equal", [value, b.const(np.zeros((1,) * x.type.rank), "i32")])
    ctx.set_output(b.op("tosa.select", [non_negative, identity, scaled]))
