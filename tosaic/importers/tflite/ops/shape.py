"""Data movement: RESHAPE, SQUEEZE, TRANSPOSE, CONCATENATION, PAD, PADV2, STRIDED_SLICE (ARG_MAX: reductions.py).

None of these change values, so every int8 and int16 tensor moves bit for bit (LiteRT's kernels copy
elements by their size in bits, without requantizing). Their index arguments (perm, paddings, begin/end/
strides, axis) must be constants: TOSA shapes are static.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.common import check_output_shape, clamp_to_activation
from tosaic.importers.tflite.registry import legalize

MOVE_TYPES = ("int8", "int16", "int32", "float32")
TOSA_ZERO = {"int8": ("i8", 0), "int16": ("i16", 0), "int32": ("i32", 0), "float32": ("f32", 0.0)}


def constant_ints(ctx, position: int, what: str) -> list[int]:
    """The values of the op's constant integer input `position` (flattened)."""
    t = ctx.input(position)
    if t is None or t.data is None:
        raise ctx.error(f"{what} must be a constant tensor (tosaic needs static shapes)")
    if t.data.dtype.kind not in "iu":
        raise ctx.error(f"{what} must be an integer tensor, got {t.describe()}")
    return [int(v) for v in t.data.reshape(-1)]


def normalized_axis(ctx, axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise ctx.error(f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def same_quantization(a, b) -> bool:
    """TF_LITE_ENSURE_EQ on `params.scale` (float32) and `params.zero_point` of two tensors."""
    def params(t):
        if not t.quantized:
            return 0.0, 0
        return float(t.scale[0]), int(t.zero_point[0])
    return params(a) == params(b)


@legalize("RESHAPE", types=("int8", "int16", "int32", "float32"))
def reshape(ctx, op):
    """reshape.cc + reference_ops::Reshape: a copy. Prepare resizes the output to the shape it resolves (from
    the shape tensor when it is an int32 vector, else from the `new_shape` option), so that shape must be the
    declared one; a shape tensor computed at run time is taken to give the declared shape."""
    x, shape = ctx.input(0), ctx.input(1)
    if len(op.inputs) == 2 and shape is not None and len(shape.shape) == 1 and shape.dtype == "int32":
        target = None if shape.data is None else [int(d) for d in shape.data]
    else:
        target = [int(d) for d in op.options["new_shape"]]
        target = [] if target == [0] else target  # legacy models write [0] for a scalar
    if target is not None:
        check_output_shape(ctx, _resolve_reshape(ctx, x.shape, target))
    ctx.set_output(ctx.builder.reshape(ctx.value(x), ctx.output().shape))


def _resolve_reshape(ctx, in_shape, target: list[int]) -> list[int]:
    """reshape_utils.h ResolveOutputShape: at most one -1 (inferred from the non-zero sizes), no other negative
    size, and as many elements as the input."""
    stretch = [i for i, d in enumerate(target) if d == -1]
    if len(stretch) > 1 or any(d < -1 for d in target):
        raise ctx.error(f"RESHAPE to {target}: at most one -1 and no other negative size")
    count = int(np.prod(in_shape, dtype=np.int64))
    if stretch:
        known = [d for d in target if d != -1]
        nonzero_in = int(np.prod([d for d in in_shape if d], dtype=np.int64))
        nonzero_out = int(np.prod([d for d in known if d], dtype=np.int64))
        target[stretch[0]] = 0 if count == 0 and int(np.prod(known, dtype=np.int64)) != 0 else nonzero_in // nonzero_out
    if int(np.prod(target, dtype=np.int64)) != count:
        raise ctx.error(f"RESHAPE of {count} elements to {target}")
    return target


@legalize("SQUEEZE", types=("int8", "int16", "int32", "float32"))
def squeeze(ctx, op):
    """squeeze.cc: a reshape dropping the size-1 axes `squeeze_dims` names (negative: += rank), or every
    size-1 axis when it names none; Prepare resizes the output to that shape."""
    x = ctx.input(0)
    rank = len(x.shape)
    if rank > 8:
        raise ctx.error(f"SQUEEZE of rank {rank}; LiteRT's kernel takes at most 8")
    axes = set()
    for d in op.options["squeeze_dims"]:
        axis = d + rank if d < 0 else d
        if not 0 <= axis < rank or x.shape[axis] != 1:
            raise ctx.error(f"squeeze_dims entry {d} names no size-1 axis of {x.describe()}")
        axes.add(axis)
    if not op.options["squeeze_dims"]:
        axes = {i for i, size in enumerate(x.shape) if size == 1}
    check_output_shape(ctx, [size for i, size in enumerate(x.shape) if i not in axes])
    ctx.set_output(ctx.builder.reshape(ctx.value(x), ctx.output().shape))


@legalize("TRANSPOSE", types=MOVE_TYPES)
def transpose(ctx, op):
    """transpose.cc + reference_ops::Transpose: `perm` entries may be negative (`perm += rank`)."""
    x = ctx.input(0)
    rank = len(x.shape)
    perms = [normalized_axis(ctx, p, rank, "TRANSPOSE perm entry") for p in constant_ints(ctx, 1, "TRANSPOSE perm")]
    if sorted(perms) != list(range(rank)):
        raise ctx.error(f"TRANSPOSE perm {perms} is not a permutation of {rank} axes")
    ctx.set_output(ctx.builder.transpose(ctx.value(x), perms))


@legalize("CONCATENATION", types=MOVE_TYPES)
def concatenation(ctx, op):
    """concatenation.cc + reference_ops::Concatenation: a copy along `axis` (negative: `axis += rank`).

    int8 inputs must share the output's scale and zero point (Prepare rejects anything else: the int8
    kernel never requantizes). LiteRT 2.3.0 also rejects a fused activation; tosaic applies it as the
    schema defines it, a CLAMP to the activation's quantized range.
    """
    out = ctx.output()
    inputs = [ctx.input(i) for i in range(len(op.inputs))]
    rank = len(inputs[0].shape)
    if rank == 0:
        raise ctx.error("CONCATENATION of scalars is not supported")
    axis = normalized_axis(ctx, int(op.options.get("axis", 0)), rank, "CONCATENATION axis")
    if out.dtype == "int8":
        for t in inputs:
            if not same_quantization(t, out):
                raise ctx.error(f"int8 input {t.describe()} is quantized differently from the output "
                                f"{out.describe()} (LiteRT's int8 CONCATENATION never rescales and rejects this)")
    if out.dtype == "int16":
        # Prepare checks only the zero points (all 0); the copy then ignores the scales, as tosaic does.
        for t in inputs + [out]:
            if t.quantized and int(t.zero_point[0]) != 0:
                raise ctx.error(f"int16 tensor {t.describe()} needs zero point 0 (LiteRT rejects the model)")
    b = ctx.builder
    result = b.op("tosa.concat", [ctx.value(t) for t in inputs], {"axis": axis})
    fused = int(op.options.get("fused_activation_function", 0))
    if fused:
        if not out.quantized:
            raise ctx.error(f"fused activation {fused} on a {out.dtype} CONCATENATION is not supported")
        result = clamp_to_activation(ctx, result, out, fused)
    ctx.set_output(result)


def _pad(ctx, op):
    """pad.cc Eval + Pad (PAD and PADV2 alike): paddings [rank, 2] >= 0; the pad value is the constant_values
    scalar when a third input is given (of the input's type, sharing the output's quantization), else the
    output zero point for a quantized tensor, 0 otherwise."""
    x, out = ctx.input(0), ctx.output()
    rank = len(x.shape)
    paddings = constant_ints(ctx, 1, f"{op.opcode} paddings")
    if len(paddings) != 2 * rank or min(paddings, default=0) < 0:
        raise ctx.error(f"{op.opcode} paddings {paddings} must be {rank} non-negative [before, after] pairs")
    dtype, pad_value = TOSA_ZERO[out.dtype]
    constant = ctx.input(2)
    if constant is not None:
        if constant.dtype != x.dtype:
            raise ctx.error(f"{op.opcode} constant_values {constant.describe()} must be of the input's type "
                            f"{x.dtype}")
        if constant.data is None or constant.data.size != 1:
            raise ctx.error(f"{op.opcode} constant_values {constant.describe()} must be a constant with one element")
        if out.quantized and not same_quantization(constant, out):
            raise ctx.error(f"{op.opcode} constant_values {constant.describe()} must have the output's quantization "
                            f"{out.describe()} (LiteRT rejects the model)")
        pad_value = constant.data.reshape(-1)[0].item()
    elif out.quantized:
        pad_value = int(out.zero_point[0])
    b = ctx.builder
    ctx.set_output(b.op("tosa.pad", [ctx.value(x), b.shape(paddings), b.scalar(pad_value, dtype)]))


@legalize("PAD", types=MOVE_TYPES)
def pad(ctx, op):
    """pad.cc (PAD): the output zero point (0 for unquantized tensors), or constant_values when given."""
    _pad(ctx, op)


@legalize("PADV2", types=MOVE_TYPES)
def padv2(ctx, op):
    """pad.cc (PADV2): the pad value is the constant_values scalar, bit for bit."""
    _pad(ctx, op)


# --------------------------------------------------------------------------------------- STRIDED_SLICE


def _bit(mask: int, i: int) -> bool:
    return bool((mask >> i) & 1) if 0 <= i < 32 else False


def strided_slice_params(ctx, input_shape, begin, end, strides, options):
    """strided_slice.cc BuildStridedSliceParams: expand ellipsis_mask and new_axis_mask into an effective
    input shape (new axes of size 1) with per-axis begin/end/stride and begin/end/shrink masks."""
    ellipsis_mask = int(options.get("ellipsis_mask", 0))
    new_axis_mask = int(options.get("new_axis_mask", 0))
    begin_count = len(begin)
    input_dims = len(input_shape)
    num_add_axis = sum(1 for i in range(begin_count) if not _bit(ellipsis_mask, i) and _bit(new_axis_mask, i))
    effective_dims = input_dims + num_add_axis

    effective_ellipsis, effective_new_axis = set(), set()
    ellipsis_start, expanded_ellipsis = effective_dims, 0
    i = 0
    while i < effective_dims:
        if _bit(ellipsis_mask, i):
            ellipsis_start = i
            ellipsis_end = max(i + 1, min(i + 1 + num_add_axis + input_dims - begin_count, effective_dims))
            expanded_ellipsis = ellipsis_end - ellipsis_start - 1
            effective_ellipsis.update(range(i, ellipsis_end))
            i = ellipsis_end
            continue
        if _bit(new_axis_mask, i - expanded_ellipsis):
            effective_new_axis.add(i)
        i += 1

    axes = []  # (size, start, stop, stride, begin_mask, end_mask, shrink)
    added_ellipsis = added_axes = 0

    def input_dim(i):
        if not 0 <= i - added_axes < input_dims:
            raise ctx.error(f"STRIDED_SLICE masks address axis {i - added_axes} of a rank-{input_dims} input")
        return input_shape[i - added_axes]

    for i in range(effective_dims):
        if i in effective_ellipsis:
            added_ellipsis = max(0, i - ellipsis_start)
            axes.append((input_dim(i), 0, 0, 1, True, True, False))
        elif i in effective_new_axis:
            axes.append((1, 0, 1, 1, False, False, False))
            added_axes += 1
        elif i >= begin_count + expanded_ellipsis:
            axes.append((input_dim(i), 0, 0, 1, True, True, False))
        else:
            k = i - added_ellipsis
            axes.append((input_dim(i), begin[k], end[k], strides[k], _bit(options.get("begin_mask", 0), k),
                         _bit(options.get("end_mask", 0), k), _bit(options.get("shrink_axis_mask", 0), k)))
    return axes


def _clamp(v, lo, hi):
    return hi if v > hi else lo if v < lo else v


def start_for_axis(size, start, stride, begin_mask):
    """reference_ops::StartForAxis (DynamicStridedSliceParams)."""
    if start < 0:
        start += size
    start = _clamp(start, 0, size) if stride > 0 else _clamp(start, -1, size - 1)
    if begin_mask:
        start = 0 if stride > 0 else size - 1
    return start


def end_for_axis(size, start, stop, stride, end_mask, shrink, offset):
    """reference_ops::EndForAxis (DynamicStridedSliceParams)."""
    if shrink:
        return start if start >= size else start + 1
    end = stop + start if offset else stop
    if end < 0:
        end += size
    end = _clamp(end, 0, size) if stride > 0 else _clamp(end, -1, size - 1)
    if end_mask:
        end = size if stride > 0 else -1
    return end


def _resize_dim(begin, end, stride, offset, stop):
    """strided_slice.cc ResizeOutputTensor: the output size LiteRT allocates for a non-shrunk axis."""
    dim = stop if offset else end - begin
    if (dim < 0) != (stride < 0):
        return 0
    if stride < 0:
        return int((dim + 1) / stride) + 1  # C++ division truncates toward zero
    return 0 if dim == 0 else (dim - 1) // stride + 1


@legalize("STRIDED_SLICE", types=MOVE_TYPES)
def strided_slice(ctx, op):
    """strided_slice.cc + reference_ops::StridedSlice (DynamicStridedSliceParams).

    Every axis keeps the indices `range(start, end, stride)` of StartForAxis/EndForAxis. In TOSA: one
    SLICE takes, per axis, a window of n * k elements (k = |stride|); a RESHAPE splits each strided axis
    into [n, k] and a second SLICE keeps one element of every group of k; an axis with a negative stride
    is taken ascending and then REVERSEd; the last RESHAPE drops the shrunk axes.
    """
    x, out = ctx.input(0), ctx.output()
    begin = constant_ints(ctx, 1, "STRIDED_SLICE begin")
    end = constant_ints(ctx, 2, "STRIDED_SLICE end")
    strides = constant_ints(ctx, 3, "STRIDED_SLICE strides")
    if not len(begin) == len(end) == len(strides) or len(begin) > 31:
        raise ctx.error(f"STRIDED_SLICE begin/end/strides have {len(begin)}/{len(end)}/{len(strides)} "
                        f"entries (LiteRT needs equal counts, at most 31)")
    offset = bool(op.options.get("offset", False))
    axes = strided_slice_params(ctx, tuple(x.shape), begin, end, strides, op.options)

    kept = []  # per effective axis: (ascending start, count, step, reversed)
    out_shape = []
    for axis, (size, start, stop, stride, begin_mask, end_mask, shrink) in enumerate(axes):
        if stride == 0:
            raise ctx.error("STRIDED_SLICE stride value has to be non-zero")
        first = start_for_axis(size, start, stride, begin_mask)
        last = end_for_axis(size, first, stop, stride, end_mask, shrink, offset)
        indices = range(first, last, stride)
        if shrink and len(indices) != 1:
            # EndForAxis gives `start` for an index past the axis, and a negative stride never enters the
            # loop: LiteRT then writes nothing and its output is uninitialized memory.
            raise ctx.error(f"STRIDED_SLICE shrinks axis {axis} with begin {start} and stride {stride}, for which "
                            f"LiteRT writes no element (its output is uninitialized memory)")
        if len(indices) == 0:
            raise ctx.error(f"STRIDED_SLICE keeps no element of axis {axis} (begin {start}, end {stop}, stride "
                            f"{stride}): empty tensors have no TOSA form")
        if not shrink:
            if _resize_dim(first, last, stride, offset, stop) != len(indices):
                raise ctx.error(f"STRIDED_SLICE with offset allocates a different size than it writes on axis "
                                f"{axis}")
            out_shape.append(len(indices))
        step = abs(stride) if len(indices) > 1 else 1
        kept.append((min(indices[0], indices[-1]), len(indices), step, stride < 0 and len(indices) > 1))

    b = ctx.builder
    sizes = [a[0] for a in axes]
    value = b.reshape(ctx.value(x), sizes)
    # Per axis, a window of n * step elements holding the kept ones at phase `phase` of each group of
    # `step`: it starts `phase` before the first kept index so that it fits in the axis; only when the axis
    # is too short on both sides is the window padded at its end.
    starts, spans, pads, phases = [], [], [], []
    for (lo, n, step, _), size in zip(kept, sizes):
        phase = max(0, lo + n * step - size) if step > 1 else 0
        if phase > lo:
            phase = 0
        start = lo - phase
        span = min(n * step, size - start)
        starts.append(start)
        spans.append(span)
        pads += [0, n * step - span]
        phases.append(phase)
    if any(starts) or spans != sizes:
        value = b.op("tosa.slice", [value, b.shape(starts), b.shape(spans)])
    if any(step > 1 for _, _, step, _ in kept):
        if any(pads):
            dtype, zero = TOSA_ZERO[out.dtype]
            value = b.op("tosa.pad", [value, b.shape(pads), b.scalar(zero, dtype)])
        split, picked_at, picked = [], [], []
        for (lo, n, step, _), phase in zip(kept, phases):
            split += [n, step] if step > 1 else [n]
            picked_at += [0, phase] if step > 1 else [0]
            picked += [n, 1] if step > 1 else [n]
        value = b.reshape(value, split)
        value = b.op("tosa.slice", [value, b.shape(picked_at), b.shape(picked)])
        value = b.reshape(value, [n for _, n, _, _ in kept])
    for axis, (_, _, _, reverse) in enumerate(kept):
        if reverse:
            value = b.op("tosa.reverse", [value], {"axis": axis})
    if tuple(out_shape) != tuple(out.shape):
        raise ctx.error(f"STRIDED_SLICE computes shape {out_shape}, the model says {list(out.shape)}")
    ctx.set_output(b.reshape(value, out_shape))
