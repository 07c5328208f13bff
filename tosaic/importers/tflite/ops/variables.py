"""Resource variables: VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE and CALL_ONCE, as TOSA EXT-VARIABLE.

LiteRT keeps a streaming model's state in resource variables (tflite/kernels/var_handle.cc,
read_variable.cc, assign_variable.cc, call_once.cc):

- VAR_HANDLE names a variable by (container, shared_name); every handle with the same names, in any
  subgraph, is the same variable. The handle tensor holds only an id.
- ASSIGN_VARIABLE copies its value into the variable (creating it on first use); READ_VARIABLE copies the
  variable's bytes into its output (memcpy: no requantization, the output's quantization just reads them)
  and fails when the variable was never assigned.
- CALL_ONCE runs an initialization subgraph (no inputs, no outputs; usually constants assigned to the
  variables) on the interpreter's first invocation only.
- The variables live as long as the interpreter: neither `allocate_tensors()` nor `reset_all_variables()`
  of LiteRT's Python Interpreter restores them (measured with ai-edge-litert 2.3.0); only a new
  interpreter starts over.

In TOSA each variable is declared once (VARIABLE, with its shape, type and initial value) and read and
written by name (VARIABLE_READ, VARIABLE_WRITE); the value persists across executions of the graph. The
importer computes the initial values at import time by legalizing the CALL_ONCE subgraph and running it
on the TOSA interpreter (exact, like every other legalization), so CALL_ONCE itself emits nothing.

TOSA 1.0 variables hold i8 (EXT-VARIABLE), f16 and f32 (with PRO-FP) only. An int16 or int32 variable
(16x8 models, counters) is kept as one i8 variable per byte, `name.byte0` (least significant) up to
`name.byte1` / `name.byte3`: a write stores each byte sign-extended (shift it to the top, arithmetic
shift back down, CAST to i8, exact), a read widens each byte with CAST, masks all but the top one to
0..255, shifts them into place and ORs them together. The bits round-trip exactly.

This module holds the per-op legalizations and the model-level analysis they share with the importer.
"""

from __future__ import annotations

import numpy as np

from tosaic.importers.tflite.reader import TFLOperator, TFLSubgraph
from tosaic.importers.tflite.registry import legalize
from tosaic.ir import TensorType, Value

# TFLite element types a variable may hold here, and the TOSA type of its value.
VARIABLE_TYPES = {"int8": "i8", "int16": "i16", "int32": "i32", "float32": "f32"}
# Values of these types live in one i8 TOSA variable per byte.
BYTE_PLANES = {"i16": 2, "i32": 4}


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def variable_key(op: TFLOperator) -> tuple[str, str]:
    """The (container, shared_name) a VAR_HANDLE names."""
    return _text(op.options.get("container")), _text(op.options.get("shared_name"))


def variable_symbol(key: tuple[str, str], taken: set[str]) -> str:
    """The TOSA variable name of a (container, shared_name): the shared name, qualified by a non-empty
    container, made unique among `taken`."""
    container, shared = key
    base = shared or "variable"
    if container:
        base = f"{container}:{base}"
    symbol, n = base, 1
    while symbol in taken:
        symbol, n = f"{base}_{n}", n + 1
    return symbol


def handle_keys(subgraph: TFLSubgraph, describe) -> dict[int, tuple[str, str]]:
    """Map from each resource-handle tensor a READ/ASSIGN_VARIABLE takes to the variable it names.
    `describe(op)` labels an op in error messages; raises ValueError for a handle that no VAR_HANDLE of
    the same subgraph makes (a subgraph input, say)."""
    keys: dict[int, tuple[str, str]] = {}
    for op in subgraph.operators:
        if op.opcode == "VAR_HANDLE" and op.outputs:
            keys[op.outputs[0]] = variable_key(op)
    for op in subgraph.operators:
        if op.opcode in ("READ_VARIABLE", "ASSIGN_VARIABLE"):
            if not op.inputs or op.inputs[0] not in keys:
                raise ValueError(f"{describe(op)}: its resource handle is not made by a VAR_HANDLE of the same "
                                 f"subgraph")
            handle = subgraph.tensors[op.inputs[0]]
            if int(np.prod(handle.shape, dtype=np.int64)) != 1:
                raise ValueError(f"{describe(op)}: resource handle {handle.describe()} must hold one element "
                                 f"(LiteRT's Prepare refuses others)")
    return keys


