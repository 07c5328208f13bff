"""TOSA 1.0 op declarations: operands, attributes and the shape/type rule of each op.

Each op is one declaration. The printer, parser, verifier, interpreter and lowering look ops up here by
name; nothing else special-cases op names for their structure. Zero points, multipliers, shifts and the
shapes of RESHAPE/PAD/SLICE/TILE are operands, as in TOSA 1.0.

A type rule receives the operand values, the attributes and, for ops whose result element type is a free
choice (RESCALE, CAST), the requested element type; it returns the result types or raises VerifyError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tosaic.errors import TosaicError
from tosaic.ir import ShapeType, TensorType, Value, element_type_of

# Attribute kinds: how an attribute is held in Python and written in MLIR.
#   int32/int64: Python int (`1 : i32`); bool: Python bool; array_i64/array_i32: tuple of ints
#   (`array<i64: ...>`); type: element type name (`acc_type = i32`); element: a Python number typed by the
#   input's element type (`min_val = -128 : i8`); dense: numpy array (`dense<...> : tensor<...>`);
#   shape: tuple of ints (`dense<[...]> : tensor<Nxindex>`); rounding_mode/nan_mode/resize_mode: enum name;
#   symbol: a variable's name, a Python str (`@name` in the custom form, `"name"` in the generic form).
ATTRIBUTE_KINDS = {
    "int32", "int64", "bool", "array_i64", "array_i32", "type", "element", "dense", "shape", "symbol",
    "rounding_mode", "nan_mode", "resize_mode",
}

ENUM_VALUES = {
    "rounding_mode": ("SINGLE_ROUND", "INEXACT_ROUND", "DOUBLE_ROUND"),
    "nan_mode": ("PROPAGATE", "IGNORE"),
    "resize_mode": ("NEAREST_NEIGHBOR", "BILINEAR"),
}


# TOSA level 8K's limits (the specification's "Levels" table), which every graph tosaic builds or reads keeps.
MAX_RANK, MAX_KERNEL, MAX_STRIDE, MAX_ELEMENTS = 6, 8192, 8192, 2**31


class VerifyError(TosaicError, ValueError):
    """A TOSA op whose operands, attributes or result types break the spec's rules."""


@dataclass(frozen=True)
class OpDef:
    name: str
    operands: tuple[str, ...]
    attrs: dict[str, str]
    infer: Callable
    variadic: bool = False
    # Attributes that may be omitted, with the value that absence means.
    defaults: dict = field(default_factory=dict)
    free_result_dtype: bool = False
    # The whole result type is stated by the caller (VARIABLE_READ: the type of the variable it reads, which
    # only the graph knows); the type rule receives it as `dtype`, a TensorType.
    stated_result_type: bool = False


OPS: dict[str, OpDef] = {}


def op(name: str, operands=(), attrs=None, variadic=False, defaults=None, free_result_dtype=False,
       stated_result_type=False):
    """Declare a TOSA op; the decorated function is its type rule."""

    def register(infer):
        for kind in (attrs or {}).values():
            assert kind in ATTRIBUTE_KINDS, kind
        OPS[name] = OpDef(name, tuple(operands), dict(attrs or {}), infer, variadic, dict(defaults or {}),
                          free_result_dtype, stated_result_type)
        return infer

    return register


def check(condition: bool, message: str) -> None:
    if not condition:
        raise VerifyError(message)


def const_shape_value(value: Value) -> tuple[int, ...]:
    """The dimension list held by a CONST_SHAPE result (shape operands must be compile-time constants)."""
    owner = value.owner
    check(owner is not None and owner.name == "tosa.const_shape",
          "shape operands must come from tosa.const_shape")
    return tuple(owner.attrs["values"])


def tensor(value: Value) -> TensorType:
    check(isinstance(value.type, TensorType), f"expected a tensor operand, got {value.type}")
    return value.type


