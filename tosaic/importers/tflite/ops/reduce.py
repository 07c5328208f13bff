"""Reductions: MEAN (int8 and int16).

LiteRT 2.3.0's reference resolver runs every int8 MEAN through reference_ops::QuantizedMeanOrSum
(kernels/reduce.cc EvalMean -> EvalQuantizedMean): the 4-D height/width keep_dims special case
(optimized_integer_ops::Mean) is taken only by the optimized resolver, and reference_integer_ops::Mean no
longer exists (its header is empty).
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.common import check_output_shape, reduced_shape
from tosaic.importers.tflite.fixed_point import STORAGE, per_tensor, quantized_range, rescale_exact, to_i32
from tosaic.importers.tflite.registry import legalize
from tosaic.quant import count_leading_zeros32, quantize_multiplier


def _clz64(value: int) -> int:
    high, low = value >> 32, value & 0xFFFFFFFF
    return count_leading_zeros32(high) if high else 32 + count_leading_zeros32(low)


def mean_multiplier(input_scale: float, output_scale: float, count: int) -> tuple[int, int]:
    """QuantizedMeanOrSum's requantization with the 1/count folded in, as a TFLite (multiplier, exponent).

    Prepare: QuantizeMultiplier(double(s_in) / double(s_out)). Eval: `shift = 63 - clz64(count)`, limited to
    32 and to `31 + exponent`; `multiplier = (int64(multiplier) << shift) / count` (truncating);
    `exponent -= shift`.
    """
    multiplier, exponent = quantize_multiplier(float(input_scale) / float(output_scale))
    shift = min(63 - _clz64(count), 32, 31 + exponent)
    return int((multiplier << shift) // count), exponent - shift


@legalize("MEAN", types=("int8", "int16"))
def mean(ctx, op):
    """reference_ops::QuantizedMeanOrSum (compute_sum = false) for int8 and int16 (zero points 0).

    `sum (x - input_zp)` over the reduced axes in int32, then MultiplyByQuantizedMultiplier with the folded
    multiplier, + output zero point, saturated to int8 (MEAN has no fused activation). In TOSA: RESCALE
    int8 -> int32 subtracting the input zero point (scale 1), one REDUCE_SUM per axis, RESCALE with
    DOUBLE_ROUND, RESHAPE to the output shape (which drops the axes unless keep_dims).
    """
    x, axis_tensor, y = ctx.input(0), ctx.input(1), ctx.output()
    if x.dtype not in ("int8", "int16") or y.dtype != x.dtype:
        raise ctx.error(f"MEAN needs int8 or int16 input and output of one type; got {x.describe()}, "
                        f"{y.describe()}")
    if axis_tensor is None or axis_tensor.data is None:
        raise ctx.error("MEAN needs a constant axis tensor")
    rank = len(x.shape)
    axes = []
    for a in np.asarray(axis_tensor.data).reshape(-1).tolist():  # ResolveAxis: negatives wrap, duplicates go
        resolved = a + rank if a < 0 else a
        if not 0 <= resolved < rank:
            raise ctx.error(f"axis {a} is out of range for {x.describe()}")
        if resolved not in axes:
            axes.append(resolved)
    check_output_shape(ctx, reduced_shape(x.shape, axes, ctx.op.options["keep_dims"]))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if count == 0 or int(np.prod(x.shape, dtype=np.int64)) == 0:
        raise ctx.error("MEAN of an empty tensor is not supported")

    s_in, in_zp = per_tensor(ctx, x)
    s_out, out_zp = per_tensor(ctx, y)
    if x.dtype == "int16" and (in_zp or out_zp):
        raise ctx.error("int16 MEAN needs zero points 0 (LiteRT rejects the model)")
    multiplier, exponent = mean_multiplier(s_in, s_out, count)
    low, high = quantized_range(x.dtype, in_zp)
    largest = count * max(-low, high)
    if largest > (1 << 31) - 1:
        raise ctx.error(f"the int32 sum of {count} values can overflow")
    if exponent > 0 and largest << exponent > (1 << 31) - 1:
        raise ctx.error(f"the kernel's left shift by {exponent} can overflow int32 (wraps in C++)")
    shift = 31 - exponent
    if not 2 <= shift <= 62:
        raise ctx.error(f"mean scale {s_in / (s_out * count):.6g} needs a RESCALE shift of {shift}, outside [2, 62]")

    b = ctx.builder
    acc = to_i32(ctx, ctx.value(x), in_zp)
    for axis in axes:
        acc = b.op("tosa.reduce_sum", [acc], {"axis": axis})
    out = rescale_exact(ctx, acc, multiplier, shift, (count * low, count * high), 0, out_zp, STORAGE[y.dtype],
                        "MEAN multiplier")
    ctx.set_output(b.reshape(out, y.shape))
