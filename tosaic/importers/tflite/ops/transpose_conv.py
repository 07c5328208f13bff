"""TRANSPOSE_CONV (int8, and int16 activations with int8 weights): one TOSA TRANSPOSE_CONV2D, a RESCALE, and
a CLAMP for the fused activation.

What BUILTIN_REF runs (tflite/kernels/transpose_conv.cc `Eval<kReference>`): `EvalQuantizedPerChannel` ->
reference_integer_ops::TransposeConv for int8, `EvalQuantizedPerChannel16x8` -> the int16 template of the
same header for int16 (kernels/internal/reference/integer_ops/transpose_conv.h). Per output element

    acc = sum over the input pixels and taps that land on it of (x + input_offset) * w    (scatter, in
          int32 for int8; in int64 for int16, or int32 when quantized_bias_type is INT32)
    acc += bias[oc]
    out = clamp(MultiplyByQuantizedMultiplier(acc, m[oc], e[oc]) + output_zp, act_min, act_max)

- Input pixel (iy, ix) and tap (ky, kx) land on output (iy * stride - pad_top + ky, ...), kept only inside
  the output: TOSA TRANSPOSE_CONV2D with out_pad_top = -pad_top, out_pad_bottom = OH - (IH - 1) * stride -
  KH + pad_top (rows that no tap reaches get the bias only, in both). The padding is TFLite's
  ComputePaddingHeightWidth with the *output* size as the image size (the height_offset is unused).
- The filter's zero point is ignored (filter_value is used raw): weight_zp 0.
- (m, e) per output channel = QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))
  (PopulateConvolutionQuantizationParams; a per-tensor filter scale is broadcast).
- The int32 accumulator goes through MultiplyByQuantizedMultiplier(int32) (double rounding): RESCALE
  DOUBLE_ROUND. The int64 one goes through MultiplyByQuantizedMultiplier(int64), which rounds the multiplier
  to 16 bits, `(m + 2^15) >> 16` (0x7FFF from 0x7FFF0000 up), and shifts once by 15 - e: the i48 RESCALE with
  scale32 = false and SINGLE_ROUND (TOSA apply_scale_16) is that formula.
- The fused activation is read through a cast of the options to TfLiteConvParams, whose first four fields
  coincide with TfLiteTransposeConvParams: it is the op's own activation.
- int16 with an int32 bias: LiteRT uses int32 scratch and bias only when the option quantized_bias_type is
  INT32; otherwise it reads the int32 bias buffer as int64 (reading past its end), which has no meaning to
  reproduce: such models are refused.

Every RESCALE's REQUIREs are proven at import time from per-channel accumulator bounds (constant weights
and bias, any input): |acc| < 2^(shift-1) for apply_scale_32, an i48 accumulator and an int32 result for
apply_scale_16, and no int32 overflow where the kernel accumulates in int32.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.common import check_bias, check_window, clamp_to_activation, same_or_valid_padding
from tosaic.importers.tflite.fixed_point import per_tensor
from tosaic.importers.tflite.registry import legalize
from tosaic.ir import Value
from tosaic.quant import quantize_multiplier

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT48_MIN, INT48_MAX = -(1 << 47), (1 << 47) - 1


# ------------------------------------------------------------------------------ requantization helpers


def reduced_multiplier(multiplier: int) -> int:
    """The 16-bit multiplier of TFLite's MultiplyByQuantizedMultiplier(int64 x, ...)."""
    return (multiplier + (1 << 15)) >> 16 if multiplier < 0x7FFF0000 else 0x7FFF


