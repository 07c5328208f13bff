"""RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR (int8, int16): TOSA RESIZE where it reproduces LiteRT's
reference bits, GATHER with import-time indices where it cannot.

Neither kernel reads a scale or zero point: the output holds interpolated input integers, whatever the
output tensor's quantization says (LiteRT's Prepare does not compare them).

RESIZE_BILINEAR: BUILTIN_REF runs reference_ops::ResizeBilinearInteger for int8 and int16
(kernels/resize_bilinear.cc, kernels/internal/reference/resize_bilinear.h), all in integers:

    scale_10 = (1024 * in + out / 2) / out        (align_corners, out > 1: (1024 * (in-1) + (out-1) / 2) / (out-1))
    p(o)     = o * scale_10  (+ scale_10 / 2 - 512 with half_pixel_centers)      position in 1/1024 pixel
    i0 = max(p / 1024, 0), i1 = min((p + 1023) / 1024, in - 1), f = p - 1024 * i0      (C++ division)
    out20 = v[i0,j0] (1024-fy)(1024-fx) + v[i1,j0] fy (1024-fx) + v[i0,j1] (1024-fy) fx + v[i1,j1] fy fx
    out = (out20 + (out20 > 0 ? 2^19 : -2^19)) / 2^20                 round half away from zero (C++ /)

  TOSA RESIZE BILINEAR with scale = [1024, scale_10_y, 1024, scale_10_x] and offset = p(0) computes the same
  positions and the same sum (its i32 / i48 output is out20): for p >= 0, idiv_floor and C++ division
  agree, f = p mod 1024, and TOSA's i1 = min(i0 + 1, in - 1) differs from the kernel's only where f = 0,
  where i1's weight is 0; for p < 0 (half-pixel, first row, p >= -512) both read row 0 twice with weights
  adding up to 1024. The input is first sliced to the rows and columns the kernel reads (an axis that reads
  one row only is resized 1 -> 1 and TILEd). Where TOSA's bounds still exclude the parameters (a downscale to
  1/16 or below, an upscale beyond 256, sizes from 16384), the same sum is computed from GATHERed rows and
  columns with i32 MUL/ADD (`_bilinear_by_gather`). A kernel that would read past the input (its rounded
  10-bit scale overshooting, with thousands of output rows) is refused.
  The rounding is half away from zero, where TOSA RESCALE rounds half up:
  - i8 (|out20| <= 2^27): RESCALE by (2^28 + 1) / 2^48, SINGLE_ROUND: the multiplier's excess 2^-28 moves
    every half-way value away from zero and no other value across a rounding boundary (proven in
    tests/test_legalize_matmul_resize.py at every step of both functions).
  - i16 (|out20| <= 2^35, i48): no 16-bit multiplier is fine enough. RESIZE(~x) = -out20 - 2^20 (the weights
    sum to 2^20), so `q_down = ~RESCALE(RESIZE(~x), 1 / 2^20)` rounds out20 / 2^20 half down while
    `q_up = RESCALE(RESIZE(x), 1 / 2^20)` rounds it half up; they differ only on half-way values, which are
    positive exactly when q_down >= 0: out = q_down >= 0 ? q_up : q_down.

RESIZE_NEAREST_NEIGHBOR: reference_ops::ResizeNearestNeighbor (all integer types by bit width), in float:

    scale = float(in) / float(out)          (align_corners, out > 1: float(in-1) / float(out-1))
    i = min(align_corners ? round((o + offset) * scale) : floor((o + offset) * scale), in - 1)
    with offset = 0.5f and i = max(i, 0) for half_pixel_centers   (float32 arithmetic, round half away)

  The index maps are computed at import time exactly so (numpy float32). TOSA RESIZE NEAREST picks
  `floor((o * d + offset) / n + 1/2)`; the exact rational form of the kernel's formula gives candidate
  (n, d, offset), used when the TOSA map equals the kernel's map on every output index and the ERROR_IFs
  hold. Float rounding makes some sizes differ from the rational map (e.g. an exact integer product
  rounding down), and TOSA bounds exclude some others: those become one GATHER per resized axis with the
  kernel's own indices.
"""

from __future__ import annotations

import math

import numpy as np