def zero_point_type(value: Value, dtype: str, what: str, unsigned: bool = False) -> None:
    """A zero point is a tensor<1xT> constant; TOSA 1.0 allows a non-zero one only for i8 (and for the
    unsigned side of a RESCALE, where an i16 zero point of 32768 is stored as -32768)."""
    t = tensor(value)
    check(t.shape == (1,) and t.dtype == dtype, f"{what} must be tensor<1x{dtype}>, got {t}")
    owner = value.owner
    if dtype == "i8" or owner is None or owner.name != "tosa.const":
        return
    zp = int(owner.attrs["values"].reshape(-1)[0])
    allowed = (0, -32768) if unsigned and dtype == "i16" else (0,)
    check(zp in allowed, f"{what} must be 0 for {dtype}, got {zp}")


def broadcast_shape(*shapes) -> tuple[int, ...]:
    """TOSA 1.0 broadcasting: equal ranks, each dimension equal or 1."""
    rank = len(shapes[0])
    check(all(len(s) == rank for s in shapes), f"operands of different rank: {shapes}")
    out = []
    for dims in zip(*shapes):
        sizes = {d for d in dims if d != 1}
        check(len(sizes) <= 1, f"shapes {shapes} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def conv_output_size(in_size, kernel, pad_before, pad_after, stride, dilation, what):
    check(kernel >= 1 and stride >= 1 and dilation >= 1 and min(pad_before, pad_after) >= 0,
          f"{what}: kernel {kernel}, stride {stride} and dilation {dilation} must be positive, pads "
          f"{pad_before},{pad_after} not negative")
    span = in_size - 1 + pad_before + pad_after - (kernel - 1) * dilation
    check(span >= 0 and span % stride == 0,
          f"{what}: (in {in_size} + pads {pad_before},{pad_after} - dilated kernel) is not a multiple of "
          f"stride {stride} (TOSA idiv_check)")
    return span // stride + 1


ACCUMULATOR = {("i8", "i8"): "i32", ("i16", "i8"): "i48", ("f32", "f32"): "f32"}

# ---------------------------------------------------------------------------------------------- data


@op("tosa.const", attrs={"values": "dense"}, free_result_dtype=True)
def _const(operands, attrs, dtype=None):
    # The storage dtype cannot say i48 (held in int64) or i4 (held in int8): the caller may name the type.
    values = attrs["values"]
    return [TensorType(values.shape, dtype or element_type_of(values))]


@op("tosa.const_shape", attrs={"values": "shape"})
def _const_shape(operands, attrs, dtype=None):
    return [ShapeType(len(attrs["values"]))]


@op("tosa.identity", operands=("input1",))
def _identity(operands, attrs, dtype=None):
    return [tensor(operands[0])]


@op("tosa.cast", operands=("input",), free_result_dtype=True)
def _cast(operands, attrs, dtype=None):
    check(dtype is not None, "tosa.cast needs a result element type")
    return [tensor(operands[0]).with_dtype(dtype)]


@op("tosa.reshape", operands=("input1", "shape"))
def _reshape(operands, attrs, dtype=None):
    t = tensor(operands[0])
    shape = const_shape_value(operands[1])
    check(int(np.prod(shape, dtype=np.int64)) == t.size, f"reshape of {t} to {list(shape)} changes the size")
    return [t.with_shape(shape)]


@op("tosa.transpose", operands=("input1",), attrs={"perms": "array_i32"})
def _transpose(operands, attrs, dtype=None):
    t = tensor(operands[0])
    perms = attrs["perms"]
    check(sorted(perms) == list(range(t.rank)), f"perms {list(perms)} is not a permutation of rank {t.rank}")
    return [t.with_shape([t.shape[p] for p in perms])]


@op("tosa.pad", operands=("input1", "padding", "pad_const"))
def _pad(operands, attrs, dtype=None):
    t = tensor(operands[0])
    padding = const_shape_value(operands[1])
    check(len(padding) == 2 * t.rank and min(padding, default=0) >= 0,
          f"padding {list(padding)} must hold 2 non-negative values per dimension of {t}")
    pad_const = tensor(operands[2])
    check(pad_const.shape == (1,) and pad_const.dtype == t.dtype, f"pad_const must be tensor<1x{t.dtype}>")
    return [t.with_shape([d + padding[2 * i] + padding[2 * i + 1] for i, d in enumerate(t.shape)])]


@op("tosa.slice", operands=("input1", "start", "size"))
def _slice(operands, attrs, dtype=None):
    t = tensor(operands[0])
    start, size = const_shape_value(operands[1]), const_shape_value(operands[2])
    check(len(start) == len(size) == t.rank, "slice start/size rank differs from the input rank")
    for s, n, d in zip(start, size, t.shape):
        check(0 <= s and n > 0 and s + n <= d, f"slice start {list(start)} size {list(size)} outside {t}")
    return [t.with_shape(size)]


@op("tosa.tile", operands=("input1", "multiples"))
def _tile(operands, attrs, dtype=None):
    t = tensor(operands[0])
    multiples = const_shape_value(operands[1])
    check(len(multiples) == t.rank and min(multiples, default=1) >= 1, f"bad multiples {list(multiples)}")
    return [t.with_shape([d * m for d, m in zip(t.shape, multiples)])]


@op("tosa.reverse", operands=("input1",), attrs={"axis": "int32"})
def _reverse(operands, attrs, dtype=None):
    t = tensor(operands[0])
    check(0 <= attrs["axis"] < t.rank, f"reverse axis {attrs['axis']} out of range for rank {t.rank}")
    return [t]


@op("tosa.concat", operands=("input1",), attrs={"axis": "int32"}, variadic=True)
def _concat(operands, attrs, dtype=None):
    types = [tensor(v) for v in operands]
    axis = attrs["axis"]
    first = types[0]
    check(0 <= axis < first.rank, f"concat axis {axis} out of range for rank {first.rank}")
    for t in types[1:]:
        check(t.dtype == first.dtype and t.rank == first.rank, f"concat of {first} and {t}")
        check(all(a == b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis),
              f"concat of {first} and {t} along axis {axis}")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return [first.with_shape(shape)]


@op("tosa.gather", operands=("values", "indices"))
def _gather(operands, attrs, dtype=None):
    values, indices = tensor(operands[0]), tensor(operands[1])
    check(values.rank == 3 and indices.rank == 2 and indices.dtype == "i32", "gather needs [N,K,C] and [N,W] i32")
    return [values.with_shape((values.shape[0], indices.shape[1], values.shape[2]))]


# ------------------------------------------------------------------------------------- quantization


@op("tosa.rescale", operands=("input", "multiplier", "shift", "input_zp", "output_zp"),
    attrs={"scale32": "bool", "rounding_mode": "rounding_mode", "per_channel": "bool",
           "input_unsigned": "bool", "output_unsigned": "bool"},
    free_result_dtype=True)
def _rescale(operands, attrs, dtype=None):
    t = tensor(operands[0])
    check(dtype is not None, "tosa.rescale needs a result element type")
    check(t.dtype in ("i8", "i16", "i32", "i48") and dtype in ("i8", "i16", "i32"),
          f"rescale from {t.dtype} to {dtype} is not a TOSA rescale")
    channels = t.shape[-1] if attrs["per_channel"] else 1
    multiplier, shift = tensor(operands[1]), tensor(operands[2])
    check(multiplier.shape == (channels,) and multiplier.dtype == ("i32" if attrs["scale32"] else "i16"),
          f"rescale multiplier must be tensor<{channels}x{'i32' if attrs['scale32'] else 'i16'}>, got {multiplier}")
    check(shift.shape == (channels,) and shift.dtype == "i8", f"rescale shift must be tensor<{channels}xi8>")
    zero_point_type(operands[3], t.dtype, "rescale input_zp", attrs["input_unsigned"])
    zero_point_type(operands[4], dtype, "rescale output_zp", attrs["output_unsigned"])
    return [t.with_dtype(dtype)]


@op("tosa.table", operands=("input1", "table"))
def _table(operands, attrs, dtype=None):
    t, table = tensor(operands[0]), tensor(operands[1])
    if t.dtype == "i8":
        check(table.shape == (256,) and table.dtype == "i8", "an i8 TABLE needs tensor<256xi8>")
        return [t]
    check(t.dtype == "i16" and table.shape == (513,) and table.dtype == "i16",
          "an i16 TABLE needs tensor<513xi16>")
    return [t.with_dtype("i32")]


# ------------------------------------------------------------------------------ convolution, matmul


def _conv_common(operands, attrs, weight_layout):
    x, w, bias = tensor(operands[0]), tensor(operands[1]), tensor(operands[2])
    acc = ACCUMULATOR.get((x.dtype, w.dtype))
    check(acc is not None, f"no TOSA convolution for input {x.dtype} with weights {w.dtype}")
    check(attrs["acc_type"] == acc, f"acc_type {attrs['acc_type']} for {x.dtype}x{w.dtype} must be {acc}")
    zero_point_type(operands[3], x.dtype, "input_zp")
    zero_point_type(operands[4], w.dtype, "weight_zp")
    check(x.rank == 4 and w.rank == 4, "convolution input and weight must be rank 4")
    bias_dtype = {"i32": "i32", "i48": "i48", "f32": "f32"}[acc]
    check(bias.rank == 1 and bias.dtype == bias_dtype, f"bias must be rank-1 {bias_dtype}, got {bias}")
    return x, w, bias, acc


@op("tosa.conv2d", operands=("input", "weight", "bias", "input_zp", "weight_zp"),
    attrs={"pad": "array_i64", "stride": "array_i64", "dilation": "array_i64", "acc_type": "type",
           "local_bound": "bool"}, defaults={"local_bound": False})
def _conv2d(operands, attrs, dtype=None):
    x, w, bias, acc = _conv_common(operands, attrs, "OHWI")
    oc, kh, kw, ic = w.shape
    check(ic == x.shape[3], f"conv2d weight {w} does not match input channels of {x}")
    check(bias.shape[0] in (1, oc), f"conv2d bias {bias} for {oc} output channels")
    pad, stride, dil = attrs["pad"], attrs["stride"], attrs["dilation"]
    oh = conv_output_size(x.shape[1], kh, pad[0], pad[1], stride[0], dil[0], "conv2d height")
    ow = conv_output_size(x.shape[2], kw, pad[2], pad[3], stride[1], dil[1], "conv2d width")
    return [TensorType((x.shape[0], oh, ow, oc), acc)]


@op("tosa.depthwise_conv2d", operands=("input", "weight", "bias", "input_zp", "weight_zp"),
    attrs={"pad": "array_i64", "stride": "array_i64", "dilation": "array_i64", "acc_type": "type",
           "local_bound": "bool"}, defaults={"local_bound": False})
def _depthwise_conv2d(operands, attrs, dtype=None):
    x, w, bias, acc = _conv_common(operands, attrs, "HWCM")
    kh, kw, c, m = w.shape
    check(c == x.shape[3], f"depthwise weight {w} does not match input channels of {x}")
    check(bias.shape[0] in (1, c * m), f"depthwise bias {bias} for {c * m} output channels")
    pad, stride, dil = attrs["pad"], attrs["stride"], attrs["dilation"]
    oh = conv_output_size(x.shape[1], kh, pad[0], pad[1], stride[0], dil[0], "depthwise height")
    ow = conv_output_size(x.shape[2], kw, pad[2], pad[3], stride[1], dil[1], "depthwise width")
    return [TensorType((x.shape[0], oh, ow, c * m), acc)]


@op("tosa.transpose_conv2d", operands=("input", "weight", "bias", "input_zp", "weight_zp"),
    attrs={"out_pad": "array_i64", "stride": "array_i64", "acc_type": "type", "local_bound": "bool"},
    defaults={"local_bound": False})
def _transpose_conv2d(operands, attrs, dtype=None):
    x, w, bias, acc = _conv_common(operands, attrs, "OHWI")
    oc, kh, kw, ic = w.shape
    check(ic == x.shape[3], f"transpose_conv2d weight {w} does not match input {x}")
    pad, stride = attrs["out_pad"], attrs["stride"]
    oh = (x.shape[1] - 1) * stride[0] + pad[0] + pad[1] + kh
    ow = (x.shape[2] - 1) * stride[1] + pad[2] + pad[3] + kw
    return [TensorType((x.shape[0], oh, ow, oc), acc)]


@op("tosa.matmul", operands=("a", "b", "a_zp", "b_zp"))
def _matmul(operands, attrs, dtype=None):
    a, b = tensor(operands[0]), tensor(operands[1])
    check(a.rank == 3 and b.rank == 3, f"matmul needs rank-3 operands, got {a} and {b}")
    check(a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1], f"matmul of {a} and {b}")
    acc = {("i8", "i8"): "i32", ("i16", "i16"): "i48", ("f32", "f32"): "f32"}.get((a.dtype, b.dtype))
    check(acc is not None, f"no TOSA matmul for {a.dtype} x {b.dtype}")
    zero_point_type(operands[2], a.dtype, "a_zp")
    zero_point_type(operands[3], b.dtype, "b_zp")
    return [TensorType((a.shape[0], a.shape[1], b.shape[2]), acc)]


