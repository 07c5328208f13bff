"""Quantization helpers every legalization shares: scales, fused activations, and window padding."""

from __future__ import annotations

import numpy as np
import tflite

from tosaic.importers.tflite.fixed_point import TYPE_RANGE, per_tensor
from tosaic.importers.tflite.reader import TFLTensor
from tosaic.ir import Value
from tosaic.tosa.ops import MAX_KERNEL, MAX_STRIDE

ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
DTYPE_RANGE = TYPE_RANGE


def tflite_round(x) -> int:
    """std::round / TfLiteRound: nearest integer, halves away from zero, exact for any float."""
    magnitude = abs(float(x))
    whole = np.floor(magnitude)
    rounded = whole + 1 if magnitude - whole >= 0.5 else whole
    return int(rounded if x >= 0 else -rounded)


def quantize_value(ctx, t: TFLTensor, real: float) -> int:
    """TFLite's `Quantize(f)` in CalculateActivationRangeQuantized: zp + round(f / scale) in float32."""
    scale, zp = per_tensor(ctx, t)
    return zp + tflite_round(np.float32(real) / np.float32(scale))


def activation_range(ctx, t: TFLTensor, fused: int) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for the output tensor `t` and a fused activation code."""
    low, high = DTYPE_RANGE[t.dtype]
    name = ACTIVATIONS.get(fused)
    if name == "NONE":
        return low, high
    if name == "RELU":
        return max(low, quantize_value(ctx, t, 0.0)), high
    if name == "RELU6":
        return max(low, quantize_value(ctx, t, 0.0)), min(high, quantize_value(ctx, t, 6.0))
    if name == "RELU_N1_TO_1":
        return max(low, quantize_value(ctx, t, -1.0)), min(high, quantize_value(ctx, t, 1.0))
    raise ctx.error(f"fused activation {name or fused} is not supported on quantized tensors")


def clamp_to_activation(ctx, value: Value, t: TFLTensor, fused: int) -> Value:
    """CLAMP to the fused activation's range, or nothing when that range is the whole type."""
    low, high = activation_range(ctx, t, fused)
    if (low, high) == DTYPE_RANGE[t.dtype]:
        return value
    return ctx.builder.clamp(value, low, high)


def check_window(ctx, kernel, stride, dilation, padding) -> None:
    """Prepare's checks on a windowed op's options: strides and dilations positive (zeros are what an absent
    options table leaves), padding SAME (0) or VALID (1); and TOSA level 8K's limits on kernel extents and
    strides (a dilation of 2^30 would pad the input by as much)."""
    if min(stride) <= 0 or min(dilation) <= 0:
        raise ctx.error(f"stride {list(stride)} and dilation {list(dilation)} must be positive (LiteRT's Prepare "
                        f"refuses others)")
    if padding not in (0, 1):
        raise ctx.error(f"padding {padding} is neither SAME (0) nor VALID (1)")
    if max(d * k for d, k in zip(dilation, kernel)) > MAX_KERNEL or max(stride) > MAX_STRIDE:
        raise ctx.error(f"kernel {list(kernel)} with dilation {list(dilation)} and stride {list(stride)} exceed "
                        f"TOSA level 8K (dilation x kernel and stride at most {MAX_KERNEL})")


def check_output_type_option(ctx, name: str) -> None:
    """SHAPE's out_type, ARG_MAX's and ARG_MIN's output_type: LiteRT's Prepare retypes the output tensor to the
    option, int32 or int64, whatever the model declares (another type, or no options table, it refuses)."""
    code, y = ctx.op.options[name], ctx.output()
    wanted = {tflite.TensorType.INT32: "int32", tflite.TensorType.INT64: "int64"}.get(code)
    if wanted != y.dtype:
        raise ctx.error(f"option {name} is {wanted or code}, the output tensor {y.describe()}: LiteRT's output is "
                        f"of the option's type, int32 or int64")


def check_same_type(ctx, tensors) -> None:
    """The kernels' `TF_LITE_ENSURE_TYPES_EQ` over operands that must share one element type."""
    if len({t.dtype for t in tensors}) > 1:
        raise ctx.error(f"{', '.join(t.describe() for t in tensors)} differ in type (LiteRT's Prepare refuses "
                        f"this)")


def check_bias(ctx, bias, channels: int) -> None:
    """The kernels' `NumElements(bias) == SizeOfDimension(filter, 0)` (an absent bias passes)."""
    if bias is not None and int(np.prod(bias.shape, dtype=np.int64)) != channels:
        raise ctx.error(f"bias {bias.describe()} must hold one value per output channel ({channels})")


def check_output_shape(ctx, shape) -> None:
    """LiteRT's Prepare resizes the output to the shape it computes, whatever the model declares; tosaic
    builds from the declared shape, so a model declaring another is refused."""
    y = ctx.output()
    if tuple(int(d) for d in shape) != tuple(y.shape):
        raise ctx.error(f"LiteRT computes output shape {[int(d) for d in shape]}; the model declares {y.describe()}")


def reduced_shape(shape, axes, keep_dims) -> tuple[int, ...]:
    """reduce.cc ResizeOutputTensor: the reduced axes kept as 1 (keep_dims) or dropped."""
    if keep_dims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def same_or_valid_padding(padding: int, in_size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite ComputePaddingWithOffset: (before, after) for SAME (0) or VALID (1) padding."""
    effective = (kernel - 1) * dilation + 1
    if padding == 1:
        return 0, 0
    out = (in_size + stride - 1) // stride
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


def fit_windows(ctx, x: Value, kernel, stride, dilation, pads):
    """Make (input, pads) satisfy TOSA's exact-division rule for a windowed op over NHWC dims 1 and 2.

    TFLite drops the trailing rows/columns that no window reaches; TOSA requires the padded span to divide
    by the stride exactly. Those rows are never read, so we trim them: first from the trailing padding,
    then by slicing the input.
    """
    pads = list(pads)
    shape = list(x.type.shape)
    for axis, (k, s, d) in enumerate(zip(kernel, stride, dilation)):
        size = shape[axis + 1]
        remainder = (size - 1 + pads[2 * axis] + pads[2 * axis + 1] - (k - 1) * d) % s
        trimmed_pad = min(remainder, pads[2 * axis + 1])
        pads[2 * axis + 1] -= trimmed_pad
        shape[axis + 1] = size - (remainder - trimmed_pad)
    if tuple(shape) != x.type.shape:
        b = ctx.builder
        x = b.op("tosa.slice", [x, b.shape([0] * len(shape)), b.shape(shape)])
    return x, tuple(pads)


def lookup_int16(ctx, x: Value, values: np.ndarray) -> Value:
    """`values[x + 32768]` for an i16 tensor x: any int16 -> int16 function, exactly, as one GATHER from a
    65536-entry constant (TOSA GATHER reads rows [N, K, C] by i32 indices [N, W])."""
    b = ctx.builder
    values = np.asarray(values, dtype=np.int64)
    if values.shape != (65536,) or values.min() < -32768 or values.max() > 32767:
        raise ValueError("an int16 lookup needs 65536 int16 values")
    shape = x.type.shape
    size = int(np.prod(shape, dtype=np.int64))
    index = b.op("tosa.add", [b.cast(x, "i32"), b.const(np.full((1,) * len(shape), 32768), "i32")])
    table = b.const(values.reshape(1, 65536, 1), "i16")
    return b.reshape(b.op("tosa.gather", [table, b.reshape(index, (1, size))]), shape)
