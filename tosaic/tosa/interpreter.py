"""Reference interpreter for the TOSA dialect: numpy, bit-exact to the TOSA 1.0 spec pseudocode.

One implementation per op, registered by name. Integer tensors are computed in int64 and narrowed at the
op's result type exactly where the spec saturates (apply_clip) or wraps. Convolutions and matmuls use
float64 matrix products, which are exact here: every operand is below 2^17 in magnitude after zero-point
subtraction and every partial sum stays far below 2^53, so BLAS speed costs no bits. Float max, min,
clamp, reductions and max pooling follow the spec's definitions exactly (`tosaic.quant.float_ops`): NaN
modes, which zero a tie returns, and the order values are combined in.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tosaic.errors import TosaicError
from tosaic.ir import Graph, Operation, TensorType, integer_range
from tosaic.quant import apply_scale_16, apply_scale_32, float_ops, reciprocal_scale
from tosaic.tosa.ops import variable_type

IMPLEMENTATIONS = {}


class TosaRuntimeError(TosaicError, RuntimeError):
    """An op met values the spec forbids (a REQUIRE failed) while running."""


def impl(*names):
    def register(fn):
        for name in names:
            IMPLEMENTATIONS[name] = fn
        return fn

    return register


def saturate(values: np.ndarray, dtype: str, unsigned: bool = False) -> np.ndarray:
    low, high = integer_range(dtype)
    if unsigned:
        low, high = 0, high - low
    return np.clip(values, low, high)


def narrow(values: np.ndarray, t: TensorType) -> np.ndarray:
    """Store int64 results in the result type's storage, wrapping like two's complement hardware."""
    if t.dtype == "i48":
        values = ((values + (1 << 47)) & ((1 << 48) - 1)) - (1 << 47)
    return values.astype(t.numpy_dtype)


def wide(array: np.ndarray) -> np.ndarray:
    return array.astype(np.int64) if array.dtype.kind in "iub" else array


def zp(array: np.ndarray) -> int:
    return int(array.reshape(-1)[0])


# -------------------------------------------------------------------------------------------- data


@impl("tosa.const")
def _const(op, args):
    return op.attrs["values"]


@impl("tosa.const_shape")
def _const_shape(op, args):
    return tuple(op.attrs["values"])


@impl("tosa.identity")
def _identity(op, args):
    return args[0]


@impl("tosa.reshape")
def _reshape(op, args):
    return args[0].reshape(op.result.type.shape)


@impl("tosa.transpose")
def _transpose(op, args):
    return np.ascontiguousarray(np.transpose(args[0], op.attrs["perms"]))


@impl("tosa.pad")
def _pad(op, args):
    x, padding, pad_const = args
    widths = [(padding[2 * i], padding[2 * i + 1]) for i in range(x.ndim)]
    return np.pad(x, widths, constant_values=pad_const.reshape(-1)[0])


@impl("tosa.slice")
def _slice(op, args):
    x, start, size = args
    return np.ascontiguousarray(x[tuple(slice(s, s + n) for s, n in zip(start, size))])


@impl("tosa.tile")
def _tile(op, args):
    return np.tile(args[0], args[1])


@impl("tosa.reverse")
def _reverse(op, args):
    return np.ascontiguousarray(np.flip(args[0], axis=op.attrs["axis"]))


@impl("tosa.concat")
def _concat(op, args):
    return np.concatenate(args, axis=op.attrs["axis"])


@impl("tosa.gather")
def _gather(op, args):
    values, indices = args
    k = values.shape[1]
    if indices.size and (indices.min() < 0 or indices.max() >= k):
        raise TosaRuntimeError(f"gather index outside [0, {k})")
    return np.take_along_axis(values, indices[:, :, None].astype(np.int64), axis=1)


@impl("tosa.cast")
def _cast(op, args):
    x, out = args[0], op.result.type
    if out.dtype == "i1":
        return x != 0
    if x.dtype.kind == "f" and out.dtype != "f32" and out.dtype != "f16":
        # Float to integer: round to nearest, ties to even, then saturate (TOSA CAST).
        return float_ops.round_to_int(x, *integer_range(out.dtype)).astype(out.numpy_dtype)
    if out.dtype in ("f32", "f16"):
        return x.astype(out.numpy_dtype)
    return narrow(wide(x), out)


# ------------------------------------------------------------------------------------ quantization


@impl("tosa.rescale")
def _rescale(op, args):
    x, multiplier, shift, input_zp, output_zp = args
    attrs, out = op.attrs, op.result.type
    in_dtype = op.operands[0].type.dtype
    value = wide(x)
    if attrs["input_unsigned"]:
        value = value & ((1 << (8 * x.dtype.itemsize)) - 1)
        in_zp = zp(input_zp) & ((1 << (8 * x.dtype.itemsize)) - 1)
    else:
        in_zp = zp(input_zp)
    out_zp = zp(output_zp)
    if attrs["output_unsigned"]:
        out_zp &= (1 << (8 * out.numpy_dtype.itemsize)) - 1
    value = value - in_zp
    if in_dtype == "i48":
        value = ((value + (1 << 47)) & ((1 << 48) - 1)) - (1 << 47)
    multiplier = wide(multiplier)
    shift = wide(shift)
    if attrs["per_channel"]:
        shape = (1,) * (x.ndim - 1) + (-1,)
        multiplier, shift = multiplier.reshape(shape), shift.reshape(shape)
    else:
        multiplier, shift = multiplier[0], shift[0]
    try:
        if attrs["scale32"]:
            result = apply_scale_32(value, multiplier, shift, attrs["rounding_mode"] == "DOUBLE_ROUND")
        else:
            result = apply_scale_16(value, multiplier, shift)
    except ValueError as error:
        raise TosaRuntimeError(f"rescale ({op.loc or 'tosa.rescale'}): {error}") from None
    result = saturate(result + out_zp, out.dtype, attrs["output_unsigned"])
    if attrs["output_unsigned"]:
        # An unsigned result is stored in the signless tensor type bit for bit.
        low, high = integer_range(out.dtype)
        result = np.where(result > high, result - (high - low + 1), result)
    return result.astype(out.numpy_dtype)


@impl("tosa.table")
def _table(op, args):
    x, table = wide(args[0]), wide(args[1])
    if op.operands[0].type.dtype == "i8":
        return table[x + 128].astype(np.int8)
    index = (x + 32768) >> 7
    fraction = x & 0x7F
    base, following = table[index], table[np.minimum(index + 1, 512)]
    return ((base << 7) + (following - base) * fraction).astype(np.int32)


# ----------------------------------------------------------------------------- convolution, matmul


def _integers_only(op: Operation, x: np.ndarray) -> None:
    """Convolutions and matmuls are implemented for integers; a float one is refused, never truncated."""
    if x.dtype.kind == "f":
        raise NotImplementedError(f"{op.name} ({op.loc or op.name}) on {x.dtype}: the interpreter implements "
                                  f"integer convolutions and matmuls only")


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer matrix product through float64 BLAS; exact while partial sums stay below 2^53."""
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0)) * a.shape[-1]
    if bound >= 2.0**53:
        return np.matmul(a.astype(object), b.astype(object)).astype(np.int64)
    return np.matmul(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).astype(np.int64)


