"""Convolutions and matrix products: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED (int8, and 16x8: int16
activations with int8 weights).

Each becomes a TOSA CONV2D / DEPTHWISE_CONV2D, which yields the raw accumulator
`sum (x - input_zp) * (w - weight_zp) + bias` with padded taps contributing 0 (exactly what the LiteRT
reference kernels accumulate; i32 for int8, i48 for 16x8), then a RESCALE to the output type and a CLAMP for
the fused activation.

The requantization differs between the kernels:
- CONV_2D and DEPTHWISE_CONV_2D (reference_integer_ops::ConvPerChannel / DepthwiseConvPerChannel) use
  MultiplyByQuantizedMultiplier with per-channel (multiplier, shift) from QuantizeMultiplier of the double
  `s_in * s_w[c] / s_out` (PopulateConvolutionQuantizationParams): RESCALE with DOUBLE_ROUND.
- FULLY_CONNECTED (reference_integer_ops::FullyConnected / FullyConnectedPerChannel, float variants, the
  reference path since LiteRT's "Make the fully_connected ref kernel do requant in float", April 2025)
  computes `round(double(acc) * (double(s_in) * double(s_w) / double(s_out)))` (round half away from
  zero). `exact_float_requant` finds a RESCALE multiplier and shift that give the same integer for every
  accumulator the layer can produce, or reports that none exists.

16x8 (int16 input and output, zero points 0, int8 filter, int64 bias; kernels/conv.cc
EvalQuantizedPerChannel16x8, depthwise_conv.cc, fully_connected.cc FullyConnectedInt16 /
FullyConnectedPerChannelInt16, all on the reference path under BUILTIN_REF):
- CONV_2D and DEPTHWISE_CONV_2D accumulate in int64 and call `MultiplyByQuantizedMultiplier(int64_t, m, e)`,
  which rounds m to 16 bits and shifts once: exactly a RESCALE from the i48 accumulator with scale32 = false
  (fixed_point.rescale_48). With the option quantized_bias_type = INT32, CONV_2D accumulates in int32 with an
  int32 bias and calls the 32-bit (double-rounding) MultiplyByQuantizedMultiplier instead: the i48 accumulator
  is narrowed to i32 (exact once the int32 range is proven) and RESCALEd with DOUBLE_ROUND. Without the option,
  LiteRT reads the bias as int64, so an int32 bias is refused.
- FULLY_CONNECTED requantizes in double like the int8 kernel. Its accumulator is narrowed to i32 (proven to
  fit from the weights and bias) and clamped to where the output saturates. With 65535 output steps the ratios
  that place every step like the double product lie in an interval ~2^-39 wide (relative): a 31-bit RESCALE
  multiplier usually cannot hit it, so `wide_requant` multiplies by a ~62-bit M / 2^K exactly with i32 MULs
  (TOSA's MUL gives the low 32 bits of a product with shift 0 and its rounded high part with a shift).
  Where the accumulator can leave int32, the input is split into its high byte and low byte: two i8 x i8
  CONV2Ds give `acc = 256 * hi + lo` exactly in i32 pieces; `hi` is clamped where every accumulator beyond
  the clamp saturates the output anyway, which brings `acc` inside int32 without changing any output.
  Refused: layers whose saturation points lie beyond int32 while their accumulator can too, and the rare
  scales for which the double-rounded product places steps no exact ratio reproduces.
Every accumulator range is proven per output channel at import time from the constant weights and bias.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from tosaic.importers.tflite.common import (
    activation_range,
    check_bias,
    check_output_shape,
    check_window,
    clamp_to_activation,
    fit_windows,
    same_or_valid_padding,
)
from tosaic.importers.tflite.fixed_point import (
    STORAGE,
    from_i32,
    narrow_48,
    per_tensor,
    rescale_48,
    rescale_channels,
)
from tosaic.importers.tflite.registry import legalize
from tosaic.quant import quantize_multiplier, quantize_multiplier_tosa

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT48_LIMIT = 1 << 47
BEYOND_ANY_ACCUMULATOR = 1 << 52  # past every i48 accumulator, and integers are still exact doubles
# Accumulator and bias element types; the input's (value - zero point) range for 16x8 (zero point 0).
ACCUMULATOR = {"int8": "i32", "int16": "i48"}
INT16_INPUT = (-32768, 32767)
# FullyConnectedOptions / Conv2DOptions quantized_bias_type (a TensorType): FLOAT32 (0) means unset.
BIAS_FLOAT32, BIAS_INT32, BIAS_INT64 = 0, 2, 4


# ------------------------------------------------------------------------------------------ helpers


def _weights(ctx, t, layout):
    """Weights in a TOSA layout: a constant rearranged at import time, or a runtime value reshaped.

    `layout(array)` maps the TFLite array to the TOSA one; it must be a pure reshape for runtime values.
    """
    if t.data is not None:
        return ctx.builder.const(np.ascontiguousarray(layout(t.data)), "i8")
    shape = layout(np.zeros(t.shape, np.int8)).shape
    return ctx.builder.reshape(ctx.value(t), shape)


def _bias(ctx, bias, channels, acc="i32"):
    """The bias operand (i32, or i48 for 16x8); a zero when the op has no bias (the kernels then add nothing)."""
    if bias is None:
        return ctx.builder.const(np.zeros(1, np.int64), acc)
    if acc == "i48":
        if bias.data is None:
            raise ctx.error(f"a 16x8 bias must be constant, got {bias.describe()}")
        values = bias.data.reshape(channels).astype(np.int64)
        if values.size and np.abs(values).max() >= INT48_LIMIT:
            raise ctx.error(f"bias {bias.describe()} holds values beyond int48 (TOSA's 16x8 bias type)")
        return ctx.builder.const(values, "i48")
    if bias.dtype != "int32":
        raise ctx.error(f"bias {bias.describe()} must be int32 for int8 inputs")
    if bias.data is not None:
        return ctx.builder.const(bias.data.reshape(channels).astype(np.int32), "i32")
    return ctx.builder.reshape(ctx.value(bias), (channels,))


def _bias_values(bias, channels) -> np.ndarray | None:
    return None if bias is None or bias.data is None else bias.data.reshape(channels).astype(np.int64)


def accumulator_bounds(filters: np.ndarray | None, depth: int, channels: int, x_range, bias, weight_zp: int = 0,
                       weight_range=(-128, 127)):
    """Per output channel, the least and greatest `sum_k (x_k) * (w_ck - weight_zp) + bias_c` over every input
    with x_k in x_range (padded taps contribute 0, inside the same bounds), and the same without the bias
    (the kernel's partial sums). `filters` is [channels, depth] or None for runtime weights (then any int8)."""
    x_low, x_high = x_range
    if filters is not None:
        w = filters.astype(np.int64).reshape(channels, depth) - weight_zp
        low = np.minimum(w * x_low, w * x_high).sum(axis=1)
        high = np.maximum(w * x_low, w * x_high).sum(axis=1)
    else:
        extreme = max(abs(weight_range[0] - weight_zp), abs(weight_range[1] - weight_zp))
        extreme *= max(abs(x_low), abs(x_high)) * depth
        low, high = np.full(channels, -extreme, dtype=np.int64), np.full(channels, extreme, dtype=np.int64)
    offset = _bias_values(bias, channels)
    if bias is not None and offset is None:  # a runtime int32 bias
        offset_low, offset_high = np.full(channels, INT32_MIN), np.full(channels, INT32_MAX)
    else:
        offset_low = offset_high = np.zeros(channels, np.int64) if offset is None else offset
    return low + offset_low, high + offset_high, low, high


def _filter_scales(ctx, w, channels) -> np.ndarray:
    """Per-channel filter scales (float32), a per-tensor scale broadcast along the output channels."""
    if not w.quantized:
        raise ctx.error(f"filter {w.describe()} is not quantized")
    scales = w.scale.astype(np.float32)
    if scales.size == 1:
        return np.repeat(scales, channels)
    if scales.size != channels:
        raise ctx.error(f"filter {w.describe()} has {scales.size} scales for {channels} output channels")
    return scales


def _conv_multipliers(ctx, x, w, y, channels):
    """PopulateConvolutionQuantizationParams: QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out)),
    as TOSA (multiplier, shift) per output channel; one pair when every channel has the same."""
    s_in, _ = per_tensor(ctx, x)
    s_out, _ = per_tensor(ctx, y)
    real = (np.float64(s_in) * _filter_scales(ctx, w, channels).astype(np.float64)) / np.float64(s_out)
    try:
        multipliers, shifts = quantize_multiplier_tosa(real)
    except ValueError as error:
        raise ctx.error(f"effective output scale cannot be a TOSA RESCALE: {error}") from None
    multipliers, shifts = np.asarray(multipliers), np.asarray(shifts)
    if np.all(multipliers == multipliers[0]) and np.all(shifts == shifts[0]):
        return multipliers[:1], shifts[:1]
    return multipliers, shifts


def _requantize_conv(ctx, acc, x, w, y, fused):
    """MultiplyByQuantizedMultiplier (double rounding), + output zero point, fused activation clamp."""
    multipliers, shifts = _conv_multipliers(ctx, x, w, y, acc.type.shape[-1])
    _, out_zp = per_tensor(ctx, y)
    out = ctx.builder.rescale(acc, multipliers, shifts, 0, out_zp, "i8", rounding="DOUBLE_ROUND")
    return clamp_to_activation(ctx, out, y, fused)


def _check_types(ctx, x, w, y) -> str:
    """'int8' or 'int16' (16x8) after checking the tensor types LiteRT's kernels accept."""
    if not w.quantized:
        raise ctx.error(f"filter {w.describe()} is not quantized")
    if x.dtype == "int16":
        if w.dtype != "int8" or y.dtype != "int16":
            raise ctx.error(f"16x8 kernel needs an int8 filter and an int16 output; got {w.describe()}, "
                            f"{y.describe()}")
        if not x.quantized or x.scale.size != 1 or not y.quantized or y.scale.size != 1:
            raise ctx.error("input and output must be per-tensor quantized")
        if per_tensor(ctx, x)[1] or per_tensor(ctx, y)[1]:
            raise ctx.error(f"int16 input and output need zero point 0 (LiteRT rejects {x.describe()}, "
                            f"{y.describe()})")
        return "int16"
    _check_int8(ctx, x, w, y)
    return "int8"


def _requantize_16x8(ctx, op, acc, x, w, bias, y, filters, depth):
    """The 16x8 CONV_2D / DEPTHWISE_CONV_2D requantization (see the module docstring), then the activation."""
    channels = acc.type.shape[-1]
    s_in, _ = per_tensor(ctx, x)
    s_out, _ = per_tensor(ctx, y)
    real = (np.float64(s_in) * _filter_scales(ctx, w, channels).astype(np.float64)) / np.float64(s_out)
    multipliers, exponents = (np.atleast_1d(v) for v in quantize_multiplier(real))
    low, high, partial_low, partial_high = accumulator_bounds(filters, depth, channels, INT16_INPUT, bias)
    what = f"{op.opcode} requantization"
    if op.options.get("quantized_bias_type", 0) == BIAS_INT32:
        # ConvPerChannel<int32_t>: int32 accumulator and bias, 32-bit MultiplyByQuantizedMultiplier.
        for lo, hi in ((partial_low, partial_high), (low, high)):
            if lo.min() < INT32_MIN or hi.max() > INT32_MAX:
                raise ctx.error(f"{what}: the kernel's int32 accumulator can overflow (it reaches "
                                f"[{int(lo.min())}, {int(hi.max())}]); LiteRT would wrap around")
        acc32 = narrow_48(ctx, acc, low, high, what)
        out = rescale_channels(ctx, acc32, multipliers, 31 - exponents, low, high, 0, "i16", what)
    else:
        out = rescale_48(ctx, acc, multipliers, exponents, low, high, "i16", what)
    return clamp_to_activation(ctx, out, y, op.options["fused_activation_function"])


def _check_16x8_bias(ctx, op, bias):
    """LiteRT's 16x8 bias: int64, or int32 only with the option quantized_bias_type = INT32 (otherwise the
    kernel reads the int32 buffer as int64)."""
    if op.options["quantized_bias_type"] not in (BIAS_FLOAT32, BIAS_INT32, BIAS_INT64):
        # None: no options table (LiteRT's kTfLiteNoType), which its 16x8 Prepare refuses like any other type
        raise ctx.error(f"16x8 quantized_bias_type {op.options['quantized_bias_type']} is neither unset "
                        f"(FLOAT32), INT32 nor INT64")
    if bias is None:
        return
    wanted = "int32" if op.options["quantized_bias_type"] == BIAS_INT32 else "int64"
    if bias.dtype != wanted:
        raise ctx.error(f"16x8 bias {bias.describe()} must be {wanted} (quantized_bias_type "
                        f"{op.options.get('quantized_bias_type', 0)}); LiteRT reads it as {wanted}")


def _check_rank_4(ctx, *tensors):
    for t in tensors:
        if len(t.shape) != 4 or 0 in t.shape:
            raise ctx.error(f"{t.describe()} must be rank 4 (NHWC, or OHWI for a filter) and not empty")


def _check_int8(ctx, x, w, y):
    if x.dtype != "int8" or w.dtype != "int8" or y.dtype != "int8":
        raise ctx.error(f"int8 kernel needs int8 input, filter and output; got {x.describe()}, "
                        f"{w.describe()}, {y.describe()}")
    if not x.quantized or x.scale.size != 1 or not y.quantized or y.scale.size != 1:
        raise ctx.error("input and output must be per-tensor quantized")


def _window_params(ctx, op, x_shape, kernel):
    """(stride, dilation, pads [top, bottom, left, right]) of a TFLite windowed op (ComputePaddingHeightWidth)."""
    o = op.options
    stride = (o["stride_h"], o["stride_w"])
    dilation = (o["dilation_h_factor"], o["dilation_w_factor"])
    check_window(ctx, kernel, stride, dilation, o["padding"])
    pads = []
    for axis in range(2):
        pads += same_or_valid_padding(o["padding"], x_shape[axis + 1], kernel[axis], stride[axis], dilation[axis])
    return stride, dilation, tuple(pads)


# ----------------------------------------------------------------------------------------- CONV_2D


@legalize("CONV_2D", types=("int8", "int16"))
def conv_2d(ctx, op):
    """reference_integer_ops::ConvPerChannel (kernels/conv.cc, int8 and 16x8, filter zero points 0).

    Grouped convolution (input channels a multiple of the filter's) is one CONV2D per group, concatenated.
    """
    x, w, bias, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    kind = _check_types(ctx, x, w, y)
    _check_rank_4(ctx, x, w, y)
    if kind == "int16":
        _check_16x8_bias(ctx, op, bias)
    if w.zero_point is not None and np.any(w.zero_point != 0):
        raise ctx.error(f"filter {w.describe()} needs zero points 0 (LiteRT's Prepare refuses others)")
    b = ctx.builder
    oc, kh, kw, ic_group = w.shape
    check_bias(ctx, bias, oc)
    groups = x.shape[3] // ic_group
    if groups * ic_group != x.shape[3] or oc % groups:
        raise ctx.error(f"filter {w.describe()} does not fit input {x.describe()}")
    stride, dilation, pads = _window_params(ctx, op, x.shape, (kh, kw))
    _, in_zp = per_tensor(ctx, x)
    xv, pads = fit_windows(ctx, ctx.value(x), (kh, kw), stride, dilation, pads)
    weights = _weights(ctx, w, lambda a: a)
    acc_type = ACCUMULATOR[kind]
    bias_value = _bias(ctx, bias, oc, acc_type)
    attrs = {"pad": pads, "stride": stride, "dilation": dilation, "acc_type": acc_type}
    zps = [b.scalar(in_zp, ctx.value(x).type.dtype), b.scalar(0, "i8")]

    if groups == 1:
        acc = b.op("tosa.conv2d", [xv, weights, bias_value] + zps, attrs)
    else:
        per_group = oc // groups
        n, h, wd, _ = xv.type.shape
        partial = []
        for g in range(groups):
            xg = b.op("tosa.slice", [xv, b.shape([0, 0, 0, g * ic_group]), b.shape([n, h, wd, ic_group])])
            wg = b.op("tosa.slice", [weights, b.shape([g * per_group, 0, 0, 0]),
                                     b.shape([per_group, kh, kw, ic_group])])
            bg = bias_value if bias_value.type.shape == (1,) else \
                b.op("tosa.slice", [bias_value, b.shape([g * per_group]), b.shape([per_group])])
            partial.append(b.op("tosa.conv2d", [xg, wg, bg] + zps, attrs))
        acc = b.op("tosa.concat", partial, {"axis": 3})
    if kind == "int16":
        filters = None if w.data is None else w.data.reshape(oc, kh * kw * ic_group)
        ctx.set_output(_requantize_16x8(ctx, op, acc, x, w, bias, y, filters, kh * kw * ic_group))
        return
    ctx.set_output(_requantize_conv(ctx, acc, x, w, y, op.options["fused_activation_function"]))


# ------------------------------------------------------------------------------- DEPTHWISE_CONV_2D


@legalize("DEPTHWISE_CONV_2D", types=("int8", "int16"))
def depthwise_conv_2d(ctx, op):
    """reference_integer_ops::DepthwiseConvPerChannel (kernels/depthwise_conv.cc, int8 and 16x8).

    TFLite weights [1, KH, KW, C*M] (output channel c*M + m) are TOSA's [KH, KW, C, M]. The kernel takes the
    depth multiplier from the shapes, not the option, and ignores the filter zero point. The 16x8 kernel needs
    an int64 bias and accumulates in int64.
    """
    x, w, bias, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    kind = _check_types(ctx, x, w, y)
    _check_rank_4(ctx, x, w, y)
    if kind == "int16" and bias is not None and bias.dtype != "int64":
        raise ctx.error(f"16x8 DEPTHWISE_CONV_2D needs an int64 bias, got {bias.describe()} (LiteRT rejects it)")
    b = ctx.builder
    _, kh, kw, oc = w.shape
    check_bias(ctx, bias, oc)
    channels = x.shape[3]
    if w.shape[0] != 1 or oc % channels:
        raise ctx.error(f"depthwise filter {w.describe()} does not fit input {x.describe()}")
    multiplier = oc // channels
    stride, dilation, pads = _window_params(ctx, op, x.shape, (kh, kw))
    _, in_zp = per_tensor(ctx, x)
    xv, pads = fit_windows(ctx, ctx.value(x), (kh, kw), stride, dilation, pads)
    weights = _weights(ctx, w, lambda a: a.reshape(kh, kw, channels, multiplier))
    acc_type = ACCUMULATOR[kind]
    attrs = {"pad": pads, "stride": stride, "dilation": dilation, "acc_type": acc_type}
    acc = b.op("tosa.depthwise_conv2d",
               [xv, weights, _bias(ctx, bias, oc, acc_type), b.scalar(in_zp, xv.type.dtype), b.scalar(0, "i8")],
               attrs)
    if kind == "int16":
        filters = None if w.data is None else w.data.reshape(kh * kw, oc).T
        ctx.set_output(_requantize_16x8(ctx, op, acc, x, w, bias, y, filters, kh * kw))
        return
    ctx.set_output(_requantize_conv(ctx, acc, x, w, y, op.options["fused_activation_function"]))


# --------------------------------------------------------------------------------- FULLY_CONNECTED


def _rounding_steps(scales: np.ndarray, halves: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """For each channel c and half-integer h, the least a in [1, cap_c] with `double(a) * scale_c >= h`, the
    accumulator where the kernel's `round(a * scale)` (half away from zero) reaches h + 1/2; cap_c + 1 where
    no a <= cap_c does. The guess from the float quotient is settled on the C++ criterion itself, the
    correctly rounded double product, so the result is exact."""
    with np.errstate(divide="ignore", over="ignore"):
        guess = np.ceil(halves[None, :] / scales[:, None])
    a = np.clip(np.nan_to_num(guess, posinf=2.0**62), 1, caps[:, None] + 1).astype(np.int64)
    scale = scales[:, None]
    for _ in range(64):
        down = (a > 1) & ((a - 1).astype(np.float64) * scale >= halves)
        up = (a <= caps[:, None]) & (a.astype(np.float64) * scale < halves)
        if not (down.any() or up.any()):
            return a
        a = a - down + up
    raise AssertionError("rounding steps did not settle")


def _extreme(values: list[tuple[Fraction, bool]], largest: bool):
    """The largest (or smallest) bound of (value, closed) pairs; at equal values the open one is tighter."""
    best = None
    for value, closed in values:
        if best is None or (value > best[0] if largest else value < best[0]) or (value == best[0] and not closed):
            best = (value, closed)
    return best


def admissible_ratios(scales, zero_point: int, out_low: int, out_high: int, acc_low, acc_high):
    """Per channel, the interval of ratios r for which `clamp(floor(a * r + 1/2) + zero_point, out_low,
    out_high)` equals the kernel's `clamp(round(double(a) * scale) + zero_point, ...)` on every accumulator
    a in [acc_low, acc_high] (see exact_float_requant): a list of (low, low_closed, high, high_closed) with
    Fractions, high None when unbounded."""
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    acc_low = np.broadcast_to(np.asarray(acc_low, dtype=np.int64), scales.shape)
    acc_high = np.broadcast_to(np.asarray(acc_high, dtype=np.int64), scales.shape)
    if not np.all(np.isfinite(scales) & (scales >= 0)):
        raise ValueError("requantization scales must be finite and non-negative")
    lower = [[(Fraction(0), True)] for _ in scales]
    upper = [[] for _ in scales]
    # Positive steps j matter while the output moves: j - 1 + zp < out_high and j + zp > out_low. Negative
    # steps (round = -j + 1 -> -j) while -j + zp >= out_low and -j + 1 + zp <= out_high.
    sides = ((max(1, out_low - zero_point + 1), out_high - zero_point, acc_high, True),
             (max(1, zero_point - out_high + 1), zero_point - out_low, -acc_low, False))
    for first, last, caps, positive in sides:
        if last < first:
            continue
        halves = np.arange(first, last + 1) - 0.5
        caps = np.maximum(caps, 0)
        steps = _rounding_steps(scales, halves, caps)
        for c in range(scales.size):
            cap = int(caps[c])
            if cap == 0:
                continue
            a = steps[c]
            reached = a <= cap
            if not reached.all():  # the first step out of range must stay out: (j - 1/2) / r > cap (>= cap)
                j = int(np.argmin(reached))
                upper[c].append((Fraction(int(2 * halves[j]), 2 * cap), not positive))
            if reached.any():
                h, ar = halves[reached], a[reached]
                for index in _near_extremes(h / ar, largest=True):
                    lower[c].append((Fraction(int(2 * h[index]), 2 * int(ar[index])), positive))
                above = ar > 1
                if above.any():
                    h, ar = h[above], ar[above]
                    for index in _near_extremes(h / (ar - 1), largest=False):
                        upper[c].append((Fraction(int(2 * h[index]), 2 * int(ar[index] - 1)), not positive))

    intervals = []
    for c in range(scales.size):
        low, low_closed = _extreme(lower[c], largest=True)
        high, high_closed = _extreme(upper[c], largest=False) or (None, False)
        intervals.append((low, low_closed, high, high_closed))
    return intervals


def exact_float_requant(scales, zero_point: int, out_low: int, out_high: int, acc_low, acc_high, intervals=None):
    """Per channel, a TOSA RESCALE (multiplier, shift), SINGLE_ROUND, equal to LiteRT's float requantization;
    (None, None) for a channel where none exists.

    The kernel computes `q(a) = clamp(round(double(a) * scale) + zero_point, out_low, out_high)` with `round`
    half away from zero. RESCALE computes `clamp(floor(a * m / 2^s + 1/2) + zero_point, ...)`. Both are
    monotone step functions of the accumulator `a`, so they agree on [acc_low, acc_high] exactly when every
    step that changes the clamped output happens at the same accumulator. For the step to `round >= j`
    (j >= 1) at the least a_j with `double(a_j) * scale >= j - 1/2`, RESCALE needs
    `a_j - 1 < (j - 1/2) / r <= a_j` (r = m / 2^s); the mirrored step to `round <= -j` at `-a_j` needs
    `a_j - 1 <= (j - 1/2) / r < a_j` (TOSA rounds ties up, C++ away from zero). A step beyond the
    accumulator range must stay beyond it. Each condition bounds r to an interval; the intersection is
    searched for the finest m / 2^s with m < 2^31. No such r exists when the double product needs more than
    31 bits of multiplier to place all its steps (tiny scales with huge accumulator ranges).
    """
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    acc_low = np.broadcast_to(np.asarray(acc_low, dtype=np.int64), scales.shape)
    acc_high = np.broadcast_to(np.asarray(acc_high, dtype=np.int64), scales.shape)
    if intervals is None:
        intervals = admissible_ratios(scales, zero_point, out_low, out_high, acc_low, acc_high)
    multipliers, shifts = [], []
    for c in range(scales.size):
        low, low_closed, high, high_closed = intervals[c]
        magnitude = max(-int(acc_low[c]), int(acc_high[c]))
        found = (None, None)
        # The finest grid m / 2^s whose least admissible m fits in 31 bits decides: coarser grids are subsets.
        # (low * 2^s >= 2^31 for s >= 31 - floor(log2(low)): start just above, to skip hopeless grids.)
        start = 62 if low == 0 else min(62, 32 - math.floor(math.log2(low)))
        for shift in range(start, 1, -1):
            if magnitude >= 1 << (shift - 1):
                break  # apply_scale_32 requires |value| < 2^(shift - 1)
            unit = 1 << shift
            m_low = math.ceil(low * unit) if low_closed else math.floor(low * unit) + 1
            if m_low > INT32_MAX:
                continue
            m_high = INT32_MAX if high is None else \
                (math.floor(high * unit) if high_closed else math.ceil(high * unit) - 1)
            if m_low <= m_high:
                nearest = round(Fraction(float(scales[c])) * unit)
                found = (min(max(nearest, m_low), min(m_high, INT32_MAX)), shift)
            break
        multipliers.append(found[0])
        shifts.append(found[1])
    return multipliers, shifts


def _near_extremes(values: np.ndarray, largest: bool) -> np.ndarray:
    """Indices whose float value may be the exact extreme: each ratio is a correctly rounded double quotient
    (within half an ulp, 1.2e-16 relative), so ratios further than 1e-14 from the float extreme cannot be it."""
    best = values.max() if largest else values.min()
    return np.nonzero(np.abs(values - best) <= 1e-14 * abs(best))[0]


def _accumulator_range(ctx, x, w, bias, weight_zp, channels):
    """Per output channel, the least and greatest accumulator the layer can produce over all int8 inputs:
    sum_d of the extreme (w - weight_zp) * (x - input_zp), plus the bias. Runtime weights or bias make the
    bound the int8 extremes."""
    _, in_zp = per_tensor(ctx, x)
    depth = w.shape[1]
    x_ends = np.array([-128 - in_zp, 127 - in_zp], dtype=np.int64)
    if w.data is not None:
        wv = w.data.astype(np.int64).reshape(channels, depth) - weight_zp
        products = wv[:, :, None] * x_ends
        low, high = products.min(axis=2).sum(axis=1), products.max(axis=2).sum(axis=1)
    else:
        extreme = max(abs(-128 - weight_zp), abs(127 - weight_zp)) * int(np.abs(x_ends).max()) * depth
        low, high = np.full(channels, -extreme), np.full(channels, extreme)
    if bias is not None:
        if bias.data is not None:
            offset = bias.data.astype(np.int64).reshape(channels)
            low, high = low + offset, high + offset
        else:
            low, high = low + INT32_MIN, high + INT32_MAX
    return np.clip(low, INT32_MIN, INT32_MAX), np.clip(high, INT32_MIN, INT32_MAX)


@legalize("FULLY_CONNECTED", types=("int8", "int16"))
def fully_connected(ctx, op):
    """reference_integer_ops::FullyConnected / FullyConnectedPerChannel, float-requantizing variants
    (kernels/fully_connected.cc, FullyConnectedInt8 / FullyConnectedPerChannelInt8 and FullyConnectedInt16 /
    FullyConnectedPerChannelInt16 with kReference).

    The input is read as [batch, depth] (depth = the filter's second dimension) and becomes a 1x1 CONV2D
    over [batch, 1, 1, depth]; the output is reshaped to the TFLite output shape (keep_num_dims or not).
    The per-tensor kernel subtracts the filter zero point, the per-channel kernel does not.
    """
    x, w, bias, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    kind = _check_types(ctx, x, w, y)
    o = op.options
    if o.get("weights_format", 0) != 0:
        raise ctx.error("shuffled FULLY_CONNECTED weights are not supported")
    if len(w.shape) != 2:
        raise ctx.error(f"filter {w.describe()} must be rank 2")
    b = ctx.builder
    units, depth = w.shape
    check_bias(ctx, bias, units)
    size = int(np.prod(x.shape, dtype=np.int64))
    if depth == 0 or size % depth:
        raise ctx.error(f"input {x.describe()} does not divide into rows of {depth}")
    batch = size // depth
    check_output_shape(ctx, x.shape[:-1] + (units,) if o["keep_num_dims"] else (batch, units))
    per_channel = w.scale.size > 1
    if per_channel and (w.quantized_dimension != 0 or w.scale.size != units):
        raise ctx.error(f"per-channel filter {w.describe()} must be quantized along dimension 0")
    weight_zp = 0 if per_channel else int(w.zero_point[0])
    if not -128 <= weight_zp <= 127:
        raise ctx.error(f"filter zero point {weight_zp} is outside int8")

    s_in, in_zp = per_tensor(ctx, x)
    s_out, out_zp = per_tensor(ctx, y)
    # The kernel's double arithmetic, in the same order: double(s_in) * double(s_w) / double(s_out).
    scales = np.array([(float(s_in) * float(s)) / float(s_out) for s in _filter_scales(ctx, w, units)])
    out_low, out_high = activation_range(ctx, y, o["fused_activation_function"])
    if kind == "int16":
        ctx.set_output(_fully_connected_16x8(ctx, op, x, w, bias, y, scales, weight_zp, out_low, out_high))
        return
    acc_low, acc_high = _accumulator_range(ctx, x, w, bias, weight_zp, units)
    _check_float_conversion(ctx, acc_low, acc_high, scales)

    xv = b.reshape(ctx.value(x), (batch, 1, 1, depth))
    weights = _weights(ctx, w, lambda a: a.reshape(units, 1, 1, depth))
    attrs = {"pad": (0, 0, 0, 0), "stride": (1, 1), "dilation": (1, 1), "acc_type": "i32"}
    acc = b.op("tosa.conv2d", [xv, weights, _bias(ctx, bias, units), b.scalar(in_zp, "i8"),
                               b.scalar(weight_zp, "i8")], attrs)
    multipliers, shifts = exact_float_requant(scales, out_zp, out_low, out_high, acc_low, acc_high)
    if None in multipliers:  # no 31-bit multiplier over the whole range: saturation clamp and wide multiply
        out = float_requant(ctx, acc, scales, out_zp, out_low, out_high, acc_low, acc_high, "int8")
    else:
        if len(set(zip(multipliers, shifts))) == 1:
            multipliers, shifts = multipliers[:1], shifts[:1]
        out = b.rescale(acc, multipliers, shifts, 0, out_zp, "i8", rounding="SINGLE_ROUND")
    out = clamp_to_activation(ctx, out, y, o["fused_activation_function"])
    ctx.set_output(b.reshape(out, y.shape))


def _check_float_conversion(ctx, acc_low, acc_high, scales):
    too_large = np.maximum(-np.asarray(acc_low, dtype=np.float64), np.asarray(acc_high, dtype=np.float64)) \
        * scales >= 2.0**30
    if too_large.any():
        c = int(np.argmax(too_large))
        raise ctx.error(f"output channel {c}: accumulator x scale {scales[c]:.6g} can leave int32, where the "
                        "kernel's float-to-int conversion is undefined")


def saturation_points(scale: float, out_low: int, out_high: int) -> tuple[int, int]:
    """For the kernel's `clamp(round(double(a) * scale), out_low, out_high)` (round half away from zero), the
    greatest accumulator giving out_low and the least giving out_high: every accumulator at or beyond them
    gives the same clamped output."""
    def reaches(a: int, t: int) -> bool:  # round(a * scale) >= t
        v = float(np.float64(a) * np.float64(scale))
        return v >= t - 0.5 if t >= 1 else v > t - 0.5

    def least(t: int) -> int:  # the least a with round(a * scale) >= t (monotone in a)
        a = math.ceil((t - 0.5) / scale)
        if abs(a) > BEYOND_ANY_ACCUMULATOR:  # a tiny scale: no accumulator saturates (and a - 1 == a in double)
            return BEYOND_ANY_ACCUMULATOR if a > 0 else -BEYOND_ANY_ACCUMULATOR
        while reaches(a - 1, t):
            a -= 1
        while not reaches(a, t):
            a += 1
        return a

    return least(out_low + 1) - 1, least(out_high)


def _fully_connected_16x8(ctx, op, x, w, bias, y, scales, weight_zp, out_low, out_high):
    """The 16x8 FULLY_CONNECTED (see the module docstring): an i48 CONV2D narrowed to i32 when the
    accumulator provably fits, else the byte split."""
    b = ctx.builder
    units, depth = w.shape
    check_bias(ctx, bias, units)
    batch = int(np.prod(x.shape, dtype=np.int64)) // depth
    int32_bias = op.options.get("quantized_bias_type", 0) == BIAS_INT32
    _check_16x8_bias(ctx, op, bias)
    filters = None if w.data is None else w.data.reshape(units, depth)
    acc_low, acc_high, partial_low, partial_high = accumulator_bounds(filters, depth, units, INT16_INPUT, bias,
                                                                      weight_zp)
    _check_float_conversion(ctx, acc_low, acc_high, scales)
    fits = acc_low.min() >= INT32_MIN and acc_high.max() <= INT32_MAX
    if int32_bias and not (fits and partial_low.min() >= INT32_MIN and partial_high.max() <= INT32_MAX):
        raise ctx.error(f"the kernel's int32 accumulator (quantized_bias_type INT32) can overflow: it reaches "
                        f"[{int(acc_low.min())}, {int(acc_high.max())}]; LiteRT would wrap around")
    xv = b.reshape(ctx.value(x), (batch, 1, 1, depth))
    weights = _weights(ctx, w, lambda a: a.reshape(units, 1, 1, depth))
    attrs = {"pad": (0, 0, 0, 0), "stride": (1, 1), "dilation": (1, 1)}
    what = "16x8 FULLY_CONNECTED accumulator"
    if fits:
        acc = b.op("tosa.conv2d", [xv, weights, _bias(ctx, bias, units, "i48"), b.scalar(0, "i16"),
                                   b.scalar(weight_zp, "i8")], {**attrs, "acc_type": "i48"})
        acc = narrow_48(ctx, acc, acc_low, acc_high, what)
    else:
        acc, acc_low, acc_high = _byte_split_accumulator(ctx, xv, weights, filters, bias, scales, weight_zp,
                                                         out_low, out_high, attrs)
    out = float_requant(ctx, acc, scales, 0, out_low, out_high, acc_low, acc_high, "int16")
    out = clamp_to_activation(ctx, out, y, op.options["fused_activation_function"])
    return b.reshape(out, y.shape)


def float_requant(ctx, acc, scales, zero_point, out_low, out_high, acc_low, acc_high, dtype):
    """`clamp(round(double(acc) * scale) + zero_point, out_low, out_high)` of an i32 accumulator (per channel of
    the last axis) into the TFLite type `dtype`, before the activation CLAMP: accumulators are first clamped to
    where the output saturates (nothing changes), then one RESCALE when a 31-bit multiplier reproduces every
    step, else the exact wide multiply (`wide_requant`)."""
    b = ctx.builder
    units = scales.size
    saturation = [saturation_points(float(scales[c]), out_low - zero_point, out_high - zero_point)
                  for c in range(units)]
    sat_low = np.array([p[0] for p in saturation], dtype=np.int64)
    sat_high = np.array([p[1] for p in saturation], dtype=np.int64)
    ones = (1,) * (acc.type.rank - 1) + (units,)
    if (acc_low < sat_low).any():
        acc = b.op("tosa.maximum", [acc, b.const(np.maximum(sat_low, INT32_MIN).reshape(ones), "i32")])
        acc_low = np.maximum(acc_low, sat_low)
    if (acc_high > sat_high).any():
        acc = b.op("tosa.minimum", [acc, b.const(np.minimum(sat_high, INT32_MAX).reshape(ones), "i32")])
        acc_high = np.minimum(acc_high, sat_high)
    acc_high = np.maximum(acc_high, acc_low)
    intervals = admissible_ratios(scales, zero_point, out_low, out_high, acc_low, acc_high)
    multipliers, shifts = exact_float_requant(scales, zero_point, out_low, out_high, acc_low, acc_high, intervals)
    if None not in multipliers:
        if len(set(zip(multipliers, shifts))) == 1:
            multipliers, shifts = multipliers[:1], shifts[:1]
        return b.rescale(acc, multipliers, shifts, 0, zero_point, STORAGE[dtype], rounding="SINGLE_ROUND")
    rounded, low, high = wide_requant(ctx, acc, scales, intervals, acc_low, acc_high)
    return from_i32(ctx, rounded, (int(low.min()), int(high.max())), zero_point, dtype)


def wide_requant(ctx, a, scales, intervals, acc_low, acc_high):
    """`floor(a * M / 2^K + 1/2)` exactly, per channel of the last axis, for any i32 a and a multiplier M of up
    to 62 bits chosen (per channel) among those that reproduce the kernel's double requantization
    (`intervals`, from `admissible_ratios`). Returns (the i32 result, its per-channel low and high bounds).

    TOSA MUL of i32 with shift 0 is the low 32 bits of the product and with shift s > 0 is
    `(p + 2^(s-1)) >> s`. With M = M1 * 2^31 + M0 (both below 2^31) and K = 31 + K1:
        q0 = floor(a * M0 / 2^31) = MUL(a, M0, 31) - bit 30 of MUL(a, M0, 0)
        a * M + 2^(K-1) = 2^31 * (a * M1 + q0 + 2^(K1-1)) + (a * M0 - 2^31 * q0), the last term in [0, 2^31)
        result = floor((a * M1 + 2^(K1-1) + q0) / 2^K1)
    and the last floor is taken in one of two ways, so that no intermediate value leaves int32:
    - K1 <= 30 (large scales): T + (q0 >> K1) + (((q0 & (2^K1 - 1)) + V) >> K1) with T = MUL(a, M1, K1) and
      V = (a * M1 + 2^(K1-1)) mod 2^K1, from the product's low bits;
    - K1 >= 33 (small scales, where M1 < 2^31 leaves room for a longer K): with P = a * M1 = H * 2^32 + L,
      H = MUL(a, M1, 32) - [L >= 2^31] and L the low product bits, `(H + c + 2^(K1-33)) >> (K1 - 32)` where
      c = floor((L + q0) / 2^32) in {-1, 0, 1} is added up in 16-bit halves.
    K1 is one for all channels (MUL's shift is a single operand): the largest that keeps every M1 below 2^31,
    at most 62."""
    b = ctx.builder
    units = scales.size
    r_max = max(float(scales.max()), max(float(i[0]) for i in intervals))
    k1 = min(62, math.floor(math.log2((INT32_MAX - 1) / r_max)) if r_max > 0 else 62)
    if 30 < k1 < 33:
        k1 = 30
    if k1 < 1:
        raise ctx.error(f"requantization scale {r_max} is too large for the exact wide requantization")
    k = 31 + k1
    unit = 1 << k
    multipliers = []
    for c, (low, low_closed, high, high_closed) in enumerate(intervals):
        m_low = math.ceil(low * unit) if low_closed else math.floor(low * unit) + 1
        m_high = (1 << 62) - 1 if high is None else \
            (math.floor(high * unit) if high_closed else math.ceil(high * unit) - 1)
        m_high = min(m_high, ((INT32_MAX - 1) << 31) + INT32_MAX)
        if m_low > m_high:
            raise ctx.error(f"output channel {c}: no multiplier M / 2^{k} (M < 2^62) reproduces the kernel's double "
                            f"requantization round(acc * {float(scales[c])!r}) for accumulators in "
                            f"[{int(acc_low[c])}, {int(acc_high[c])}]: the double-rounded product puts some "
                            f"rounding steps where no exact ratio can (seen when the scales' ratio is a short "
                            f"binary fraction)")
        nearest = round(Fraction(float(scales[c])) * unit)
        multipliers.append(min(max(nearest, m_low), m_high))
    ones = (1,) * (a.type.rank - 1) + (units,)
    m0 = b.const(np.array([int(m) & INT32_MAX for m in multipliers], dtype=np.int64).reshape(ones), "i32")
    m1 = b.const(np.array([int(m) >> 31 for m in multipliers], dtype=np.int64).reshape(ones), "i32")
    scalar = lambda v: b.const(np.full((1,) * a.type.rank, v), "i32")  # noqa: E731
    shift = lambda amount: b.scalar(amount, "i8")  # noqa: E731
    floor_shift = lambda v, amount: b.op("tosa.arithmetic_right_shift", [v, scalar(amount)], {"round": False})  # noqa
    op = lambda name, *operands: b.op(name, list(operands))  # noqa: E731
    bit_30 = op("tosa.bitwise_and", op("tosa.logical_right_shift", op("tosa.mul", a, m0, shift(0)), scalar(30)),
                scalar(1))
    q0 = op("tosa.sub", op("tosa.mul", a, m0, shift(31)), bit_30)
    low_product = op("tosa.mul", a, m1, shift(0))
    if k1 <= 30:
        mask = (1 << k1) - 1
        high_part = op("tosa.mul", a, m1, shift(k1))
        v = op("tosa.bitwise_and", op("tosa.add", op("tosa.bitwise_and", low_product, scalar(mask)),
                                      scalar(1 << (k1 - 1))), scalar(mask))
        carry = floor_shift(op("tosa.add", op("tosa.bitwise_and", q0, scalar(mask)), v), k1)
        result = op("tosa.add", op("tosa.add", high_part, floor_shift(q0, k1)), carry)
    else:
        top_bit = op("tosa.logical_right_shift", low_product, scalar(31))  # [L >= 2^31]
        high_word = op("tosa.sub", op("tosa.mul", a, m1, shift(32)), top_bit)
        halves = op("tosa.add", op("tosa.bitwise_and", low_product, scalar(0xFFFF)),
                    op("tosa.bitwise_and", q0, scalar(0xFFFF)))
        upper = op("tosa.add", op("tosa.add", op("tosa.logical_right_shift", low_product, scalar(16)),
                                  floor_shift(q0, 16)), floor_shift(halves, 16))
        carry = floor_shift(upper, 16)
        total = op("tosa.add", op("tosa.add", high_word, carry), scalar(1 << (k1 - 33)))
        result = floor_shift(total, k1 - 32)
    bounds = [(int(lo) * int(m) + (1 << (k - 1))) >> k for lo, m in zip(acc_low, multipliers)], \
        [(int(hi) * int(m) + (1 << (k - 1))) >> k for hi, m in zip(acc_high, multipliers)]
    return result, np.array(bounds[0]), np.array(bounds[1])


def _byte_split_accumulator(ctx, xv, weights, filters, bias, scales, weight_zp, out_low, out_high, attrs):
    """An i32 stand-in for a 16x8 FULLY_CONNECTED accumulator that can leave int32: equal to it wherever the
    output is not saturated, and saturating the output wherever it is.

    x = 256 * (x >> 8) + (x & 255); two i8 x i8 CONV2Ds give hi = sum (x >> 8) * w + bias_hi and
    lo = sum (x & 255) * w + bias_lo (bias = 256 * bias_hi + bias_lo, 0 <= bias_lo < 256), so that
    acc = 256 * hi + lo. Clamping hi to [h_lo, h_hi], chosen so that 256 * h_hi + min(lo) already saturates
    the output at its top (and 256 * h_lo + max(lo) at its bottom), changes acc only where the output is
    saturated before and after. Returns (acc as i32, per-channel low and high bounds of it)."""
    b = ctx.builder
    units = scales.size
    if filters is None:
        raise ctx.error("a 16x8 FULLY_CONNECTED whose accumulator can leave int32 needs constant weights")
    offset = _bias_values(bias, units)
    offset = np.zeros(units, np.int64) if offset is None else offset
    bias_hi, bias_lo = offset >> 8, offset & 255
    hi_low, hi_high, hi_partial_low, hi_partial_high = accumulator_bounds(filters, filters.shape[1], units,
                                                                          (-128, 127), None, weight_zp)
    lo_low, lo_high, _, _ = accumulator_bounds(filters, filters.shape[1], units, (0, 255), None, weight_zp)
    hi_low, hi_high = hi_low + bias_hi, hi_high + bias_hi
    lo_low, lo_high = lo_low + bias_lo, lo_high + bias_lo
    h_lo = np.empty(units, np.int64)
    h_hi = np.empty(units, np.int64)
    for c in range(units):
        saturated_low, saturated_high = saturation_points(float(scales[c]), out_low, out_high)
        h_lo[c] = max(int(hi_low[c]), (saturated_low - int(lo_high[c])) // 256)
        h_hi[c] = min(int(hi_high[c]), -((int(lo_low[c]) - saturated_high) // 256))
    h_lo = np.minimum(h_lo, h_hi)
    acc_low, acc_high = 256 * h_lo + lo_low, 256 * h_hi + lo_high
    for name, lo, hi in (("high-byte", np.minimum(hi_low, hi_partial_low), np.maximum(hi_high, hi_partial_high)),
                         ("low-byte", lo_low, lo_high), ("recombined", acc_low, acc_high)):
        if lo.min() < INT32_MIN or hi.max() > INT32_MAX:
            raise ctx.error(f"16x8 FULLY_CONNECTED: the {name} accumulator reaches [{int(lo.min())}, "
                            f"{int(hi.max())}], beyond int32; no exact TOSA form found")
    x16 = xv
    high_byte = b.cast(b.op("tosa.arithmetic_right_shift", [x16, b.const(np.full((1, 1, 1, 1), 8), "i16")],
                            {"round": False}), "i8")
    low_byte = b.op("tosa.bitwise_and", [x16, b.const(np.full((1, 1, 1, 1), 255), "i16")])
    low_byte = b.rescale(low_byte, 1 << 30, 30, 0, -128, "i8", rounding="SINGLE_ROUND")  # (x & 255) - 128
    conv = {**attrs, "acc_type": "i32"}
    hi = b.op("tosa.conv2d", [high_byte, weights, b.const(bias_hi, "i32"), b.scalar(0, "i8"),
                              b.scalar(weight_zp, "i8")], conv)
    lo = b.op("tosa.conv2d", [low_byte, weights, b.const(bias_lo, "i32"), b.scalar(-128, "i8"),
                              b.scalar(weight_zp, "i8")], conv)
    ones = (1, 1, 1, units)
    if (hi_low < h_lo).any():
        hi = b.op("tosa.maximum", [hi, b.const(h_lo.reshape(ones), "i32")])
    if (hi_high > h_hi).any():
        hi = b.op("tosa.minimum", [hi, b.const(h_hi.reshape(ones), "i32")])
    acc = b.op("tosa.add", [b.mul_shift(hi, b.const(np.full((1, 1, 1, 1), 256), "i32")), lo])
    return acc, acc_low, acc_high