from tosaic.importers.tflite.registry import legalize
from tosaic.ir import Value

UNIT = 1 << 10  # the kernel's 10-bit fixed-point pixel
MAX_SIZE = 16384  # TOSA RESIZE: ERROR_IF(max(OH, OW, IH, IW) >= 16384)
MAX_SCALE = 256  # level 8K: scale_n / scale_d <= MAX_SCALE
# i8: round half away from zero of out20 / 2^20 as one RESCALE (see the module docstring).
HALF_AWAY_MULTIPLIER, HALF_AWAY_SHIFT = (1 << 28) + 1, 48
UNIT_SHIFT_20 = 20


# ----------------------------------------------------------------------------------------- helpers


def _sizes(ctx, op):
    """(input, output tensors, input H/W, output H/W) after checking the op's shapes and size input."""
    x, size, y = ctx.input(0), ctx.input(1), ctx.output()
    if len(x.shape) != 4 or len(y.shape) != 4:
        raise ctx.error("input and output must be rank 4")
    if x.dtype not in ("int8", "int16") or y.dtype != x.dtype:
        raise ctx.error(f"needs int8 or int16 input and output, got {x.describe()} -> {y.describe()}")
    if size.dtype != "int32" or size.shape != (2,):
        raise ctx.error(f"size {size.describe()} must be an int32 vector of 2 values (LiteRT's Prepare refuses "
                        f"others)")
    if size.data is not None and tuple(int(v) for v in size.data.reshape(-1)) != tuple(y.shape[1:3]):
        raise ctx.error(f"size {list(size.data.reshape(-1))} differs from the output {y.describe()}")
    if y.shape[0] != x.shape[0] or y.shape[3] != x.shape[3] or min(y.shape[1:3]) < 1:
        raise ctx.error(f"output {y.describe()} does not fit input {x.describe()}")
    return x, y, x.shape[1:3], y.shape[1:3]


def _tosa_axis_ok(n: int, d: int, offset: int, in_size: int, out_size: int) -> bool:
    """TOSA RESIZE's ERROR_IFs and level limit for one axis with these parameters."""
    border = (out_size - 1) * d - (in_size - 1) * n + offset
    return (0 < n <= 1 << 11 and 0 < d < 16 * n and -n <= offset < 16 * n and -16 * n <= border < n
            and n <= MAX_SCALE * d and max(in_size, out_size) < MAX_SIZE)


def _border(n: int, d: int, offset: int, in_size: int, out_size: int) -> int:
    """The border that makes TOSA's output size `out_size`: (in - 1) * n - offset + border = (out - 1) * d."""
    return (out_size - 1) * d - (in_size - 1) * n + offset


def _resize(ctx, x: Value, mode: str, params, out_hw) -> Value:
    """TOSA RESIZE of x to `out_hw` with (n, d, offset) per axis; the border follows from the sizes."""
    b = ctx.builder
    (ny, dy, oy), (nx, dx, ox) = params
    ih, iw = x.type.shape[1:3]
    oh, ow = out_hw
    scale = b.shape([ny, dy, nx, dx])
    offset = b.shape([oy, ox])
    border = b.shape([_border(ny, dy, oy, ih, oh), _border(nx, dx, ox, iw, ow)])
    return b.op("tosa.resize", [x, scale, offset, border], {"mode": mode})


# ------------------------------------------------------------------------------------ RESIZE_BILINEAR


