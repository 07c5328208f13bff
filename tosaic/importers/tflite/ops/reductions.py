"""Reductions: SUM, REDUCE_MAX, REDUCE_MIN, ARG_MAX, ARG_MIN (MEAN lives in reduce.py).

Axes are constants, resolved as LiteRT's ResolveAxis does (negative += rank, duplicates dropped, ignored for
a rank-0 input); TOSA reductions keep the reduced axis as size 1, so a RESHAPE to the output's shape follows
(which drops the axes unless keep_dims).

ARG_MAX / ARG_MIN with an int64 output (TensorFlow's default `output_type`): TOSA ARGMAX yields i32, and the
int64 result is its CAST to i64. The indices are below the axis size, so the CAST is exact; but i64 is not a
TOSA 1.0 type: such a graph is valid TOSA only for 1.1 with EXT-INT64 (tosa-opt accepts `cast i32 -> i64`
with `extensions=int64 specification_version=1.1.draft` and rejects it for 1.0). tosaic keeps the CAST rather
than refuse the common `argmax` classifier head; an int32 `output_type` gives a TOSA 1.0 PRO-INT graph.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.common import check_output_shape, check_output_type_option, reduced_shape
from tosaic.importers.tflite.fixed_point import per_tensor, requantize
from tosaic.importers.tflite.ops.shape import constant_ints, normalized_axis, same_quantization
from tosaic.importers.tflite.registry import legalize
from tosaic.ir import Value

INT32_MAX = (1 << 31) - 1


def resolved_axes(ctx, rank: int, what: str) -> list[int]:
    """reduce.cc ResolveAxisForShape on the op's constant int32 axis input (PrepareSimple requires int32)."""
    t = ctx.input(1)
    if t is not None and t.dtype != "int32":
        raise ctx.error(f"{what} axis must be int32 (LiteRT's Prepare requires it), got {t.describe()}")
    # An empty axis list has no data to store (its buffer is empty) and needs none.
    empty = t is not None and t.data is None and int(np.prod(t.shape, dtype=np.int64)) == 0
    values = [] if empty else constant_ints(ctx, 1, f"{what} axis")
    if rank == 0:
        return []
    axes = []
    for a in values:
        resolved = normalized_axis(ctx, a, rank, f"{what} axis")
        if resolved not in axes:
            axes.append(resolved)
    return axes


def _reduce(ctx, value: Value, tosa_op: str, axes) -> Value:
    for axis in axes:
        value = ctx.builder.op(tosa_op, [value], {"axis": axis})
    return value


# ------------------------------------------------------------------------------------------------ SUM


@legalize("SUM", types=("int8",))
def sum_(ctx, op):
    """SUM as LiteRT 2.3.0's reference resolver computes it: kernels/reduce.cc EvalSum -> QuantizedMeanOrSum
    <int8_t, kReference>, which calls reference_ops::QuantizedMeanOrSum with `GetTensorData<uint8_t>` for the
    input and the output. So the int8 input bytes are summed as uint8 (-1 counts as 255) and the result is
    clamped to [0, 255] and stored as a uint8 byte (read back as int8, 200 is -56):

        out = uint8_bits(clamp(MultiplyByQuantizedMultiplier(sum(uint8(q)) - zp_in * n, m, e) + zp_out, 0, 255))

    with (m, e) = QuantizeMultiplier(double(s_in) / double(s_out)) and n the number of summed elements. This
    is not the sum TensorFlow means (the optimized resolver computes that); tosaic follows its reference.
    In TOSA: RESCALE i8 -> i16 with input_unsigned (the uint8 view), CAST to i32, REDUCE_SUM per axis, SUB
    zp_in * n, RESCALE (DOUBLE_ROUND) to i16, ADD zp_out in i32 and back to i16, RESCALE to i8 with
    output_unsigned (the clamp to [0, 255] and the uint8 byte; TOSA allows unsigned only between i8 and i16,
    and reads an unsigned output zero point as unsigned, so a negative zp_out cannot go there).

    int16 SUM is refused: the same code reads the int16 buffer as bytes and writes only the first half of the
    output buffer (the rest is whatever the arena held).
    """
    x, y = ctx.input(0), ctx.output()
    if y.dtype != "int8":
        raise ctx.error(f"int8 SUM needs an int8 output, got {y.describe()}")
    rank = len(x.shape)
    axes = resolved_axes(ctx, rank, "SUM")
    check_output_shape(ctx, reduced_shape(x.shape, axes, op.options["keep_dims"]))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if count == 0 or int(np.prod(x.shape, dtype=np.int64)) == 0:
        raise ctx.error("SUM of an empty tensor is not supported")
    s_in, in_zp = per_tensor(ctx, x)
    s_out, out_zp = per_tensor(ctx, y)
    low, high = -in_zp * count, (255 - in_zp) * count
    if max(abs(low), abs(high), 255 * count) > INT32_MAX:
        raise ctx.error(f"the int32 sum of {count} values can overflow")

    b = ctx.builder
    # TOSA allows unsigned RESCALEs only between i8 and i16.
    acc = b.rescale(ctx.value(x), 1 << 30, 30, 0, 0, "i16", rounding="SINGLE_ROUND", input_unsigned=True)
    acc = _reduce(ctx, b.cast(acc, "i32"), "tosa.reduce_sum", axes)
    ones = (1,) * acc.type.rank
    if in_zp:
        acc = b.op("tosa.sub", [acc, b.const(np.full(ones, in_zp * count), "i32")])
    # Saturating to int16 first keeps every later value small; it cannot change the final clamp to [0, 255]
    # since |zp_out| <= 128.
    scaled = requantize(ctx, acc, s_in / s_out, (low, high), 0, 0, "i16", "SUM multiplier")
    if out_zp:
        scaled = b.op("tosa.add", [b.cast(scaled, "i32"), b.const(np.full(ones, out_zp), "i32")])
        scaled = b.rescale(scaled, 1 << 30, 30, 0, 0, "i16", rounding="SINGLE_ROUND")
    result = b.rescale(scaled, 1 << 30, 30, 0, 0, "i8", rounding="SINGLE_ROUND", output_unsigned=True)
    ctx.set_output(b.reshape(result, y.shape))