# ------------------------------------------------------------------------------------------ pooling


def _pool_shape(x: TensorType, attrs, what):
    kernel, stride, pad = attrs["kernel"], attrs["stride"], attrs["pad"]
    check(x.rank == 4, f"{what} input must be rank 4")
    check(pad[0] < kernel[0] and pad[1] < kernel[0] and pad[2] < kernel[1] and pad[3] < kernel[1],
          f"{what}: padding {list(pad)} must be smaller than the kernel {list(kernel)}")
    oh = conv_output_size(x.shape[1], kernel[0], pad[0], pad[1], stride[0], 1, f"{what} height")
    ow = conv_output_size(x.shape[2], kernel[1], pad[2], pad[3], stride[1], 1, f"{what} width")
    return x.with_shape((x.shape[0], oh, ow, x.shape[3]))


@op("tosa.avg_pool2d", operands=("input", "input_zp", "output_zp"),
    attrs={"kernel": "array_i64", "stride": "array_i64", "pad": "array_i64", "acc_type": "type"})
def _avg_pool2d(operands, attrs, dtype=None):
    x = tensor(operands[0])
    zero_point_type(operands[1], x.dtype, "input_zp")
    zero_point_type(operands[2], x.dtype, "output_zp")
    check(attrs["acc_type"] == ("f32" if x.dtype == "f32" else "i32"), "avg_pool2d acc_type")
    return [_pool_shape(x, attrs, "avg_pool2d")]


