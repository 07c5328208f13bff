"""Building TOSA graphs: typed op creation with shape inference, and deduplicated small constants."""

from __future__ import annotations

import numpy as np

from tosaic.ir import Graph, Operation, Value
from tosaic.tosa.ops import infer_result_types

STORAGE = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i48": np.int64, "i64": np.int64, "f32": np.float32,
           "i1": np.bool_}


class TosaBuilder:
    """Appends TOSA ops to a graph. `loc` is stamped on every op made until it is changed."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.loc: str | None = None
        self._constants: dict[tuple, Value] = {}

    def op(self, name: str, operands, attrs: dict | None = None, dtype: str | None = None) -> Value:
        return self.op_multi(name, operands, attrs, dtype)[0]

    def op_multi(self, name: str, operands, attrs: dict | None = None, dtype: str | None = None) -> list[Value]:
        attrs = dict(attrs or {})
        types = infer_result_types(name, operands, attrs, dtype)
        op = self.graph.append(Operation(name, operands, attrs, types, self.loc))
        return op.results

    def const(self, array, dtype: str) -> Value:
        """A tensor constant of element type `dtype`; identical small constants are made once."""
        values = np.asarray(array).astype(STORAGE[dtype])
        key = None
        if values.size <= 64:
            key = ("tensor", dtype, values.shape, values.tobytes())
            if key in self._constants:
                return self._constants[key]
        value = self.op("tosa.const", [], {"values": values}, dtype=dtype)
        if key is not None:
            self._constants[key] = value
        return value

    def scalar(self, value, dtype: str) -> Value:
        """A tensor<1xdtype> constant: the form of zero points, shifts and pad values in TOSA 1.0."""
        return self.const(np.array([value]), dtype)

    def shape(self, dims) -> Value:
        dims = tuple(int(d) for d in dims)
        key = ("shape", dims)
        if key not in self._constants:
            self._constants[key] = self.op("tosa.const_shape", [], {"values": dims})
        return self._constants[key]

    # Shorthands for the ops every legalization needs.

    def reshape(self, x: Value, shape) -> Value:
        if tuple(shape) == x.type.shape:
            return x
        return self.op("tosa.reshape", [x, self.shape(shape)])

    def transpose(self, x: Value, perms) -> Value:
        return self.op("tosa.transpose", [x], {"perms": tuple(perms)})

    def cast(self, x: Value, dtype: str) -> Value:
        return self.op("tosa.cast", [x], dtype=dtype)

    def clamp(self, x: Value, low: int, high: int) -> Value:
        return self.op("tosa.clamp", [x], {"min_val": int(low), "max_val": int(high), "nan_mode": "PROPAGATE"})

    def rescale(self, x: Value, multiplier, shift, input_zp: int, output_zp: int, dtype: str,
                rounding: str = "DOUBLE_ROUND", scale32: bool = True, input_unsigned: bool = False,
                output_unsigned: bool = False) -> Value:
        """RESCALE with one (multiplier, shift) or one per channel of the last dimension."""
        multiplier = np.atleast_1d(np.asarray(multiplier, dtype=np.int64))
        shift = np.atleast_1d(np.asarray(shift, dtype=np.int64))
        per_channel = multiplier.size > 1
        # DOUBLE_ROUND only changes results for shift > 31; TOSA validators accept it only with scale32.
        rounding = rounding if scale32 else "SINGLE_ROUND"
        operands = [x, self.const(multiplier, "i32" if scale32 else "i16"), self.const(shift, "i8"),
                    self.scalar(input_zp, x.type.dtype), self.scalar(output_zp, dtype)]
        attrs = {"scale32": scale32, "rounding_mode": rounding, "per_channel": per_channel,
                 "input_unsigned": input_unsigned, "output_unsigned": output_unsigned}
        return self.op("tosa.rescale", operands, attrs, dtype=dtype)

    def mul_shift(self, a: Value, b: Value, shift: int = 0) -> Value:
        return self.op("tosa.mul", [a, b, self.scalar(shift, "i8")])
