"""TFLite -> TOSA: checks that every op is supported, then runs each op's legalization in program order.

Stateful models (resource variables) declare one TOSA variable per variable the main subgraph uses; the
subgraphs that CALL_ONCE runs are legalized and interpreted here, at import time, and what they assign
becomes the variables' initial values.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from tosaic.errors import TosaicError
from tosaic.importers.tflite import ops as _ops  # noqa: F401  (registers every legalization)
from tosaic.importers.tflite.operator_rules import OPERATOR_RULES, apply_model_rules, version_supported
from tosaic.importers.tflite.ops import variables as _variables
from tosaic.importers.tflite.reader import TFLModel, TFLOperator, TFLSubgraph, TFLTensor, read_tflite
from tosaic.importers.tflite.registry import LEGALIZATIONS, type_signature
from tosaic.ir import Graph, TensorType, Value
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.interpreter import TosaRuntimeError, interpret
from tosaic.tosa.ops import VerifyError

# TFLite tensor dtypes and the TOSA element types that carry them (uint8 travels as i8 bits).
TOSA_DTYPES = {"int8": "i8", "uint8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "float32": "f32",
               "bool": "i1"}


class UnsupportedModelError(TosaicError, ValueError):
    """The model uses ops or types tosaic cannot compile; the message lists every one."""


class LegalizationError(TosaicError, ValueError):
    """A supported op whose parameters tosaic cannot reproduce exactly (names the op and why)."""


class ImportContext:
    """What a legalization sees: the TFLite op, its tensors, their TOSA values, and a TOSA builder."""

    def __init__(self, subgraph: TFLSubgraph, graph: Graph, label: str = ""):
        self.subgraph = subgraph
        self.builder = TosaBuilder(graph)
        self.values: dict[int, Value] = {}
        self.op: TFLOperator | None = None
        self.label = label  # "" for the main subgraph, e.g. "subgraph 1 ('init') " for others
        # Resource variables: the TOSA name of each (container, shared_name), the declared type of each
        # TOSA variable, the variable each handle tensor names, and the CALL_ONCE subgraphs already run.
        self.variable_symbols: dict[tuple[str, str], str] = {}
        self.variable_types: dict[str, TensorType] = {}
        self.handles: dict[int, str] = {}
        self.initialized_subgraphs: set[int] = set()
        # While an initialization subgraph is evaluated at import time: no TOSA variables; each assignment
        # is remembered (the SSA value last assigned to each variable), and earlier initializers' results
        # are constants.
        self.initializing = False
        self.assigned: dict[str, Value] = {}
        self.variable_values: dict[str, np.ndarray] = {}

    def tensor(self, index: int) -> TFLTensor:
        return self.subgraph.tensors[index]

    def input(self, position: int) -> TFLTensor | None:
        """The op's position-th input tensor, or None when absent (optional inputs are -1)."""
        inputs = self.op.inputs
        if position >= len(inputs) or inputs[position] < 0:
            return None
        return self.tensor(inputs[position])

    def output(self, position: int = 0) -> TFLTensor:
        return self.tensor(self.op.outputs[position])

    def value(self, tensor: TFLTensor) -> Value:
        """The TOSA value of a tensor: its producer's result, or a constant holding its data."""
        if tensor.index not in self.values:
            if tensor.data is None:
                raise self.error(f"input tensor {tensor.describe()} has no producer and no data")
            self.values[tensor.index] = self.builder.const(tensor.data, TOSA_DTYPES[tensor.dtype])
        return self.values[tensor.index]

    def set_output(self, value: Value, position: int = 0) -> None:
        out = self.output(position)
        expected = TensorType(out.shape, TOSA_DTYPES[out.dtype])
        if value.type != expected:
            raise self.error(f"legalization produced {value.type} for output {out.describe()}, expected {expected}")
        self.values[out.index] = value

    def error(self, message: str) -> LegalizationError:
        where = describe_op(self.op, self.label) if self.op is not None else f"{self.label or 'main '}subgraph"
        return LegalizationError(f"{where}: {message}")


def describe_op(op: TFLOperator, label: str = "") -> str:
    return f"{label}TFLite op #{op.index} {op.opcode}"


def op_signature(subgraph: TFLSubgraph, op: TFLOperator) -> str:
    inputs = [subgraph.tensors[i] for i in op.inputs if i >= 0]
    outputs = [subgraph.tensors[i] for i in op.outputs]
    in_dtype = inputs[0].dtype if inputs else "none"
    out_dtype = outputs[0].dtype if outputs else in_dtype
    return type_signature(in_dtype, out_dtype)


def init_subgraphs(model: TFLModel) -> list[int]:
    """The subgraphs the main subgraph's CALL_ONCE ops run, in order, each once (valid indices only)."""
    found = []
    for op in model.subgraphs[0].operators:
        index = op.options.get("init_subgraph_index") if op.opcode == "CALL_ONCE" else None
        if isinstance(index, int) and 0 < index < len(model.subgraphs) and index not in found:
            found.append(index)
    return found