@op("tosa.max_pool2d", operands=("input",),
    attrs={"kernel": "array_i64", "stride": "array_i64", "pad": "array_i64", "nan_mode": "nan_mode"},
    defaults={"nan_mode": "PROPAGATE"})
def _max_pool2d(operands, attrs, dtype=None):
    return [_pool_shape(tensor(operands[0]), attrs, "max_pool2d")]


# -------------------------------------------------------------------------------------- elementwise


@op("tosa.clamp", operands=("input",), attrs={"min_val": "element", "max_val": "element", "nan_mode": "nan_mode"},
    defaults={"nan_mode": "PROPAGATE"})
def _clamp(operands, attrs, dtype=None):
    check(attrs["min_val"] <= attrs["max_val"], "clamp min_val > max_val")
    return [tensor(operands[0])]


def _same_type_binary(operands):
    a, b = tensor(operands[0]), tensor(operands[1])
    check(a.dtype == b.dtype, f"operand element types differ: {a} and {b}")
    return a.with_shape(broadcast_shape(a.shape, b.shape))


def _declare_binary(name, result_dtype=None, dtypes=None, attrs=None, defaults=None):
    def infer(operands, attrs, dtype=None):
        out = _same_type_binary(operands)
        check(dtypes is None or out.dtype in dtypes, f"{name} is not defined for {out.dtype}")
        return [out.with_dtype(result_dtype) if result_dtype else out]

    op(name, operands=("input1", "input2"), attrs=attrs, defaults=defaults)(infer)