def _padded(x: np.ndarray, pad, fill) -> np.ndarray:
    return np.pad(x, ((0, 0), (pad[0], pad[1]), (pad[2], pad[3]), (0, 0)), constant_values=fill)


def _windows(xp: np.ndarray, kernel, stride, dilation, out_hw) -> np.ndarray:
    """[N, OH, OW, C, KH, KW] view of the dilated, strided windows of a padded NHWC tensor."""
    kh, kw = kernel
    span_h, span_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    view = sliding_window_view(xp, (span_h, span_w), axis=(1, 2))
    view = view[:, ::stride[0], ::stride[1], :, ::dilation[0], ::dilation[1]]
    return view[:, :out_hw[0], :out_hw[1]]


def _finish_accumulator(acc: np.ndarray, bias: np.ndarray, out: TensorType) -> np.ndarray:
    return narrow(acc + wide(bias), out)


def _taps(xp: np.ndarray, kernel, stride, dilation, out_hw):
    """Each kernel tap's strided [N, OH, OW, C] view of a padded NHWC tensor, in (ky, kx) order."""
    oh, ow = out_hw
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            y0, x0 = ky * dilation[0], kx * dilation[1]
            yield xp[:, y0:y0 + (oh - 1) * stride[0] + 1:stride[0], x0:x0 + (ow - 1) * stride[1] + 1:stride[1]]


