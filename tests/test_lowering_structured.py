"""The structured-op lowering (tosaic/lowering) on its own: the numpy structured interpreter against the TOSA
reference interpreter, bit for bit.

Every model in tests/data is lowered (`from_tosa.lower`) and run by `interpret_structured` on seeded random
inputs; the outputs must equal `tosaic.tosa.interpreter.interpret` on the same inputs. Then each named
structured op (conv2d, depthwise conv2d, matmul, pool) is built straight from a TOSA graph over
hypothesis-drawn shapes, strides, dilations, paddings and zero points, generalized to `linalg.generic`, and
run through the structured interpreter against the TOSA interpreter. Last, the printed form.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import model_zoo
from exactness import assert_same
from tosaic.ir import Graph, TensorType
from tosaic.lowering.from_tosa import lower
from tosaic.lowering.interpreter import interpret_structured, run_generic
from tosaic.lowering.structured import NAMED, PARALLEL, REDUCTION, generalize, print_structured
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.interpreter import initial_state, interpret

SLOW_IN_STRUCTURED = {"arch_mobilenet_v2_1.0_224"}


def random_array(rng, t: TensorType, low=None, high=None) -> np.ndarray:
    """Integers over the dtype's whole range (or [low, high]), floats in [-4, 4], booleans fair coins."""
    dtype = t.numpy_dtype
    if dtype == np.bool_:
        return rng.integers(0, 2, size=t.shape).astype(np.bool_)
    if dtype.kind == "f":
        return rng.uniform(-4, 4, size=t.shape).astype(dtype)
    info = np.iinfo(dtype)
    lo = info.min if low is None else low
    hi = info.max if high is None else high
    return rng.integers(lo, hi, size=t.shape, endpoint=True, dtype=np.int64).astype(dtype)


def _zoo_params():
    params = []
    for path in model_zoo.SUPPORTED:
        marks = [pytest.mark.slow] if path.stem in SLOW_IN_STRUCTURED else []
        params.append(pytest.param(path.stem, marks=marks, id=path.stem))
    return params


# ------------------------------------------------------------------------------------ every model


@pytest.mark.parametrize("name", _zoo_params())
def test_structured_interpreter_equals_tosa_interpreter(name):
    graph = model_zoo.graph_of(model_zoo.DATA / f"{name}.tflite")
    structured = lower(graph)
    assert not any(op.name.startswith("tosa.") for op in structured.ops)
    rng = np.random.default_rng(1234)
    steps = 3 if graph.ops and initial_state(graph) else 1
    tosa_state, structured_state = initial_state(graph), None
    structured_state = {k: (None if v is None else v.copy()) for k, v in structured.state.items()}
    for step in range(steps):
        inputs = [random_array(rng, v.type) for v in graph.inputs]
        want = interpret(graph, [x.copy() for x in inputs], state=tosa_state)
        got = interpret_structured(structured, [x.copy() for x in inputs], structured_state)
        assert_same(got, want, f"{name} step {step}")


def test_every_zoo_model_is_covered():
    assert len(model_zoo.SUPPORTED) >= 70 and not model_zoo.REFUSED


# ---------------------------------------------------------------------- named ops, generalized

zero_point8 = st.integers(-128, 127)


def _graph_with(build, seed):
    """A one-op TOSA graph made by `build(b, graph, rng)` (returns the output value), and its inputs."""
    rng = np.random.default_rng(seed)
    graph = Graph("main")
    b = TosaBuilder(graph)
    out = build(b, graph, rng)
    graph.set_outputs([out], ["out"])
    inputs = [random_array(rng, v.type) for v in graph.inputs]
    return graph, inputs


def _check_generalized(graph, inputs, named: str):
    """The lowered graph holds `named`; its generic form (run alone) and the whole structured program
    equal the TOSA interpreter."""
    want = interpret(graph, [x.copy() for x in inputs])
    structured = lower(graph)
    ops = [op for op in structured.ops if op.name == named]
    assert len(ops) == 1, [op.name for op in structured.ops]
    (op,) = ops
    general = generalize(op)
    assert general.name == "linalg.generic"
    its = general.attrs["iterators"]
    assert REDUCTION in its and its.index(REDUCTION) == its.count(PARALLEL), its  # parallel loops first
    assert len(general.attrs["domain"]) == len(its) == len(general.attrs["accesses"][0].map.coeffs[0])
    # Run the generic op alone on the values the structured program feeds it.
    env = dict(zip(structured.inputs, inputs))
    for other in structured.ops:
        if other is op:
            break
        if other.name == "linalg.const":
            env[other.result] = other.attrs["values"]
    (result,) = run_generic(general, [env[v] for v in op.operands])
    result = result.reshape(op.result.type.shape)
    if op is structured.ops[-1] or op.result in structured.outputs:
        assert_same([result], want, f"generic {named}")
    assert_same(interpret_structured(structured, [x.copy() for x in inputs]), want, named)