# --------------------------------------------------------------------------------- REDUCE_MAX, REDUCE_MIN


def _reduce_extreme(ctx, op, tosa_op: str) -> None:
    """reduce.cc EvalGeneric -> EvalType (reference ReduceGeneric / ReduceAllDims): the largest (smallest) raw
    value over the axes. Eval requires the output's scale and zero point to be the input's; Prepare requires
    zero point 0 for int16."""
    x, y = ctx.input(0), ctx.output()
    if x.dtype in ("int8", "int16") and not same_quantization(x, y):
        raise ctx.error(f"{op.opcode} input {x.describe()} and output {y.describe()} are quantized differently "
                        f"(LiteRT's Eval refuses this)")
    if x.dtype == "int16" and x.quantized and int(x.zero_point[0]) != 0:
        raise ctx.error(f"int16 {op.opcode} needs zero point 0, got {x.describe()} (LiteRT refuses it)")
    if int(np.prod(x.shape, dtype=np.int64)) == 0:
        raise ctx.error(f"{op.opcode} of an empty tensor is not supported")
    axes = resolved_axes(ctx, len(x.shape), op.opcode)
    check_output_shape(ctx, reduced_shape(x.shape, axes, op.options["keep_dims"]))
    ctx.set_output(ctx.builder.reshape(_reduce(ctx, ctx.value(x), tosa_op, axes), y.shape))


@legalize("REDUCE_MAX", types=("int8", "int16", "int32"))
def reduce_max(ctx, op):
    """REDUCE_MAX: TOSA REDUCE_MAX per axis."""
    _reduce_extreme(ctx, op, "tosa.reduce_max")


@legalize("REDUCE_MIN", types=("int8", "int16", "int32"))
def reduce_min(ctx, op):
    """REDUCE_MIN: TOSA REDUCE_MIN per axis."""
    _reduce_extreme(ctx, op, "tosa.reduce_min")


# ------------------------------------------------------------------------------------ ARG_MAX, ARG_MIN

ARG_TYPES = ("int8->int32", "int8->int64", "bool->int32", "bool->int64")


def _arg_min_max(ctx, op, is_arg_max: bool) -> None:
    """arg_min_max.cc + optimized_ops::ArgMinMax: along `axis` (one int32/int64 value, += rank when negative),
    the first index whose value is strictly greater (smaller) than every earlier one, i.e. the first index of
    the largest (smallest) value. LiteRT has no int16 case (Prepare accepts float32, uint8, int8, int32, bool).

    TOSA ARGMAX returns the first maximal index as i32, for i8 (i32 is not a TOSA 1.0 ARGMAX type). ARG_MIN is
    ARGMAX of BITWISE_NOT(x) = -x - 1, which reverses the order of int8 exactly. bool goes through CAST to i8.
    An int64 output is the CAST of the i32 index (see the module docstring)."""
    x, out = ctx.input(0), ctx.output()
    rank = len(x.shape)
    if rank == 0:
        raise ctx.error(f"{op.opcode} of a scalar")
    axis_tensor = ctx.input(1)
    if axis_tensor is not None and axis_tensor.dtype not in ("int32", "int64"):
        raise ctx.error(f"{op.opcode} axis must be int32 or int64, got {axis_tensor.describe()}")
    axis_values = constant_ints(ctx, 1, f"{op.opcode} axis")
    if len(axis_values) != 1:
        raise ctx.error(f"{op.opcode} axis must hold one value, got {axis_values}")
    axis = normalized_axis(ctx, axis_values[0], rank, f"{op.opcode} axis")
    check_output_type_option(ctx, "output_type")
    if x.shape[axis] == 0 or int(np.prod(x.shape, dtype=np.int64)) == 0:
        raise ctx.error(f"{op.opcode} over an empty tensor")
    b = ctx.builder
    value = ctx.value(x)
    if x.dtype == "bool":
        value = b.cast(value, "i8")
    if not is_arg_max:
        value = b.op("tosa.bitwise_not", [value])
    index = b.op("tosa.argmax", [value], {"axis": axis})
    ctx.set_output(b.cast(index, "i64") if out.dtype == "int64" else index)


@legalize("ARG_MAX", types=ARG_TYPES)
def arg_max(ctx, op):
    """ARG_MAX: the first index of the largest value."""
    _arg_min_max(ctx, op, is_arg_max=True)


@legalize("ARG_MIN", types=ARG_TYPES)
def arg_min(ctx, op):
    """ARG_MIN: the first index of the smallest value."""
    _arg_min_max(ctx, op, is_arg_max=False)