@impl("tosa.conv2d")
def _conv2d(op, args):
    x, w, bias, input_zp, weight_zp = args
    _integers_only(op, x)
    out = op.result.type
    pad, stride, dilation = op.attrs["pad"], op.attrs["stride"], op.attrs["dilation"]
    # Subtracting the zero point before padding with 0 makes every padded tap contribute exactly 0.
    xp = _padded(x.astype(np.float64) - zp(input_zp), pad, 0.0)
    oc, kh, kw, ic = w.shape
    n, oh, ow = out.shape[:3]
    taps = list(_taps(xp, (kh, kw), stride, dilation, (oh, ow)))
    patches = taps[0] if len(taps) == 1 else np.concatenate(taps, axis=3)
    weights = (w.astype(np.float64) - zp(weight_zp)).reshape(oc, kh * kw * ic).T
    acc = _exact_matmul(patches.reshape(n * oh * ow, kh * kw * ic), weights).reshape(n, oh, ow, oc)
    return _finish_accumulator(acc, bias, out)


@impl("tosa.depthwise_conv2d")
def _depthwise_conv2d(op, args):
    x, w, bias, input_zp, weight_zp = args
    _integers_only(op, x)
    out = op.result.type
    pad, stride, dilation = op.attrs["pad"], op.attrs["stride"], op.attrs["dilation"]
    kh, kw, c, m = w.shape
    xp = _padded(wide(x) - zp(input_zp), pad, 0)
    if m > 1:
        xp = np.repeat(xp, m, axis=3)
    weights = (wide(w) - zp(weight_zp)).reshape(kh * kw, c * m)
    n, oh, ow = out.shape[:3]
    acc = np.zeros((n, oh, ow, c * m), dtype=np.int64)
    for tap, weight in zip(_taps(xp, (kh, kw), stride, dilation, (oh, ow)), weights):
        acc += tap * weight
    return _finish_accumulator(acc, bias, out)


