"""What LiteRT requires of each operator before its kernel runs: one declarative rule per supported op.

Read off LiteRT's sources (the kernels' Prepare, `ParseOpData` in core/api/flatbuffer_conversions.cc, and the
versions `register_ref.cc` registers; tests/test_operator_rules.py checks every rule against LiteRT's
reference kernels):

- versions: the operator versions LiteRT's default op resolver registers (any other: "Didn't find op").
  Its reference resolver registers fewer for twelve ops (TILE 1-2 where the converter writes 3); the
  kernels are the same functions, so tosaic takes what the default one takes.
- inputs / outputs: the counts the kernel's Prepare accepts; a string names the option that gives the
  count (PACK's `values_count`, SPLIT's `num_splits`, UNPACK's `num`); `optional`: the input positions that
  may be -1 (LiteRT's kTfLiteOptionalTensor). No output may be -1.
- options: the builtin options table `ParseOpData` reads. When the op carries no table, or one of another
  type, LiteRT's params are the zero-initialized struct (not the schema's defaults: `pot_scale_int16` is
  false, a dilation 0), so `apply_operator_rules` gives the legalization exactly those zeros; an op whose
  parser reads no table gets no options at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from tosaic.importers.tflite.reader import SCHEMA_TYPES, TFLiteFormatError, TFLModel, TFLOperator, TFLSubgraph
from tosaic.importers.tflite.verifier import table_fields


@dataclass(frozen=True)
class OpRule:
    versions: tuple[int, int]
    inputs: tuple[int, ...] | str
    outputs: tuple[int, ...] | str = (1,)
    options: str | None = None
    optional: tuple[int, ...] = ()


ANY = ()  # no count is checked

R = OpRule
OPERATOR_RULES: dict[str, OpRule] = {
    # activations.cc
    "RELU": R((1, 3), (1,)), "RELU6": R((1, 3), (1,)), "LOGISTIC": R((1, 3), (1,)), "TANH": R((1, 3), (1,)),
    "HARD_SWISH": R((1, 1), (1,)), "LEAKY_RELU": R((1, 2), (1,), options="LeakyReluOptions"),
    "PRELU": R((1, 1), (2,)), "GELU": R((1, 3), (1,), options="GeluOptions"),
    "LOG_SOFTMAX": R((1, 2), (1,)), "SOFTMAX": R((1, 4), (1,), options="SoftmaxOptions"),
    # conv.cc needs the bias (TF_LITE_ENSURE(context, has_bias)); depthwise_conv.cc takes 2 or 3 inputs
    "CONV_2D": R((1, 8), (3,), options="Conv2DOptions"),
    "DEPTHWISE_CONV_2D": R((1, 7), (2, 3), options="DepthwiseConv2DOptions"),
    "FULLY_CONNECTED": R((1, 14), (2, 3), options="FullyConnectedOptions", optional=(2,)),
    "TRANSPOSE_CONV": R((1, 5), (3, 4), options="TransposeConvOptions", optional=(3,)),
    "BATCH_MATMUL": R((1, 4), (2,), options="BatchMatMulOptions"),
    # data movement
    "SPLIT": R((1, 5), (2,), "num_splits", options="SplitOptions"),
    "SPLIT_V": R((1, 3), (3,), "num_splits", options="SplitVOptions"),
    "PACK": R((1, 5), "values_count", options="PackOptions"),
    "UNPACK": R((1, 6), (1,), "num", options="UnpackOptions"),
    "TILE": R((1, 3), (2,)), "GATHER": R((1, 8), (2,), options="GatherOptions"),
    "DEPTH_TO_SPACE": R((1, 2), (1,), options="DepthToSpaceOptions"),
    "SPACE_TO_DEPTH": R((1, 2), (1,), options="SpaceToDepthOptions"),
    "EXPAND_DIMS": R((1, 1), (2,)), "SLICE": R((1, 8), (3,)), "SHAPE": R((1, 1), (1,), options="ShapeOptions"),
    "BROADCAST_TO": R((2, 4), (2,)), "RESHAPE": R((1, 1), (1, 2), options="ReshapeOptions"),
    "SQUEEZE": R((1, 2), (1,), options="SqueezeOptions"), "TRANSPOSE": R((1, 9), (2,)),
    # concatenation.cc checks no count: every input must exist; tosaic writes one output
    "CONCATENATION": R((1, 7), "1+", options="ConcatenationOptions"),
    "PAD": R((1, 6), (2, 3), optional=(2,)), "PADV2": R((1, 6), (2, 3), optional=(2,)),
    "STRIDED_SLICE": R((1, 8), (4,), options="StridedSliceOptions"),
    # elementwise
    "ADD": R((1, 6), (2,), options="AddOptions"), "SUB": R((1, 5), (2,), options="SubOptions"),
    "MUL": R((1, 8), (2,), options="MulOptions"), "DIV": R((1, 2), (2,), options="DivOptions"),
    "MAXIMUM": R((1, 4), (2,)), "MINIMUM": R((1, 4), (2,)), "SELECT_V2": R((1, 2), (3,)),
    "EQUAL": R((1, 5), (2,)), "NOT_EQUAL": R((1, 4), (2,)), "LESS": R((1, 3), (2,)),
    "LESS_EQUAL": R((1, 2), (2,)), "GREATER": R((1, 2), (2,)), "GREATER_EQUAL": R((1, 3), (2,)),
    "CAST": R((1, 9), (1,), options="CastOptions"), "SQUARED_DIFFERENCE": R((1, 2), (2,)),
    "RSQRT": R((1, 3), (1,)), "SQRT": R((1, 2), (1,)), "EXP": R((1, 2), (1,)), "LOG": R((1, 2), (1,)),
    # pooling, reductions, resizing, quantization
    "AVERAGE_POOL_2D": R((1, 3), (1,), options="Pool2DOptions"),
    "MAX_POOL_2D": R((1, 3), (1,), options="Pool2DOptions"),
    "MEAN": R((1, 3), (2,), options="ReducerOptions"), "SUM": R((1, 2), (2,), options="ReducerOptions"),
    "REDUCE_MAX": R((1, 3), (2,), options="ReducerOptions"), "REDUCE_MIN": R((1, 3), (2,), options="ReducerOptions"),
    "ARG_MAX": R((1, 3), (2,), options="ArgMaxOptions"), "ARG_MIN": R((1, 3), (2,), options="ArgMinOptions"),
    "RESIZE_BILINEAR": R((1, 4), (2,), options="ResizeBilinearOptions"),
    "RESIZE_NEAREST_NEIGHBOR": R((1, 4), (2,), options="ResizeNearestNeighborOptions"),
    "QUANTIZE": R((1, 6), (1,)), "DEQUANTIZE": R((1, 9), (1,)),
    # resource variables
    "VAR_HANDLE": R((1, 1), ANY, options="VarHandleOptions"),
    "READ_VARIABLE": R((1, 1), (1,)), "ASSIGN_VARIABLE": R((1, 1), (2,), (0,)),
    "CALL_ONCE": R((1, 1), (0,), (0,), options="CallOnceOptions"),
}


# Ops whose kernels require the output to have the type of these inputs (TF_LITE_ENSURE_TYPES_EQ, or Prepare
# retyping the output as SPLIT's does): data movement, pooling, selection. int8 and uint8 both travel as i8
# in TOSA, so without this rule a uint8 output of an int8 SPLIT would pass. "all": every input.
SAME_TYPE = {
    "RESHAPE": (0,), "SQUEEZE": (0,), "EXPAND_DIMS": (0,), "TRANSPOSE": (0,), "CONCATENATION": "all",
    "PACK": "all", "UNPACK": (0,), "SPLIT": (1,), "SPLIT_V": (0,), "TILE": (0,), "GATHER": (0,), "SLICE": (0,),
    "STRIDED_SLICE": (0,), "PAD": (0, 2), "PADV2": (0, 2), "BROADCAST_TO": (0,), "DEPTH_TO_SPACE": (0,),
    "SPACE_TO_DEPTH": (0,), "AVERAGE_POOL_2D": (0,), "MAX_POOL_2D": (0,), "RELU": (0,), "RELU6": (0,),
    "SELECT_V2": (1, 2), "MAXIMUM": (0, 1), "MINIMUM": (0, 1), "REDUCE_MAX": (0,), "REDUCE_MIN": (0,),
}


def version_supported(opcode: str, version: int) -> bool:
    rule = OPERATOR_RULES.get(opcode)
    return rule is None or rule.versions[0] <= version <= rule.versions[1]


# Options fields holding a TensorType: ParseOpData converts them (an unknown code fails the model), and a
# zero-initialized struct holds kTfLiteNoType there, which no schema code means (None here).
TYPE_FIELDS = ("quantized_bias_type", "out_type", "output_type", "in_data_type", "out_data_type")


def _zero_options(table: str) -> dict:
    """The options a zero-initialized LiteRT params struct means, by the table's field names."""
    empty = {"vector": [], "strings": [], "tables": [], "string": None, "table": None, "union": None}
    return {field.name: None if field.name in TYPE_FIELDS else empty.get(field.kind, 0)
            for field in table_fields(table)}


