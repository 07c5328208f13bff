"""Reads a .tflite flatbuffer (through the `tflite` schema package) into plain Python records.

Everything the legalizations need is copied out here: tensors with quantization and constant data,
operators with their builtin options as a dict of snake_case fields. A file that is not a TFLite model, or
is truncated or corrupt, fails here with TFLiteFormatError before any other work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from tosaic.errors import TosaicError
from tosaic.importers.tflite.verifier import verify_model
from tosaic.tosa.ops import MAX_ELEMENTS

# Every element type of LiteRT's schema by its code, named in lower case (LiteRT's schema has four codes the
# `tflite` package predates). A tensor of another code is refused, as LiteRT refuses it.
TENSOR_TYPES = {code: name.lower() for name, code in vars(tflite.TensorType).items() if not name.startswith("_")} | \
    {19: "int2", 20: "uint4", 21: "float8_e4m3fn", 22: "float8_e5m2"}

# The element types whose constant data reads as a numpy array of that type.
NUMPY_TYPES = ("float32", "float16", "int32", "uint8", "int64", "bool", "int16", "int8", "float64", "uint32",
               "uint16", "uint64", "complex64", "complex128")

OPTION_CLASSES = {
    value: getattr(tflite, name)
    for name, value in vars(tflite.BuiltinOptions).items()
    if not name.startswith("_") and isinstance(value, int) and hasattr(tflite, name)
}

_SKIPPED_ACCESSORS = re.compile(r"^(Init|GetRootAs.*|.*BufferHasIdentifier|.*Length|.*IsNone|.*AsNumpy)$")


SCHEMA_VERSION = 3   # the TFLite schema LiteRT reads (TFLITE_SCHEMA_VERSION)


class TFLiteFormatError(TosaicError, ValueError):
    """The input is not a readable TFLite flatbuffer."""


@dataclass
class TFLTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None
    is_variable: bool = False

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0

    def describe(self) -> str:
        quant = ""
        if self.quantized:
            if self.scale.size == 1:
                quant = f" scale={float(self.scale[0]):.6g} zp={int(self.zero_point[0])}"
            else:
                quant = f" per-channel({self.scale.size}) axis={self.quantized_dimension}"
        return f"'{self.name}' {self.dtype}{list(self.shape)}{quant}"


@dataclass
class TFLOperator:
    index: int
    opcode: str
    version: int
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)
    options_table: str | None = None   # the builtin options table the op carries (its union member)


@dataclass
class TFLSubgraph:
    name: str
    tensors: list[TFLTensor]
    operators: list[TFLOperator]
    inputs: list[int]
    outputs: list[int]


@dataclass
class TFLModel:
    subgraphs: list[TFLSubgraph]
    source: str


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _options_dict(op) -> tuple[dict, str | None]:
    """The op's builtin options as {snake_case field: value}, and the name of their table."""
    kind = op.BuiltinOptionsType()
    cls = OPTION_CLASSES.get(kind)
    table = op.BuiltinOptions()
    if cls is None or table is None:
        return {}, None
    options = cls()
    options.Init(table.Bytes, table.Pos)
    result = {}
    for attr in dir(cls):
        if attr.startswith("_") or _SKIPPED_ACCESSORS.match(attr):
            continue
        if hasattr(cls, attr + "AsNumpy"):
            array = getattr(options, attr + "AsNumpy")()
            result[_snake(attr)] = array.tolist() if isinstance(array, np.ndarray) else []
        else:
            result[_snake(attr)] = getattr(options, attr)()
    return result, cls.__name__