def variable_uses(subgraph: TFLSubgraph, keys: dict[int, tuple[str, str]], describe) -> dict[tuple, TensorType]:
    """The TOSA type each variable is read and assigned at in `subgraph`; ValueError when two uses disagree
    (LiteRT would reallocate the variable to the new shape; a TOSA variable has one static type) or when
    a variable holds a type TOSA variables cannot."""
    types: dict[tuple, TensorType] = {}
    first: dict[tuple, str] = {}
    for op in subgraph.operators:
        if op.opcode == "READ_VARIABLE":
            t = subgraph.tensors[op.outputs[0]]
        elif op.opcode == "ASSIGN_VARIABLE" and len(op.inputs) > 1:
            t = subgraph.tensors[op.inputs[1]]
        else:
            continue
        key = keys[op.inputs[0]]
        if t.dtype not in VARIABLE_TYPES:
            raise ValueError(f"{describe(op)}: variable '{key[1]}' holds {t.dtype}; supported variable types "
                             f"are {', '.join(VARIABLE_TYPES)}")
        tosa_type = TensorType(t.shape, VARIABLE_TYPES[t.dtype])
        if key in types and types[key] != tosa_type:
            raise ValueError(f"{describe(op)}: variable '{key[1]}' is used as {t.dtype}{list(t.shape)} here but "
                             f"as {types[key]} by {first[key]}; a TOSA variable has one static type")
        types.setdefault(key, tosa_type)
        first.setdefault(key, describe(op))
    return types


def check_reads_have_values(subgraph: TFLSubgraph, keys, initialized: set, describe) -> None:
    """Every READ_VARIABLE must find a value: an initial one (from CALL_ONCE) or an earlier ASSIGN_VARIABLE
    of the same invocation. Otherwise LiteRT's first invocation fails ("variable != nullptr")."""
    written = set(initialized)
    for op in subgraph.operators:
        if op.opcode == "ASSIGN_VARIABLE":
            written.add(keys[op.inputs[0]])
        elif op.opcode == "READ_VARIABLE" and keys[op.inputs[0]] not in written:
            raise ValueError(f"{describe(op)}: variable '{keys[op.inputs[0]][1]}' is read before any "
                             f"ASSIGN_VARIABLE and no CALL_ONCE initializes it (LiteRT fails on this model)")


# ---------------------------------------------------------------------------- TOSA variables


def plane_names(symbol: str, t: TensorType) -> list[str]:
    """The TOSA variables that hold a value of type `t`: itself, or one per byte."""
    planes = BYTE_PLANES.get(t.dtype)
    return [symbol] if planes is None else [f"{symbol}.byte{k}" for k in range(planes)]


def split_bytes(array: np.ndarray, t: TensorType) -> list[np.ndarray]:
    """The values of `array` as the byte planes hold them: plane k has bits 8k..8k+7 as int8."""
    if t.dtype not in BYTE_PLANES:
        return [array]
    wide = np.asarray(array, dtype=np.int64)
    return [np.asarray((wide >> (8 * k)) & 0xFF, dtype=np.uint8).view(np.int8) for k in range(BYTE_PLANES[t.dtype])]


def declare_variable(ctx, symbol: str, t: TensorType, initial: np.ndarray | None) -> None:
    """VARIABLE for the value `symbol` (one per byte plane), with its initial value when it has one."""
    ctx.variable_types[symbol] = t
    storage = "i8" if t.dtype in BYTE_PLANES else t.dtype
    initials = split_bytes(initial, t) if initial is not None else [None] * len(plane_names(symbol, t))
    for name, value in zip(plane_names(symbol, t), initials):
        attrs = {"sym_name": name, "var_shape": t.shape, "type": storage}
        if value is not None:
            attrs["initial_value"] = value
        ctx.builder.op_multi("tosa.variable", [], attrs)


def _shift_amount(ctx, t: TensorType, amount: int) -> Value:
    return ctx.builder.const(np.full((1,) * t.rank, amount), t.dtype)