def _count(rule, op: TFLOperator) -> tuple[int, ...]:
    if isinstance(rule, tuple):
        return rule
    if rule == "1+":
        return tuple(range(1, max(len(op.inputs), 1) + 1))
    return (int(op.options.get(rule, 0)),)


def apply_operator_rules(subgraph: TFLSubgraph, label: str = "") -> None:
    """Check every operator of `subgraph` against its rule and give it the options LiteRT's parser would
    (zeros where the table is absent or of another type, none where the parser reads none)."""
    for op in subgraph.operators:
        rule = OPERATOR_RULES.get(op.opcode)
        if rule is None:
            continue
        where = f"{label}TFLite op #{op.index} {op.opcode}"
        if rule.options is None:
            op.options = {}
        elif op.options_table != rule.options:
            op.options = _zero_options(rule.options)
        for name in TYPE_FIELDS:
            if op.options.get(name) is not None and op.options[name] not in SCHEMA_TYPES:
                raise TFLiteFormatError(f"{where}: option {name} is type code {op.options[name]}, which the TFLite "
                                        f"schema does not define")
        inputs, outputs = _count(rule.inputs, op), _count(rule.outputs, op)
        if inputs and len(op.inputs) not in inputs:
            raise TFLiteFormatError(f"{where}: {len(op.inputs)} inputs; LiteRT's {op.opcode} takes "
                                    f"{' or '.join(map(str, inputs))}")
        if outputs and len(op.outputs) not in outputs:
            raise TFLiteFormatError(f"{where}: {len(op.outputs)} outputs; LiteRT's {op.opcode} gives "
                                    f"{' or '.join(map(str, outputs))}")
        for position, index in enumerate(op.inputs):
            if index < 0 and position not in rule.optional:
                raise TFLiteFormatError(f"{where}: input {position} is absent (-1); {op.opcode} needs it")
        for position, index in enumerate(op.outputs):
            if index < 0:
                raise TFLiteFormatError(f"{where}: output {position} is absent (-1)")
        positions = SAME_TYPE.get(op.opcode, ())
        typed = [subgraph.tensors[i] for p, i in enumerate(op.inputs)
                 if i >= 0 and (positions == "all" or p in positions)]
        typed += [subgraph.tensors[i] for i in op.outputs] if typed else []
        if len({t.dtype for t in typed}) > 1:
            raise TFLiteFormatError(f"{where}: {', '.join(t.describe() for t in typed)} must share one type "
                                    f"(LiteRT's kernel gives the output its input's type)")


