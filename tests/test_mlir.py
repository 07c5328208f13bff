"""MLIR text form of TOSA graphs: print -> parse -> print round trips, interpretation before and after, the
generic form, parse errors with positions, and every test model that imports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_zoo import SUPPORTED, graph_of
from tosaic.ir import Graph, Operation, TensorType
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.interpreter import IMPLEMENTATIONS, interpret
from tosaic.tosa.mlir import MlirParseError, parse_mlir, print_graph
from tosaic.tosa.ops import OPS, infer_result_types

DATA = Path(__file__).parent / "data"

# ------------------------------------------------------------------------------------ sample graphs
#
# One small graph per op (several for ops whose text differs by type or attribute), built with
# TosaBuilder. Each returns the graph and random inputs the interpreter accepts.

_INT_RANGES = {"i1": (0, 2), "i8": (-128, 128), "i16": (-32768, 32768), "i32": (-2**31, 2**31), "i48": (-2**47, 2**47)}


def _random(rng, t: TensorType, low=None, high=None) -> np.ndarray:
    if t.dtype in ("f32", "f16"):
        if low is not None:
            return rng.uniform(low, high, size=t.shape).astype(t.numpy_dtype)
        return rng.standard_normal(t.shape).astype(t.numpy_dtype)
    lo, hi = _INT_RANGES[t.dtype]
    values = rng.integers(lo if low is None else low, hi if high is None else high, size=t.shape)
    return values.astype(t.numpy_dtype)


class _Sample:
    def __init__(self, rng):
        self.rng = rng
        self.graph = Graph("main")
        self.b = TosaBuilder(self.graph)
        self.arrays = []

    def input(self, shape, dtype, low=None, high=None):
        t = TensorType(shape, dtype)
        value = self.graph.add_input(t, f"x{len(self.arrays)}")
        self.arrays.append(_random(self.rng, t, low, high))
        return value

    def const(self, shape, dtype, low=None, high=None):
        return self.b.const(_random(self.rng, TensorType(shape, dtype), low, high), dtype)

    def done(self, *outputs):
        self.graph.set_outputs(outputs, [f"y{i}" for i in range(len(outputs))])
        return self.graph, self.arrays


def _binary(name, dtype, result=None, attrs=None, low=None, high=None, high2=None):
    def make(s):
        a = s.input((2, 3, 4), dtype, low, high)
        b = s.input((1, 3, 4), dtype, low, high2 if high2 is not None else high)
        return s.done(s.b.op(name, [a, b], attrs))
    return make


def _unary(name, dtype, zero_points=False, low=None, high=None):
    def make(s):
        x = s.input((2, 5), dtype, low, high)
        extra = [s.b.scalar(3, dtype), s.b.scalar(-2, dtype)] if zero_points else []
        return s.done(s.b.op(name, [x] + extra))
    return make


def _const(dtype, shape, low=None, high=None):
    def make(s):
        t = TensorType(shape, dtype)
        values = _random(s.rng, t, low, high).astype(t.numpy_dtype)
        op = s.graph.append(Operation("tosa.const", [], {"values": values},
                                      infer_result_types("tosa.const", [], {"values": values}, dtype)))
        return s.done(op.result)
    return make


def _reshape(s):
    x = s.input((2, 3, 4), "i8")
    return s.done(s.b.reshape(x, (6, 4)), s.b.reshape(x, (24,)))


def _pad(s):
    x = s.input((1, 3, 3, 2), "i8")
    padding = s.b.shape((0, 0, 1, 2, 2, 1, 0, 0))
    return s.done(s.b.op("tosa.pad", [x, padding, s.b.scalar(-5, "i8")]))


def _slice(s):
    x = s.input((3, 5, 4), "i16")
    return s.done(s.b.op("tosa.slice", [x, s.b.shape((1, 0, 2)), s.b.shape((2, 3, 2))]))


def _tile(s):
    x = s.input((2, 3), "i32")
    return s.done(s.b.op("tosa.tile", [x, s.b.shape((2, 1))]))


def _concat(s):
    a, b, c = s.input((2, 3), "i8"), s.input((2, 1), "i8"), s.input((2, 2), "i8")
    return s.done(s.b.op("tosa.concat", [a, b, c], {"axis": 1}))


def _gather(s):
    values = s.input((2, 6, 3), "i8")
    indices = s.input((2, 4), "i32", 0, 6)
    return s.done(s.b.op("tosa.gather", [values, indices]))


def _cast(s):
    x = s.input((3, 4), "i8")
    y = s.input((3, 4), "i32")
    f = s.input((3, 4), "f32")
    return s.done(s.b.cast(x, "i32"), s.b.cast(y, "i8"), s.b.cast(x, "i1"), s.b.cast(x, "f32"),
                  s.b.cast(f, "i8"), s.b.cast(f, "f16"))


def _rescale(s):
    x = s.input((2, 3, 4), "i32", -2**20, 2**20)
    y = s.input((2, 4), "i8")
    z = s.input((1, 6), "i16")
    per_channel = s.b.rescale(x, [1 << 30, 3 << 28, 5 << 27, 7 << 27], [33, 34, 35, 40], 0, -3, "i8")
    single = s.b.rescale(y, 1518500250, 31, 4, 0, "i32", rounding="SINGLE_ROUND")
    scale16 = s.b.rescale(z, 16384, 14, 0, 0, "i16", scale32=False)
    unsigned = s.b.rescale(y, 1 << 30, 30, -128, 0, "i8", input_unsigned=True)
    return s.done(per_channel, single, scale16, unsigned)


def _table(s):
    x8 = s.input((2, 5), "i8")
    x16 = s.input((2, 5), "i16")
    t8 = s.const((256,), "i8")
    t16 = s.const((513,), "i16", -1000, 1000)
    return s.done(s.b.op("tosa.table", [x8, t8]), s.b.op("tosa.table", [x16, t16]))


def _conv(name, in_dtype, shapes, attrs):
    def make(s):
        x_shape, w_shape, channels = shapes
        x = s.input(x_shape, in_dtype)
        w = s.const(w_shape, "i8")
        acc = "i32" if in_dtype == "i8" else "i48"
        bias = s.b.const(_random(s.rng, TensorType((channels,), "i32"), -1000, 1000), acc)
        operands = [x, w, bias, s.b.scalar(-7 if in_dtype == "i8" else 0, in_dtype), s.b.scalar(0, "i8")]
        return s.done(s.b.op(name, operands, {**attrs, "acc_type": acc}))
    return make


def _matmul(dtype):
    def make(s):
        a = s.input((2, 3, 5), dtype)
        b = s.const((2, 5, 4), dtype)
        return s.done(s.b.op("tosa.matmul", [a, b, s.b.scalar(0, dtype), s.b.scalar(0, dtype)]))
    return make


def _avg_pool2d(s):
    x = s.input((1, 7, 7, 3), "i8")
    attrs = {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1), "acc_type": "i32"}
    return s.done(s.b.op("tosa.avg_pool2d", [x, s.b.scalar(-4, "i8"), s.b.scalar(5, "i8")], attrs))


def _max_pool2d(s):
    x = s.input((1, 5, 5, 2), "i8")
    y = s.b.op("tosa.max_pool2d", [x], {"kernel": (2, 2), "stride": (1, 1), "pad": (0, 1, 0, 1)})
    z = s.b.op("tosa.max_pool2d", [x], {"kernel": (3, 2), "stride": (2, 1), "pad": (1, 1, 0, 0),
                                        "nan_mode": "IGNORE"})
    return s.done(y, z)


def _clamp(s):
    x = s.input((2, 6), "i8")
    f = s.input((2, 6), "f32")
    return s.done(s.b.clamp(x, -100, 27),
                  s.b.op("tosa.clamp", [f], {"min_val": 0.0, "max_val": 6.0, "nan_mode": "IGNORE"}))


def _mul(s):
    a, b = s.input((2, 3), "i8"), s.input((1, 3), "i8")
    c, d = s.input((2, 3), "i32", -2**15, 2**15), s.input((2, 3), "i32", -2**15, 2**15)
    f, g = s.input((2, 3), "f32"), s.input((2, 3), "f32")
    return s.done(s.b.mul_shift(a, b), s.b.mul_shift(c, d, 7), s.b.mul_shift(f, g))


def _select(s):
    p = s.input((2, 1, 4), "i1")
    a, b = s.input((2, 3, 4), "i8"), s.input((1, 3, 4), "i8")
    return s.done(s.b.op("tosa.select", [p, a, b]))


def _reduce(name, dtype, attrs=None, low=None, high=None):
    def make(s):
        x = s.input((2, 3, 4), dtype, low, high)
        return s.done(s.b.op(name, [x], {"axis": 1, **(attrs or {})}))
    return make


def _argmax(s):
    x = s.input((2, 3, 7), "i8")
    return s.done(s.b.op("tosa.argmax", [x], {"axis": 2}), s.b.op("tosa.argmax", [x], {"axis": 0}))


def _resize(s):
    x = s.input((1, 3, 4, 2), "i8")
    operands = [x, s.b.shape((4, 2, 4, 2)), s.b.shape((0, 0)), s.b.shape((2, 2))]
    return s.done(s.b.op("tosa.resize", operands, {"mode": "BILINEAR"}),
                  s.b.op("tosa.resize", operands, {"mode": "NEAREST_NEIGHBOR"}))


def _variables(prefix):
    """Variables (EXT-VARIABLE) with and without an initial value, read before and after a write; the
    names differ per sample so that samples can share one module."""
    def make(s):
        x = s.input((2, 3), "i8")
        f = s.input((4,), "f32")
        initial = _random(s.rng, TensorType((2, 3), "i8"))
        state, scratch = f"{prefix}_state", f"{prefix}/f32 scratch"
        s.b.op_multi("tosa.variable", [], {"sym_name": state, "var_shape": (2, 3), "type": "i8",
                                           "initial_value": initial})
        s.b.op_multi("tosa.variable", [], {"sym_name": scratch, "var_shape": (4,), "type": "f32"})
        old = s.b.op("tosa.variable_read", [], {"name": state}, dtype=TensorType((2, 3), "i8"))
        s.b.op_multi("tosa.variable_write", [x], {"name": state})
        s.b.op_multi("tosa.variable_write", [f], {"name": scratch})
        new = s.b.op("tosa.variable_read", [], {"name": state}, dtype=TensorType((2, 3), "i8"))
        return s.done(old, new, s.b.op("tosa.variable_read", [], {"name": scratch}, dtype=TensorType((4,), "f32")))
    return make


def _float_constants(s):
    values = np.array([0.1, 1.5, -0.0, 1e-7, 123456789.0, 0.01, 3.4e38, 1e-45, 1 / 3, np.inf, -np.inf,
                       65504.0, 2.0**-14, 1.0, -2.5, 7e-3], dtype=np.float32)
    f32 = s.b.const(values, "f32")
    with np.errstate(over="ignore"):
        halves = values.astype(np.float16)
    f16 = s.graph.append(Operation("tosa.const", [], {"values": halves}, [TensorType((16,), "f16")])).result
    big = s.b.const(s.rng.standard_normal((3, 50)).astype(np.float32), "f32")
    return s.done(f32, f16, big)


SAMPLES = {
    "tosa.const": [_const("i8", (3, 4)), _const("i8", (20, 7)), _const("i16", (5,)), _const("i32", (2, 2, 2)),
                   _const("i48", (4,), -2**40, 2**40), _const("i48", (120,), -2**40, 2**40),
                   _const("i1", (2, 3)), _const("i1", (11, 11)), _const("i32", (1,)), _float_constants],
    "tosa.const_shape": [_reshape],
    "tosa.identity": [_unary("tosa.identity", "i8")],
    "tosa.cast": [_cast],
    "tosa.reshape": [_reshape],
    "tosa.transpose": [lambda s: s.done(s.b.transpose(s.input((2, 3, 4), "i8"), (2, 0, 1)))],
    "tosa.reverse": [lambda s: s.done(s.b.op("tosa.reverse", [s.input((2, 3, 4), "i8")], {"axis": 1}))],
    "tosa.pad": [_pad],
    "tosa.slice": [_slice],
    "tosa.tile": [_tile],
    "tosa.concat": [_concat],
    "tosa.gather": [_gather],
    "tosa.rescale": [_rescale],
    "tosa.table": [_table],
    "tosa.conv2d": [_conv("tosa.conv2d", "i8", ((1, 5, 5, 3), (4, 3, 3, 3), 4),
                          {"pad": (1, 1, 1, 1), "stride": (2, 2), "dilation": (1, 1)}),
                    _conv("tosa.conv2d", "i16", ((1, 6, 6, 2), (3, 2, 2, 2), 3),
                          {"pad": (0, 0, 0, 0), "stride": (1, 1), "dilation": (2, 2), "local_bound": True})],
    "tosa.depthwise_conv2d": [_conv("tosa.depthwise_conv2d", "i8", ((1, 5, 5, 2), (3, 3, 2, 2), 4),
                                    {"pad": (1, 1, 1, 1), "stride": (1, 1), "dilation": (1, 1)})],
    "tosa.transpose_conv2d": [_conv("tosa.transpose_conv2d", "i8", ((1, 3, 3, 2), (4, 3, 3, 2), 4),
                                    {"out_pad": (0, -1, 0, -1), "stride": (2, 2)})],
    "tosa.matmul": [_matmul("i8"), _matmul("i16")],
    "tosa.avg_pool2d": [_avg_pool2d],
    "tosa.max_pool2d": [_max_pool2d],
    "tosa.clamp": [_clamp],
    "tosa.add": [_binary("tosa.add", "i32")],
    "tosa.sub": [_binary("tosa.sub", "i32")],
    "tosa.maximum": [_binary("tosa.maximum", "i32"), _binary("tosa.maximum", "f32", attrs={"nan_mode": "IGNORE"})],
    "tosa.minimum": [_binary("tosa.minimum", "i32")],
    "tosa.bitwise_and": [_binary("tosa.bitwise_and", "i8")],
    "tosa.bitwise_or": [_binary("tosa.bitwise_or", "i16")],
    "tosa.bitwise_xor": [_binary("tosa.bitwise_xor", "i32")],
    "tosa.logical_left_shift": [_binary("tosa.logical_left_shift", "i32", low=0, high2=32)],
    "tosa.logical_right_shift": [_binary("tosa.logical_right_shift", "i8", low=0, high2=8)],
    "tosa.arithmetic_right_shift": [_binary("tosa.arithmetic_right_shift", "i32", attrs={"round": True},
                                            low=0, high2=32),
                                    _binary("tosa.arithmetic_right_shift", "i16", attrs={"round": False},
                                            low=0, high2=16)],
    "tosa.intdiv": [_binary("tosa.intdiv", "i32", low=1)],
    "tosa.logical_and": [_binary("tosa.logical_and", "i1")],
    "tosa.logical_or": [_binary("tosa.logical_or", "i1")],
    "tosa.logical_xor": [_binary("tosa.logical_xor", "i1")],
    "tosa.equal": [_binary("tosa.equal", "i32", low=0, high=3)],
    "tosa.greater": [_binary("tosa.greater", "i32")],
    "tosa.greater_equal": [_binary("tosa.greater_equal", "f32")],
    "tosa.mul": [_mul],
    "tosa.abs": [_unary("tosa.abs", "i32", low=-1000, high=1000)],
    "tosa.clz": [_unary("tosa.clz", "i32")],
    "tosa.bitwise_not": [_unary("tosa.bitwise_not", "i8")],
    "tosa.logical_not": [_unary("tosa.logical_not", "i1")],
    "tosa.negate": [_unary("tosa.negate", "i8", zero_points=True)],
    "tosa.select": [_select],
    "tosa.reduce_sum": [_reduce("tosa.reduce_sum", "i32", low=-1000, high=1000)],
    "tosa.reduce_max": [_reduce("tosa.reduce_max", "i8")],
    "tosa.reduce_min": [_reduce("tosa.reduce_min", "i16", {"nan_mode": "IGNORE"})],
    "tosa.reduce_product": [_reduce("tosa.reduce_product", "f32")],
    "tosa.reduce_all": [_reduce("tosa.reduce_all", "i1")],
    "tosa.reduce_any": [_reduce("tosa.reduce_any", "i1")],
    "tosa.argmax": [_argmax],
    "tosa.resize": [_resize],
    "tosa.variable": [_variables("v")],
    "tosa.variable_read": [_variables("r")],
    "tosa.variable_write": [_variables("w")],
}
for _name in ("tosa.exp", "tosa.log", "tosa.reciprocal", "tosa.rsqrt", "tosa.tanh", "tosa.sigmoid", "tosa.erf",
              "tosa.floor", "tosa.ceil", "tosa.sin", "tosa.cos"):
    SAMPLES[_name] = [_unary(_name, "f32", low=0.1, high=3.0)]

SAMPLE_CASES = [(name, i) for name in sorted(SAMPLES) for i in range(len(SAMPLES[name]))]


def sample_graph(name: str, index: int = 0):
    """The index-th sample graph of op `name`, with its inputs (deterministic)."""
    rng = np.random.default_rng(sum(map(ord, name)) * 31 + index)
    return SAMPLES[name][index](_Sample(rng))


def _interpretable(graph: Graph) -> bool:
    return all(op.name in IMPLEMENTATIONS for op in graph.ops)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _check_round_trip(graph: Graph, inputs=None, generic: bool = False) -> str:
    text = print_graph(graph, generic=generic)
    parsed = parse_mlir(text)
    assert print_graph(parsed, generic=generic) == text
    # The other form of the parsed graph is the other form of the original.
    assert print_graph(parsed, generic=not generic) == print_graph(graph, generic=not generic)
    assert parsed.input_names == graph.input_names and parsed.output_names == graph.output_names
    if inputs is not None and _interpretable(graph):
        for before, after in zip(interpret(graph, inputs), interpret(parsed, inputs)):
            assert _same_bits(before, after)
    return text


# ------------------------------------------------------------------------------------------- tests


def test_every_declared_op_has_a_sample():
    missing = sorted(set(OPS) - set(SAMPLES))
    assert not missing, f"add a sample graph to SAMPLES in tests/test_mlir.py for {missing}"


def test_every_interpreted_op_is_interpreted_by_a_sample():
    graphs = [sample_graph(name, i)[0] for name, i in SAMPLE_CASES]
    covered = {op.name for graph in graphs if _interpretable(graph) for op in graph.ops}
    assert set(IMPLEMENTATIONS) & set(OPS) <= covered, sorted(set(IMPLEMENTATIONS) & set(OPS) - covered)


@pytest.mark.parametrize("name,index", SAMPLE_CASES)
def test_round_trip_pretty(name, index):
    graph, inputs = sample_graph(name, index)
    text = _check_round_trip(graph, inputs)
    assert f" {name} " in text or f'"{name}"' in text


@pytest.mark.parametrize("name,index", SAMPLE_CASES)
def test_round_trip_generic(name, index):
    graph, inputs = sample_graph(name, index)
    text = _check_round_trip(graph, inputs, generic=True)
    assert f'"{name}"(' in text


SNIPPET = """\
module {
  func.func @main(%arg0: tensor<1x8x8x4xi8> {tosa.tensor_name = "input"}) -> (tensor<1x8x8x8xi8> {tosa.tensor_name = "output"}) {
    %0 = "tosa.const"() <{values = dense<1> : tensor<8x3x3x4xi8>}> : () -> tensor<8x3x3x4xi8>
    %1 = "tosa.const"() <{values = dense<[0, 1, 2, 3, 4, 5, 6, -7]> : tensor<8xi32>}> : () -> tensor<8xi32>
    %2 = "tosa.const"() <{values = dense<-3> : tensor<1xi8>}> : () -> tensor<1xi8>
    %3 = "tosa.const"() <{values = dense<0> : tensor<1xi8>}> : () -> tensor<1xi8>
    %4 = tosa.conv2d %arg0, %0, %1, %2, %3 {acc_type = i32, dilation = array<i64: 1, 1>, pad = array<i64: 1, 1, 1, 1>, stride = array<i64: 1, 1>} : (tensor<1x8x8x4xi8>, tensor<8x3x3x4xi8>, tensor<8xi32>, tensor<1xi8>, tensor<1xi8>) -> tensor<1x8x8x8xi32>
    %5 = "tosa.const"() <{values = dense<1073741824> : tensor<1xi32>}> : () -> tensor<1xi32>
    %6 = "tosa.const"() <{values = dense<35> : tensor<1xi8>}> : () -> tensor<1xi8>
    %7 = "tosa.const"() <{values = dense<0> : tensor<1xi32>}> : () -> tensor<1xi32>
    %8 = tosa.rescale %4, %5, %6, %7, %2 {input_unsigned = false, output_unsigned = false, per_channel = false, rounding_mode = DOUBLE_ROUND, scale32 = true} : (tensor<1x8x8x8xi32>, tensor<1xi32>, tensor<1xi8>, tensor<1xi32>, tensor<1xi8>) -> tensor<1x8x8x8xi8>
    %9 = tosa.clamp %8 {max_val = 127 : i8, min_val = -3 : i8} : (tensor<1x8x8x8xi8>) -> tensor<1x8x8x8xi8>
    %10 = tosa.const_shape  {values = dense<[1, 64, 8]> : tensor<3xindex>} : () -> !tosa.shape<3>
    %11 = tosa.reshape %9, %10 : (tensor<1x8x8x8xi8>, !tosa.shape<3>) -> tensor<1x64x8xi8>
    %12 = tosa.const_shape  {values = dense<[1, 8, 8, 8]> : tensor<4xindex>} : () -> !tosa.shape<4>
    %13 = tosa.reshape %11, %12 : (tensor<1x64x8xi8>, !tosa.shape<4>) -> tensor<1x8x8x8xi8>
    return %13 : tensor<1x8x8x8xi8>
  }
}
"""


def test_snippet_round_trips_and_runs():
    graph = parse_mlir(SNIPPET)
    assert print_graph(graph) == SNIPPET
    assert str(graph) == SNIPPET
    assert graph.input_names == ["input"] and graph.output_names == ["output"]
    x = np.random.default_rng(0).integers(-128, 128, (1, 8, 8, 4)).astype(np.int8)
    (y,) = interpret(graph, [x])
    assert y.shape == (1, 8, 8, 8) and y.dtype == np.int8 and y.min() >= -3
    again = parse_mlir(print_graph(graph, generic=True))
    assert _same_bits(interpret(again, [x])[0], y)


GENERIC_SNIPPET = """\
"builtin.module"() ({
  "func.func"() <{function_type = (tensor<2x3xi32>, tensor<1x3xi32>) -> tensor<2x3xi32>, sym_name = "main"}> ({
  ^bb0(%arg0: tensor<2x3xi32>, %arg1: tensor<1x3xi32>):
    %0 = "tosa.add"(%arg0, %arg1) : (tensor<2x3xi32>, tensor<1x3xi32>) -> tensor<2x3xi32>
    %1 = "tosa.maximum"(%0, %arg0) <{nan_mode = #tosa.nan_mode<PROPAGATE>}> : (tensor<2x3xi32>, tensor<2x3xi32>) -> tensor<2x3xi32>
    %2 = "tosa.reduce_max"(%1) <{axis = 1 : i32, nan_mode = #tosa.nan_mode<IGNORE>}> : (tensor<2x3xi32>) -> tensor<2x1xi32>
    %3 = "tosa.add"(%1, %2) : (tensor<2x3xi32>, tensor<2x1xi32>) -> tensor<2x3xi32>
    "func.return"(%3) : (tensor<2x3xi32>) -> ()
  }) : () -> ()
}) : () -> ()
"""


def test_generic_snippet_round_trips():
    graph = parse_mlir(GENERIC_SNIPPET)
    assert print_graph(graph, generic=True) == GENERIC_SNIPPET
    pretty = print_graph(graph)
    assert "%1 = tosa.maximum %0, %arg0 : (tensor<2x3xi32>, tensor<2x3xi32>) -> tensor<2x3xi32>" in pretty
    assert "%2 = tosa.reduce_max %1 {axis = 1 : i32, nan_mode = IGNORE}" in pretty
    assert print_graph(parse_mlir(pretty), generic=True) == GENERIC_SNIPPET


def test_reads_other_spellings():
    """Text other producers write: no module, comments, SSA names, discardable-attribute dicts, locations,
    quoted enums, hex floats, unsigned spellings of negative integers, a resource blob, private helpers."""
    text = """
    // A comment.
    #loc1 = loc("model.tflite":3:4)
    func.func private @helper(%x: tensor<1xi8>) -> tensor<1xi8> {
      return %x : tensor<1xi8>
    }
    func.func @entry(%input: tensor<2x2xf32>, %flags: tensor<2x2xi1>) -> (tensor<2x2xf32>, tensor<4xi8>, tensor<2xi48>) attributes {tf.entry_function = {inputs = "a,b", outputs = "c,d,e"}} {
      %low = "tosa.const"() {values = dense<[[0x3F800000, -2.5], [1.0e-3, 0x7F800000]]> : tensor<2x2xf32>} : () -> tensor<2x2xf32> loc(#loc1)
      %m = "tosa.maximum"(%input, %low) {nan_mode = "IGNORE"} : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32> loc("max"("inner":1:1))
      %r = tosa.select %flags, %m, %input : (tensor<2x2xi1>, tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32> loc(unknown)
      %b = "tosa.const"() {values = dense<[255, 128, 127, 0]> : tensor<4xi8>} : () -> tensor<4xi8>
      %w = "tosa.const"() {values = dense_resource<blob0> : tensor<2xi48>} : () -> tensor<2xi48>
      return %r, %b, %w : tensor<2x2xf32>, tensor<4xi8>, tensor<2xi48>
    }
    {-#
      dialect_resources: {
        builtin: {
          blob0: "0x08000000FFFFFFFFFFFF000000000080"
        }
      }
    #-}
    """
    graph = parse_mlir(text)
    assert graph.name == "entry"
    assert graph.input_names == ["a", "b"] and graph.output_names == ["c", "d", "e"]
    const, maximum, select, b, w = graph.ops
    assert const.loc == "model.tflite:3:4" and maximum.loc == "max" and select.loc is None
    assert const.attrs["values"].tolist() == [[1.0, -2.5], [float(np.float32(1e-3)), np.inf]]
    assert maximum.attrs["nan_mode"] == "IGNORE"
    assert b.attrs["values"].tolist() == [-1, -128, 127, 0]
    assert w.attrs["values"].tolist() == [-1, -(2**47)]
    assert parse_mlir(print_graph(graph)).output_names == ["c", "d", "e"]
    assert print_graph(parse_mlir(print_graph(graph))) == print_graph(graph)


def test_reads_module_attributes_tosa_tools_add():
    """tosa-opt --tosa-attach-target and --tosa-deserialize put attributes on the module."""
    body = GENERIC_SNIPPET.split("\n", 1)[1].rsplit("}) : () -> ()", 1)[0]
    deserialized = '"builtin.module"() ({\n' + body + \
        '}) {tosa.description = "TOSA FBS Converted", tosa.fbs_version = "1.0.2d"} : () -> ()\n'
    assert print_graph(parse_mlir(deserialized), generic=True) == GENERIC_SNIPPET
    pretty = print_graph(parse_mlir(GENERIC_SNIPPET))
    attached = pretty.replace("module {", 'module attributes {tosa.target_env = #tosa.target_env<specification_version '
                              '= "1.0", level = "8k", profiles = [pro_int, pro_fp], extensions = [doubleround, '
                              'int16]>} {')
    assert attached != pretty and print_graph(parse_mlir(attached)) == pretty


def test_floats_print_as_mlir_does():
    graph, _ = sample_graph("tosa.const", len(SAMPLES["tosa.const"]) - 1)
    text = print_graph(graph)
    assert ("dense<[1.000000e-01, 1.500000e+00, -0.000000e+00, 1.000000e-07, 0x4CEB79A3, 0.00999999977, "
            "3.400000e+38, 1.401300e-45, 0.333333343, 0x7F800000, 0xFF800000, 6.550400e+04, 6.10351563E-5, "
            "1.000000e+00, -2.500000e+00, 7.000000e-03]> : tensor<16xf32>") in text
    assert 'dense<"0x' in text  # the 150-element constant
    parsed = parse_mlir(text)
    for before, after in zip(graph.ops, parsed.ops):
        assert _same_bits(before.attrs["values"], after.attrs["values"])


def test_i48_and_bool_constants_round_trip_exactly():
    for index in range(len(SAMPLES["tosa.const"])):
        graph, _ = sample_graph("tosa.const", index)
        parsed = parse_mlir(print_graph(graph))
        for before, after in zip(graph.ops, parsed.ops, strict=True):
            assert before.result.type == after.result.type
            assert _same_bits(before.attrs["values"], after.attrs["values"])


def test_elided_constants():
    graph, _ = sample_graph("tosa.conv2d", 0)
    text = print_graph(graph, elide_constants=True)
    assert "dense_resource<__elided__> : tensor<4x3x3x3xi8>" in text
    assert "dense<-7> : tensor<1xi8>" in text
    with pytest.raises(MlirParseError, match="elided"):
        parse_mlir(text)


def test_locations_print_on_request():
    graph, inputs = sample_graph("tosa.add")
    graph.ops[0].loc = 'tfl.add#0:out "q"'
    text = print_graph(graph, locs=True)
    assert 'loc("tfl.add#0:out \\22q\\22")' in text
    assert parse_mlir(text).ops[0].loc == 'tfl.add#0:out "q"'
    assert "loc(" not in print_graph(graph)


def _error(text: str) -> MlirParseError:
    with pytest.raises(MlirParseError) as info:
        parse_mlir(text)
    return info.value


def test_error_bad_token_has_position():
    e = _error("module {\n  func.func @main() {\n    return $\n  }\n}\n")
    assert (e.line, e.column) == (3, 12)
    assert str(e).startswith("3:12:")


def test_error_tensor_beyond_tosa_level_8k():
    """A type of 2^31 elements or more is refused before anything is allocated (a fuzz find: 10^30 elements
    overflowed numpy, 2^30 int64 values ran the parser out of memory)."""
    e = _error("func.func @main(%x: tensor<65536x32768xi8>) -> tensor<65536x32768xi8> {\n  return %x : "
               "tensor<65536x32768xi8>\n}\n")
    assert "2^31 elements or more, beyond TOSA level 8K" in str(e) and e.line == 1


def test_error_unknown_op_is_named():
    text = SNIPPET.replace("tosa.clamp %8", "tosa.clampx %8")
    e = _error(text)
    assert "tosa.clampx" in str(e) and (e.line, e.column) == (12, 10)


def test_error_result_type_mismatch():
    text = SNIPPET.replace("-> tensor<1x8x8x8xi32>\n", "-> tensor<1x8x8x7xi32>\n")
    e = _error(text)
    assert e.line == 7 and "tensor<1x8x8x8xi32>" in str(e) and "tensor<1x8x8x7xi32>" in str(e)


def test_error_operand_type_mismatch():
    text = SNIPPET.replace("%10 : (tensor<1x8x8x8xi8>", "%10 : (tensor<1x8x8x8xi16>")
    e = _error(text)
    assert (e.line, e.column) == (14, 24) and "operand #0" in str(e)


def test_error_verification_failure():
    text = SNIPPET.replace("max_val = 127 : i8", "max_val = -5 : i8")
    e = _error(text)
    assert e.line == 12 and "min_val > max_val" in str(e)


def test_error_attribute_kinds():
    cases = {
        "acc_type = i32": ("acc_type = 3 : i32", "acc_type must be an element type"),
        "pad = array<i64: 1, 1, 1, 1>": ("pad = array<i32: 1, 1, 1, 1>", "pad must be array<i64: ...>"),
        "rounding_mode = DOUBLE_ROUND": ("rounding_mode = TRIPLE_ROUND", "must be one of SINGLE_ROUND"),
        "scale32 = true": ("scale32 = 1 : i32", "scale32 must be true or false"),
        "max_val = 127 : i8": ("max_val = 127 : i32", "max_val must be a number typed i8"),
        "dense<1> : tensor<8x3x3x4xi8>": ("dense<1> : tensor<8x3x3x5xi8>", "values have type tensor<8x3x3x5xi8>"),
    }
    for old, (new, message) in cases.items():
        assert SNIPPET.count(old) == 1
        e = _error(SNIPPET.replace(old, new))
        assert message in str(e) and e.line > 1


def test_error_syntax_messages():
    assert "undefined value %99" in str(_error(SNIPPET.replace("tosa.clamp %8", "tosa.clamp %99")))
    assert "expected a type" in str(_error(SNIPPET.replace("(tensor<1x8x8x8xi8>) -> tensor<1x8x8x8xi8>", "")))
    assert "expected ':'" in str(_error(SNIPPET.replace(": (tensor<1x8x8x8xi8>) -> tensor<1x8x8x8xi8>", "")))
    assert "no attribute 'foo'" in str(_error(SNIPPET.replace("acc_type = i32,", "acc_type = i32, foo = 1 : i32,")))
    assert "dynamic" in str(_error("func.func @main(%a: tensor<?x4xi8>) { return }"))
    assert "no func.func" in str(_error("module {\n}\n"))
    assert "does not fit" in str(_error(SNIPPET.replace("dense<-3> : tensor<1xi8>", "dense<-300> : tensor<1xi8>")))
    e = _error('module {\n  func.func @main() {\n    return\n  }\n  "unterminated\n}\n')
    assert e.line == 5


# ---------------------------------------------------------------------------------- the test models


# Every model tosaic imports; the ones it refuses are checked for a clear refusal in test_models.py.
MODELS = SUPPORTED


def model_inputs(path: Path, graph: Graph) -> list[np.ndarray]:
    io = np.load(path.with_suffix(".io.npz"))
    return [io[f"in_{i}"] for i in range(len(graph.inputs))]


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_model_round_trip(path):
    """A model that imports prints, parses back to the same text (both forms), and computes the same bits."""
    graph = graph_of(path)
    text = print_graph(graph)
    parsed = parse_mlir(text)
    assert print_graph(parsed) == text
    assert parsed.input_names == graph.input_names and parsed.output_names == graph.output_names
    generic = print_graph(graph, generic=True)
    assert print_graph(parse_mlir(generic), generic=True) == generic
    if _interpretable(graph):
        inputs = model_inputs(path, graph)
        for before, after in zip(interpret(graph, inputs), interpret(parsed, inputs), strict=True):
            assert _same_bits(before, after)