def _opcode_name(code) -> tuple[str, int]:
    # LiteRT's GetBuiltinCode: the larger of the two fields. The field is read raw: the tflite package's
    # BuiltinCode() returns deprecated_builtin_code for any code below 127, whatever builtin_code holds.
    slot = code._tab.Offset(10)
    raw = code._tab.Get(flatbuffers.number_types.Int32Flags, slot + code._tab.Pos) if slot else 0
    builtin = max(raw, code.DeprecatedBuiltinCode())
    name = BUILTIN_OPCODE2NAME.get(builtin, f"UNKNOWN_BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.CustomCode()
        name = f"CUSTOM({custom.decode() if custom else '?'})"
    return name, code.Version()


SCHEMA_TYPES = set(TENSOR_TYPES)


def _tensor(raw: bytes, model, t, index: int) -> TFLTensor:
    if t.Type() not in SCHEMA_TYPES:
        raise TFLiteFormatError(f"tensor {index} has type code {t.Type()}, which the TFLite schema does not define")
    dtype = TENSOR_TYPES[t.Type()]
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if not t.ShapeIsNone() else ()
    name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor{index}"
    if any(d < 0 for d in shape):
        raise TFLiteFormatError(f"tensor {index} '{name}' has shape {list(shape)}: tosaic needs every size known "
                                f"(a -1 belongs in shape_signature)")
    if int(np.prod(shape, dtype=np.float64)) >= MAX_ELEMENTS:
        raise TFLiteFormatError(f"tensor {index} '{name}' has shape {list(shape)}: 2^31 elements or more, beyond "
                                f"TOSA level 8K")
    tensor = TFLTensor(index, name, shape, dtype, is_variable=bool(t.IsVariable()))
    if t.Sparsity() is not None:
        raise TFLiteFormatError(f"tensor {index} '{name}' is sparse; tosaic reads dense tensors only")
    external = t._tab.Offset(24)   # external_buffer, a field of LiteRT's schema the tflite package predates
    if external and t._tab.Get(flatbuffers.number_types.Uint32Flags, external + t._tab.Pos):
        raise TFLiteFormatError(f"tensor {index} '{name}' keeps its data in an external buffer, which tosaic "
                                f"does not read")
    q = t.Quantization()
    if q is not None and q.DetailsType() != 0:
        raise TFLiteFormatError(f"tensor {index} '{name}' has quantization details of type {q.DetailsType()} "
                                f"(custom, blockwise or multi-axis), which tosaic does not read")
    if q is not None and not q.ScaleIsNone() and q.ScaleLength() > 0:
        if q.ZeroPointIsNone():
            raise TFLiteFormatError(f"tensor {index} '{name}' has quantization scales but no zero points")
        tensor.scale = q.ScaleAsNumpy().astype(np.float32)
        tensor.zero_point = np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64)
        tensor.quantized_dimension = q.QuantizedDimension()
        _check_quantization(tensor)
    buffer_index = t.Buffer()
    if buffer_index >= model.BuffersLength():
        raise TFLiteFormatError(f"tensor {index} '{name}' refers to buffer {buffer_index}; the model has "
                                f"{model.BuffersLength()}")
    if 0 < buffer_index:
        buffer = model.Buffers(buffer_index)
        if tensor.is_variable and (buffer.Offset() > 1 or buffer.DataLength() > 0):
            raise TFLiteFormatError(f"tensor {index} '{name}' is a variable tensor with data (LiteRT refuses it)")
        data = None
        if buffer.Offset() > 1:
            data = raw[buffer.Offset(): buffer.Offset() + buffer.Size()]
            if len(data) != buffer.Size():
                raise TFLiteFormatError(f"tensor '{name}': its data lies past the end of the file")
        elif not buffer.DataIsNone() and buffer.DataLength() > 0:
            data = buffer.DataAsNumpy().tobytes()
        if data is not None and dtype in NUMPY_TYPES:
            array = np.frombuffer(data, dtype=np.dtype(dtype))
            if array.size != int(np.prod(shape, dtype=np.int64)):
                raise TFLiteFormatError(f"tensor '{name}': {array.size} values stored for shape {list(shape)}")
            tensor.data = array.reshape(shape)
    return tensor


ZERO_POINT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _check_quantization(t: TFLTensor) -> None:
    """LiteRT's rules for a tensor's quantization parameters (its InterpreterBuilder refuses the model
    otherwise), then two of tosaic's: zero points inside the tensor's type and scales finite and positive
    (LiteRT's kernels check these only here and there, and compute garbage where they do not)."""
    scales, zps = t.scale.size, t.zero_point.size
    if zps != scales:
        raise TFLiteFormatError(f"tensor {t.index} '{t.name}': {zps} zero points for {scales} scales (they "
                                f"must be as many)")
    if scales > 1 and not (0 <= t.quantized_dimension < len(t.shape) and t.shape[t.quantized_dimension] == scales):
        raise TFLiteFormatError(f"tensor {t.index} '{t.name}': {scales} scales along dimension "
                                f"{t.quantized_dimension} of shape {list(t.shape)}")
    low, high = ZERO_POINT_RANGES.get(t.dtype, (-2**31, 2**31 - 1))
    if t.zero_point.min() < low or t.zero_point.max() > high:
        bad = int(t.zero_point[(t.zero_point < low) | (t.zero_point > high)][0])
        raise TFLiteFormatError(f"tensor {t.index} '{t.name}': zero point {bad} lies outside {t.dtype} [{low}, "
                                f"{high}] (LiteRT keeps it as int32 and computes with it unchecked)")
    if not (np.isfinite(t.scale).all() and (t.scale > 0).all()):
        raise TFLiteFormatError(f"tensor {t.index} '{t.name}': quantization scales must be finite and positive, "
                                f"got {t.scale.tolist()[:4]}")