def exact_size(out: int, kernel: int, stride: int, dilation: int, pads: int) -> int:
    """An input size giving `out` (or more) outputs with no remainder (TOSA's idiv_check): (in + pads -
    dilated kernel) is a multiple of the stride."""
    while True:
        size = (out - 1) * stride + (kernel - 1) * dilation + 1 - pads
        if size >= 1:
            return size
        out += 1


@st.composite
def conv_cases(draw, depthwise: bool):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dy, dx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 3)) for _ in range(4))
    h = exact_size(draw(st.integers(1, 5)), kh, sy, dy, pad[0] + pad[1])
    w = exact_size(draw(st.integers(1, 5)), kw, sx, dx, pad[2] + pad[3])
    n = draw(st.integers(1, 2))
    ic = draw(st.integers(1, 5))
    oc = draw(st.integers(1, 3)) if depthwise else draw(st.integers(1, 6))
    int16 = draw(st.booleans())
    in_zp = 0 if int16 else draw(zero_point8)
    return dict(kernel=(kh, kw), stride=(sy, sx), dilation=(dy, dx), pad=pad, x=(n, h, w, ic), oc=oc,
                int16=int16, in_zp=in_zp, w_zp=draw(zero_point8), seed=draw(st.integers(0, 2**31)))


def _conv_graph(case, depthwise):
    kh, kw = case["kernel"]
    n, h, w, ic = case["x"]
    in_dtype = "i16" if case["int16"] else "i8"
    acc = "i48" if case["int16"] else "i32"

    def build(b, graph, rng):
        x = graph.add_input(TensorType((n, h, w, ic), in_dtype), "x")
        if depthwise:
            w_shape, channels = (kh, kw, ic, case["oc"]), ic * case["oc"]
        else:
            w_shape, channels = (case["oc"], kh, kw, ic), case["oc"]
        weights = b.const(rng.integers(-128, 128, size=w_shape), "i8")
        bias = b.const(rng.integers(-5000, 5000, size=channels), acc)
        name = "tosa.depthwise_conv2d" if depthwise else "tosa.conv2d"
        attrs = {"pad": case["pad"], "stride": case["stride"], "dilation": case["dilation"], "acc_type": acc}
        return b.op(name, [x, weights, bias, b.scalar(case["in_zp"], in_dtype), b.scalar(case["w_zp"], "i8")],
                    attrs)

    return _graph_with(build, case["seed"])


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(depthwise=False))
def test_generalized_conv2d(case):
    graph, inputs = _conv_graph(case, depthwise=False)
    _check_generalized(graph, inputs, "linalg.conv2d")


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(depthwise=True))
def test_generalized_depthwise_conv2d(case):
    graph, inputs = _conv_graph(case, depthwise=True)
    _check_generalized(graph, inputs, "linalg.depthwise_conv2d")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 6), c=st.integers(1, 9), w=st.integers(1, 6),
       int16=st.booleans(), a_zp=zero_point8, b_zp=zero_point8, seed=st.integers(0, 2**31))
def test_generalized_matmul(n, h, c, w, int16, a_zp, b_zp, seed):
    dtype = "i16" if int16 else "i8"
    if int16:
        a_zp = b_zp = 0

    def build(b, graph, rng):
        a = graph.add_input(TensorType((n, h, c), dtype), "a")
        bb = graph.add_input(TensorType((n, c, w), dtype), "b")
        return b.op("tosa.matmul", [a, bb, b.scalar(a_zp, dtype), b.scalar(b_zp, dtype)])

    graph, inputs = _graph_with(build, seed)
    _check_generalized(graph, inputs, "linalg.matmul")


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pad = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)),
           draw(st.integers(0, kw - 1)))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = exact_size(draw(st.integers(1, 5)), kh, sy, 1, pad[0] + pad[1])
    w = exact_size(draw(st.integers(1, 5)), kw, sx, 1, pad[2] + pad[3])
    return dict(kernel=(kh, kw), stride=(sy, sx), pad=pad,
                x=(draw(st.integers(1, 2)), h, w, draw(st.integers(1, 5))), kind=draw(st.sampled_from(["avg", "max"])),
                int16=draw(st.booleans()), in_zp=draw(zero_point8), out_zp=draw(zero_point8),
                seed=draw(st.integers(0, 2**31)))


