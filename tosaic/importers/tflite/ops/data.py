"""Data movement: SPLIT, SPLIT_V, PACK, UNPACK, TILE, GATHER, DEPTH_TO_SPACE, SPACE_TO_DEPTH, EXPAND_DIMS,
SLICE, SHAPE, BROADCAST_TO.

None of these kernels requantize: LiteRT copies elements by their size in bits (`TfLiteTypeGetSizeBits`), so
int8 and int16 tensors move bit for bit and so do int32, float32 and bool ones. Where a kernel's Prepare insists
that input and output share scale and zero point (PACK, UNPACK, EXPAND_DIMS), a model that breaks that is
refused, as LiteRT refuses it; elsewhere the output's quantization is not read. Index arguments (axis, sizes,
begin, multiples, shapes) must be constants: TOSA shapes are static. Empty tensors have no TOSA form and are
refused, as are results of rank above 6 (TOSA's MAX_RANK at level 8k).
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.common import check_output_type_option
from tosaic.importers.tflite.ops.shape import constant_ints, normalized_axis, same_quantization
from tosaic.importers.tflite.registry import legalize, type_signature
from tosaic.ir import Value
from tosaic.tosa.ops import MAX_RANK

MOVE_TYPES = ("int8", "int16", "int32", "float32")
MOVE_TYPES_AND_BOOL = MOVE_TYPES + ("bool",)


def _check_rank(ctx, shape, what: str) -> None:
    if len(shape) > MAX_RANK:
        raise ctx.error(f"{what} has rank {len(shape)}; TOSA allows at most {MAX_RANK}")


def _check_not_empty(ctx, shape, what: str) -> None:
    if any(d == 0 for d in shape):
        raise ctx.error(f"{what} {list(shape)} is empty: empty tensors have no TOSA form")


def _index_tensor(ctx, position: int, what: str) -> list[int]:
    """A constant int32/int64 index input (the types these kernels read), flattened."""
    t = ctx.input(position)
    if t is not None and t.dtype not in ("int32", "int64"):
        raise ctx.error(f"{what} must be int32 or int64, got {t.describe()}")
    if t is not None and t.data is None and int(np.prod(t.shape, dtype=np.int64)) == 0:
        return []  # an empty list (a rank-0 TILE's multiples) has no buffer data and needs none
    return constant_ints(ctx, position, what)


def _require_same_quantization(ctx, a, b) -> None:
    """TF_LITE_ENSURE_EQ on params.scale and params.zero_point in Prepare: LiteRT refuses the model otherwise."""
    if not same_quantization(a, b):
        raise ctx.error(f"{a.describe()} and {b.describe()} are quantized differently (LiteRT's kernel never "
                        f"rescales and refuses this model)")


def _slice(ctx, x: Value, start, size) -> Value:
    if list(start) == [0] * len(start) and tuple(size) == x.type.shape:
        return x
    b = ctx.builder
    return b.op("tosa.slice", [x, b.shape(start), b.shape(size)])


# ------------------------------------------------------------------------------------------- SPLIT


def _split(ctx, x: Value, axis: int, sizes) -> None:
    """One SLICE per output along `axis` (reference_ops::Split copies consecutive chunks of the axis)."""
    shape = list(x.type.shape)
    start = 0
    for i, n in enumerate(sizes):
        begin = [0] * len(shape)
        begin[axis] = start
        size = list(shape)
        size[axis] = n
        ctx.set_output(_slice(ctx, x, begin, size), i)
        start += n


@legalize("SPLIT", types=("int32->int8", "int32->int16", "int32", "int32->float32"))
def split(ctx, op):
    """split.cc + reference_ops::Split: inputs (axis, value); `num_splits` equal chunks along axis (+= rank when
    negative). The axis is read as int32 (GetTensorData<int>)."""
    x = ctx.input(1)
    rank = len(x.shape)
    axis_values = _index_tensor(ctx, 0, "SPLIT axis")
    if len(axis_values) != 1:
        raise ctx.error(f"SPLIT axis must hold one value, got {axis_values}")
    axis = normalized_axis(ctx, axis_values[0], rank, "SPLIT axis")
    num_splits = int(op.options.get("num_splits", 0))
    if num_splits != len(op.outputs):
        raise ctx.error(f"SPLIT num_splits {num_splits} differs from its {len(op.outputs)} outputs")
    if num_splits == 0 or x.shape[axis] % num_splits:
        raise ctx.error(f"SPLIT of axis {axis} of {x.describe()} into {num_splits} is not an even split")
    size = x.shape[axis] // num_splits
    _check_not_empty(ctx, [size], "each SPLIT output along the axis")
    _split(ctx, ctx.value(x), axis, [size] * num_splits)


@legalize("SPLIT_V", types=MOVE_TYPES)
def split_v(ctx, op):
    """split_v.cc + reference_ops::Split: inputs (value, size_splits, axis); one size may be -1 (the rest)."""
    x = ctx.input(0)
    rank = len(x.shape)
    sizes = _index_tensor(ctx, 1, "SPLIT_V size_splits")
    axis_values = _index_tensor(ctx, 2, "SPLIT_V axis")
    if len(axis_values) != 1:
        raise ctx.error(f"SPLIT_V axis must hold one value, got {axis_values}")
    axis = normalized_axis(ctx, axis_values[0], rank, "SPLIT_V axis")
    if len(sizes) != len(op.outputs):
        raise ctx.error(f"SPLIT_V has {len(sizes)} size_splits for {len(op.outputs)} outputs")
    unknown = [i for i, s in enumerate(sizes) if s == -1]
    known = sum(s for s in sizes if s != -1)
    if len(unknown) > 1:
        raise ctx.error(f"SPLIT_V size_splits {sizes} contains more than one -1")
    if unknown:
        if known > x.shape[axis]:
            raise ctx.error(f"SPLIT_V size_splits {sizes} sum past the axis size {x.shape[axis]}")
        sizes[unknown[0]] = x.shape[axis] - known
    elif known != x.shape[axis]:
        raise ctx.error(f"SPLIT_V size_splits {sizes} must sum to the axis size {x.shape[axis]}")
    if min(sizes) < 0:
        raise ctx.error(f"SPLIT_V size_splits {sizes} holds a negative size")
    _check_not_empty(ctx, sizes, "SPLIT_V output sizes")
    _split(ctx, ctx.value(x), axis, sizes)


# ------------------------------------------------------------------------------------ PACK, UNPACK


@legalize("PACK", types=MOVE_TYPES)
def pack(ctx, op):
    """pack.cc + reference_ops::Pack: stack `values_count` same-shape inputs along a new axis (+= rank + 1 when
    negative). In TOSA: RESHAPE each input to hold a size-1 axis there, then CONCAT along it."""
    out = ctx.output()
    inputs = [ctx.input(i) for i in range(len(op.inputs))]
    count = int(op.options.get("values_count", len(inputs)))
    if count != len(inputs):
        raise ctx.error(f"PACK values_count {count} differs from its {len(inputs)} inputs")
    shape = list(inputs[0].shape)
    axis = normalized_axis(ctx, int(op.options.get("axis", 0)), len(shape) + 1, "PACK axis")
    for t in inputs:
        if list(t.shape) != shape or t.dtype != inputs[0].dtype:
            raise ctx.error(f"PACK inputs differ: {inputs[0].describe()} and {t.describe()}")
        _require_same_quantization(ctx, t, out)
    expanded = shape[:axis] + [1] + shape[axis:]
    _check_rank(ctx, expanded, "the PACK output")
    b = ctx.builder
    values = [b.reshape(ctx.value(t), expanded) for t in inputs]
    ctx.set_output(values[0] if len(values) == 1 else b.op("tosa.concat", values, {"axis": axis}))


@legalize("UNPACK", types=MOVE_TYPES_AND_BOOL)
def unpack(ctx, op):
    """unpack.cc + reference_ops::Unpack: output i is slice i along `axis` (+= rank when negative), with the
    axis removed. One SLICE and one RESHAPE per output."""
    x = ctx.input(0)
    rank = len(x.shape)
    if rank == 0:
        raise ctx.error("UNPACK of a scalar")
    _check_not_empty(ctx, x.shape, "UNPACK input")
    axis = normalized_axis(ctx, int(op.options.get("axis", 0)), rank, "UNPACK axis")
    num = int(op.options.get("num", 0))
    if num != x.shape[axis] or num != len(op.outputs):
        raise ctx.error(f"UNPACK num {num} must equal the axis size {x.shape[axis]} and the output count "
                        f"{len(op.outputs)}")
    for i in range(num):
        _require_same_quantization(ctx, x, ctx.output(i))
    value = ctx.value(x)
    shape = list(x.shape)
    out_shape = shape[:axis] + shape[axis + 1:]
    b = ctx.builder
    for i in range(num):
        begin = [0] * rank
        begin[axis] = i
        size = list(shape)
        size[axis] = 1
        ctx.set_output(b.reshape(_slice(ctx, value, begin, size), out_shape), i)


# ----------------------------------------------------------------------------------------------- TILE


@legalize("TILE", types=MOVE_TYPES_AND_BOOL)
def tile(ctx, op):
    """tile.cc (TileOneDimension): the input repeated `multiples[i]` times along every axis i: TOSA TILE.

    LiteRT's reference resolver registers TILE versions 1-2 only; the converter writes int8 TILE as version
    3, which BUILTIN_REF then refuses to load, though the kernel is the same for every version."""
    x = ctx.input(0)
    multiples = _index_tensor(ctx, 1, "TILE multiples")
    if len(multiples) != len(x.shape):
        raise ctx.error(f"TILE multiples {multiples} must have one entry per axis of {x.describe()}")
    if min(multiples, default=1) < 0:
        raise ctx.error(f"TILE multiples {multiples} must be non-negative")
    _check_not_empty(ctx, [d * m for d, m in zip(x.shape, multiples)], "TILE output")
    value = ctx.value(x)
    if all(m == 1 for m in multiples):
        ctx.set_output(value)
        return
    b = ctx.builder
    ctx.set_output(b.op("tosa.tile", [value, b.shape(multiples)]))


# --------------------------------------------------------------------------------------------- GATHER


@legalize("GATHER", types=MOVE_TYPES)
def gather(ctx, op):
    """gather.cc + reference_ops::Gather: for every batch b (the first batch_dims axes, shared by input and
    positions) and outer index o (the input axes between batch_dims and axis):
    `output[b, o, i, :] = input[b, o, positions[b, i], :]`; positions outside [0, axis size) fail the invoke.

    In TOSA: input as GATHER values [N = batch * outer, K = axis size, C = inner], positions as i32 indices
    [N, W = positions per batch] (one copy per outer index, by TILE), result [N, W, C] reshaped to
    `input[:axis] + positions[batch_dims:] + input[axis + 1:]`. Constant positions are checked here and
    become an i32 constant; int32 positions computed by the model feed GATHER directly, int16 and int64 ones
    through a CAST to i32. A position outside the axis then fails TOSA GATHER's REQUIRE at run time, as it
    fails LiteRT's invoke (except int64 positions at or beyond 2^31, which the CAST wraps). int64 positions
    computed by the model (token ids, typically) make the graph use i64, which TOSA 1.0 lacks: such a graph
    needs TOSA 1.1's EXT-INT64, as the model's own int64 tensors do.
    """
    x, positions = ctx.input(0), ctx.input(1)
    rank = len(x.shape)
    if positions.dtype not in ("int16", "int32", "int64"):
        raise ctx.error(f"GATHER positions must be int16, int32 or int64, got {positions.describe()}")
    axis = normalized_axis(ctx, int(op.options.get("axis", 0)), rank, "GATHER axis")
    pos_rank = len(positions.shape)
    batch_dims = int(op.options.get("batch_dims", 0))
    if batch_dims < 0:
        batch_dims += pos_rank
    if not (0 <= batch_dims <= axis and batch_dims < rank and batch_dims <= pos_rank):
        raise ctx.error(f"GATHER batch_dims {op.options.get('batch_dims')} is invalid for axis {axis}, "
                        f"{x.describe()} and positions {positions.describe()}")
    if list(x.shape[:batch_dims]) != list(positions.shape[:batch_dims]):
        raise ctx.error(f"GATHER batch dimensions of {x.describe()} and {positions.describe()} differ")
    _check_not_empty(ctx, list(x.shape) + list(positions.shape), "GATHER input or positions shape")
    batch = int(np.prod(x.shape[:batch_dims], dtype=np.int64))
    outer = int(np.prod(x.shape[batch_dims:axis], dtype=np.int64))
    axis_size = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    width = int(np.prod(positions.shape[batch_dims:], dtype=np.int64))
    out_shape = list(x.shape[:axis]) + list(positions.shape[batch_dims:]) + list(x.shape[axis + 1:])
    _check_rank(ctx, out_shape, "the GATHER output")

    b = ctx.builder
    if positions.data is not None:
        index = np.asarray(positions.data, dtype=np.int64).reshape(batch, 1, width)
        if index.size and (index.min() < 0 or index.max() >= axis_size):
            raise ctx.error(f"GATHER positions {positions.describe()} hold values outside [0, {axis_size}) "
                            f"(LiteRT fails the invoke)")
        indices = b.const(np.broadcast_to(index, (batch, outer, width)).reshape(batch * outer, width), "i32")
    else:
        indices = ctx.value(positions)
        if positions.dtype != "int32":
            indices = b.cast(indices, "i32")
        indices = b.reshape(indices, (batch, 1, width))
        if outer > 1:
            indices = b.op("tosa.tile", [indices, b.shape((1, outer, 1))])
        indices = b.reshape(indices, (batch * outer, width))
    values = b.reshape(ctx.value(x), (batch * outer, axis_size, inner))
    result = b.op("tosa.gather", [values, indices])
    ctx.set_output(b.reshape(result, out_shape))


# ---------------------------------------------------------------------------- DEPTH_TO_SPACE and back

# int16 is not among these kernels' types (Prepare accepts float32, uint8, int8, int32, int64).
BLOCK_TYPES = ("int8", "int32", "float32")


def _block_size(ctx, op, x) -> int:
    if len(x.shape) != 4:
        raise ctx.error(f"{op.opcode} needs a 4-D input, got {x.describe()}")
    block = int(op.options.get("block_size", 0))
    if block <= 0:
        raise ctx.error(f"{op.opcode} block_size {block} must be positive")
    return block


@legalize("DEPTH_TO_SPACE", types=BLOCK_TYPES)
def depth_to_space(ctx, op):
    """depth_to_space.cc + reference_ops::DepthToSpace:
    `out[b, h*bs + dy, w*bs + dx, c] = in[b, h, w, (dy*bs + dx)*C_out + c]`. In TOSA: RESHAPE to
    [N, H, W, bs, bs, C_out], TRANSPOSE to [N, H, bs, W, bs, C_out], RESHAPE to [N, H*bs, W*bs, C_out]."""
    x = ctx.input(0)
    block = _block_size(ctx, op, x)
    n, h, w, c = x.shape
    if c % (block * block):
        raise ctx.error(f"DEPTH_TO_SPACE: depth {c} is not a multiple of block_size^2 = {block * block}")
    depth = c // (block * block)
    b = ctx.builder
    value = b.reshape(ctx.value(x), (n, h, w, block, block, depth))
    value = b.transpose(value, (0, 1, 3, 2, 4, 5))
    ctx.set_output(b.reshape(value, (n, h * block, w * block, depth)))


@legalize("SPACE_TO_DEPTH", types=BLOCK_TYPES)
def space_to_depth(ctx, op):
    """space_to_depth.cc + reference_ops::SpaceToDepth, the inverse of DEPTH_TO_SPACE:
    `out[b, h, w, (dy*bs + dx)*C + c] = in[b, h*bs + dy, w*bs + dx, c]`."""
    x = ctx.input(0)
    block = _block_size(ctx, op, x)
    n, h, w, c = x.shape
    if h % block or w % block:
        raise ctx.error(f"SPACE_TO_DEPTH: height {h} and width {w} must be multiples of block_size {block}")
    b = ctx.builder
    value = b.reshape(ctx.value(x), (n, h // block, block, w // block, block, c))
    value = b.transpose(value, (0, 1, 3, 2, 4, 5))
    ctx.set_output(b.reshape(value, (n, h // block, w // block, block * block * c)))


# --------------------------------------------------------------------------------- EXPAND_DIMS, SLICE


@legalize("EXPAND_DIMS", types=MOVE_TYPES_AND_BOOL)
def expand_dims(ctx, op):
    """expand_dims.cc: a size-1 axis inserted at `axis` (+= rank + 1 when negative); the data is copied. Prepare
    requires the output's scale and zero point to be the input's (and zero point 0 for int16)."""
    x, out = ctx.input(0), ctx.output()
    axis_values = _index_tensor(ctx, 1, "EXPAND_DIMS axis")
    if len(axis_values) != 1:
        raise ctx.error(f"EXPAND_DIMS axis must hold one value, got {axis_values}")
    _require_same_quantization(ctx, x, out)
    if x.dtype == "int16" and x.quantized and int(x.zero_point[0]) != 0:
        raise ctx.error(f"int16 EXPAND_DIMS needs zero point 0, got {x.describe()} (LiteRT refuses it)")
    shape = list(x.shape)
    axis = normalized_axis(ctx, axis_values[0], len(shape) + 1, "EXPAND_DIMS axis")
    expanded = shape[:axis] + [1] + shape[axis:]
    _check_rank(ctx, expanded, "the EXPAND_DIMS output")
    ctx.set_output(ctx.builder.reshape(ctx.value(x), expanded))


@legalize("SLICE", types=MOVE_TYPES_AND_BOOL)
def slice_(ctx, op):
    """slice.cc + reference_ops::Slice: from `begin`, `size` elements per axis (size -1: to the end). LiteRT
    checks `begin + size <= dim` but not `begin >= 0`, which would read before the tensor: refused here."""
    x = ctx.input(0)
    begin = _index_tensor(ctx, 1, "SLICE begin")
    size = _index_tensor(ctx, 2, "SLICE size")
    rank = len(x.shape)
    if not len(begin) == len(size) == rank:
        raise ctx.error(f"SLICE begin {begin} and size {size} must have one entry per axis of {x.describe()}")
    sizes = []
    for axis, (start, n, dim) in enumerate(zip(begin, size, x.shape)):
        if n == -1:
            n = dim - start
        if start < 0 or n < 0 or start + n > dim:
            raise ctx.error(f"SLICE begin {begin} size {size} is outside {x.describe()} on axis {axis}")
        sizes.append(n)
    _check_not_empty(ctx, sizes, "SLICE output")
    ctx.set_output(_slice(ctx, ctx.value(x), begin, sizes))


# ------------------------------------------------------------------------------- SHAPE, BROADCAST_TO

ANY_INPUT = ("int8", "uint8", "int16", "int32", "float32", "bool")


@legalize("SHAPE", types=[type_signature(t, o) for t in ANY_INPUT for o in ("int32", "int64")])
def shape(ctx, op):
    """shape.cc: the input's dimensions, computed in Prepare (the tensor is persistent, Eval does nothing).

    Shapes are static here, so SHAPE emits nothing: its output tensor becomes constant data, which later ops
    read as a constant argument (a RESHAPE or BROADCAST_TO shape, a STRIDED_SLICE bound) and which becomes a
    TOSA constant only if an op reads it as a tensor. An int64 SHAPE consumed that way is an i64 constant,
    which TOSA 1.0 PRO-INT lacks (TOSA 1.1 EXT-INT64 has it)."""
    x, out = ctx.input(0), ctx.output()
    check_output_type_option(ctx, "out_type")
    if tuple(out.shape) != (len(x.shape),):
        raise ctx.error(f"SHAPE output {out.describe()} must be a vector of {len(x.shape)} entries")
    out.data = np.array(x.shape, dtype=np.dtype(out.dtype)).reshape(out.shape)


@legalize("BROADCAST_TO", types=MOVE_TYPES_AND_BOOL)
def broadcast_to(ctx, op):
    """broadcast_to.cc + reference_ops::BroadcastTo: numpy broadcasting of the input to `shape` (aligned at the
    trailing axes; each input axis is 1 or the target size). In TOSA: RESHAPE to the target rank with leading
    1s, then TILE the size-1 axes."""
    x = ctx.input(0)
    target = _index_tensor(ctx, 1, "BROADCAST_TO shape")
    shape_tensor = ctx.input(1)
    if len(shape_tensor.shape) != 1:
        raise ctx.error(f"BROADCAST_TO shape must be a vector, got {shape_tensor.describe()}")
    rank = len(target)
    if len(x.shape) > rank:
        raise ctx.error(f"BROADCAST_TO {target} has fewer axes than {x.describe()}")
    _check_rank(ctx, target, "the BROADCAST_TO output")
    _check_not_empty(ctx, target, "BROADCAST_TO output")
    aligned = [1] * (rank - len(x.shape)) + list(x.shape)
    for have, want in zip(aligned, target):
        if have != 1 and have != want:
            raise ctx.error(f"{x.describe()} does not broadcast to {target}")
    b = ctx.builder
    value = b.reshape(ctx.value(x), aligned)
    multiples = [want if have == 1 else 1 for have, want in zip(aligned, target)]
    if any(m != 1 for m in multiples):
        value = b.op("tosa.tile", [value, b.shape(multiples)])
    ctx.set_output(value)