def read_value(ctx, symbol: str) -> Value:
    """VARIABLE_READ of `symbol`, reassembled from its byte planes when it has them."""
    b, t = ctx.builder, ctx.variable_types[symbol]
    names = plane_names(symbol, t)
    if len(names) == 1:
        return b.op("tosa.variable_read", [], {"name": symbol}, dtype=t)
    result = None
    for k, name in enumerate(names):
        byte = b.cast(b.op("tosa.variable_read", [], {"name": name}, dtype=t.with_dtype("i8")), t.dtype)
        if k < len(names) - 1:  # the CAST sign-extends: keep the byte's bits only
            byte = b.op("tosa.bitwise_and", [byte, _shift_amount(ctx, t, 0xFF)])
        if k:
            byte = b.op("tosa.logical_left_shift", [byte, _shift_amount(ctx, t, 8 * k)])
        result = byte if result is None else b.op("tosa.bitwise_or", [result, byte])
    return result


def write_value(ctx, symbol: str, value: Value) -> None:
    """VARIABLE_WRITE of `value` to `symbol`, byte by byte when it has byte planes."""
    b, t = ctx.builder, ctx.variable_types[symbol]
    names = plane_names(symbol, t)
    if len(names) == 1:
        b.op_multi("tosa.variable_write", [value], {"name": symbol})
        return
    top = 8 * (len(names) - 1)
    for k, name in enumerate(names):
        byte = value
        if top - 8 * k:  # move byte k to the top ...
            byte = b.op("tosa.logical_left_shift", [byte, _shift_amount(ctx, t, top - 8 * k)])
        # ... and back down with its sign: a value in [-128, 127] that the CAST to i8 keeps exactly.
        byte = b.op("tosa.arithmetic_right_shift", [byte, _shift_amount(ctx, t, top)], {"round": False})
        b.op_multi("tosa.variable_write", [b.cast(byte, "i8")], {"name": name})


# --------------------------------------------------------------------------------- legalizations


@legalize("VAR_HANDLE", types=("none->resource",))
def var_handle(ctx, op):
    """var_handle.cc: the handle only identifies the variable; nothing runs."""
    ctx.handles[op.outputs[0]] = ctx.variable_symbols[variable_key(op)]


def _symbol(ctx, op) -> str:
    symbol = ctx.handles.get(op.inputs[0])
    if symbol is None:
        raise ctx.error("its resource handle is not made by an earlier VAR_HANDLE")
    return symbol


@legalize("READ_VARIABLE", types=tuple(f"resource->{t}" for t in VARIABLE_TYPES))
def read_variable(ctx, op):
    """read_variable.cc: memcpy of the variable's bytes into the output."""
    symbol = _symbol(ctx, op)
    if not ctx.initializing:
        ctx.set_output(read_value(ctx, symbol))
    elif symbol in ctx.assigned:  # evaluated at import time: the value last assigned ...
        ctx.set_output(ctx.assigned[symbol])
    elif symbol in ctx.variable_values:  # ... or what an earlier initialization subgraph left
        ctx.set_output(ctx.builder.const(ctx.variable_values[symbol], ctx.variable_types[symbol].dtype))
    else:
        raise ctx.error(f"reads variable @{symbol} before anything assigns it (LiteRT fails here)")


@legalize("ASSIGN_VARIABLE", types=("resource",))
def assign_variable(ctx, op):
    """assign_variable.cc: the variable takes a copy of the value (AssignFrom)."""
    symbol = _symbol(ctx, op)
    value = ctx.value(ctx.input(1))
    if value.type != ctx.variable_types[symbol]:
        raise ctx.error(f"assigns {value.type} to variable @{symbol}, declared {ctx.variable_types[symbol]}")
    if ctx.initializing:
        ctx.assigned[symbol] = value
    else:
        write_value(ctx, symbol, value)


@legalize("CALL_ONCE", types=("none",))
def call_once(ctx, op):
    """call_once.cc: the initialization subgraph runs on the first invocation only. The importer has run it
    already, at import time, and made its results the variables' initial values: nothing is left to do."""
    if op.options.get("init_subgraph_index") not in ctx.initialized_subgraphs:
        raise ctx.error(f"subgraph {op.options.get('init_subgraph_index')} was not evaluated at import time")
