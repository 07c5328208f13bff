"""Pooling: AVERAGE_POOL_2D and MAX_POOL_2D (int8 and int16).

Both LiteRT reference kernels (reference_integer_ops::AveragePool / MaxPool, kernels/pooling.cc, with int8
and int16 instances) work on the raw values: the input and output are expected to share scale and zero point
(only DCHECKed), so the zero point never enters the arithmetic. Padded taps are skipped, not counted.
"""

from __future__ import annotations

from tosaic.importers.tflite.common import check_window, clamp_to_activation, fit_windows, same_or_valid_padding
from tosaic.importers.tflite.registry import legalize


def _pool_window(ctx, op):
    """(input value, kernel, stride, pads) with TOSA's exact-division rule met (ComputePaddingHeightWidth)."""
    x, y = ctx.input(0), ctx.output()
    if x.dtype not in ("int8", "int16") or y.dtype != x.dtype or len(x.shape) != 4:
        raise ctx.error(f"pooling needs a rank-4 int8 or int16 input and output of one type; got {x.describe()}, "
                        f"{y.describe()}")
    o = op.options
    kernel = (o["filter_height"], o["filter_width"])
    stride = (o["stride_h"], o["stride_w"])
    if min(kernel) <= 0:
        raise ctx.error(f"filter size {list(kernel)} must be positive")
    check_window(ctx, kernel, stride, (1, 1), o["padding"])
    pads = []
    for axis in range(2):
        pads += same_or_valid_padding(o["padding"], x.shape[axis + 1], kernel[axis], stride[axis], 1)
    xv, pads = fit_windows(ctx, ctx.value(x), kernel, stride, (1, 1), tuple(pads))
    return xv, kernel, stride, pads


@legalize("AVERAGE_POOL_2D", types=("int8", "int16"))
def average_pool_2d(ctx, op):
    """reference_integer_ops::AveragePool: the sum of the in-bounds raw values divided by their count,
    rounded half away from zero (`(acc +- count/2) / count`), then clamped to the fused activation range.

    TOSA AVG_POOL2D with both zero points 0 divides the same raw sum by the same count through
    reciprocal_scale, whose multiplier lies just above 2^shift / count: ties go away from zero and no other
    value of an int8 window sum crosses a rounding boundary (REFERENCE.md section 2).

    Proof for any sum: the multiplier is `m = floor((2^30 + 1) 2^k / n)` with shift `30 + k`, so
    `m / 2^(30+k) = 1/n + e` with `0 < e <= 1 / (2^30 n)`. For a sum `a`, TOSA gives `floor(a / n + 1/2 + a e)`;
    the fraction of `a / n + 1/2` is a multiple of `1 / (2n)`, so `|a e| < 1 / (2n)`, i.e. `|a| < 2^29`, keeps
    every non-tie on its side, and the sign of `a e` sends ties away from zero, as the kernel does. int8 sums
    are far below 2^29; an int16 window needs fewer than 2^14 taps.
    """
    xv, kernel, stride, pads = _pool_window(ctx, op)
    if ctx.input(0).dtype == "int16" and kernel[0] * kernel[1] * 32768 >= 1 << 29:
        raise ctx.error(f"an int16 average over {kernel[0] * kernel[1]} values can reach 2^29, where TOSA's "
                        f"reciprocal_scale stops rounding like the kernel")
    b = ctx.builder
    attrs = {"kernel": kernel, "stride": stride, "pad": pads, "acc_type": "i32"}
    dtype = xv.type.dtype
    out = b.op("tosa.avg_pool2d", [xv, b.scalar(0, dtype), b.scalar(0, dtype)], attrs)
    ctx.set_output(clamp_to_activation(ctx, out, ctx.output(), op.options["fused_activation_function"]))


@legalize("MAX_POOL_2D", types=("int8", "int16"))
def max_pool_2d(ctx, op):
    """reference_integer_ops::MaxPool: the largest in-bounds raw value, clamped to the fused activation range."""
    xv, kernel, stride, pads = _pool_window(ctx, op)
    out = ctx.builder.op("tosa.max_pool2d", [xv], {"kernel": kernel, "stride": stride, "pad": pads})
    ctx.set_output(clamp_to_activation(ctx, out, ctx.output(), op.options["fused_activation_function"]))
