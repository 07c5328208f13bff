"""SSA core shared by the dialects: element and tensor types, values, operations and graphs.

A Graph is a single-block function: block arguments (inputs), a list of operations in program order,
and the values it returns. Operations are generic (a name, operands, attributes, result types); what an
op means lives in its dialect's declarations, never here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# TOSA element types and the numpy dtype a value of that type is stored in. i48 lives in int64; its range
# is checked where it matters (accumulators), not by the storage type.
NUMPY_DTYPES = {
    "i1": np.dtype(np.bool_),
    "i4": np.dtype(np.int8),
    "i8": np.dtype(np.int8),
    "i16": np.dtype(np.int16),
    "i32": np.dtype(np.int32),
    "i48": np.dtype(np.int64),
    "i64": np.dtype(np.int64),
    "f16": np.dtype(np.float16),
    "f32": np.dtype(np.float32),
}

INTEGER_BITS = {"i1": 1, "i4": 4, "i8": 8, "i16": 16, "i32": 32, "i48": 48, "i64": 64}


def integer_range(dtype: str) -> tuple[int, int]:
    """The signed range of an integer element type, e.g. (-128, 127) for i8."""
    bits = INTEGER_BITS[dtype]
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def element_type_of(array: np.ndarray) -> str:
    """The TOSA element type that stores a numpy array of this dtype (int64 maps to i64)."""
    for name in ("i1", "i8", "i16", "i32", "i64", "f16", "f32"):
        if NUMPY_DTYPES[name] == array.dtype:
            return name
    raise TypeError(f"no TOSA element type for numpy dtype {array.dtype}")


@dataclass(frozen=True)
class TensorType:
    """A ranked tensor type: static shape and element type."""

    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self):
        if self.dtype not in NUMPY_DTYPES:
            raise TypeError(f"unknown element type {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def numpy_dtype(self) -> np.dtype:
        return NUMPY_DTYPES[self.dtype]

    def with_shape(self, shape) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        return f"tensor<{dims}{self.dtype}>"


@dataclass(frozen=True)
class ShapeType:
    """A compile-time list of dimension sizes (TOSA 1.0 `!tosa.shape<rank>`), made by CONST_SHAPE."""

    rank: int

    def __str__(self) -> str:
        return f"!tosa.shape<{self.rank}>"


Type = TensorType | ShapeType


class Value:
    """An SSA value: a graph input (owner None) or the index-th result of an operation."""

    __slots__ = ("type", "owner", "index", "name")

    def __init__(self, type: Type, owner: Operation | None = None, index: int = 0, name: str | None = None):
        self.type = type
        self.owner = owner
        self.index = index
        self.name = name

    def __repr__(self) -> str:
        return f"Value({self.name or '?'}: {self.type})"


class Operation:
    """A generic operation. `loc` says where it came from (e.g. the TFLite op it was legalized from)."""

    __slots__ = ("name", "operands", "attrs", "results", "loc")

    def __init__(self, name: str, operands, attrs: dict, result_types, loc: str | None = None):
        self.name = name
        self.operands = list(operands)
        self.attrs = dict(attrs)
        self.results = [Value(t, self, i) for i, t in enumerate(result_types)]
        self.loc = loc

    @property
    def result(self) -> Value:
        (only,) = self.results
        return only

    def __repr__(self) -> str:
        return f"Operation({self.name}, {len(self.operands)} operands, loc={self.loc!r})"


class Graph:
    """A function: named inputs, operations in program order, named outputs."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.ops: list[Operation] = []
        self.outputs: list[Value] = []
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        # Per input/output name, what the source model says of it: {"dtype": numpy dtype name, and
        # "scale"/"zero_point" lists when quantized}. uint8 travels as i8 bits but is reported as uint8.
        self.io_info: dict[str, dict] = {}
        # Values that are a tensor of the source model, by that tensor's name (for per-layer comparison).
        self.source_names: dict[Value, str] = {}

    def add_input(self, type: Type, name: str) -> Value:
        value = Value(type, None, len(self.inputs), name)
        self.inputs.append(value)
        self.input_names.append(name)
        return value

    def append(self, op: Operation) -> Operation:
        self.ops.append(op)
        return op

    def set_outputs(self, values, names) -> None:
        self.outputs = list(values)
        self.output_names = list(names)

    def users(self) -> dict[Value, list[Operation]]:
        """Map from each value to the operations that read it."""
        uses: dict[Value, list[Operation]] = {}
        for op in self.ops:
            for operand in op.operands:
                uses.setdefault(operand, []).append(op)
        return uses

    def __str__(self) -> str:
        if _graph_formatter is None:
            return f"<Graph {self.name}: {len(self.ops)} ops>"
        return _graph_formatter(self)


# The dialect that owns textual form registers its printer here, so that this module never imports upward.
_graph_formatter = None


def set_graph_formatter(formatter) -> None:
    global _graph_formatter
    _graph_formatter = formatter