INTEGER_AND_FLOAT = ("i32", "f32", "f16")
for _name in ("tosa.add", "tosa.sub"):
    _declare_binary(_name, dtypes=INTEGER_AND_FLOAT)
for _name in ("tosa.maximum", "tosa.minimum"):
    _declare_binary(_name, dtypes=("i32", "f32", "f16"), attrs={"nan_mode": "nan_mode"},
                    defaults={"nan_mode": "PROPAGATE"})
for _name in ("tosa.bitwise_and", "tosa.bitwise_or", "tosa.bitwise_xor", "tosa.logical_left_shift",
              "tosa.logical_right_shift"):
    _declare_binary(_name, dtypes=("i8", "i16", "i32"))
for _name in ("tosa.logical_and", "tosa.logical_or", "tosa.logical_xor"):
    _declare_binary(_name, dtypes=("i1",))
for _name in ("tosa.equal", "tosa.greater", "tosa.greater_equal"):
    _declare_binary(_name, result_dtype="i1", dtypes=("i32", "f32", "f16"))
_declare_binary("tosa.arithmetic_right_shift", dtypes=("i8", "i16", "i32"), attrs={"round": "bool"})
_declare_binary("tosa.intdiv", dtypes=("i32",))


@op("tosa.mul", operands=("input1", "input2", "shift"))
def _mul(operands, attrs, dtype=None):
    a, b = tensor(operands[0]), tensor(operands[1])
    check(a.dtype == b.dtype and a.dtype in ("i8", "i16", "i32", "f32", "f16"), f"tosa.mul of {a} and {b}")
    zero_point_type(operands[2], "i8", "mul shift")
    out_dtype = "i32" if a.dtype in ("i8", "i16", "i32") else a.dtype
    return [TensorType(broadcast_shape(a.shape, b.shape), out_dtype)]


