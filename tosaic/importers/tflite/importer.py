"""TFLite -> TOSA: checks that every op is supported, then runs each op's legalization in program order."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from tosaic.importers.tflite import ops as _ops  # noqa: F401  (registers every legalization)
from tosaic.importers.tflite.reader import TFLModel, TFLOperator, TFLSubgraph, TFLTensor, read_tflite
from tosaic.importers.tflite.registry import LEGALIZATIONS, type_signature
from tosaic.ir import Graph, TensorType, Value
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.ops import VerifyError

# TFLite tensor dtypes and the TOSA element types that carry them (uint8 travels as i8 bits).
TOSA_DTYPES = {"int8": "i8", "uint8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "float32": "f32",
               "bool": "i1"}


class UnsupportedModelError(ValueError):
    """The model uses ops or types tosaic cannot compile; the message lists every one."""


class LegalizationError(ValueError):
    """A supported op whose parameters tosaic cannot reproduce exactly (names the op and why)."""


class ImportContext:
    """What a legalization sees: the TFLite op, its tensors, their TOSA values, and a TOSA builder."""

    def __init__(self, subgraph: TFLSubgraph, graph: Graph):
        self.subgraph = subgraph
        self.builder = TosaBuilder(graph)
        self.values: dict[int, Value] = {}
        self.op: TFLOperator | None = None

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
        return LegalizationError(f"TFLite op #{self.op.index} {self.op.opcode}: {message}")


def op_signature(subgraph: TFLSubgraph, op: TFLOperator) -> str:
    inputs = [subgraph.tensors[i] for i in op.inputs if i >= 0]
    outputs = [subgraph.tensors[i] for i in op.outputs]
    in_dtype = inputs[0].dtype if inputs else "none"
    out_dtype = outputs[0].dtype if outputs else in_dtype
    return type_signature(in_dtype, out_dtype)


def unsupported_ops(model: TFLModel) -> list[str]:
    """One line per unsupported (op, version, types) combination with its count; empty when all are fine."""
    problems: Counter = Counter()
    for subgraph in model.subgraphs[:1]:
        for op in subgraph.operators:
            legalization = LEGALIZATIONS.get(op.opcode)
            signature = op_signature(subgraph, op)
            if legalization is None or signature not in legalization.types:
                types = ", ".join(subgraph.tensors[i].dtype for i in op.inputs if i >= 0)
                reason = "no legalization" if legalization is None else \
                    f"supported only for {', '.join(sorted(legalization.types))}"
                problems[(op.opcode, op.version, types, reason)] += 1
    return [f"{name} (version {version}) x{count}: inputs [{types}]: {reason}"
            for (name, version, types, reason), count in sorted(problems.items())]


def import_model(model: TFLModel) -> Graph:
    missing = unsupported_ops(model)
    if missing:
        raise UnsupportedModelError(f"{model.source} uses ops tosaic does not support:\n  " + "\n  ".join(missing))
    subgraph = model.subgraphs[0]
    graph = Graph("main")
    ctx = ImportContext(subgraph, graph)
    for index in subgraph.inputs:
        t = subgraph.tensors[index]
        ctx.values[index] = graph.add_input(TensorType(t.shape, TOSA_DTYPES[t.dtype]), t.name)
        _record_io(graph, t)
    for op in subgraph.operators:
        ctx.op = op
        ctx.builder.loc = f"tfl.{op.opcode.lower()}#{op.index}:{subgraph.tensors[op.outputs[0]].name}" \
            if op.outputs else f"tfl.{op.opcode.lower()}#{op.index}"
        try:
            LEGALIZATIONS[op.opcode].fn(ctx, op)
        except VerifyError as error:
            raise ctx.error(f"emitted invalid TOSA: {error}") from None
    outputs = []
    for index in subgraph.outputs:
        t = subgraph.tensors[index]
        outputs.append(ctx.value(t))
        _record_io(graph, t)
    graph.set_outputs(outputs, [subgraph.tensors[i].name for i in subgraph.outputs])
    graph.source_names = {value: subgraph.tensors[index].name for index, value in ctx.values.items()
                          if subgraph.tensors[index].data is None}
    return graph


def _record_io(graph: Graph, t: TFLTensor) -> None:
    info = {"dtype": t.dtype}
    if t.quantized:
        info.update(scale=[float(s) for s in t.scale], zero_point=[int(z) for z in t.zero_point])
    graph.io_info[t.name] = info


def import_tflite(source: str | Path | bytes) -> Graph:
    """Read a .tflite model and legalize it into a TOSA graph."""
    return import_model(read_tflite(source))
