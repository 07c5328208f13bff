"""Pooling: AVERAGE_POOL_2D and MAX_POOL_2D (int8).

Both LiteRT reference kernels (reference_integer_ops::AveragePool / MaxPool, kernels/pooling.cc) work on
the raw int8 values: the input and output are expected to share scale and zero point (only DCHECKed), so
the zero point never enters the arithmetic. Padded taps are skipped, not counted.
"""

from __future__ import annotations

from tosaic.importers.tflite.common import clamp_to_activation, fit_windows, same_or_valid_padding
from tosaic.importers.tflite.registry import legalize


def _pool_window(ctx, op):
    """(input value, kernel, stride, pads) with TOSA's exact-division rule met (ComputePaddingHeightWidth)."""
    x, y = ctx.input(0), ctx.output()
    if x.dtype != "int8" or y.dtype != "int8" or len(x.shape) != 4:
        raise ctx.error(f"int8 pooling needs a rank-4 int8 input and output; got {x.describe()}, {y.describe()}")
    o = op.options
    kernel = (o["filter_height"], o["filter_width"])
    stride = (o["stride_h"], o["stride_w"])
    pads = []
    for axis in range(2):
        pads += same_or_valid_padding(o["padding"], x.shape[axis + 1], kernel[axis], stride[axis], 1)
    xv, pads = fit_windows(ctx, ctx.value(x), kernel, stride, (1, 1), tuple(pads))
    return xv, kernel, stride, pads


@legalize("AVERAGE_POOL_2D", types=("int8",))
def average_pool_2d(ctx, op):
    """reference_integer_ops::AveragePool: the sum of the in-bounds raw values divided by their count,
    rounded half away from zero (`(acc +- count/2) / count`), then clamped to the fused activation range.

    TOSA AVG_POOL2D with both zero points 0 divides the same raw sum by the same count through
    reciprocal_scale, whose multiplier lies just above 2^shift / count: ties go away from zero and no other
    value of an int8 window sum crosses a rounding boundary (REFERENCE.md section 2).
    """
    xv, kernel, stride, pads = _pool_window(ctx, op)
    b = ctx.builder
    attrs = {"kernel": kernel, "stride": stride, "pad": pads, "acc_type": "i32"}
    out = b.op("tosa.avg_pool2d", [xv, b.scalar(0, "i8"), b.scalar(0, "i8")], attrs)
    ctx.set_output(clamp_to_activation(ctx, out, ctx.output(), op.options["fused_activation_function"]))


@legalize("MAX_POOL_2D", types=("int8",))
def max_pool_2d(ctx, op):
    """reference_integer_ops::MaxPool: the largest in-bounds raw value, clamped to the fused activation range."""
    xv, kernel, stride, pads = _pool_window(ctx, op)
    out = ctx.builder.op("tosa.max_pool2d", [xv], {"kernel": kernel, "stride": stride, "pad": pads})
    ctx.set_output(clamp_to_activation(ctx, out, ctx.output(), op.options["fused_activation_function"]))