def _declare_unary(name, dtypes, extra_operands=()):
    def infer(operands, attrs, dtype=None):
        t = tensor(operands[0])
        check(t.dtype in dtypes, f"{name} is not defined for {t.dtype}")
        for extra in operands[1:]:
            zero_point_type(extra, t.dtype, f"{name} zero point")
        return [t]

    op(name, operands=("input1",) + tuple(extra_operands))(infer)


_declare_unary("tosa.abs", ("i32", "f32", "f16"))
_declare_unary("tosa.clz", ("i32",))
_declare_unary("tosa.bitwise_not", ("i8", "i16", "i32"))
_declare_unary("tosa.logical_not", ("i1",))
_declare_unary("tosa.negate", ("i8", "i16", "i32", "f32", "f16"), extra_operands=("input1_zp", "output_zp"))
for _name in ("tosa.exp", "tosa.log", "tosa.reciprocal", "tosa.rsqrt", "tosa.tanh", "tosa.sigmoid", "tosa.erf",
              "tosa.floor", "tosa.ceil", "tosa.sin", "tosa.cos"):
    _declare_unary(_name, ("f32", "f16"))


@op("tosa.select", operands=("input1", "input2", "input3"))
def _select(operands, attrs, dtype=None):
    p, a, b = (tensor(v) for v in operands)
    check(p.dtype == "i1" and a.dtype == b.dtype, f"select needs an i1 predicate and equal types: {p}, {a}, {b}")
    return [a.with_shape(broadcast_shape(p.shape, a.shape, b.shape))]


# ---------------------------------------------------------------------------------------- reductions


