"""Unary int8 activations: RELU, RELU6, LEAKY_RELU, LOGISTIC, TANH, HARD_SWISH.

RELU and RELU6 are one RESCALE and one CLAMP, the same two steps as LiteRT's ReluX. The others are TOSA TABLEs:
each reference kernel maps one int8 value to one int8 value, so evaluating a faithful port of it
(tosaic.quant.tables) on all 256 inputs at import time reproduces it exactly, whatever arithmetic it uses
inside (float32 LUTs for LOGISTIC/TANH, int16 fixed point for HARD_SWISH, two multipliers for LEAKY_RELU).
"""

from __future__ import annotations

import math

import numpy as np

from tosaic.importers.tflite.common import tflite_round
from tosaic.importers.tflite.fixed_point import int8_range, per_tensor, requantize
from tosaic.importers.tflite.registry import legalize
from tosaic.quant import hard_swish_int8, int8_table, leaky_relu_int8, logistic_int8, tanh_int8


def _relu_x(ctx, act_min: float, act_max: float):
    """activations.cc QuantizedReluX<int8_t> + reference_ops::ReluX:

        out = clamp(zp_o + MultiplyByQuantizedMultiplier(q - zp_in, m, e), q_min, q_max)

    (m, e) quantize `s_in / s_o` (float32 division, ReluPrepare). The bounds are
    `max(-128, zp_o + (int)roundf(act_min / s_o))` and `min(127, zp_o + (int)roundf(act_max / s_o))` (127 for
    an infinite act_max). RESCALE saturates to int8 before the CLAMP; since [q_min, q_max] lies inside int8,
    clamping the saturated value equals clamping the exact one.
    """
    x_tensor, out = ctx.input(0), ctx.output()
    (s_in, zp_in), (so, zpo) = per_tensor(ctx, x_tensor), per_tensor(ctx, out)
    real = float(np.float32(s_in) / np.float32(so))
    result = requantize(ctx, ctx.value(x_tensor), real, int8_range(zp_in), zp_in, zpo, "i8",
                        f"{ctx.op.opcode} multiplier")
    low = max(-128, zpo + _rounded_quotient(ctx, act_min, so))
    high = 127 if math.isinf(act_max) else min(127, zpo + _rounded_quotient(ctx, act_max, so))
    ctx.set_output(ctx.builder.clamp(result, low, high))


def _rounded_quotient(ctx, bound: float, scale: float) -> int:
    """`static_cast<int32>(roundf(bound / scale))` in float32; out of int32 range the C++ is undefined."""
    rounded = tflite_round(np.float32(bound) / np.float32(scale))
    if not -(1 << 31) <= rounded < (1 << 31):
        raise ctx.error(f"activation bound {bound} / output scale {scale} overflows int32 in QuantizedReluX")
    return rounded


@legalize("RELU", types=("int8",))
def relu(ctx, op):
    """ReluEval: QuantizedReluX<int8_t>(0, +inf)."""
    _relu_x(ctx, 0.0, math.inf)


@legalize("RELU6", types=("int8",))
def relu6(ctx, op):
    """Relu6Eval: QuantizedReluX<int8_t>(0, 6)."""
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


@legalize("LEAKY_RELU", types=("int8",))
def leaky_relu(ctx, op):
    """LeakyReluPrepare + reference_ops::QuantizeLeakyRelu: identity and alpha multipliers by sign of q - zp."""
    _table(ctx, leaky_relu_int8, float(op.options["alpha"]))


@legalize("LOGISTIC", types=("int8",))
def logistic(ctx, op):
    """SigmoidPrepare/SigmoidEval (reference): the float32 LUT of 1 / (1 + exp(-x)); output scale 1/256."""
    _table(ctx, logistic_int8)


@legalize("TANH", types=("int8",))
def tanh(ctx, op):
    """TanhPrepare/TanhEval (reference): the float32 LUT of tanh(x)."""
    _table(ctx, tanh_int8)


@legalize("HARD_SWISH", types=("int8",))
def hard_swish(ctx, op):
    """HardSwishPrepare + reference_ops::HardSwish: int16 fixed point with float32-derived multipliers."""
    _table(ctx, hard_swish_int8)