def unsupported_ops(model: TFLModel) -> list[str]:
    """One line per unsupported (op, version, types) combination with its count; empty when all are fine.
    The main subgraph counts, and so do the initialization subgraphs its CALL_ONCE ops run."""
    problems: Counter = Counter()
    for subgraph in [model.subgraphs[0]] + [model.subgraphs[i] for i in init_subgraphs(model)]:
        for op in subgraph.operators:
            legalization = LEGALIZATIONS.get(op.opcode)
            signature = op_signature(subgraph, op)
            reason = None
            if legalization is None:
                reason = "no legalization"
            elif not version_supported(op.opcode, op.version):
                low, high = OPERATOR_RULES[op.opcode].versions
                reason = f"LiteRT's reference kernels register versions {low} to {high}"
            elif signature not in legalization.types:
                reason = f"supported only for {', '.join(sorted(legalization.types))}"
            if reason is not None:
                types = ", ".join(subgraph.tensors[i].dtype for i in op.inputs if i >= 0)
                problems[(op.opcode, op.version, types, reason)] += 1
    lines = [f"{name} (version {version}) x{count}: inputs [{types}]: {reason}"
             for (name, version, types, reason), count in sorted(problems.items())]
    return lines + _unsupported_types(model)


def _unsupported_types(model: TFLModel) -> list[str]:
    """One line per tensor of an element type no legalization carries (a graph input, output or operand)."""
    lines = []
    for index in [0] + init_subgraphs(model):
        subgraph = model.subgraphs[index]
        used = set(subgraph.inputs) | set(subgraph.outputs)
        for op in subgraph.operators:
            used.update(i for i in op.inputs + op.outputs if i >= 0)
        ends = set(subgraph.inputs) | set(subgraph.outputs)  # a resource handle may not enter or leave
        lines += [f"subgraph {index} tensor {i} {subgraph.tensors[i].describe()}: tosaic carries no "
                  f"{subgraph.tensors[i].dtype} tensors{' in or out of a graph' * (i in ends)}" for i in sorted(used)
                  if subgraph.tensors[i].dtype not in TOSA_DTYPES and (subgraph.tensors[i].dtype != "resource"
                                                                       or i in ends)]
    return lines


def import_model(model: TFLModel) -> Graph:
    missing = unsupported_ops(model)
    if missing:
        raise UnsupportedModelError(f"{model.source} uses ops tosaic does not support:\n  " + "\n  ".join(missing))
    apply_model_rules(model, [0] + init_subgraphs(model))
    subgraph = model.subgraphs[0]
    graph = Graph("main")
    ctx = ImportContext(subgraph, graph)
    for index in subgraph.inputs:
        t = subgraph.tensors[index]
        ctx.values[index] = graph.add_input(TensorType(t.shape, TOSA_DTYPES[t.dtype]), t.name)
        _record_io(graph, t)
    _declare_variables(model, ctx)
    _legalize_operators(ctx)
    outputs = []
    for index in subgraph.outputs:
        t = subgraph.tensors[index]
        outputs.append(ctx.value(t))
        _record_io(graph, t)
    graph.set_outputs(outputs, [subgraph.tensors[i].name for i in subgraph.outputs])
    graph.source_names = {value: subgraph.tensors[index].name for index, value in ctx.values.items()
                          if subgraph.tensors[index].data is None}
    return graph


def _legalize_operators(ctx: ImportContext) -> None:
    subgraph = ctx.subgraph
    for op in subgraph.operators:
        ctx.op = op
        ctx.builder.loc = f"tfl.{op.opcode.lower()}#{op.index}:{subgraph.tensors[op.outputs[0]].name}" \
            if op.outputs else f"tfl.{op.opcode.lower()}#{op.index}"
        try:
            LEGALIZATIONS[op.opcode].fn(ctx, op)
        except VerifyError as error:
            raise ctx.error(f"emitted invalid TOSA: {error}") from None


# ------------------------------------------------------------------------------ resource variables


def _declare_variables(model: TFLModel, ctx: ImportContext) -> None:
    """Declare the TOSA variables of each resource variable the main subgraph uses, with the initial value
    its CALL_ONCE subgraphs assign (computed here, exactly, by running them on the TOSA interpreter)."""
    main = model.subgraphs[0]
    if not any(op.opcode in _VARIABLE_OPCODES for op in main.operators):
        return
    try:
        keys = _variables.handle_keys(main, describe_op)
        types = _variables.variable_uses(main, keys, describe_op)
    except ValueError as error:
        raise LegalizationError(str(error)) from None
    _name_variables(ctx, keys, types)
    initial = _run_initializers(model, ctx, types)
    try:
        _variables.check_reads_have_values(main, keys, set(initial), describe_op)
    except ValueError as error:
        raise LegalizationError(str(error)) from None
    for key, t in types.items():
        ctx.builder.loc = f"tfl.var_handle:{key[1]}"
        try:
            _variables.declare_variable(ctx, ctx.variable_symbols[key], t, initial.get(key))
        except VerifyError as error:
            raise LegalizationError(f"variable '{key[1]}': emitted invalid TOSA: {error}") from None


