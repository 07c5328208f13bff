"""BATCH_MATMUL (int8 -> int8, int8 -> int32, int16 -> int16, int16 x int8 -> int16) as TOSA MATMUL.

What BUILTIN_REF runs (tflite/kernels/batch_matmul.cc, `Register_BATCH_MATMUL_REF`, and
reference_ops::BatchMatMul in kernels/internal/reference/batch_matmul.h): the operands are broadcast over
their batch dimensions (numpy rules on the dimensions before the last two, ranks 2 to 5), adj_x / adj_y
transpose the last two dimensions of lhs / rhs, and per output element

    acc = sum_k (lhs[m, k] - lhs_zp) * (rhs[k, n] - rhs_zp)      (int32 for int8, int64 for int16)
    out = clamp(MultiplyByQuantizedMultiplier(acc, m, e) + out_zp, type min, type max)   (no fused activation)

- (m, e) = QuantizeMultiplier(double(float(s_lhs * s_rhs)) / double(s_out)): GetQuantizedConvolutionMultipler
  without a bias multiplies the two scales in *float* before widening (kernel_util.cc), unlike CONV_2D's
  double product; the test suite has a case where the two differ.
- int8: MultiplyByQuantizedMultiplier(int32), double rounding: RESCALE DOUBLE_ROUND of the i32 MATMUL.
- int16 (lhs int16, rhs int16 or int8, every zero point 0, checked in Prepare): the int64 overload, with a
  16-bit multiplier `(m + 2^15) >> 16` and one rounding shift by 15 - e: RESCALE from i48, scale32 = false.
  TOSA MATMUL needs equal operand types, so an int8 rhs is widened to i16 (CAST; exact).
- int8 -> int32 output (EvalInt8Int32): the raw products, with *no* zero points and no requantization.

TOSA MATMUL is [N, H, C] x [N, C, W]. When the rhs has no batch dimensions other than 1 (weights, usually
constant), all lhs batches fold into the rows of one matrix; otherwise each operand is TILEd to the broadcast
batch shape and the batches are flattened into N. Constant operands are transposed, widened and reshaped at
import time. The RESCALE's REQUIREs are proven over the accumulator's bounds (exact per column for a
constant operand, the type's extremes for runtime ones).
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.fixed_point import per_tensor
from tosaic.importers.tflite.ops.transpose_conv import requantize_accumulator
from tosaic.importers.tflite.registry import legalize
from tosaic.ir import Value

# (lhs, rhs, output) TFLite types -> (TOSA operand type, accumulator type)
KINDS = {
    ("int8", "int8", "int8"): ("i8", "i32"),
    ("int8", "int8", "int32"): ("i8", "i32"),
    ("int16", "int16", "int16"): ("i16", "i48"),
    ("int16", "int8", "int16"): ("i16", "i48"),
}
RANGES = {"int8": (-128, 127), "int16": (-32768, 32767)}


def _operand(ctx, t, transpose_last: bool, dtype: str) -> Value:
    """`t` as a TOSA value of element type `dtype`, its last two dimensions swapped when asked."""
    b = ctx.builder
    if t.data is not None:
        data = np.swapaxes(t.data, -1, -2) if transpose_last else t.data
        return b.const(np.ascontiguousarray(data), dtype)
    value = ctx.value(t)
    if transpose_last:
        rank = len(t.shape)
        value = b.transpose(value, list(range(rank - 2)) + [rank - 1, rank - 2])
    if value.type.dtype != dtype:
        value = b.cast(value, dtype)
    return value


def _matrix_bounds(matrix: np.ndarray | None, matrix_zp: int, other: tuple[int, int], depth: int):
    """Bounds of sum_k (a_k - a_zp) * (b_k - b_zp) over one dot product of length `depth`: `matrix` is the
    constant operand as [..., depth, columns] (None when both are runtime values) and `other` the range of
    the runtime operand minus its zero point (a range holding 0)."""
    lo, hi = other
    if matrix is None:
        return None
    mv = matrix.astype(np.int64).reshape(-1, depth, matrix.shape[-1]) - matrix_zp
    low = np.minimum(mv * lo, mv * hi).sum(axis=1)
    high = np.maximum(mv * lo, mv * hi).sum(axis=1)
    return int(low.min()), int(high.max())


@legalize("BATCH_MATMUL", types=("int8", "int16", "int8->int32"))
def batch_matmul(ctx, op):
    """reference_ops::BatchMatMul (integer variants), through the BATCH_MATMUL reference kernel's Eval."""
    lhs, rhs, y = ctx.input(0), ctx.input(1), ctx.output()
    b = ctx.builder
    kind = KINDS.get((lhs.dtype, rhs.dtype, y.dtype))
    if kind is None:
        raise ctx.error(f"no integer BATCH_MATMUL kernel for {lhs.describe()} x {rhs.describe()} -> {y.describe()}")
    operand_dtype, acc_dtype = kind
    adj_x, adj_y = bool(op.options.get("adj_x", False)), bool(op.options.get("adj_y", False))
    if not (2 <= len(lhs.shape) <= 5 and 2 <= len(rhs.shape) <= 5):
        raise ctx.error("operands must have rank 2 to 5")
    if 0 in lhs.shape or 0 in rhs.shape:
        raise ctx.error(f"empty operand {lhs.describe()} or {rhs.describe()} is not supported")
    rank = max(len(lhs.shape), len(rhs.shape))
    lhs_shape = (1,) * (rank - len(lhs.shape)) + tuple(lhs.shape)
    rhs_shape = (1,) * (rank - len(rhs.shape)) + tuple(rhs.shape)
    rows, depth = (lhs_shape[-1], lhs_shape[-2]) if adj_x else lhs_shape[-2:]
    rhs_depth, cols = (rhs_shape[-1], rhs_shape[-2]) if adj_y else rhs_shape[-2:]
    if depth != rhs_depth:
        raise ctx.error(f"lhs {lhs.describe()} (adj_x={adj_x}) and rhs {rhs.describe()} (adj_y={adj_y}) do not "
                        "multiply")
    batch = []
    for a, c in zip(lhs_shape[:-2], rhs_shape[:-2]):
        if a != c and 1 not in (a, c):
            raise ctx.error(f"batch dimensions of {lhs.describe()} and {rhs.describe()} do not broadcast")
        batch.append(max(a, c) if 1 in (a, c) else a)
    if tuple(y.shape) != tuple(batch) + (rows, cols):
        raise ctx.error(f"output {y.describe()} is not the product's shape {batch + [rows, cols]}")

    raw = y.dtype == "int32"  # EvalInt8Int32: plain products, zero points unused
    if raw:
        lhs_zp = rhs_zp = 0
    else:
        s_lhs, lhs_zp = per_tensor(ctx, lhs)
        s_rhs, rhs_zp = per_tensor(ctx, rhs)
        s_out, out_zp = per_tensor(ctx, y)
        if operand_dtype == "i16" and (lhs_zp, rhs_zp, out_zp) != (0, 0, 0):
            raise ctx.error("int16 BATCH_MATMUL needs zero points 0 (LiteRT's Prepare checks it)")

    a = b.reshape(_operand(ctx, lhs, adj_x, operand_dtype), lhs_shape[:-2] + (rows, depth))
    c = b.reshape(_operand(ctx, rhs, adj_y, operand_dtype), rhs_shape[:-2] + (depth, cols))
    batches = int(np.prod(batch, dtype=np.int64))
    if all(d == 1 for d in rhs_shape[:-2]):
        a = b.reshape(a, (1, batches * rows, depth))
        c = b.reshape(c, (1, depth, cols))
    else:
        a, c = (b.reshape(_broadcast(ctx, v, batch), (batches,) + v.type.shape[-2:]) for v in (a, c))
    zps = [b.scalar(lhs_zp, operand_dtype), b.scalar(rhs_zp, operand_dtype)]
    acc = b.op("tosa.matmul", [a, c] + zps)
    if raw:
        ctx.set_output(b.reshape(acc, y.shape))
        return

    real = float(np.float32(s_lhs) * np.float32(s_rhs)) / float(s_out)
    lhs_range = (RANGES[lhs.dtype][0] - lhs_zp, RANGES[lhs.dtype][1] - lhs_zp)
    rhs_range = (RANGES[rhs.dtype][0] - rhs_zp, RANGES[rhs.dtype][1] - rhs_zp)
    bounds = None
    if rhs.data is not None:
        rhs_matrix = np.swapaxes(rhs.data, -1, -2) if adj_y else rhs.data
        bounds = _matrix_bounds(rhs_matrix, rhs_zp, lhs_range, depth)
    elif lhs.data is not None:
        lhs_matrix = lhs.data if adj_x else np.swapaxes(lhs.data, -1, -2)  # as [..., depth, rows]
        bounds = _matrix_bounds(lhs_matrix, lhs_zp, rhs_range, depth)
    if bounds is None:
        products = [p * q for p in lhs_range for q in rhs_range]
        bounds = (depth * min(products), depth * max(products))
    out = requantize_accumulator(ctx, acc, [real], bounds[0], bounds[1], out_zp,
                                 "i8" if y.dtype == "int8" else "i16", "BATCH_MATMUL requantization")
    ctx.set_output(b.reshape(out, y.shape))


def _broadcast(ctx, value: Value, batch) -> Value:
    """TILE the batch dimensions of a [..., R, C] value up to `batch` (numpy broadcasting)."""
    shape = value.type.shape
    multiples = [target // own for own, target in zip(shape[:-2], batch)] + [1, 1]
    if all(m == 1 for m in multiples):
        return value
    return ctx.builder.op("tosa.tile", [value, ctx.builder.shape(multiples)])
