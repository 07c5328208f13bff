"""Build small TFLite models (single ops or short chains) without TensorFlow.

Test-side helper: property tests use it to make int8 / int16 models that LiteRT's reference
kernels can run, so tosaic can be compared with them on any parameters.

    b = ModelBuilder()
    x = b.tensor([1, 8, 8, 3], np.int8, scale=0.05, zero_point=-3, name="x")
    w = b.tensor([4, 3, 3, 3], np.int8, scale=[0.01, 0.02, 0.03, 0.04], zero_point=0,
                 data=weights, quant_dim=0)
    bias = b.tensor([4], np.int32, scale=[0.05 * s for s in w_scales], zero_point=0, data=bias_q)
    y = b.tensor([1, 4, 4, 4], np.int8, scale=0.1, zero_point=5)
    b.op("CONV_2D", [x, w, bias], [y], padding="SAME", stride_w=2, stride_h=2,
         fused_activation_function="RELU6")
    model_bytes = b.build()            # inputs/outputs default to the graph's free ends

Operators are looked up by their TFLite builtin name (``tflite.BuiltinOperator``); the options table
is found by name (``CONV_2D`` -> ``Conv2DOptions``, ``MEAN`` -> ``ReducerOptions``, ...) and options are
given as snake_case keyword arguments mapped onto the table's ``Add*`` functions. Enum options take
strings (``padding="SAME"``, ``fused_activation_function="RELU6"``, ``output_type="INT32"``); vector
options take sequences (``new_shape=[1, 12]``, ``squeeze_dims=[1, 2]``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import flatbuffers
import numpy as np
import tflite

__all__ = [
    "ModelBuilder",
    "RESOURCE",
    "TensorSpec",
    "conv_output_size",
    "builtin_code",
    "options_table_name",
]

# --------------------------------------------------------------------------------------------- types

_DTYPE_TO_TFLITE = {
    "float32": "FLOAT32",
    "float16": "FLOAT16",
    "float64": "FLOAT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "bool": "BOOL",
    "resource": "RESOURCE",
}

_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
_SCHEMA_VERSION = 3
_FILE_IDENTIFIER = b"TFL3"
_BUFFER_ALIGNMENT = 16


class _ResourceDType:
    """The element type of a resource-variable handle (TFLite RESOURCE), which no numpy dtype names."""

    name = "resource"
    kind = "V"

    def __repr__(self) -> str:
        return "RESOURCE"


# ``b.tensor([], RESOURCE)`` is a resource handle, as VAR_HANDLE makes and READ/ASSIGN_VARIABLE take.
RESOURCE = _ResourceDType()


def _np_dtype(dtype: Any) -> np.dtype:
    if dtype is RESOURCE or (isinstance(dtype, str) and dtype.lower() == "resource"):
        return RESOURCE
    dt = np.dtype(dtype)
    if dt.name not in _DTYPE_TO_TFLITE:
        raise TypeError(f"unsupported tensor dtype {dt}")
    return dt


def _tensor_type(dtype: np.dtype) -> int:
    return getattr(tflite.TensorType, _DTYPE_TO_TFLITE[dtype.name])


def _enum_names(enum_cls: type) -> dict[str, int]:
    return {k: v for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_code(opname: str) -> int:
    """``"CONV_2D"`` -> ``tflite.BuiltinOperator.CONV_2D`` (case-insensitive)."""
    codes = _enum_names(tflite.BuiltinOperator)
    key = opname.upper()
    if key not in codes:
        raise KeyError(f"unknown TFLite builtin operator {opname!r}")
    return codes[key]


# ------------------------------------------------------------------------------------ options tables

# Operators whose options table name is not the operator name in CamelCase.
_OPTIONS_OVERRIDES = {
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions",
    "REDUCE_ANY": "ReducerOptions",
    "REDUCE_ALL": "ReducerOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "L2_NORMALIZATION": "L2NormOptions",
    "UNIDIRECTIONAL_SEQUENCE_RNN": "SequenceRNNOptions",
    "RANDOM_UNIFORM": "RandomOptions",
    "RANDOM_STANDARD_NORMAL": "RandomOptions",
    "MULTINOMIAL": "RandomOptions",
    "LOG": None,
}

# Option fields holding enums, by the CamelCase field name.
_ENUM_FIELDS = {
    "Padding": tflite.Padding,
    "FusedActivationFunction": tflite.ActivationFunctionType,
    "WeightsFormat": tflite.FullyConnectedOptionsWeightsFormat,
    "OutputType": tflite.TensorType,
    "OutType": tflite.TensorType,
    "IdxOutType": tflite.TensorType,
    "InDataType": tflite.TensorType,
    "OutDataType": tflite.TensorType,
    "QuantizedBiasType": tflite.TensorType,
    "KeyDtype": tflite.TensorType,
    "ValueDtype": tflite.TensorType,
    "Mode": tflite.MirrorPadMode,
    "KernelType": tflite.LSTMKernelType,
    "Type": tflite.LSHProjectionType,
    "Combiner": tflite.CombinerType,
}

_NUMBER_FLAGS_TO_DTYPE = {
    "BoolFlags": np.bool_,
    "Uint8Flags": np.uint8,
    "Uint16Flags": np.uint16,
    "Uint32Flags": np.uint32,
    "Uint64Flags": np.uint64,
    "Int8Flags": np.int8,
    "Int16Flags": np.int16,
    "Int32Flags": np.int32,
    "Int64Flags": np.int64,
    "Float32Flags": np.float32,
    "Float64Flags": np.float64,
}


def _normalize(name: str) -> str:
    return name.replace("_", "").lower()


def options_table_name(opname: str) -> tuple[str | None, int]:
    """Name of the options table of a builtin op and which union holds it (1: builtin_options,
    2: builtin_options_2); ``(None, 0)`` for ops without options."""
    key = opname.upper()
    if key in _OPTIONS_OVERRIDES:
        name = _OPTIONS_OVERRIDES[key]
        return (name, 1) if name else (None, 0)
    want = _normalize(key) + "options"
    for union, which in ((tflite.BuiltinOptions, 1), (tflite.BuiltinOptions2, 2)):
        for name in _enum_names(union):
            if _normalize(name) == want:
                return name, which
    return None, 0


def _snake_to_camel(name: str) -> str:
    if "_" not in name and name[:1].isupper():
        return name
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


@dataclass
class _FieldInfo:
    kind: str  # "scalar", "vector", "string"
    add: Any
    scalar_type: type = int
    vector_dtype: Any = None
    start_vector: Any = None


def _field_info(table: str, camel: str) -> _FieldInfo:
    mod = importlib.import_module(f"tflite.{table}")
    add = getattr(mod, f"{table}Add{camel}", None)
    if add is None:
        valid = sorted(
            re.sub(r"(?<!^)(?=[A-Z])", "_", m.group(1)).lower()
            for f in dir(mod)
            if (m := re.fullmatch(table + r"Add(\w+)", f))
        )
        raise TypeError(f"{table} has no field {camel!r}; fields: {valid}")
    reader = getattr(mod, table)
    numpy_getter = getattr(reader, f"{camel}AsNumpy", None)
    if numpy_getter is not None:
        src = inspect.getsource(numpy_getter)
        m = re.search(r"GetVectorAsNumpy\(flatbuffers\.number_types\.(\w+Flags)", src)
        dtype = _NUMBER_FLAGS_TO_DTYPE[m.group(1)] if m else np.int32
        return _FieldInfo("vector", add, vector_dtype=dtype)
    getter = getattr(reader, camel, None)
    if getter is not None and "self._tab.String(" in inspect.getsource(getter):
        return _FieldInfo("string", add)
    src = inspect.getsource(add)
    if "PrependFloat" in src:
        return _FieldInfo("scalar", add, scalar_type=float)
    if "PrependBool" in src:
        return _FieldInfo("scalar", add, scalar_type=bool)
    if "UOffsetTRelative" in src:
        raise TypeError(f"{table}.{camel} is a nested table; not supported by ModelBuilder")
    return _FieldInfo("scalar", add, scalar_type=int)


def _enum_value(camel: str, value: str) -> int:
    key = value.upper()
    enum_cls = _ENUM_FIELDS.get(camel)
    if enum_cls is not None:
        names = _enum_names(enum_cls)
        if key not in names:
            raise ValueError(f"{value!r} is not a {enum_cls.__name__}; one of {sorted(names)}")
        return names[key]
    if camel.endswith(("Type", "Dtype")) and key in _enum_names(tflite.TensorType):
        return _enum_names(tflite.TensorType)[key]
    hits = []
    for n in dir(tflite):
        cls = getattr(tflite, n)
        if inspect.isclass(cls) and not hasattr(cls, "Init") and key in _enum_names(cls):
            hits.append((n, _enum_names(cls)[key]))
    if len(hits) == 1:
        return hits[0][1]
    raise ValueError(f"cannot resolve enum string {value!r} for option {camel}; give an int")


def _coerce_options(table: str, options: dict[str, Any]) -> list[tuple[_FieldInfo, Any]]:
    """Check option names and values against the table; enum strings become ints."""
    coerced = []
    for key, value in options.items():
        camel = _snake_to_camel(key)
        info = _field_info(table, camel)
        if info.kind == "vector":
            value = np.asarray(value, dtype=info.vector_dtype).reshape(-1)
        elif info.kind == "string":
            value = str(value)
        else:
            if isinstance(value, str):
                value = _enum_value(camel, value)
            elif isinstance(value, np.generic):
                value = value.item()
            value = info.scalar_type(value)
        coerced.append((info, value))
    return coerced


def _build_options(fb: flatbuffers.Builder, table: str, coerced: list[tuple[_FieldInfo, Any]]) -> int:
    mod = importlib.import_module(f"tflite.{table}")
    prepared = []
    # Vectors and strings must be written before the table is started.
    for info, value in coerced:
        if info.kind == "vector":
            prepared.append((info.add, fb.CreateNumpyVector(value)))
        elif info.kind == "string":
            prepared.append((info.add, fb.CreateString(value)))
        else:
            prepared.append((info.add, value))
    getattr(mod, f"{table}Start")(fb)
    for add, value in prepared:
        add(fb, value)
    return getattr(mod, f"{table}End")(fb)


# --------------------------------------------------------------------------------------- op versions

_I8, _I16 = "int8", "int16"


def default_version(opname: str, in_dtypes: Sequence[str | None], out_dtypes: Sequence[str | None],
                    options: dict[str, Any], num_inputs: int) -> int:
    """Operator version as the TFLite converter assigns it for the common quantized cases
    (tensorflow/lite/tools/versioning/op_version.cc, checked against TF 2.21 converter output);
    1 when unknown. LiteRT's kernels do not read the version, but the op resolver rejects a
    version outside the registered range (e.g. HARD_SWISH, RESHAPE, PRELU, SQUEEZE only have 1)."""
    op = opname.upper()
    i0 = in_dtypes[0] if in_dtypes else None
    i1 = in_dtypes[1] if len(in_dtypes) > 1 else None
    o0 = out_dtypes[0] if out_dtypes else None
    if op == "CONV_2D":
        if i0 == _I16 and i1 == _I8:
            return 8 if options.get("quantized_bias_type") else 3
        if i0 == _I8 and i1 == _I8:
            return 3
        return 1
    if op == "DEPTHWISE_CONV_2D":
        if i0 == _I8 and i1 == _I8:
            return 3
        if i0 == _I16:
            return 5
        if options.get("dilation_w_factor", 1) != 1 or options.get("dilation_h_factor", 1) != 1:
            return 2
        return 1
    if op == "FULLY_CONNECTED":
        if i0 == _I16 and i1 == _I8:
            return 11 if options.get("quantized_bias_type") else 4
        if num_inputs == 2:
            return 6
        if options.get("keep_num_dims"):
            return 5
        if i0 == _I8 and i1 == _I8:
            return 4
        return 1
    if op == "TRANSPOSE_CONV":
        if options.get("fused_activation_function", "NONE") not in ("NONE", 0):
            return 4
        if num_inputs == 4:
            return 3
        return 2 if i1 == _I8 else 1
    if op == "QUANTIZE":
        return 2 if o0 == _I16 else 1
    if op == "DEQUANTIZE":
        return {_I8: 2, _I16: 3}.get(i0, 1)
    if op == "SPLIT":
        return {_I8: 2, _I16: 4, "int32": 3}.get(i1, 1)
    if op == "STRIDED_SLICE":
        if options.get("ellipsis_mask") or options.get("new_axis_mask"):
            return 6
        return 2 if i0 == _I8 else 1
    if op in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        if i0 == _I16:
            return 4
        if options.get("half_pixel_centers") or (op == "RESIZE_NEAREST_NEIGHBOR" and options.get("align_corners")):
            return 3
        return 2 if i0 == _I8 else 1
    table = _VERSION_TABLE.get(op)
    if table is not None:
        return table.get(i0, 1)
    return 2 if op == "BROADCAST_TO" else 1


# op -> {input-0 dtype: version}
_VERSION_TABLE = {
    "ADD": {_I8: 2, _I16: 3},
    "SUB": {_I8: 2, _I16: 5},
    "MUL": {_I8: 2, _I16: 4},
    "AVERAGE_POOL_2D": {_I8: 2, _I16: 3},
    "MAX_POOL_2D": {_I8: 2, _I16: 3},
    "MEAN": {_I8: 2, _I16: 3},
    "REDUCE_MAX": {_I8: 2, _I16: 3},
    "REDUCE_MIN": {_I8: 2, _I16: 3},
    "SUM": {_I8: 2},
    "REDUCE_PROD": {_I8: 2, _I16: 2},
    "SOFTMAX": {_I8: 2, _I16: 3},
    "LOG_SOFTMAX": {_I8: 2},
    "LOGISTIC": {_I8: 2, _I16: 3},
    "TANH": {_I8: 2, _I16: 3},
    "RELU": {_I8: 2, "uint8": 2, _I16: 3},
    "RELU6": {_I8: 2, _I16: 3},
    "LEAKY_RELU": {_I16: 2},
    "CONCATENATION": {_I8: 2, _I16: 3},
    "TRANSPOSE": {_I8: 2, _I16: 5},
    "PAD": {_I8: 2, _I16: 3},
    "PADV2": {_I8: 2, _I16: 3},
    "MIRROR_PAD": {_I8: 2, _I16: 3},
    "MAXIMUM": {_I8: 2, _I16: 4},
    "MINIMUM": {_I8: 2, _I16: 4},
    "ARG_MAX": {_I8: 2},
    "ARG_MIN": {_I8: 2},
    "GATHER": {_I8: 2, _I16: 4},
    "PACK": {_I8: 2, _I16: 3},
    "UNPACK": {_I8: 2, "uint8": 2, _I16: 4},
    "SPLIT_V": {_I8: 2},
    "SLICE": {_I8: 2, _I16: 4},
    "BATCH_MATMUL": {_I8: 2, _I16: 3},
    "SPACE_TO_BATCH_ND": {_I8: 2, _I16: 4},
    "BATCH_TO_SPACE_ND": {_I8: 2, _I16: 4},
    "SPACE_TO_DEPTH": {_I8: 2},
    "DEPTH_TO_SPACE": {_I8: 2},
    "SQUARED_DIFFERENCE": {_I8: 2},
    "RSQRT": {_I8: 2, _I16: 3},
    "EXP": {_I8: 2, _I16: 2},
    "LOG": {_I8: 2, _I16: 2},
    "SQRT": {_I8: 2, _I16: 2},
    "GELU": {_I8: 2, "uint8": 2},
    "ABS": {_I8: 2, "uint8": 2, _I16: 3, "int32": 5},
    "L2_NORMALIZATION": {_I8: 2},
    "EQUAL": {_I8: 2, _I16: 5},
    "NOT_EQUAL": {_I8: 2, _I16: 4},
    "LESS": {_I8: 2, _I16: 3},
    "GREATER_EQUAL": {_I8: 2, _I16: 3},
    "GREATER": {_I8: 2},
    "LESS_EQUAL": {_I8: 2},
    "SELECT": {_I8: 2},
    "TOPK_V2": {_I8: 2, _I16: 3},
    "REVERSE_V2": {_I8: 3, "bool": 2},
    # The converter writes int8 TILE as version 3, which LiteRT's reference resolver does not
    # register (max 2); the kernel itself handles int8 at any version.
    "TILE": {_I8: 1},
    "CAST": {_I8: 3},
    "FLOOR_DIV": {_I8: 3, _I16: 3, "float32": 2},
    "FLOOR_MOD": {_I8: 2, _I16: 2},
    "SIGN": {"int32": 2},
}

# Options the schema defaults to values that no kernel accepts (stride 0, softmax beta 0).
_OPTION_DEFAULTS = {
    "CONV_2D": {"stride_w": 1, "stride_h": 1},
    "DEPTHWISE_CONV_2D": {"stride_w": 1, "stride_h": 1},
    "TRANSPOSE_CONV": {"stride_w": 1, "stride_h": 1},
    "AVERAGE_POOL_2D": {"stride_w": 1, "stride_h": 1},
    "MAX_POOL_2D": {"stride_w": 1, "stride_h": 1},
    "L2_POOL_2D": {"stride_w": 1, "stride_h": 1},
    "CONV_3D": {"stride_d": 1, "stride_w": 1, "stride_h": 1},
    "SOFTMAX": {"beta": 1.0},
}


# --------------------------------------------------------------------------------------------- model


@dataclass
class TensorSpec:
    shape: list[int]
    dtype: np.dtype
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    quant_dim: int = 0
    data: np.ndarray | None = None
    name: str = ""
    is_variable: bool = False

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and self.scale.size > 1


@dataclass
class _OpSpec:
    opname: str
    code: int
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    table: str | None = None
    which: int = 0
    coerced: list = field(default_factory=list)
    version: int = 1


def conv_output_size(in_size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """TFLite's output size for one spatial dimension (padding ``"SAME"`` or ``"VALID"``)."""
    eff = (kernel - 1) * dilation + 1
    if padding.upper() == "SAME":
        return (in_size + stride - 1) // stride
    return (in_size - eff + stride) // stride