@impl("tosa.transpose_conv2d")
def _transpose_conv2d(op, args):
    x, w, bias, input_zp, weight_zp = args
    _integers_only(op, x)
    out = op.result.type
    out_pad, stride = op.attrs["out_pad"], op.attrs["stride"]
    oc, kh, kw, ic = w.shape
    n, ih, iw, _ = x.shape
    xv = wide(x) - zp(input_zp)
    wv = wide(w) - zp(weight_zp)
    # Every input pixel scatters a KHxKW patch; accumulate on a canvas holding all of them, then crop.
    full_h, full_w = (ih - 1) * stride[0] + kh, (iw - 1) * stride[1] + kw
    canvas = np.zeros((n, full_h, full_w, oc), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            contrib = _exact_matmul(xv.reshape(-1, ic), wv[:, ky, kx, :].T).reshape(n, ih, iw, oc)
            canvas[:, ky:ky + (ih - 1) * stride[0] + 1:stride[0], kx:kx + (iw - 1) * stride[1] + 1:stride[1]] += contrib
    top, bottom, left, right = out_pad
    # Negative out_pad crops the full result; positive out_pad adds rows that only the bias reaches.
    result = np.zeros((n, out.shape[1], out.shape[2], oc), dtype=np.int64)
    src_y0, dst_y0 = max(-top, 0), max(top, 0)
    src_x0, dst_x0 = max(-left, 0), max(left, 0)
    rows = min(full_h - src_y0, out.shape[1] - dst_y0)
    cols = min(full_w - src_x0, out.shape[2] - dst_x0)
    result[:, dst_y0:dst_y0 + rows, dst_x0:dst_x0 + cols] = canvas[:, src_y0:src_y0 + rows, src_x0:src_x0 + cols]
    return _finish_accumulator(result, bias, out)


@impl("tosa.matmul")
def _matmul(op, args):
    a, b, a_zp, b_zp = args
    _integers_only(op, a)
    acc = _exact_matmul(wide(a) - zp(a_zp), wide(b) - zp(b_zp))
    return narrow(acc, op.result.type)


# ----------------------------------------------------------------------------------------- pooling


@impl("tosa.avg_pool2d")
def _avg_pool2d(op, args):
    x, input_zp, output_zp = args
    out = op.result.type
    kernel, stride, pad = op.attrs["kernel"], op.attrs["stride"], op.attrs["pad"]
    inside = _padded(np.ones((1,) + x.shape[1:3] + (1,), dtype=np.int64), pad, 0)
    count = _windows(inside, kernel, stride, (1, 1), out.shape[1:3]).sum(axis=(-2, -1))
    if x.dtype.kind == "f":
        # The spec's float form: the in-bounds taps summed in order, divided by their count.
        taps = _windows(_padded(x, pad, 0), kernel, stride, (1, 1), out.shape[1:3])
        used = _windows(inside, kernel, stride, (1, 1), out.shape[1:3]).astype(bool)
        acc = np.zeros(taps.shape[:4], dtype=x.dtype)
        for ky in range(kernel[0]):
            for kx in range(kernel[1]):
                acc = np.where(used[..., ky, kx], acc + taps[..., ky, kx], acc)
        return (acc / count.astype(x.dtype)).astype(x.dtype)
    values = _padded(wide(x) - zp(input_zp), pad, 0)
    acc = _windows(values, kernel, stride, (1, 1), out.shape[1:3]).sum(axis=(-2, -1))
    multipliers, shifts = reciprocal_scale(count)
    scaled = apply_scale_32(acc, multipliers, shifts, False)
    return saturate(scaled + zp(output_zp), out.dtype).astype(out.numpy_dtype)


@impl("tosa.max_pool2d")
def _max_pool2d(op, args):
    x = args[0]
    out = op.result.type
    kernel, stride, pad = op.attrs["kernel"], op.attrs["stride"], op.attrs["pad"]
    if out.dtype.startswith("i"):
        values = _padded(x, pad, integer_range(out.dtype)[0])
        return _windows(values, kernel, stride, (1, 1), out.shape[1:3]).max(axis=(-2, -1)).astype(out.numpy_dtype)
    # Floats: apply_max over the taps in order from the spec's start value; a padded tap holds that start
    # value (-inf, or NaN with IGNORE), which apply_max passes over as the spec's skipped taps.
    mode = op.attrs.get("nan_mode", float_ops.PROPAGATE)
    start = float_ops.max_init(x.dtype, mode)
    windows = _windows(_padded(x, pad, start), kernel, stride, (1, 1), out.shape[1:3])
    flat = windows.reshape(windows.shape[:-2] + (-1,))
    return float_ops.reduce_sequential(lambda a, v: float_ops.apply_max(a, v, mode), flat, -1, start)[..., 0]


# ------------------------------------------------------------------------------------- elementwise


@impl("tosa.clamp")
def _clamp(op, args):
    low, high = op.attrs["min_val"], op.attrs["max_val"]
    if args[0].dtype.kind == "f":
        mode = op.attrs.get("nan_mode", float_ops.PROPAGATE)
        return float_ops.apply_clip(args[0], low, high, mode).astype(args[0].dtype)
    return np.clip(args[0], low, high).astype(args[0].dtype)


def _binary(fn):
    def run(op, args):
        return narrow(fn(wide(args[0]), wide(args[1])), op.result.type)

    return run


@impl("tosa.maximum", "tosa.minimum")
def _maximum_minimum(op, args):
    a, b = args
    if a.dtype.kind == "f":
        fn = float_ops.apply_max if op.name == "tosa.maximum" else float_ops.apply_min
        return fn(a, b, op.attrs.get("nan_mode", float_ops.PROPAGATE)).astype(op.result.type.numpy_dtype)
    return narrow((np.maximum if op.name == "tosa.maximum" else np.minimum)(wide(a), wide(b)), op.result.type)


for _name, _fn in {
    "tosa.add": np.add, "tosa.sub": np.subtract,
    "tosa.bitwise_and": np.bitwise_and, "tosa.bitwise_or": np.bitwise_or, "tosa.bitwise_xor": np.bitwise_xor,
    "tosa.logical_and": np.logical_and, "tosa.logical_or": np.logical_or, "tosa.logical_xor": np.logical_xor,
    "tosa.equal": np.equal, "tosa.greater": np.greater, "tosa.greater_equal": np.greater_equal,
}.items():
    impl(_name)(_binary(_fn))


def _check_shift_amount(shift: np.ndarray, bits: int, what: str):
    if shift.size and (shift.min() < 0 or shift.max() >= bits):
        raise TosaRuntimeError(f"{what}: shift amount outside [0, {bits})")


@impl("tosa.logical_left_shift")
def _logical_left_shift(op, args):
    bits = 8 * args[0].dtype.itemsize
    _check_shift_amount(args[1], bits, "logical_left_shift")
    return narrow(wide(args[0]) << wide(args[1]), op.result.type)


@impl("tosa.logical_right_shift")
def _logical_right_shift(op, args):
    bits = 8 * args[0].dtype.itemsize
    _check_shift_amount(args[1], bits, "logical_right_shift")
    unsigned = wide(args[0]) & ((1 << bits) - 1)
    return narrow(unsigned >> wide(args[1]), op.result.type)


@impl("tosa.arithmetic_right_shift")
def _arithmetic_right_shift(op, args):
    a, b = wide(args[0]), wide(args[1])
    _check_shift_amount(b, 8 * args[0].dtype.itemsize, "arithmetic_right_shift")
    result = a >> b
    if op.attrs["round"]:
        # Round half up: add the last bit shifted out (TOSA ARITHMETIC_RIGHT_SHIFT, round = true).
        result = result + np.where(b > 0, (a >> np.maximum(b - 1, 0)) & 1, 0)
    return narrow(result, op.result.type)


@impl("tosa.intdiv")
def _intdiv(op, args):
    a, b = wide(args[0]), wide(args[1])
    if (b == 0).any():
        raise TosaRuntimeError("intdiv by zero")
    quotient = np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)
    return narrow(quotient, op.result.type)