def requantize_accumulator(ctx, acc: Value, reals, low, high, output_zp: int, dtype: str, what: str) -> Value:
    """`saturate(MultiplyByQuantizedMultiplier(acc, QuantizeMultiplier(real)) + output_zp)` as one RESCALE of
    an i32 or i48 accumulator, per channel of the last dimension when `reals` has more than one entry.

    `low`, `high`: per-channel bounds (arrays broadcast to `reals`) of every accumulator value. The REQUIREs
    of TOSA's apply_scale_32 / apply_scale_16 are proven over them, or the import fails with the reason.
    """
    reals = np.atleast_1d(np.asarray(reals, dtype=np.float64))
    low = np.broadcast_to(np.asarray(low, dtype=object), reals.shape)
    high = np.broadcast_to(np.asarray(high, dtype=object), reals.shape)
    wide = acc.type.dtype == "i48"
    multipliers, shifts = [], []
    for c, real in enumerate(reals):
        if not (np.isfinite(real) and real >= 0):
            raise ctx.error(f"{what}: effective scale {real!r} is not a finite non-negative number")
        m, e = (int(v) for v in quantize_multiplier(float(real)))
        lo, hi = int(low[c]), int(high[c])
        magnitude = max(-lo, hi)
        if wide:
            m16, shift = reduced_multiplier(m), 15 - e
            if not 2 <= shift <= 62:
                raise ctx.error(f"{what}: scale {real!r} needs a shift of {shift}, outside TOSA's [2, 62]")
            if not INT48_MIN <= lo <= hi <= INT48_MAX:
                raise ctx.error(f"{what}: accumulators in [{lo}, {hi}] can leave 48 bits (the kernel requires "
                                "|acc| < 2^47)")
            extremes = [(v * m16 + (1 << (shift - 1))) >> shift for v in (lo, hi)]
            if min(extremes) < INT32_MIN or max(extremes) > INT32_MAX:
                raise ctx.error(f"{what}: accumulators in [{lo}, {hi}] times scale {real!r} leave int32, where "
                                "LiteRT's MultiplyByQuantizedMultiplier(int64) truncates its result")
            multipliers.append(m16)
        else:
            shift = 31 - e
            if not (2 <= shift <= 62 and magnitude < (1 << (shift - 1))):
                raise ctx.error(f"{what}: accumulators in [{lo}, {hi}] with multiplier {m} and shift {shift} "
                                "cannot be rescaled exactly (TOSA apply_scale_32 needs |acc| < 2^(shift-1); the "
                                "kernel's left shift would overflow int32)")
            multipliers.append(m)
        shifts.append(shift)
    if len(set(zip(multipliers, shifts))) == 1:
        multipliers, shifts = multipliers[:1], shifts[:1]
    if wide:
        return ctx.builder.rescale(acc, multipliers, shifts, 0, output_zp, dtype, rounding="SINGLE_ROUND",
                                   scale32=False)
    return ctx.builder.rescale(acc, multipliers, shifts, 0, output_zp, dtype, rounding="DOUBLE_ROUND")


def i48_to_i32(ctx, acc: Value) -> Value:
    """An i48 value known to fit int32, as i32: apply_scale_16 by 4 / 2^2 is exact ((4v + 2) >> 2 == v)."""
    return ctx.builder.rescale(acc, [4], [2], 0, 0, "i32", rounding="SINGLE_ROUND", scale32=False)


# ------------------------------------------------------------------------------------- TRANSPOSE_CONV


def _filter_scales(ctx, w, channels) -> np.ndarray:
    if not w.quantized:
        raise ctx.error(f"filter {w.describe()} is not quantized")
    scales = w.scale.astype(np.float32)
    if scales.size == 1:
        return np.repeat(scales, channels)
    if scales.size != channels or w.quantized_dimension != 0:
        raise ctx.error(f"filter {w.describe()} must be quantized per tensor or per output channel (dimension 0)")
    return scales


def _output_padding(ctx, padding: int, out_size: int, in_size: int, kernel: int, stride: int, what: str):
    """(out_pad_before, out_pad_after) of TOSA TRANSPOSE_CONV2D for one spatial axis (TFLite
    ComputePaddingHeightWidth on the output size, whose computed input size must be the real one)."""
    if padding == 0:  # SAME
        computed = (out_size + stride - 1) // stride
    else:  # VALID; C++ division truncates toward zero
        numerator = out_size + stride - kernel
        computed = abs(numerator) // stride * (1 if numerator >= 0 else -1)
    if computed != in_size:
        raise ctx.error(f"{what}: output size {out_size} with kernel {kernel}, stride {stride} and "
                        f"{'SAME' if padding == 0 else 'VALID'} padding needs input size {computed}, got {in_size}")
    before, _ = same_or_valid_padding(padding, out_size, kernel, stride, 1)
    after = out_size - (in_size - 1) * stride - kernel + before
    if before >= kernel or after <= -kernel:
        raise ctx.error(f"{what}: padding ({before}, {-after}) is not a TOSA out_pad (must exceed -{kernel})")
    return -before, after


def _accumulator_bounds(w: np.ndarray, x_low: int, x_high: int, bias: np.ndarray | None):
    """Per output channel, bounds of every accumulator: each tap contributes w * (x - zp) with x - zp in
    [x_low, x_high] (a range holding 0, so a tap that is out of bounds only narrows the sum)."""
    wv = w.astype(np.int64).reshape(w.shape[0], -1)
    low = np.minimum(wv * x_low, wv * x_high).sum(axis=1)
    high = np.maximum(wv * x_low, wv * x_high).sum(axis=1)
    if bias is not None:
        low, high = low + bias, high + bias
    return [int(v) for v in low], [int(v) for v in high]