@settings(max_examples=40, deadline=None)
@given(case=pool_cases())
def test_generalized_pool(case):
    dtype = "i16" if case["int16"] else "i8"
    in_zp, out_zp = (0, 0) if case["int16"] else (case["in_zp"], case["out_zp"])

    def build(b, graph, rng):
        x = graph.add_input(TensorType(case["x"], dtype), "x")
        attrs = {"kernel": case["kernel"], "stride": case["stride"], "pad": case["pad"]}
        if case["kind"] == "avg":
            return b.op("tosa.avg_pool2d", [x, b.scalar(in_zp, dtype), b.scalar(out_zp, dtype)],
                        {**attrs, "acc_type": "i32"})
        return b.op("tosa.max_pool2d", [x], attrs)

    graph, inputs = _graph_with(build, case["seed"])
    _check_generalized(graph, inputs, "linalg.pool")


def test_generalize_leaves_other_ops_alone():
    graph = model_zoo.graph_of(model_zoo.DATA / "op_add_relu.tflite")
    structured = lower(graph)
    for op in structured.ops:
        if op.name not in NAMED:
            assert generalize(op) is op


def test_depthwise_generic_form_splits_the_multiplier():
    """A depthwise conv's generic form is indexed [N, OH, OW, C, M]: C*M output channels as two loops."""
    case = dict(kernel=(3, 2), stride=(2, 1), dilation=(1, 2), pad=(1, 1, 0, 1), x=(1, 7, 5, 3), oc=2,
                int16=False, in_zp=-3, w_zp=5, seed=3)
    graph, inputs = _conv_graph(case, depthwise=True)
    (op,) = [o for o in lower(graph).ops if o.name == "linalg.depthwise_conv2d"]
    general = generalize(op)
    n, oh, ow, channels = op.result.type.shape
    assert general.results[0].type.shape == (n, oh, ow, 3, 2)
    assert general.attrs["domain"] == (n, oh, ow, 3, 2, 3, 2)
    _check_generalized(graph, inputs, "linalg.depthwise_conv2d")


# ----------------------------------------------------------------------------------------- printing


def test_print_structured_shows_generic_ops_and_maps():
    graph = model_zoo.graph_of(model_zoo.DATA / "op_conv2d_s2_same_relu6.tflite")
    structured = lower(graph)
    text = print_structured(structured)
    assert text.startswith("func @") and text.rstrip().endswith("}")
    assert "linalg.conv2d" in text and "linalg.generic" in text
    # A rescale reads its input through the identity map over a rank-4 domain, written as an affine map.
    assert "(d0, d1, d2, d3) -> (d0, d1, d2, d3)" in text
    assert "iterators=[p, p, p, p]" in text
    assert "apply_scale" in text
    # Every op of the program is on a line of its own.
    assert sum(line.lstrip().startswith("%") and "= linalg." in line for line in text.splitlines()) \
        == len([op for op in structured.ops if op.results])


def test_print_structured_of_generalized_conv_shows_reduction_maps():
    case = dict(kernel=(3, 3), stride=(2, 2), dilation=(1, 1), pad=(1, 1, 1, 1), x=(1, 7, 7, 2), oc=4,
                int16=False, in_zp=-1, w_zp=0, seed=0)
    graph, _ = _conv_graph(case, depthwise=False)
    structured = lower(graph)
    (conv,) = [op for op in structured.ops if op.name == "linalg.conv2d"]
    general = generalize(conv)
    general.results = conv.results  # same [N, OH, OW, OC] result: the generic op takes the conv's place
    conv.results[0].owner = general
    structured.ops[structured.ops.index(conv)] = general
    text = print_structured(structured)
    assert "linalg.conv2d" not in text
    assert "iterators=[p, p, p, p, r, r, r]" in text
    # The input is read at (n, 2*oh + kh - 1, 2*ow + kw - 1, ic), padded with the input zero point.
    assert "(d0, d1, d2, d3, d4, d5, d6) -> (d0, 2*d1 + d4 - 1, 2*d2 + d5 - 1, d6) pad -1" in text
    assert "init" in text