def check_dataflow(subgraph: TFLSubgraph, label: str = "") -> None:
    """Each operand is written before it is read: a graph input, constant data, a variable tensor, the output
    of an earlier operator, or empty (else LiteRT's "Input tensor lacks data": its arena never holds it); and
    no operator writes one of its own inputs ("Tensor is both input and output") or constant data."""
    written = set(subgraph.inputs) | {t.index for t in subgraph.tensors
                                      if t.data is not None or t.is_variable or 0 in t.shape}
    for op in subgraph.operators:
        where = f"{label}TFLite op #{op.index} {op.opcode}"
        for index in op.inputs:
            if index >= 0 and index not in written:
                raise TFLiteFormatError(f"{where} reads tensor {index} {subgraph.tensors[index].describe()}, which "
                                        f"no graph input, constant or earlier operator provides")
        for index in op.outputs:
            if index in op.inputs or subgraph.tensors[index].data is not None:
                raise TFLiteFormatError(f"{where} writes tensor {index} {subgraph.tensors[index].describe()}, "
                                        f"which is {'its own input' if index in op.inputs else 'constant data'}")
        written.update(op.outputs)


def apply_model_rules(model: TFLModel, subgraph_indices) -> None:
    for index in subgraph_indices:
        label = "" if index == 0 else f"subgraph {index} ('{model.subgraphs[index].name}') "
        apply_operator_rules(model.subgraphs[index], label)
        check_dataflow(model.subgraphs[index], label)