def _declare_reduce(name, attrs, dtypes=None):
    def infer(operands, attrs, dtype=None):
        t = tensor(operands[0])
        check(dtypes is None or t.dtype in dtypes, f"{name} is not defined for {t.dtype}")
        axis = attrs["axis"]
        check(0 <= axis < t.rank, f"{name} axis {axis} out of range for {t}")
        shape = list(t.shape)
        shape[axis] = 1
        return [t.with_shape(shape)]

    op(name, operands=("input",), attrs=attrs, defaults={"nan_mode": "PROPAGATE"})(infer)


_declare_reduce("tosa.reduce_sum", {"axis": "int32"})
_declare_reduce("tosa.reduce_max", {"axis": "int32", "nan_mode": "nan_mode"})
_declare_reduce("tosa.reduce_min", {"axis": "int32", "nan_mode": "nan_mode"})
_declare_reduce("tosa.reduce_product", {"axis": "int32"}, dtypes=("f32", "f16"))
_declare_reduce("tosa.reduce_all", {"axis": "int32"})
_declare_reduce("tosa.reduce_any", {"axis": "int32"})


@op("tosa.argmax", operands=("input",), attrs={"axis": "int32", "nan_mode": "nan_mode"},
    defaults={"nan_mode": "PROPAGATE"})
def _argmax(operands, attrs, dtype=None):
    t = tensor(operands[0])
    axis = attrs["axis"]
    check(0 <= axis < t.rank, f"argmax axis {axis} out of range for {t}")
    return [TensorType(t.shape[:axis] + t.shape[axis + 1:], "i32")]


# ------------------------------------------------------------------------------------------ resize