_VARIABLE_OPCODES = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE")


def _name_variables(ctx: ImportContext, keys: dict, types: dict) -> None:
    """A TOSA name for each variable a VAR_HANDLE names, the used ones first, in program order."""
    for key in list(types) + list(keys.values()):
        if key not in ctx.variable_symbols:
            ctx.variable_symbols[key] = _variables.variable_symbol(key, set(ctx.variable_symbols.values()))


def _run_initializers(model: TFLModel, ctx: ImportContext, types: dict) -> dict[tuple, np.ndarray]:
    """Run the subgraphs of the main subgraph's CALL_ONCE ops, in order, as LiteRT's first invocation does;
    returns the value they leave in each variable, by (container, shared_name)."""
    main = model.subgraphs[0]
    values: dict[tuple, np.ndarray] = {}
    started = False  # whether a READ/ASSIGN_VARIABLE came before (CALL_ONCE must come first)
    for op in main.operators:
        if op.opcode in ("READ_VARIABLE", "ASSIGN_VARIABLE"):
            started = True
        if op.opcode != "CALL_ONCE":
            continue
        index = op.options.get("init_subgraph_index")
        where = describe_op(op)
        if not isinstance(index, int) or not 0 < index < len(model.subgraphs):
            raise LegalizationError(f"{where}: init_subgraph_index {index} names no subgraph of the model "
                                    f"({len(model.subgraphs)} subgraphs)")
        if index in ctx.initialized_subgraphs:
            continue  # LiteRT runs each initialization subgraph once (InitializationStatusMap)
        if started:
            raise LegalizationError(f"{where}: comes after a READ_VARIABLE/ASSIGN_VARIABLE; tosaic imports "
                                    f"initialization only when it runs before the variables are used")
        values.update(_evaluate_init_subgraph(model, index, types, values, where))
        ctx.initialized_subgraphs.add(index)
    return values


def _evaluate_init_subgraph(model: TFLModel, index: int, main_types: dict, values: dict, where: str) -> dict:
    """Legalize an initialization subgraph into a graph of its own, whose outputs are the last value each
    variable is assigned (a READ_VARIABLE there sees the latest assignment, or what an earlier
    initializer left), and run it once on the TOSA interpreter."""
    init = model.subgraphs[index]
    label = f"subgraph {index} ('{init.name}') "
    if init.inputs or init.outputs:
        raise LegalizationError(f"{where}: {label}has inputs or outputs; LiteRT's CALL_ONCE needs neither")
    nested = [op for op in init.operators if op.opcode == "CALL_ONCE"]
    if nested:
        raise LegalizationError(f"{describe_op(nested[0], label)}: CALL_ONCE inside an initialization "
                                f"subgraph is not supported")
    try:
        keys = _variables.handle_keys(init, lambda op: describe_op(op, label))
        types = _variables.variable_uses(init, keys, lambda op: describe_op(op, label))
    except ValueError as error:
        raise LegalizationError(str(error)) from None
    for key, t in types.items():
        if key in main_types and main_types[key] != t:
            raise LegalizationError(f"{label}uses variable '{key[1]}' as {t}; the main subgraph uses it as "
                                    f"{main_types[key]}")
    graph = Graph(f"init{index}")
    ctx = ImportContext(init, graph, label)
    ctx.initializing = True
    _name_variables(ctx, keys, types)
    for key, t in types.items():
        ctx.variable_types[ctx.variable_symbols[key]] = t
        if key in values:
            ctx.variable_values[ctx.variable_symbols[key]] = values[key]
    _legalize_operators(ctx)
    symbols = list(ctx.assigned)
    graph.set_outputs([ctx.assigned[symbol] for symbol in symbols], symbols)
    try:
        arrays = interpret(graph, [])
    except TosaRuntimeError as error:
        raise LegalizationError(f"{where}: evaluating {label}at import time failed: {error}") from None
    by_symbol = dict(zip(symbols, arrays))
    return {key: by_symbol[symbol] for key, symbol in ctx.variable_symbols.items() if symbol in by_symbol}


def _record_io(graph: Graph, t: TFLTensor) -> None:
    info = {"dtype": t.dtype}
    if t.quantized:
        info.update(scale=[float(s) for s in t.scale], zero_point=[int(z) for z in t.zero_point])
    graph.io_info[t.name] = info


def import_tflite(source: str | Path | bytes) -> Graph:
    """Read a .tflite model and legalize it into a TOSA graph."""
    return import_model(read_tflite(source))