def bilinear_scale_10(in_size: int, out_size: int, align_corners: bool) -> int:
    """The kernel's height_scale_10 / width_scale_10 (non-negative operands: C++ division is floor)."""
    if align_corners and out_size > 1:
        return (UNIT * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    return (UNIT * in_size + out_size // 2) // out_size


def bilinear_rows(in_size: int, out_size: int, align_corners: bool, half_pixel: bool):
    """The kernel's ComputeInterpolationValuesInteger for every output index: (p, i0, i1) with p the
    position in 1/1024 pixel (C++ division truncates toward zero; p >= -512)."""
    scale = bilinear_scale_10(in_size, out_size, align_corners)
    p = np.arange(out_size, dtype=np.int64) * scale + (scale // 2 - UNIT // 2 if half_pixel else 0)
    i0 = np.maximum(np.where(p >= 0, p // UNIT, 0), 0)
    i1 = np.minimum(np.where(p + UNIT - 1 >= 0, (p + UNIT - 1) // UNIT, 0), in_size - 1)
    return scale, p, i0, i1


def bilinear_axis(ctx, in_size: int, out_size: int, align_corners: bool, half_pixel: bool, name: str):
    """How one axis becomes TOSA RESIZE: (first row, row count, (n, d, offset) or None, tile). The input is
    sliced to the rows the kernel reads, or to its single row, which a 1 -> 1 RESIZE keeps and a TILE repeats
    `tile` times (every output of the axis then equals that row: its weights sum to 1024). The parameters
    are None where TOSA's bounds exclude them."""
    scale, p, i0, i1 = bilinear_rows(in_size, out_size, align_corners, half_pixel)
    if i0.max() > in_size - 1:
        raise ctx.error(f"{name} {in_size} -> {out_size}: the kernel reads row {int(i0.max())}, past the input "
                        "(its 10-bit scale rounds too far)")
    first, last = int(i0.min()), int(i1.max())
    if first == last:
        return first, 1, (UNIT, UNIT, 0), out_size
    d = scale if out_size > 1 else UNIT  # one output: only its offset matters
    params = (UNIT, d, int(p[0]) - UNIT * first)
    return first, last - first + 1, params if _tosa_axis_ok(*params, last - first + 1, out_size) else None, 1


@legalize("RESIZE_BILINEAR", types=("int8", "int16"))
def resize_bilinear(ctx, op):
    """reference_ops::ResizeBilinearInteger, as TOSA RESIZE BILINEAR and a half-away-from-zero rounding, or
    as GATHERs and integer arithmetic where TOSA RESIZE's bounds exclude the sizes."""
    x, y, in_hw, out_hw = _sizes(ctx, op)
    align, half = bool(op.options.get("align_corners")), bool(op.options.get("half_pixel_centers"))
    if align and half:
        raise ctx.error("align_corners and half_pixel_centers together (LiteRT's Prepare rejects them)")
    axes = [bilinear_axis(ctx, in_hw[a], out_hw[a], align, half, name) for a, name in enumerate(("height", "width"))]
    b = ctx.builder
    xv = ctx.value(x)
    if any(axis[2] is None for axis in axes):
        rows = [bilinear_rows(in_hw[a], out_hw[a], align, half)[1:] for a in range(2)]
        ctx.set_output(_bilinear_by_gather(ctx, xv, rows, x.dtype))
        return
    window = (x.shape[0], axes[0][1], axes[1][1], x.shape[3])
    if window != tuple(x.shape):
        xv = b.op("tosa.slice", [xv, b.shape([0, axes[0][0], axes[1][0], 0]), b.shape(window)])
    params = [axis[2] for axis in axes]
    resized_hw = [out // axis[3] for out, axis in zip(out_hw, axes)]
    if x.dtype == "int8":
        out20 = _resize(ctx, xv, "BILINEAR", params, resized_hw)
        out = b.rescale(out20, HALF_AWAY_MULTIPLIER, HALF_AWAY_SHIFT, 0, 0, "i8", rounding="SINGLE_ROUND")
    else:
        up = b.rescale(_resize(ctx, xv, "BILINEAR", params, resized_hw), 1, UNIT_SHIFT_20, 0, 0, "i32",
                       rounding="SINGLE_ROUND", scale32=False)
        flipped = _resize(ctx, b.op("tosa.bitwise_not", [xv]), "BILINEAR", params, resized_hw)
        down = b.op("tosa.bitwise_not", [b.rescale(flipped, 1, UNIT_SHIFT_20, 0, 0, "i32",
                                                   rounding="SINGLE_ROUND", scale32=False)])
        out = b.cast(_half_away(ctx, up, down), "i16")
    if axes[0][3] > 1 or axes[1][3] > 1:
        out = b.op("tosa.tile", [out, b.shape([1, axes[0][3], axes[1][3], 1])])
    ctx.set_output(out)


def _half_away(ctx, up: Value, down: Value) -> Value:
    """Round half away from zero from the half-up and half-down roundings of the same value (i32): they
    differ only on half-way values, which are positive exactly when the half-down one is >= 0."""
    b = ctx.builder
    positive = b.op("tosa.greater_equal", [down, _i32(ctx, 0)])
    return b.op("tosa.select", [positive, up, down])


def _i32(ctx, value) -> Value:
    """An i32 constant that broadcasts over NHWC (a scalar, or one value per output row or column)."""
    array = np.asarray(value, dtype=np.int64)
    return ctx.builder.const(array.reshape((1, 1, 1, 1)) if array.ndim == 0 else array, "i32")


def _bilinear_by_gather(ctx, x: Value, rows, dtype: str) -> Value:
    """The kernel's sum out20 = sum wy * wx * v and its rounding, from GATHERed rows and columns and i32
    arithmetic (used where TOSA RESIZE's bounds exclude the sizes, e.g. a downscale to 1/16 or below).

    Weights (1024 - f, f) with f = p - 1024 * i0, except f = 0 where p < 0 (both taps are then row 0, so
    out20 is unchanged): all weights lie in [0, 1024]. The horizontal pass h = wx0 * v[j0] + wx1 * v[j1] stays
    below 2^25 in magnitude. int8: out20 = wy0 * h0 + wy1 * h1 (|out20| <= 2^27) and the half-away RESCALE.
    int16: out20 reaches 2^35, so with h = 1024 * hh + hl (hl in [0, 1024)), A = sum wy * hh (|A| <= 2^25),
    B = sum wy * hl (in [0, 2^20)): out20 = 1024 * A + B = 2^20 * (A >> 10) + R with R = 1024 * (A & 1023) + B
    in [0, 2^21). Then half up is (A >> 10) + ((R + 2^19) >> 20) and half down (A >> 10) - ((2^19 - R) >> 20).
    """
    b = ctx.builder
    (p_y, y0, y1), (p_x, x0, x1) = rows
    fy, fx = np.maximum(p_y - UNIT * y0, 0), np.maximum(p_x - UNIT * x0, 0)
    wy0, wy1 = _i32(ctx, (UNIT - fy).reshape(1, -1, 1, 1)), _i32(ctx, fy.reshape(1, -1, 1, 1))
    wx0, wx1 = _i32(ctx, (UNIT - fx).reshape(1, 1, -1, 1)), _i32(ctx, fx.reshape(1, 1, -1, 1))

    def mul(a, c):
        return b.mul_shift(a, c, 0)

    def add(a, c):
        return b.op("tosa.add", [a, c])

    def horizontal(row_values):
        left = b.cast(_gather_axis(ctx, row_values, 2, x0), "i32")
        right = b.cast(_gather_axis(ctx, row_values, 2, x1), "i32")
        return add(mul(left, wx0), mul(right, wx1))

    h0, h1 = horizontal(_gather_axis(ctx, x, 1, y0)), horizontal(_gather_axis(ctx, x, 1, y1))
    if dtype == "int8":
        out20 = add(mul(h0, wy0), mul(h1, wy1))
        return b.rescale(out20, HALF_AWAY_MULTIPLIER, HALF_AWAY_SHIFT, 0, 0, "i8", rounding="SINGLE_ROUND")

    def shift_right(a, amount):
        return b.op("tosa.arithmetic_right_shift", [a, _i32(ctx, amount)], {"round": False})

    def low_bits(a):
        return b.op("tosa.bitwise_and", [a, _i32(ctx, UNIT - 1)])

    big = add(mul(shift_right(h0, 10), wy0), mul(shift_right(h1, 10), wy1))
    small = add(mul(low_bits(h0), wy0), mul(low_bits(h1), wy1))
    whole = shift_right(big, 10)
    rest = add(mul(low_bits(big), _i32(ctx, UNIT)), small)
    up = add(whole, shift_right(add(rest, _i32(ctx, 1 << 19)), 20))
    down = b.op("tosa.sub", [whole, shift_right(b.op("tosa.sub", [_i32(ctx, 1 << 19), rest]), 20)])
    return b.cast(_half_away(ctx, up, down), "i16")


# ---------------------------------------------------------------------------- RESIZE_NEAREST_NEIGHBOR


def nearest_indices(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """reference_ops::GetNearestNeighbor for o = 0 .. out_size - 1, in float32 as the C++ computes it."""
    f32 = np.float32
    if align_corners and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    offset = f32(0.5) if half_pixel else f32(0.0)
    value = (np.arange(out_size).astype(f32) + offset) * scale  # float32 add and multiply
    if align_corners:
        whole = np.floor(np.abs(value))
        rounded = np.where(np.abs(value) - whole >= f32(0.5), whole + 1, whole) * np.sign(value)  # TfLiteRound
    else:
        rounded = np.floor(value)
    index = np.minimum(rounded.astype(np.int64), in_size - 1)
    if half_pixel:
        index = np.maximum(index, 0)
    return index


def tosa_nearest_indices(n: int, d: int, offset: int, in_size: int, out_size: int) -> np.ndarray:
    """The indices TOSA RESIZE NEAREST_NEIGHBOR reads along one axis (integer resize_t)."""
    position = np.arange(out_size, dtype=np.int64) * d + offset
    i = position // n
    r = position - i * n
    return np.where(2 * r >= n, np.minimum(i + 1, in_size - 1), np.maximum(i, 0))


def nearest_axis(in_size: int, out_size: int, align_corners: bool, half_pixel: bool):
    """TOSA (n, d, offset) reproducing the kernel's index map on one axis, or None."""
    target = nearest_indices(in_size, out_size, align_corners, half_pixel)
    if align_corners and out_size > 1:
        # round((o + h) * (in-1) / (out-1)), h = 0 or 1/2
        candidates = [(2 * (out_size - 1), 2 * (in_size - 1), in_size - 1 if half_pixel else 0)]
    else:
        # floor((o + h) * in / out) = floor(((2o + 2h) * in - out) / (2 out) + 1/2)
        candidates = [(2 * out_size, 2 * in_size, (in_size if half_pixel else 0) - out_size)]
    candidates.append((1, 1, 0))  # the identity, when the kernel's map happens to be one
    for n, d, offset in candidates:
        g = math.gcd(n, d, offset)
        n, d, offset = n // g, d // g, offset // g
        if _tosa_axis_ok(n, d, offset, in_size, out_size) and \
                np.array_equal(tosa_nearest_indices(n, d, offset, in_size, out_size), target):
            return n, d, offset
    return None


def _gather_axis(ctx, x: Value, axis: int, indices: np.ndarray) -> Value:
    """x [N, H, W, C] with its `axis` (1 or 2) re-indexed by constant `indices`, as one TOSA GATHER."""
    b = ctx.builder
    n, h, w, c = x.type.shape
    if axis == 1:
        values, batches, tail = b.reshape(x, (n, h, w * c)), n, (w, c)
    else:
        values, batches, tail = b.reshape(x, (n * h, w, c)), n * h, (c,)
    index = b.const(np.tile(indices.astype(np.int32), (batches, 1)), "i32")
    gathered = b.op("tosa.gather", [values, index])
    shape = (n, len(indices)) + tail if axis == 1 else (n, h, len(indices), c)
    return b.reshape(gathered, shape)


@legalize("RESIZE_NEAREST_NEIGHBOR", types=("int8", "int16"))
def resize_nearest_neighbor(ctx, op):
    """reference_ops::ResizeNearestNeighbor: TOSA RESIZE NEAREST_NEIGHBOR when its index maps equal the
    kernel's, else GATHERs with the kernel's index maps."""
    x, y, in_hw, out_hw = _sizes(ctx, op)
    align, half = bool(op.options.get("align_corners")), bool(op.options.get("half_pixel_centers"))
    params = [nearest_axis(in_hw[a], out_hw[a], align, half) for a in range(2)]
    xv = ctx.value(x)
    if None not in params:
        ctx.set_output(_resize(ctx, xv, "NEAREST_NEIGHBOR", params, out_hw))
        return
    for axis in range(2):
        indices = nearest_indices(in_hw[axis], out_hw[axis], align, half)
        if not np.array_equal(indices, np.arange(in_hw[axis])):
            xv = _gather_axis(ctx, xv, axis + 1, indices)
    ctx.set_output(xv)