@impl("tosa.mul")
def _mul(op, args):
    a, b, shift = args
    shift = zp(shift)
    product = wide(a) * wide(b)
    if op.operands[0].type.dtype == "i32" and shift > 0:
        product = (product + (1 << (shift - 1))) >> shift
        low, high = integer_range("i32")
        if product.size and (product.min() < low or product.max() > high):
            raise TosaRuntimeError(f"mul ({op.loc or 'tosa.mul'}): shifted product outside int32")
    if op.result.type.dtype.startswith("f"):
        return (a * b).astype(op.result.type.numpy_dtype)
    return narrow(product, op.result.type)


@impl("tosa.select")
def _select(op, args):
    return np.where(args[0], args[1], args[2]).astype(op.result.type.numpy_dtype)


@impl("tosa.abs")
def _abs(op, args):
    return narrow(np.abs(wide(args[0])), op.result.type)


@impl("tosa.negate")
def _negate(op, args):
    x, input_zp, output_zp = args
    out = op.result.type
    if out.dtype.startswith("f"):
        return -x
    value = -(wide(x) - zp(input_zp)) + zp(output_zp)
    return saturate(value, out.dtype).astype(out.numpy_dtype) if out.dtype != "i32" else narrow(value, out)


@impl("tosa.clz")
def _clz(op, args):
    unsigned = wide(args[0]) & 0xFFFFFFFF
    bits = np.zeros(unsigned.shape, dtype=np.int64)
    remaining = unsigned.copy()
    while remaining.any():
        bits += remaining > 0
        remaining >>= 1
    return (32 - bits).astype(np.int32)


@impl("tosa.bitwise_not")
def _bitwise_not(op, args):
    return np.invert(args[0])


@impl("tosa.logical_not")
def _logical_not(op, args):
    return np.logical_not(args[0])


for _name, _fn in {
    "tosa.exp": np.exp, "tosa.log": np.log, "tosa.reciprocal": np.reciprocal, "tosa.tanh": np.tanh,
    "tosa.erf": np.vectorize(math.erf, otypes=[np.float64]),
    "tosa.floor": np.floor, "tosa.ceil": np.ceil, "tosa.sin": np.sin, "tosa.cos": np.cos,
}.items():
    impl(_name)(lambda op, args, fn=_fn: fn(args[0]).astype(args[0].dtype))


@impl("tosa.rsqrt")
def _rsqrt(op, args):
    return (1 / np.sqrt(args[0])).astype(args[0].dtype)


@impl("tosa.sigmoid")
def _sigmoid(op, args):
    return (1 / (1 + np.exp(-args[0]))).astype(args[0].dtype)


# -------------------------------------------------------------------------------------- reductions


def _reduce(fn):
    def run(op, args):
        x = args[0]
        if x.dtype.kind == "f":
            return _reduce_float(op, x)
        return narrow(fn(wide(x), axis=op.attrs["axis"], keepdims=True), op.result.type)

    return run


