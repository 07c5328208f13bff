"""Reads a .tflite flatbuffer (through the `tflite` schema package) into plain Python records.

Everything the legalizations need is copied out here: tensors with quantization and constant data,
operators with their builtin options as a dict of snake_case fields. A file that is not a TFLite model, or
is truncated or corrupt, fails here with TFLiteFormatError before any other work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

TENSOR_TYPES = {
    tflite.TensorType.FLOAT32: "float32", tflite.TensorType.FLOAT16: "float16",
    tflite.TensorType.INT32: "int32", tflite.TensorType.UINT8: "uint8", tflite.TensorType.INT64: "int64",
    tflite.TensorType.STRING: "string", tflite.TensorType.BOOL: "bool", tflite.TensorType.INT16: "int16",
    tflite.TensorType.INT8: "int8", tflite.TensorType.FLOAT64: "float64", tflite.TensorType.UINT32: "uint32",
    tflite.TensorType.UINT16: "uint16", tflite.TensorType.INT4: "int4", tflite.TensorType.RESOURCE: "resource",
    tflite.TensorType.VARIANT: "variant",
}

OPTION_CLASSES = {
    value: getattr(tflite, name)
    for name, value in vars(tflite.BuiltinOptions).items()
    if not name.startswith("_") and isinstance(value, int) and hasattr(tflite, name)
}

_SKIPPED_ACCESSORS = re.compile(r"^(Init|GetRootAs.*|.*BufferHasIdentifier|.*Length|.*IsNone|.*AsNumpy)$")


SCHEMA_VERSION = 3   # the TFLite schema LiteRT reads (TFLITE_SCHEMA_VERSION)


class TFLiteFormatError(ValueError):
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


def _options_dict(op) -> dict:
    kind = op.BuiltinOptionsType()
    cls = OPTION_CLASSES.get(kind)
    table = op.BuiltinOptions()
    if cls is None or table is None:
        return {}
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
    return result


def _opcode_name(code) -> tuple[str, int]:
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = BUILTIN_OPCODE2NAME.get(builtin, f"UNKNOWN_BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.CustomCode()
        name = f"CUSTOM({custom.decode() if custom else '?'})"
    return name, code.Version()


# Every type code the schema defines; a tensor of another code is refused, as LiteRT refuses it.
SCHEMA_TYPES = {value for name, value in vars(tflite.TensorType).items() if not name.startswith("_")}


def _tensor(raw: bytes, model, t, index: int) -> TFLTensor:
    if t.Type() not in SCHEMA_TYPES:
        raise TFLiteFormatError(f"tensor {index} has type code {t.Type()}, which the TFLite schema does not define")
    dtype = TENSOR_TYPES.get(t.Type(), f"type{t.Type()}")
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if not t.ShapeIsNone() else ()
    name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor{index}"
    tensor = TFLTensor(index, name, shape, dtype, is_variable=bool(t.IsVariable()))
    q = t.Quantization()
    if q is not None and not q.ScaleIsNone() and q.ScaleLength() > 0:
        tensor.scale = q.ScaleAsNumpy().astype(np.float32)
        zp = q.ZeroPointAsNumpy() if not q.ZeroPointIsNone() else np.zeros(q.ScaleLength(), np.int64)
        tensor.zero_point = np.asarray(zp, dtype=np.int64)
        tensor.quantized_dimension = q.QuantizedDimension()
        _check_quantization(tensor)
    buffer_index = t.Buffer()
    if buffer_index >= model.BuffersLength():
        raise TFLiteFormatError(f"tensor {index} '{name}' refers to buffer {buffer_index}; the model has "
                                f"{model.BuffersLength()}")
    if 0 < buffer_index:
        buffer = model.Buffers(buffer_index)
        data = None
        if buffer.Offset() > 1:
            data = raw[buffer.Offset(): buffer.Offset() + buffer.Size()]
            if len(data) != buffer.Size():
                raise TFLiteFormatError(f"tensor '{name}': its data lies past the end of the file")
        elif not buffer.DataIsNone() and buffer.DataLength() > 0:
            data = buffer.DataAsNumpy().tobytes()
        if data is not None and dtype not in ("string", "resource", "variant", "int4"):
            array = np.frombuffer(data, dtype=np.dtype(dtype))
            if array.size != int(np.prod(shape, dtype=np.int64)):
                raise TFLiteFormatError(f"tensor '{name}': {array.size} values stored for shape {list(shape)}")
            tensor.data = array.reshape(shape)
    return tensor


def _check_quantization(t: TFLTensor) -> None:
    """LiteRT's rules for a tensor's quantization parameters (its InterpreterBuilder refuses the model
    otherwise), and scales finite and positive (no kernel of it means anything else by them)."""
    scales, zps = t.scale.size, t.zero_point.size
    if zps != scales:
        raise TFLiteFormatError(f"tensor {t.index} '{t.name}': {zps} zero points for {scales} scales (they "
                                f"must be as many)")
    if scales > 1 and not (0 <= t.quantized_dimension < len(t.shape) and t.shape[t.quantized_dimension] == scales):
        raise TFLiteFormatError(f"tensor {t.index} '{t.name}': {scales} scales along dimension "
                                f"{t.quantized_dimension} of shape {list(t.shape)}")
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
        operators.append(TFLOperator(i, name, version, inputs, outputs, _options_dict(op)))
    graph_name = g.Name().decode("utf-8", "replace") if g.Name() else "main"
    ends = {"input": [int(x) for x in g.InputsAsNumpy()], "output": [int(x) for x in g.OutputsAsNumpy()]}
    for kind, indices in ends.items():
        for t in indices:
            if not 0 <= t < len(tensors):
                raise TFLiteFormatError(f"subgraph '{graph_name}' names tensor {t} as an {kind}; it has "
                                        f"{len(tensors)}")
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
    try:
        model = tflite.Model.GetRootAs(raw, 0)
        if model.Version() != SCHEMA_VERSION:
            raise TFLiteFormatError(f"{label} is in TFLite schema version {model.Version()}; LiteRT and tosaic "
                                    f"read version {SCHEMA_VERSION}")
        if model.SubgraphsLength() == 0:
            raise TFLiteFormatError(f"{label} has no subgraphs")
        subgraphs = [_subgraph(raw, model, model.Subgraphs(i)) for i in range(model.SubgraphsLength())]
    except TFLiteFormatError:
        raise
    except Exception as error:  # the flatbuffers runtime signals a truncated buffer with assorted errors
        raise TFLiteFormatError(f"{label} is truncated or corrupt: {type(error).__name__}: {error}") from None
    return TFLModel(subgraphs, label)