@legalize("TRANSPOSE_CONV", types=("int32->int8", "int32->int16"))
def transpose_conv(ctx, op):
    """reference_integer_ops::TransposeConv (int8, and int16 x int8 with int64 or int32 bias)."""
    output_shape, w, x, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    bias = ctx.input(3)
    o = op.options
    b = ctx.builder
    if x.dtype not in ("int8", "int16") or w.dtype != "int8" or y.dtype != x.dtype:
        raise ctx.error(f"needs int8 or int16 input and output with int8 filter; got {x.describe()}, "
                        f"{w.describe()}, {y.describe()}")
    if w.data is None:
        raise ctx.error(f"filter {w.describe()} must be a constant")
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
        raise ctx.error("input, filter and output must be rank 4")
    if output_shape.data is not None and tuple(int(d) for d in output_shape.data) != tuple(y.shape):
        raise ctx.error(f"output_shape {list(output_shape.data)} differs from the output {y.describe()}")
    oc, kh, kw, ic = w.shape
    check_bias(ctx, bias, oc)
    n, ih, iw, _ = x.shape
    if x.shape[3] != ic or y.shape[3] != oc or y.shape[0] != n:
        raise ctx.error(f"filter {w.describe()} does not fit input {x.describe()} and output {y.describe()}")
    stride = (int(o["stride_h"]), int(o["stride_w"]))
    check_window(ctx, w.shape[1:3], stride, (1, 1), o["padding"])
    top, bottom = _output_padding(ctx, o["padding"], y.shape[1], ih, kh, stride[0], "height")
    left, right = _output_padding(ctx, o["padding"], y.shape[2], iw, kw, stride[1], "width")

    s_in, in_zp = per_tensor(ctx, x)
    s_out, out_zp = per_tensor(ctx, y)
    int16 = x.dtype == "int16"
    if int16 and (in_zp != 0 or out_zp != 0):
        raise ctx.error("int16 input and output must have zero point 0")
    reals = (np.float64(s_in) * _filter_scales(ctx, w, oc).astype(np.float64)) / np.float64(s_out)

    if int16 and o["quantized_bias_type"] not in (0, 2, 4):  # None: no options table (kTfLiteNoType)
        raise ctx.error(f"16x8 quantized_bias_type {o['quantized_bias_type']} is neither unset (FLOAT32), INT32 "
                        f"nor INT64")
    bias_values = None
    accumulate_int32 = not int16
    if bias is not None:
        if bias.data is None:
            raise ctx.error(f"bias {bias.describe()} must be a constant")
        if int16:
            bias_type = {0: None, 2: "int32", 4: "int64"}[o["quantized_bias_type"]]
            if bias.dtype == "int32" and bias_type != "int32":
                raise ctx.error(f"int32 bias {bias.describe()} without quantized_bias_type INT32: LiteRT reads "
                                "it as int64 (past the end of its buffer)")
            if bias.dtype not in ("int32", "int64") or (bias.dtype == "int64" and bias_type == "int32"):
                raise ctx.error(f"bias {bias.describe()} does not match quantized_bias_type")
            accumulate_int32 = bias.dtype == "int32"
        elif bias.dtype != "int32":
            raise ctx.error(f"bias {bias.describe()} must be int32 for int8 inputs")
        bias_values = bias.data.astype(np.int64).reshape(oc)
    elif int16 and o.get("quantized_bias_type", 0) == 2:
        accumulate_int32 = True

    x_low, x_high = (-32768, 32767) if int16 else (-128 - in_zp, 127 - in_zp)
    low, high = _accumulator_bounds(w.data, x_low, x_high, bias_values)
    acc_dtype = "i48" if int16 else "i32"
    if accumulate_int32 and (min(low) < INT32_MIN or max(high) > INT32_MAX):
        raise ctx.error(f"accumulators in [{min(low)}, {max(high)}] overflow the kernel's int32 scratch buffer")
    if bias_values is not None and int16 and not accumulate_int32 and \
            (bias_values.min() < INT48_MIN or bias_values.max() > INT48_MAX):
        raise ctx.error(f"bias {bias.describe()} does not fit TOSA's i48 bias")

    bias_operand = b.const(np.zeros(1) if bias_values is None else bias_values, acc_dtype)
    attrs = {"out_pad": (top, bottom, left, right), "stride": stride, "acc_type": acc_dtype}
    out_dtype = "i16" if int16 else "i8"
    acc = b.op("tosa.transpose_conv2d", [ctx.value(x), b.const(w.data, "i8"), bias_operand,
                                         b.scalar(in_zp, out_dtype), b.scalar(0, "i8")], attrs)
    if int16 and accumulate_int32:
        acc = i48_to_i32(ctx, acc)
    out = requantize_accumulator(ctx, acc, reals, low, high, out_zp, out_dtype, "TRANSPOSE_CONV requantization")
    ctx.set_output(clamp_to_activation(ctx, out, y, o.get("fused_activation_function", 0)))