def _reduce_float(op, x: np.ndarray) -> np.ndarray:
    """A float reduction as the spec's loop: the values combined one at a time along the axis."""
    mode = op.attrs.get("nan_mode", float_ops.PROPAGATE)
    combine, start = {
        "tosa.reduce_sum": (np.add, 0.0), "tosa.reduce_product": (np.multiply, 1.0),
        "tosa.reduce_max": (lambda a, v: float_ops.apply_max(a, v, mode), float_ops.max_init(x.dtype, mode)),
        "tosa.reduce_min": (lambda a, v: float_ops.apply_min(a, v, mode), float_ops.min_init(x.dtype, mode)),
    }[op.name]
    return float_ops.reduce_sequential(combine, x, op.attrs["axis"], start)


for _name, _fn in {
    "tosa.reduce_sum": np.sum, "tosa.reduce_max": np.max, "tosa.reduce_min": np.min,
    "tosa.reduce_product": np.prod, "tosa.reduce_all": np.all, "tosa.reduce_any": np.any,
}.items():
    impl(_name)(_reduce(_fn))


@impl("tosa.argmax")
def _argmax(op, args):
    return np.argmax(args[0], axis=op.attrs["axis"]).astype(np.int32)


# ------------------------------------------------------------------------------------------- resize


def _resize_axis(out_size: int, n: int, d: int, offset: int, in_size: int):
    """One axis of TOSA RESIZE: (i0, i1, r) per output index, `y = o * d + offset`, `i = idiv_floor(y, n)`,
    `r = y - i * n`, `i0 = max(i, 0)`, `i1 = min(i + 1, in_size - 1)`."""
    position = np.arange(out_size, dtype=np.int64) * d + offset
    index = position // n  # numpy floor division is the spec's idiv_floor
    return np.maximum(index, 0), np.minimum(index + 1, in_size - 1), position - index * n


@impl("tosa.resize")
def _resize(op, args):
    """TOSA 1.0 RESIZE (pseudocode/operators/RESIZE.tosac): integer inputs use resize_t = i16 with units
    scale_n; bilinear accumulates `v00*(n_y-dy)*(n_x-dx) + v01*(n_y-dy)*dx + v10*dy*(n_x-dx) + v11*dy*dx`
    in the output type (i32 for i8, i48 for i16); nearest takes i1 when `2*d >= n`, else i0."""
    x, scale, offset, _ = args
    out = op.result.type
    n_y, d_y, n_x, d_x = (int(v) for v in scale)
    iy0, iy1, ry = _resize_axis(out.shape[1], n_y, d_y, int(offset[0]), x.shape[1])
    ix0, ix1, rx = _resize_axis(out.shape[2], n_x, d_x, int(offset[1]), x.shape[2])
    floating = x.dtype.kind == "f"
    if floating:
        # resize_t is the float type: dy = ry / n_y and unit 1.0, in that precision.
        dtype = x.dtype.type
        dy, dx = (ry.astype(dtype) / dtype(n_y))[:, None, None], (rx.astype(dtype) / dtype(n_x))[None, :, None]
        unit_y = unit_x = dtype(1)
    else:
        dy, dx = ry[:, None, None], rx[None, :, None]
        unit_y, unit_x = n_y, n_x
    if op.attrs["mode"] == "NEAREST_NEIGHBOR":
        half_y = dy >= 0.5 if floating else 2 * dy >= n_y
        half_x = dx >= 0.5 if floating else 2 * dx >= n_x
        iy = np.where(half_y[:, 0, 0], iy1, iy0)
        ix = np.where(half_x[0, :, 0], ix1, ix0)
        return np.ascontiguousarray(x[:, iy][:, :, ix])
    v = x if floating else wide(x)
    top, bottom = v[:, iy0], v[:, iy1]
    v00, v01, v10, v11 = top[:, :, ix0], top[:, :, ix1], bottom[:, :, ix0], bottom[:, :, ix1]
    # The spec's evaluation order (left to right), which matters only for floats.
    acc = v00 * (unit_y - dy) * (unit_x - dx)
    acc = acc + v01 * (unit_y - dy) * dx
    acc = acc + v10 * dy * (unit_x - dx)
    acc = acc + v11 * dy * dx
    return acc.astype(out.numpy_dtype) if floating else narrow(acc, out)


# ---------------------------------------------------------------------------- variables (EXT-VARIABLE)

# Ops whose implementation also takes the execution's VariableScope: fn(op, args, scope).
STATEFUL = set()