class ModelBuilder:
    """Accumulates tensors and operators of a subgraph and serialises a TFLite flatbuffer.

    The builder is the model's main subgraph (index 0); :meth:`subgraph` adds more (e.g. the
    initialization subgraph a ``CALL_ONCE`` invokes), each a ``ModelBuilder`` of its own whose tensors
    and operators are written into the same model by the main builder's :meth:`build`.
    """

    def __init__(self, description: str = "tosaic tests/tflite_builder", name: str = "main"):
        self.description = description
        self.name = name
        self.tensors: list[TensorSpec] = []
        self.ops: list[_OpSpec] = []
        self._inputs: list[int] | None = None
        self._outputs: list[int] | None = None
        self.subgraphs: list[ModelBuilder] = []

    def subgraph(self, name: str = "init") -> tuple[int, "ModelBuilder"]:
        """Add a subgraph to the model; returns its index (1, 2, ...) and the builder of its tensors and
        operators. A subgraph's inputs and outputs default to its free ends, like the main one's."""
        sub = ModelBuilder(self.description, name)
        self.subgraphs.append(sub)
        return len(self.subgraphs), sub

    # ------------------------------------------------------------------------- resource variables
    def var_handle(self, shared_name: str, container: str = "", name: str | None = None) -> int:
        """``VAR_HANDLE`` of the resource variable ``(container, shared_name)``; returns the handle
        tensor (RESOURCE, shape []). Handles with the same names, in any subgraph, name one variable."""
        handle = self.tensor([], RESOURCE, name=name or f"{shared_name}/handle")
        options = {"shared_name": shared_name}
        if container:
            options["container"] = container
        self.op("VAR_HANDLE", [], [handle], **options)
        return handle

    def read_variable(self, handle: int, like: int | None = None, **tensor_args: Any) -> int:
        """``READ_VARIABLE`` into a new tensor: ``like`` an existing tensor, or made from
        ``tensor_args`` (shape, dtype, scale, zero_point, name)."""
        out = self.like(like, **tensor_args) if like is not None else self.tensor(**tensor_args)
        self.op("READ_VARIABLE", [handle], [out])
        return out

    def assign_variable(self, handle: int, value: int) -> None:
        """``ASSIGN_VARIABLE``: store ``value`` in the variable ``handle`` names."""
        self.op("ASSIGN_VARIABLE", [handle, value], [])

    def call_once(self, init_subgraph_index: int) -> None:
        """``CALL_ONCE``: run subgraph ``init_subgraph_index`` on the first invocation only."""
        self.op("CALL_ONCE", [], [], init_subgraph_index=init_subgraph_index)

    # -------------------------------------------------------------------------------------- tensors
    def tensor(self, shape: Sequence[int] | None = None, dtype: Any = None, scale: Any = None,
               zero_point: Any = None, data: Any = None, name: str | None = None,
               quant_dim: int | None = None, is_variable: bool = False) -> int:
        """Add a tensor and return its index. ``data`` makes it a constant (stored in a buffer);
        ``scale``/``zero_point`` may be scalars or per-channel sequences along ``quant_dim``."""
        if dtype is None:
            if data is None:
                raise TypeError("tensor() needs a dtype or data")
            dtype = np.asarray(data).dtype
        dt = _np_dtype(dtype)
        arr = None
        if data is not None:
            arr = np.asarray(data)
            if arr.dtype != dt:
                if dt.kind in "iu" and arr.dtype.kind in "iu":
                    info = np.iinfo(dt)
                    if arr.size and (arr.min() < info.min or arr.max() > info.max):
                        raise ValueError(f"data out of range for {dt}")
                arr = arr.astype(dt)
            if shape is None:
                shape = arr.shape
            elif int(np.prod(shape, dtype=np.int64)) != arr.size:
                raise ValueError(f"data of size {arr.size} does not fit shape {list(shape)}")
            arr = np.ascontiguousarray(arr.reshape(tuple(shape)))
        if shape is None:
            raise TypeError("tensor() needs a shape or data")
        shape = [int(d) for d in shape]
        sc = zp = None
        if scale is not None:
            sc = np.atleast_1d(np.asarray(scale, dtype=np.float32)).reshape(-1)
            if zero_point is None:
                zero_point = 0
            zp = np.atleast_1d(np.asarray(zero_point, dtype=np.int64)).reshape(-1)
            if zp.size == 1 and sc.size > 1:
                zp = np.repeat(zp, sc.size)
            if zp.size != sc.size:
                raise ValueError("scale and zero_point lengths differ")
            if sc.size > 1:
                qd = 0 if quant_dim is None else quant_dim
                if not 0 <= qd < len(shape) or shape[qd] != sc.size:
                    raise ValueError(f"{sc.size} scales do not match dimension {qd} of {shape}")
        elif zero_point is not None:
            raise ValueError("zero_point given without scale")
        idx = len(self.tensors)
        self.tensors.append(TensorSpec(shape=shape, dtype=dt, scale=sc, zero_point=zp,
                                       quant_dim=int(quant_dim or 0), data=arr,
                                       name=name if name is not None else f"t{idx}",
                                       is_variable=is_variable))
        return idx

    def const(self, data: Any, dtype: Any = None, scale: Any = None, zero_point: Any = None,
              quant_dim: int | None = None, name: str | None = None) -> int:
        """Constant tensor whose shape is the data's shape."""
        arr = np.asarray(data) if dtype is None else np.asarray(data).astype(dtype)
        return self.tensor(arr.shape, arr.dtype, scale=scale, zero_point=zero_point, data=arr,
                           name=name, quant_dim=quant_dim)

    def like(self, t: int, shape: Sequence[int] | None = None, scale: Any = None,
             zero_point: Any = None, dtype: Any = None, name: str | None = None) -> int:
        """New activation tensor with ``t``'s dtype and quantization unless overridden."""
        src = self.tensors[t]
        if scale is None and src.scale is not None and not src.per_channel:
            scale = float(src.scale[0])
            if zero_point is None:
                zero_point = int(src.zero_point[0])
        return self.tensor(src.shape if shape is None else shape,
                           src.dtype if dtype is None else dtype, scale=scale,
                           zero_point=zero_point, name=name)

    # ------------------------------------------------------------------------------------ operators
    def op(self, opname: str, inputs: Sequence[int], outputs: Sequence[int], *,
           version: int | None = None, **options: Any) -> int:
        """Add a builtin operator and return its index. ``-1`` in ``inputs`` marks an omitted
        optional input. ``version`` overrides :func:`default_version`."""
        code = builtin_code(opname)
        op = opname.upper()
        inputs = [int(i) for i in inputs]
        outputs = [int(o) for o in outputs]
        for t in inputs + outputs:
            if t != -1 and not 0 <= t < len(self.tensors):
                raise IndexError(f"{op}: tensor {t} does not exist")
        opts = dict(_OPTION_DEFAULTS.get(op, {}))
        if op == "DEPTHWISE_CONV_2D" and "depth_multiplier" not in options and len(inputs) >= 2:
            x, w = self.tensors[inputs[0]], self.tensors[inputs[1]]
            if len(x.shape) == 4 and len(w.shape) == 4 and x.shape[3] > 0:
                opts["depth_multiplier"] = max(1, w.shape[3] // x.shape[3])
        opts.update(options)
        table, which = options_table_name(op)
        if table is None and options:
            raise TypeError(f"{op} takes no options, got {sorted(options)}")
        coerced = _coerce_options(table, opts) if table is not None else []

        def dts(idxs):
            return [self.tensors[i].dtype.name if i != -1 else None for i in idxs]

        n_in = len([i for i in inputs if i != -1])
        if version is None:
            version = default_version(op, dts(inputs), dts(outputs), opts, n_in)
        self.ops.append(_OpSpec(op, code, inputs, outputs, options=opts, version=int(version),
                               table=table, which=which, coerced=coerced))
        return len(self.ops) - 1

    def inputs(self, idxs: Sequence[int]) -> "ModelBuilder":
        self._inputs = [int(i) for i in idxs]
        return self

    def outputs(self, idxs: Sequence[int]) -> "ModelBuilder":
        self._outputs = [int(i) for i in idxs]
        return self

    def graph_inputs(self) -> list[int]:
        """Explicit inputs, else the non-constant tensors that no operator produces."""
        if self._inputs is not None:
            return list(self._inputs)
        produced = {o for op in self.ops for o in op.outputs}
        used = {i for op in self.ops for i in op.inputs}
        return [i for i, t in enumerate(self.tensors)
                if not t.is_const and not t.is_variable and i not in produced and i in used]

    def graph_outputs(self) -> list[int]:
        """Explicit outputs, else the produced tensors that no operator consumes."""
        if self._outputs is not None:
            return list(self._outputs)
        used = {i for op in self.ops for i in op.inputs}
        return [o for op in self.ops for o in op.outputs if o not in used]

    # ---------------------------------------------------------------------------- quantized helpers
    def _q(self, t: int) -> tuple[float, int]:
        s = self.tensors[t]
        if s.scale is None:
            raise ValueError(f"tensor {t} is not quantized")
        return float(s.scale[0]), int(s.zero_point[0])

    def _bias(self, x: int, w_scale: np.ndarray, bias: Any, n: int, name: str) -> int:
        if bias is None:
            return -1
        in_scale, _ = self._q(x)
        b_scale = (np.float32(in_scale) * w_scale.astype(np.float32)).astype(np.float32)
        bdt = np.int64 if self.tensors[x].dtype == np.int16 else np.int32
        return self.tensor([n], bdt, scale=b_scale, zero_point=0,
                           data=np.asarray(bias).astype(bdt).reshape(n), name=name)

    def conv2d(self, x: int, weights: Any, w_scale: Any, bias: Any, out_scale: float,
               out_zp: int, *, stride: int | tuple[int, int] = 1, padding: str = "SAME",
               dilation: int | tuple[int, int] = 1, fused_activation_function: str = "NONE",
               name: str = "conv") -> int:
        """Quantized CONV_2D: ``weights`` int8 [OC, KH, KW, IC], per-channel when ``w_scale`` has
        OC entries (weight zp 0), ``bias`` int32 (int64 for int16 input) with scale
        in_scale * w_scale[c] and zp 0, or None. Returns the output tensor."""
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        dh, dw = (dilation, dilation) if np.isscalar(dilation) else dilation
        w_arr = np.asarray(weights, dtype=np.int8)
        oc, kh, kw, _ = w_arr.shape
        ws = np.atleast_1d(np.asarray(w_scale, dtype=np.float32))
        w = self.tensor(w_arr.shape, np.int8, scale=ws, zero_point=0, data=w_arr,
                        quant_dim=0, name=f"{name}/w")
        b = self._bias(x, ws, bias, oc, f"{name}/b")
        n, h, wd, _ = self.tensors[x].shape
        oh = conv_output_size(h, kh, sh, dh, padding)
        ow = conv_output_size(wd, kw, sw, dw, padding)
        y = self.tensor([n, oh, ow, oc], self.tensors[x].dtype, scale=out_scale,
                        zero_point=out_zp, name=f"{name}/out")
        self.op("CONV_2D", [x, w, b], [y], padding=padding, stride_h=sh, stride_w=sw,
                dilation_h_factor=dh, dilation_w_factor=dw,
                fused_activation_function=fused_activation_function)
        return y

    def depthwise_conv2d(self, x: int, weights: Any, w_scale: Any, bias: Any, out_scale: float,
                         out_zp: int, *, stride: int | tuple[int, int] = 1,
                         padding: str = "SAME", dilation: int | tuple[int, int] = 1,
                         fused_activation_function: str = "NONE", name: str = "dwconv") -> int:
        """Quantized DEPTHWISE_CONV_2D: ``weights`` int8 [1, KH, KW, C*M], per-channel scales
        along dimension 3."""
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        dh, dw = (dilation, dilation) if np.isscalar(dilation) else dilation
        w_arr = np.asarray(weights, dtype=np.int8)
        _, kh, kw, oc = w_arr.shape
        ws = np.atleast_1d(np.asarray(w_scale, dtype=np.float32))
        w = self.tensor(w_arr.shape, np.int8, scale=ws, zero_point=0, data=w_arr,
                        quant_dim=3, name=f"{name}/w")
        b = self._bias(x, ws, bias, oc, f"{name}/b")
        n, h, wd, c = self.tensors[x].shape
        oh = conv_output_size(h, kh, sh, dh, padding)
        ow = conv_output_size(wd, kw, sw, dw, padding)
        y = self.tensor([n, oh, ow, oc], self.tensors[x].dtype, scale=out_scale,
                        zero_point=out_zp, name=f"{name}/out")
        self.op("DEPTHWISE_CONV_2D", [x, w, b], [y], padding=padding, stride_h=sh, stride_w=sw,
                dilation_h_factor=dh, dilation_w_factor=dw, depth_multiplier=oc // c,
                fused_activation_function=fused_activation_function)
        return y

    def fully_connected(self, x: int, weights: Any, w_scale: Any, bias: Any, out_scale: float,
                        out_zp: int, *, fused_activation_function: str = "NONE",
                        keep_num_dims: bool = False, name: str = "fc") -> int:
        """Quantized FULLY_CONNECTED: ``weights`` int8 [OUT, IN] (per-channel along 0 allowed)."""
        w_arr = np.asarray(weights, dtype=np.int8)
        units, depth = w_arr.shape
        ws = np.atleast_1d(np.asarray(w_scale, dtype=np.float32))
        w = self.tensor(w_arr.shape, np.int8, scale=ws, zero_point=0, data=w_arr,
                        quant_dim=0, name=f"{name}/w")
        b = self._bias(x, ws, bias, units, f"{name}/b")
        xs = self.tensors[x].shape
        if keep_num_dims:
            out_shape = list(xs[:-1]) + [units]
        else:
            out_shape = [int(np.prod(xs)) // depth, units]
        y = self.tensor(out_shape, self.tensors[x].dtype, scale=out_scale, zero_point=out_zp,
                        name=f"{name}/out")
        opts = {"fused_activation_function": fused_activation_function}
        if keep_num_dims:
            opts["keep_num_dims"] = True
        self.op("FULLY_CONNECTED", [x, w, b], [y], **opts)
        return y

    # ---------------------------------------------------------------------------------- serialise
    def build(self) -> bytes:
        fb = flatbuffers.Builder(1024)
        graphs = [self] + self.subgraphs
        for g in self.subgraphs:
            if g.subgraphs:
                raise ValueError("subgraphs are added to the main builder, not to other subgraphs")

        # Buffers: 0 is the empty sentinel, then one per constant tensor of every subgraph.
        buffer_of: dict[tuple[int, int], int] = {}
        buffer_offsets = []
        tflite.BufferStart(fb)
        buffer_offsets.append(tflite.BufferEnd(fb))
        for g_index, g in enumerate(graphs):
            for i, t in enumerate(g.tensors):
                if not t.is_const:
                    continue
                raw = t.data.astype(t.data.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
                fb.StartVector(1, len(raw), _BUFFER_ALIGNMENT)
                fb.head = fb.head - len(raw)
                fb.Bytes[fb.head:fb.head + len(raw)] = raw
                data_off = fb.EndVector()
                tflite.BufferStart(fb)
                tflite.BufferAddData(fb, data_off)
                buffer_offsets.append(tflite.BufferEnd(fb))
                buffer_of[(g_index, i)] = len(buffer_offsets) - 1

        # Operator codes, deduplicated on (code, version) over every subgraph.
        opcode_index: dict[tuple[int, int], int] = {}
        for g in graphs:
            for op in g.ops:
                opcode_index.setdefault((op.code, op.version), len(opcode_index))
        opcode_offsets = []
        for code, version in opcode_index:
            tflite.OperatorCodeStart(fb)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(fb, min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES))
            tflite.OperatorCodeAddBuiltinCode(fb, code)
            tflite.OperatorCodeAddVersion(fb, version)
            opcode_offsets.append(tflite.OperatorCodeEnd(fb))

        def table_vector(start, offsets):
            start(fb, len(offsets))
            for off in reversed(offsets):
                fb.PrependUOffsetTRelative(off)
            return fb.EndVector()

        subgraph_offsets = [g._build_subgraph(fb, g_index, buffer_of, opcode_index, table_vector)
                            for g_index, g in enumerate(graphs)]

        # Model.
        codes_vec = table_vector(tflite.ModelStartOperatorCodesVector, opcode_offsets)
        subgraphs_vec = table_vector(tflite.ModelStartSubgraphsVector, subgraph_offsets)
        desc = fb.CreateString(self.description)
        buffers_vec = table_vector(tflite.ModelStartBuffersVector, buffer_offsets)
        tflite.ModelStart(fb)
        tflite.ModelAddVersion(fb, _SCHEMA_VERSION)
        tflite.ModelAddOperatorCodes(fb, codes_vec)
        tflite.ModelAddSubgraphs(fb, subgraphs_vec)
        tflite.ModelAddDescription(fb, desc)
        tflite.ModelAddBuffers(fb, buffers_vec)
        model = tflite.ModelEnd(fb)
        fb.Finish(model, file_identifier=_FILE_IDENTIFIER)
        return bytes(fb.Output())

    def _build_subgraph(self, fb, g_index: int, buffer_of, opcode_index, table_vector) -> int:
        """Serialise this builder's tensors and operators as one SubGraph table."""
        # Tensors.
        tensor_offsets = []
        for i, t in enumerate(self.tensors):
            name_off = fb.CreateString(t.name)
            shape_off = fb.CreateNumpyVector(np.asarray(t.shape, dtype=np.int32))
            q_off = None
            if t.scale is not None:
                scale_off = fb.CreateNumpyVector(t.scale.astype(np.float32))
                zp_off = fb.CreateNumpyVector(t.zero_point.astype(np.int64))
                tflite.QuantizationParametersStart(fb)
                tflite.QuantizationParametersAddScale(fb, scale_off)
                tflite.QuantizationParametersAddZeroPoint(fb, zp_off)
                tflite.QuantizationParametersAddQuantizedDimension(fb, t.quant_dim)
                q_off = tflite.QuantizationParametersEnd(fb)
            tflite.TensorStart(fb)
            tflite.TensorAddShape(fb, shape_off)
            tflite.TensorAddType(fb, _tensor_type(t.dtype))
            tflite.TensorAddBuffer(fb, buffer_of.get((g_index, i), 0))
            tflite.TensorAddName(fb, name_off)
            if q_off is not None:
                tflite.TensorAddQuantization(fb, q_off)
            if t.is_variable:
                tflite.TensorAddIsVariable(fb, True)
            tensor_offsets.append(tflite.TensorEnd(fb))

        # Operators.
        op_offsets = []
        for op in self.ops:
            in_off = fb.CreateNumpyVector(np.asarray(op.inputs, dtype=np.int32))
            out_off = fb.CreateNumpyVector(np.asarray(op.outputs, dtype=np.int32))
            table, which = op.table, op.which
            opt_off = None
            if table is not None:
                opt_off = _build_options(fb, table, op.coerced)
            tflite.OperatorStart(fb)
            tflite.OperatorAddOpcodeIndex(fb, opcode_index[(op.code, op.version)])
            tflite.OperatorAddInputs(fb, in_off)
            tflite.OperatorAddOutputs(fb, out_off)
            if opt_off is not None:
                if which == 1:
                    tflite.OperatorAddBuiltinOptionsType(fb, getattr(tflite.BuiltinOptions, table))
                    tflite.OperatorAddBuiltinOptions(fb, opt_off)
                else:
                    tflite.OperatorAddBuiltinOptions2Type(fb, getattr(tflite.BuiltinOptions2, table))
                    tflite.OperatorAddBuiltinOptions2(fb, opt_off)
            op_offsets.append(tflite.OperatorEnd(fb))

        sg_tensors = table_vector(tflite.SubGraphStartTensorsVector, tensor_offsets)
        sg_inputs = fb.CreateNumpyVector(np.asarray(self.graph_inputs(), dtype=np.int32))
        sg_outputs = fb.CreateNumpyVector(np.asarray(self.graph_outputs(), dtype=np.int32))
        sg_ops = table_vector(tflite.SubGraphStartOperatorsVector, op_offsets)
        sg_name = fb.CreateString(self.name)
        tflite.SubGraphStart(fb)
        tflite.SubGraphAddTensors(fb, sg_tensors)
        tflite.SubGraphAddInputs(fb, sg_inputs)
        tflite.SubGraphAddOutputs(fb, sg_outputs)
        tflite.SubGraphAddOperators(fb, sg_ops)
        tflite.SubGraphAddName(fb, sg_name)
        return tflite.SubGraphEnd(fb)