@op("tosa.resize", operands=("input", "scale", "offset", "border"), attrs={"mode": "resize_mode"})
def _resize(operands, attrs, dtype=None):
    x = tensor(operands[0])
    scale = const_shape_value(operands[1])
    offset, border = const_shape_value(operands[2]), const_shape_value(operands[3])
    check(x.rank == 4 and len(scale) == 4, "resize needs a rank-4 input and 4 scale values")
    # The ERROR_IFs of TOSA 1.0 RESIZE (pseudocode/operators/RESIZE.tosac), per axis.
    out_hw = []
    for axis, (n, d, off, bor) in enumerate(((scale[0], scale[1], offset[0], border[0]),
                                             (scale[2], scale[3], offset[1], border[1]))):
        check(n > 0 and d > 0 and n <= 1 << 11 and d < 16 * n, f"resize scale {n}/{d} outside TOSA's bounds")
        check(-n <= off < 16 * n and -16 * n <= bor < n, f"resize offset {off} or border {bor} outside TOSA's bounds")
        span = (x.shape[axis + 1] - 1) * n - off + bor
        check(span % d == 0, f"resize: ((in - 1) * {n} - {off} + {bor}) is not a multiple of {d} (idiv_check)")
        out_hw.append(span // d + 1)
        check(out_hw[-1] >= 1, f"resize: the output size {out_hw[-1]} is not positive")
    oh, ow = out_hw
    check(max(x.shape[1], x.shape[2], oh, ow) < 16384, "resize sizes must be below 16384")
    if attrs["mode"] == "BILINEAR" and x.dtype in ("i8", "i16"):
        out = "i32" if x.dtype == "i8" else "i48"
    else:
        out = x.dtype
    return [TensorType((x.shape[0], oh, ow, x.shape[3]), out)]


# ------------------------------------------------------------------------ variables (EXT-VARIABLE)
#
# A variable is declared once per graph by VARIABLE (a module-level `tosa.variable` in MLIR) with its name,
# shape, element type and optional initial value; VARIABLE_READ and VARIABLE_WRITE name it. Its value
# persists from one execution of the graph to the next. The graph-level rules (declared once, before use,
# read and written at the declared type) are checked by `check_variables`.

# Element types a TOSA 1.0 variable may hold (EXT-VARIABLE: i8; with PRO-FP: f16, f32; bf16 is not modelled).
VARIABLE_DTYPES = ("i8", "f16", "f32")


def variable_type(attrs) -> TensorType:
    """The tensor type a VARIABLE declares: `var_shape` and element `type`."""
    return TensorType(tuple(attrs["var_shape"]), attrs["type"])


@op("tosa.variable", attrs={"sym_name": "symbol", "var_shape": "shape", "type": "type", "initial_value": "dense"},
    defaults={"initial_value": None})
def _variable(operands, attrs, dtype=None):
    check(attrs["sym_name"] != "", "a variable needs a non-empty name")
    t = variable_type(attrs)
    check(t.dtype in VARIABLE_DTYPES,
          f"variable @{attrs['sym_name']}: TOSA 1.0 variables hold {', '.join(VARIABLE_DTYPES)}, not {t.dtype}")
    initial = attrs["initial_value"]
    if initial is not None:
        check(isinstance(initial, np.ndarray) and initial.shape == t.shape and initial.dtype == t.numpy_dtype,
              f"variable @{attrs['sym_name']}: initial value {getattr(initial, 'dtype', '?')}"
              f"{list(getattr(initial, 'shape', ()))} is not a {t}")
    return []


@op("tosa.variable_read", attrs={"name": "symbol"}, stated_result_type=True)
def _variable_read(operands, attrs, dtype=None):
    check(isinstance(dtype, TensorType), "tosa.variable_read needs the variable's tensor type")
    check(dtype.dtype in VARIABLE_DTYPES, f"variable @{attrs['name']} read as {dtype}: not a TOSA 1.0 variable type")
    return [dtype]


@op("tosa.variable_write", operands=("input1",), attrs={"name": "symbol"})
def _variable_write(operands, attrs, dtype=None):
    t = tensor(operands[0])
    check(t.dtype in VARIABLE_DTYPES, f"variable @{attrs['name']} written with {t}: not a TOSA 1.0 variable type")
    return []


def check_variables(ops) -> None:
    """The graph-level rules of EXT-VARIABLE over ops in program order: each variable is declared once,
    before any VARIABLE_READ / VARIABLE_WRITE of it, and is read and written at its declared type."""
    declared: dict[str, TensorType] = {}
    for operation in ops:
        if operation.name == "tosa.variable":
            name = operation.attrs["sym_name"]
            check(name not in declared, f"variable @{name} is declared twice")
            declared[name] = variable_type(operation.attrs)
        elif operation.name in ("tosa.variable_read", "tosa.variable_write"):
            name = operation.attrs["name"]
            check(name in declared, f"{operation.name} of @{name}, which no earlier tosa.variable declares")
            t = operation.results[0].type if operation.results else operation.operands[0].type
            check(t == declared[name], f"{operation.name} of @{name} as {t}; it is declared {declared[name]}")


def infer_result_types(name: str, operands, attrs, dtype: str | None = None):
    """Result types of `name` applied to `operands` with `attrs`; raises VerifyError when the spec forbids it."""
    opdef = OPS.get(name)
    if opdef is None:
        raise VerifyError(f"unknown TOSA op {name}")
    if opdef.variadic:
        check(len(operands) >= 1, f"{name} needs at least one operand")
    else:
        check(len(operands) == len(opdef.operands),
              f"{name} takes {len(opdef.operands)} operands ({', '.join(opdef.operands)}), got {len(operands)}")
    missing = [a for a in opdef.attrs if a not in attrs and a not in opdef.defaults]
    check(not missing, f"{name} is missing attributes {missing}")
    unknown = [a for a in attrs if a not in opdef.attrs]
    check(not unknown, f"{name} has unknown attributes {unknown}")
    full = {**opdef.defaults, **attrs}
    for key, kind in opdef.attrs.items():
        if kind in ENUM_VALUES:
            check(full[key] in ENUM_VALUES[kind], f"{name}: {key} must be one of {ENUM_VALUES[kind]}")
    return opdef.infer(operands, full, dtype)