class VariableScope:
    """The variables one graph execution sees. `state` maps each variable's name to its value (None while
    declared without an initial value and not yet written); it outlives the execution, which is how a
    value passes from one run to the next. `declared` holds this execution's declarations (their types)."""

    def __init__(self, state: dict | None = None):
        self.state = {} if state is None else state
        self.declared: dict[str, TensorType] = {}


def stateful_impl(*names):
    def register(fn):
        for name in names:
            IMPLEMENTATIONS[name] = fn
            STATEFUL.add(name)
        return fn

    return register


def initial_state(graph: Graph) -> dict:
    """The variables of `graph` before its first execution: name -> initial value (None when it has none)."""
    return {op.attrs["sym_name"]: _copy_or_none(op.attrs.get("initial_value"))
            for op in graph.ops if op.name == "tosa.variable"}


def _copy_or_none(value):
    return None if value is None else np.array(value, copy=True)


@stateful_impl("tosa.variable")
def _variable(op, args, scope):
    # TOSA VARIABLE: allocate and initialize on the first execution only; a later one finds it allocated.
    name, t = op.attrs["sym_name"], variable_type(op.attrs)
    if name in scope.declared:
        raise TosaRuntimeError(f"variable @{name} is declared twice in one execution")
    scope.declared[name] = t
    if name not in scope.state:
        scope.state[name] = _copy_or_none(op.attrs.get("initial_value"))
    value = scope.state[name]
    if value is not None and (value.shape != t.shape or value.dtype != t.numpy_dtype):
        raise TosaRuntimeError(f"variable @{name} holds {value.dtype}{list(value.shape)}, declared {t}")
    return None


def _declared(op, scope, t: TensorType) -> str:
    name = op.attrs["name"]
    declared = scope.declared.get(name)
    if declared is None:
        raise TosaRuntimeError(f"{op.name} of @{name}, which this execution has not declared")
    if declared != t:
        raise TosaRuntimeError(f"{op.name} of @{name} as {t}; it is declared {declared}")
    return name


@stateful_impl("tosa.variable_read")
def _variable_read(op, args, scope):
    name = _declared(op, scope, op.result.type)
    value = scope.state.get(name)
    if value is None:  # REQUIRE(var_tensor.is_written)
        raise TosaRuntimeError(f"variable @{name} is read before it has a value (no initial value, no write)")
    return value.copy()


@stateful_impl("tosa.variable_write")
def _variable_write(op, args, scope):
    name = _declared(op, scope, op.operands[0].type)
    scope.state[name] = np.array(args[0], copy=True)
    return None


# ---------------------------------------------------------------------------------------- running


def run_op(op: Operation, args: list, scope: VariableScope | None = None) -> np.ndarray | None:
    fn = IMPLEMENTATIONS.get(op.name)
    if fn is None:
        raise NotImplementedError(f"the TOSA interpreter has no implementation of {op.name}")
    if op.name in STATEFUL:
        if scope is None:
            raise TosaRuntimeError(f"{op.name} runs only inside a graph execution (interpret), which owns variables")
        return fn(op, args, scope)
    return fn(op, args)


def interpret(graph: Graph, inputs, keep_all: bool = False, state: dict | None = None):
    """Run `graph` on numpy `inputs` (in graph input order). Returns the outputs, and with `keep_all` also
    a dict from every value to its array (for per-layer comparison).

    `state` holds the graph's variables by name (EXT-VARIABLE) and is updated in place: VARIABLE adds a
    variable it lacks with its initial value, VARIABLE_WRITE replaces a value, so the next call with the
    same dict continues where this one stopped. Without it the variables start from their initial values
    and the final state is dropped."""
    scope = VariableScope(state)
    env = dict(zip(graph.inputs, inputs))
    last_use = {}
    if not keep_all:
        for position, op in enumerate(graph.ops):
            for operand in op.operands:
                last_use[operand] = position
        for value in graph.outputs:
            last_use[value] = len(graph.ops)
    for position, op in enumerate(graph.ops):
        result = run_op(op, [env[v] for v in op.operands], scope)
        if op.results:
            (value,) = op.results
            env[value] = result
        if not keep_all:
            for operand in op.operands:
                if last_use.get(operand) == position and operand.owner is not None \
                        and operand.owner.name not in ("tosa.const", "tosa.const_shape"):
                    env.pop(operand, None)  # an op may read one value twice (MUL x, x)
    outputs = [env[v] for v in graph.outputs]
    return (outputs, env) if keep_all else outputs