def _subgraph(raw: bytes, model, g) -> TFLSubgraph:
    codes = [_opcode_name(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    tensors = [_tensor(raw, model, g.Tensors(i), i) for i in range(g.TensorsLength())]
    operators = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        if op.OpcodeIndex() >= len(codes):
            raise TFLiteFormatError(f"operator {i} names opcode {op.OpcodeIndex()}, which the model lacks")
        name, version = codes[op.OpcodeIndex()]
        inputs = [int(x) for x in op.InputsAsNumpy()] if not op.InputsIsNone() else []
        outputs = [int(x) for x in op.OutputsAsNumpy()] if not op.OutputsIsNone() else []
        for t in inputs + outputs:
            if not -1 <= t < len(tensors) or (t == -1 and t in outputs):
                raise TFLiteFormatError(f"operator {i} ({name}) refers to tensor {t}; the model has {len(tensors)}")
        operators.append(TFLOperator(i, name, version, inputs, outputs, *_options_dict(op)))
    graph_name = g.Name().decode("utf-8", "replace") if g.Name() else "main"
    ends = {"input": [int(x) for x in g.InputsAsNumpy()], "output": [int(x) for x in g.OutputsAsNumpy()]}
    for kind, indices in ends.items():
        for t in indices:
            if not 0 <= t < len(tensors):
                raise TFLiteFormatError(f"subgraph '{graph_name}' names tensor {t} as an {kind}; it has "
                                        f"{len(tensors)}")
    for t in ends["input"]:
        if tensors[t].data is not None:
            # LiteRT keeps such a tensor read-only and computes with its data, whatever the caller sets.
            raise TFLiteFormatError(f"subgraph '{graph_name}' input {tensors[t].describe()} holds constant data")
    return TFLSubgraph(graph_name, tensors, operators, ends["input"], ends["output"])


def read_tflite(source: str | Path | bytes) -> TFLModel:
    """Parse a .tflite file (path or bytes). Raises FileNotFoundError or TFLiteFormatError."""
    if isinstance(source, (bytes, bytearray)):
        raw, label = bytes(source), "<bytes>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such model file: {path}")
        raw, label = path.read_bytes(), str(path)
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise TFLiteFormatError(f"{label} is not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)")
    problem = verify_model(raw)
    if problem is not None:
        raise TFLiteFormatError(f"{label} is not a valid TFLite flatbuffer (LiteRT's verifier refuses it too): "
                                f"{problem}")
    try:
        model = tflite.Model.GetRootAs(raw, 0)
        if model.Version() != SCHEMA_VERSION:
            raise TFLiteFormatError(f"{label} is in TFLite schema version {model.Version()}; LiteRT and tosaic "
                                    f"read version {SCHEMA_VERSION}")
        if model.SubgraphsLength() == 0:
            raise TFLiteFormatError(f"{label} has no subgraphs")
        subgraphs = [_subgraph(raw, model, model.Subgraphs(i)) for i in range(model.SubgraphsLength())]
        for i in range(model.SignatureDefsLength()):
            if model.SignatureDefs(i).SignatureKey() is None:
                raise TFLiteFormatError(f"{label}: signature {i} has no key (LiteRT's InterpreterBuilder refuses "
                                        f"it)")
    except TFLiteFormatError:
        raise
    except Exception as error:  # the flatbuffers runtime signals a truncated buffer with assorted errors
        raise TFLiteFormatError(f"{label} is truncated or corrupt: {type(error).__name__}: {error}") from None
    return TFLModel(subgraphs, label)
