"""Convolutions and matrix products: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED (int8).

Each becomes a TOSA CONV2D / DEPTHWISE_CONV2D, which yields the raw i32 accumulator
`sum (x - input_zp) * (w - weight_zp) + bias` with padded taps contributing 0 (exactly what the LiteRT
reference kernels accumulate), then a RESCALE to int8 and a CLAMP for the fused activation.

The requantization differs between the kernels:
- CONV_2D and DEPTHWISE_CONV_2D (reference_integer_ops::ConvPerChannel / DepthwiseConvPerChannel) use
  MultiplyByQuantizedMultiplier with per-channel (multiplier, shift) from QuantizeMultiplier of the double
  `s_in * s_w[c] / s_out` (PopulateConvolutionQuantizationParams): RESCALE with DOUBLE_ROUND.
- FULLY_CONNECTED (reference_integer_ops::FullyConnected / FullyConnectedPerChannel, float variants, the
  reference path since LiteRT's "Make the fully_connected ref kernel do requant in float", April 2025)
  computes `round(double(acc) * (double(s_in) * double(s_w) / double(s_out)))` (round half away from
  zero). `exact_float_requant` finds a RESCALE multiplier and shift that give the same integer for every
  accumulator the layer can produce, or reports that none exists.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from tosaic.importers.tflite.common import (
    activation_range,
    clamp_to_activation,
    fit_windows,
    same_or_valid_padding,
)
from tosaic.importers.tflite.fixed_point import per_tensor
from tosaic.importers.tflite.registry import legalize
from tosaic.quant import quantize_multiplier_tosa

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ------------------------------------------------------------------------------------------ helpers


def _weights(ctx, t, layout):
    """Weights in a TOSA layout: a constant rearranged at import time, or a runtime value reshaped.

    `layout(array)` maps the TFLite array to the TOSA one; it must be a pure reshape for runtime values.
    """
    if t.data is not None:
        return ctx.builder.const(np.ascontiguousarray(layout(t.data)), "i8")
    shape = layout(np.zeros(t.shape, np.int8)).shape
    return ctx.builder.reshape(ctx.value(t), shape)


def _bias(ctx, bias, channels):
    """The i32 bias operand; a zero when the op has no bias (the kernels then add nothing)."""
    if bias is None:
        return ctx.builder.const(np.zeros(1, np.int32), "i32")
    if bias.dtype != "int32":
        raise ctx.error(f"bias {bias.describe()} must be int32 for int8 inputs")
    if bias.data is not None:
        return ctx.builder.const(bias.data.reshape(channels).astype(np.int32), "i32")
    return ctx.builder.reshape(ctx.value(bias), (channels,))


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


def _check_int8(ctx, x, w, y):
    if x.dtype != "int8" or w.dtype != "int8" or y.dtype != "int8":
        raise ctx.error(f"int8 kernel needs int8 input, filter and output; got {x.describe()}, "
                        f"{w.describe()}, {y.describe()}")
    if not x.quantized or x.scale.size != 1 or not y.quantized or y.scale.size != 1:
        raise ctx.error("input and output must be per-tensor quantized")


def _window_params(op, x_shape, kernel):
    """(stride, dilation, pads [top, bottom, left, right]) of a TFLite windowed op (ComputePaddingHeightWidth)."""
    o = op.options
    stride = (o["stride_h"], o["stride_w"])
    dilation = (o.get("dilation_h_factor", 1), o.get("dilation_w_factor", 1))
    pads = []
    for axis in range(2):
        pads += same_or_valid_padding(o["padding"], x_shape[axis + 1], kernel[axis], stride[axis], dilation[axis])
    return stride, dilation, tuple(pads)


# ----------------------------------------------------------------------------------------- CONV_2D


@legalize("CONV_2D", types=("int8",))
def conv_2d(ctx, op):
    """reference_integer_ops::ConvPerChannel (kernels/conv.cc, int8, filter zero points 0).

    Grouped convolution (input channels a multiple of the filter's) is one CONV2D per group, concatenated.
    """
    x, w, bias, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    _check_int8(ctx, x, w, y)
    b = ctx.builder
    oc, kh, kw, ic_group = w.shape
    groups = x.shape[3] // ic_group
    if groups * ic_group != x.shape[3] or oc % groups:
        raise ctx.error(f"filter {w.describe()} does not fit input {x.describe()}")
    stride, dilation, pads = _window_params(op, x.shape, (kh, kw))
    _, in_zp = per_tensor(ctx, x)
    xv, pads = fit_windows(ctx, ctx.value(x), (kh, kw), stride, dilation, pads)
    weights = _weights(ctx, w, lambda a: a)
    bias_value = _bias(ctx, bias, oc)
    attrs = {"pad": pads, "stride": stride, "dilation": dilation, "acc_type": "i32"}
    zps = [b.scalar(in_zp, "i8"), b.scalar(0, "i8")]

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
    ctx.set_output(_requantize_conv(ctx, acc, x, w, y, op.options["fused_activation_function"]))


# ------------------------------------------------------------------------------- DEPTHWISE_CONV_2D


@legalize("DEPTHWISE_CONV_2D", types=("int8",))
def depthwise_conv_2d(ctx, op):
    """reference_integer_ops::DepthwiseConvPerChannel (kernels/depthwise_conv.cc, int8).

    TFLite weights [1, KH, KW, C*M] (output channel c*M + m) are TOSA's [KH, KW, C, M]. The kernel takes the
    depth multiplier from the shapes, not the option, and ignores the filter zero point.
    """
    x, w, bias, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    _check_int8(ctx, x, w, y)
    b = ctx.builder
    _, kh, kw, oc = w.shape
    channels = x.shape[3]
    if w.shape[0] != 1 or oc % channels:
        raise ctx.error(f"depthwise filter {w.describe()} does not fit input {x.describe()}")
    multiplier = oc // channels
    stride, dilation, pads = _window_params(op, x.shape, (kh, kw))
    _, in_zp = per_tensor(ctx, x)
    xv, pads = fit_windows(ctx, ctx.value(x), (kh, kw), stride, dilation, pads)
    weights = _weights(ctx, w, lambda a: a.reshape(kh, kw, channels, multiplier))
    attrs = {"pad": pads, "stride": stride, "dilation": dilation, "acc_type": "i32"}
    acc = b.op("tosa.depthwise_conv2d",
               [xv, weights, _bias(ctx, bias, oc), b.scalar(in_zp, "i8"), b.scalar(0, "i8")], attrs)
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


def exact_float_requant(scales, zero_point: int, out_low: int, out_high: int, acc_low, acc_high):
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

    multipliers, shifts = [], []
    for c in range(scales.size):
        low, low_closed = _extreme(lower[c], largest=True)
        high, high_closed = _extreme(upper[c], largest=False) or (None, False)
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
    """Indices whose float value may be the exact extreme (within rounding of the float extreme)."""
    best = values.max() if largest else values.min()
    return np.nonzero(np.abs(values - best) <= 1e-9 * abs(best))[0]


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


@legalize("FULLY_CONNECTED", types=("int8",))
def fully_connected(ctx, op):
    """reference_integer_ops::FullyConnected / FullyConnectedPerChannel, float-requantizing variants
    (kernels/fully_connected.cc, FullyConnectedInt8 / FullyConnectedPerChannelInt8 with kReference).

    The input is read as [batch, depth] (depth = the filter's second dimension) and becomes a 1x1 CONV2D
    over [batch, 1, 1, depth]; the output is reshaped to the TFLite output shape (keep_num_dims or not).
    The per-tensor kernel subtracts the filter zero point, the per-channel kernel does not.
    """
    x, w, bias, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    _check_int8(ctx, x, w, y)
    o = op.options
    if o.get("weights_format", 0) != 0:
        raise ctx.error("shuffled FULLY_CONNECTED weights are not supported")
    if len(w.shape) != 2:
        raise ctx.error(f"filter {w.describe()} must be rank 2")
    b = ctx.builder
    units, depth = w.shape
    size = int(np.prod(x.shape, dtype=np.int64))
    if depth == 0 or size % depth:
        raise ctx.error(f"input {x.describe()} does not divide into rows of {depth}")
    batch = size // depth
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
    acc_low, acc_high = _accumulator_range(ctx, x, w, bias, weight_zp, units)
    too_large = np.maximum(-acc_low, acc_high) * scales >= 2.0**30
    if too_large.any():
        c = int(np.argmax(too_large))
        raise ctx.error(f"output channel {c}: accumulator x scale {scales[c]:.6g} can leave int32, where the "
                        "kernel's float-to-int conversion is undefined")
    multipliers, shifts = exact_float_requant(scales, out_zp, out_low, out_high, acc_low, acc_high)
    if None in multipliers:
        c = multipliers.index(None)
        raise ctx.error(f"output channel {c}: no 31-bit RESCALE multiplier reproduces the kernel's double "
                        f"requantization round(acc * {float(scales[c])!r}) for accumulators in "
                        f"[{int(acc_low[c])}, {int(acc_high[c])}]")
    if len(set(zip(multipliers, shifts))) == 1:
        multipliers, shifts = multipliers[:1], shifts[:1]

    xv = b.reshape(ctx.value(x), (batch, 1, 1, depth))
    weights = _weights(ctx, w, lambda a: a.reshape(units, 1, 1, depth))
    attrs = {"pad": (0, 0, 0, 0), "stride": (1, 1), "dilation": (1, 1), "acc_type": "i32"}
    acc = b.op("tosa.conv2d", [xv, weights, _bias(ctx, bias, units), b.scalar(in_zp, "i8"),
                               b.scalar(weight_zp, "i8")], attrs)
    out = b.rescale(acc, multipliers, shifts, 0, out_zp, "i8", rounding="SINGLE_ROUND")
    out = clamp_to_activation(ctx, out, y, o["fused_activation_function"])
    ctx.set_output(b.reshape(out, y.shape))
