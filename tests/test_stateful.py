"""Stateful streaming models: resource variables (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, CALL_ONCE)
imported as TOSA variables, stepped through tosaic and through LiteRT's reference kernels (BUILTIN_REF)
with the same inputs, bit for bit at every step.

The models are built without TensorFlow (tests/tflite_builder.py, with an initialization subgraph that
CALL_ONCE runs): an int8 conv over a ring buffer of the last K frames, a leaky int8 accumulator whose
initial value is computed by the initialization subgraph, a float32 ring buffer, and a model that pins
down the semantics (initializers in order, each once, read after write in one invocation, a variable
without initializer written before it is read). `CompiledModel.reset()` must bring back what a new
LiteRT interpreter starts from (LiteRT's own `reset_all_variables()` does not touch resource variables).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from exactness import assert_same
from litert_ref import make_interpreter
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.importer import LegalizationError, UnsupportedModelError
from tosaic.tosa.interpreter import TosaRuntimeError, interpret
from tosaic.tosa.mlir import parse_mlir, print_graph


def f32(x: float) -> float:
    return float(np.float32(x))


# ------------------------------------------------------------------------------------------- stepping


class LiteRTStepper:
    """One LiteRT BUILTIN_REF interpreter, invoked again and again like a streaming application does."""

    def __init__(self, model: bytes):
        self.interpreter = make_interpreter(model)
        self.interpreter.allocate_tensors()

    def __call__(self, inputs) -> list[np.ndarray]:
        it = self.interpreter
        for detail, x in zip(it.get_input_details(), inputs):
            it.set_tensor(detail["index"], np.array(x, copy=True))
        it.invoke()
        return [np.array(it.get_tensor(d["index"]), copy=True) for d in it.get_output_details()]


def input_stream(model: tosaic.CompiledModel, steps: int, seed: int) -> list[list[np.ndarray]]:
    """`steps` sets of random inputs: integers over their full range, floats in [-4, 4]."""
    rng = np.random.default_rng(seed)
    stream = []
    for _ in range(steps):
        arrays = []
        for info in model.inputs:
            if info.dtype.kind in "iu":
                limits = np.iinfo(info.dtype)
                arrays.append(rng.integers(limits.min, limits.max, size=info.shape, endpoint=True).astype(info.dtype))
            else:
                arrays.append(rng.uniform(-4, 4, size=info.shape).astype(info.dtype))
        stream.append(arrays)
    return stream


def assert_streams_match(model_bytes: bytes, steps: int = 32, seed: int = 0, compiled=None) -> tosaic.CompiledModel:
    """Step tosaic and LiteRT through the same inputs; then reset() tosaic and step it again next to a new
    LiteRT interpreter. Every output of every step must be bit-identical."""
    model = compiled or tosaic.compile(tosaic.import_tflite(model_bytes))
    assert model.stateful
    stream = input_stream(model, steps, seed)
    reference = LiteRTStepper(model_bytes)
    for step, inputs in enumerate(stream):
        assert_same(model.run(inputs), reference(inputs), f"step {step}")
    model.reset()
    fresh = LiteRTStepper(model_bytes)
    for step, inputs in enumerate(stream[::-1]):
        assert_same(model.run(inputs), fresh(inputs), f"step {steps + step}")
    return model


# ------------------------------------------------------------------------------------------- models


def ring_conv_model(frames: int, width: int, channels: int, out_channels: int, kernel_w: int,
                    in_q: tuple[float, int], w_scales, out_q: tuple[float, int], seed: int,
                    initial: str = "random") -> bytes:
    """A streaming conv: the variable holds the last `frames - 1` input frames; each step concatenates the
    new frame (READ_VARIABLE -> CONCATENATION), keeps the newest `frames - 1` (STRIDED_SLICE ->
    ASSIGN_VARIABLE) and convolves the whole window (CONV_2D, VALID, kernel frames x kernel_w)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    past_shape = [1, frames - 1, width, channels]
    if initial == "random":
        start = rng.integers(-128, 128, size=past_shape)
    else:  # real zeros, as a freshly zero-initialized TF buffer quantizes
        start = np.full(past_shape, in_q[1])
    init.assign_variable(init.var_handle("stream/frames"),
                         init.const(start, np.int8, scale=in_q[0], zero_point=in_q[1], name="frames/initial"))

    b.call_once(init_index)
    x = b.tensor([1, 1, width, channels], np.int8, scale=in_q[0], zero_point=in_q[1], name="frame")
    handle = b.var_handle("stream/frames")
    past = b.read_variable(handle, like=x, shape=past_shape, name="past")
    window = b.like(x, shape=[1, frames, width, channels], name="window")
    b.op("CONCATENATION", [past, x], [window], axis=1)
    kept = b.like(x, shape=past_shape, name="kept")
    b.op("STRIDED_SLICE", [window, b.const(np.array([0, 1, 0, 0], np.int32)),
                           b.const(np.array([1, frames, width, channels], np.int32)),
                           b.const(np.array([1, 1, 1, 1], np.int32))], [kept])
    b.assign_variable(handle, kept)
    weights = rng.integers(-127, 128, size=(out_channels, frames, kernel_w, channels))
    bias = rng.integers(-2000, 2000, size=out_channels)
    y = b.conv2d(window, weights, w_scales, bias, out_q[0], out_q[1], padding="VALID", name="conv")
    b.inputs([x]).outputs([y])
    return b.build()


def accumulator_model(n: int, x_q, acc_q, decay_q, initial_q, seed: int) -> bytes:
    """A leaky integrator: acc = acc * decay + x (int8 MUL and ADD, requantizing each step). The
    initialization subgraph computes the initial value (QUANTIZE int8 -> int8 of a constant), so the
    importer has to evaluate it, not just copy a constant. Outputs the value read and the new value."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    raw = init.const(rng.integers(-128, 128, size=(1, n)), np.int8, scale=initial_q[0], zero_point=initial_q[1])
    start = init.tensor([1, n], np.int8, scale=acc_q[0], zero_point=acc_q[1], name="acc/initial")
    init.op("QUANTIZE", [raw], [start])
    init.assign_variable(init.var_handle("acc"), start)

    b.call_once(init_index)
    x = b.tensor([1, n], np.int8, scale=x_q[0], zero_point=x_q[1], name="x")
    handle = b.var_handle("acc")
    acc = b.read_variable(handle, shape=[1, n], dtype=np.int8, scale=acc_q[0], zero_point=acc_q[1], name="acc")
    decay = b.const(rng.integers(-128, 128, size=(1, n)), np.int8, scale=decay_q[0], zero_point=decay_q[1],
                    name="decay")
    decayed = b.like(acc, name="decayed")
    b.op("MUL", [acc, decay], [decayed])
    new = b.like(acc, name="new")
    b.op("ADD", [decayed, x], [new])
    b.assign_variable(handle, new)
    b.inputs([x]).outputs([acc, new])
    return b.build()


def ring_model(dtype, frames: int, features: int, seed: int) -> bytes:
    """A ring buffer of any element type: outputs the window of the last `frames` inputs. float32 is a TOSA
    f32 variable; int16 and int32 are kept as i8 byte planes (int16 quantized with zero point 0, as 16x8
    activations are)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    q = dict(scale=0.01, zero_point=0) if dtype == np.int16 else {}
    if dtype.kind == "f":
        start = rng.standard_normal((1, frames - 1, features)).astype(dtype)
    else:
        limits = np.iinfo(dtype)
        start = rng.integers(limits.min, limits.max, size=(1, frames - 1, features), endpoint=True).astype(dtype)
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    init.assign_variable(init.var_handle("history"), init.const(start, **q))
    b.call_once(init_index)
    x = b.tensor([1, 1, features], dtype, name="x", **q)
    handle = b.var_handle("history")
    past = b.read_variable(handle, like=x, shape=[1, frames - 1, features], name="past")
    window = b.like(x, shape=[1, frames, features], name="window")
    b.op("CONCATENATION", [past, x], [window], axis=1)
    kept = b.like(x, shape=[1, frames - 1, features], name="kept")
    b.op("STRIDED_SLICE", [window, b.const(np.array([0, 1, 0], np.int32)),
                           b.const(np.array([1, frames, features], np.int32)),
                           b.const(np.array([1, 1, 1], np.int32))], [kept])
    b.assign_variable(handle, kept)
    b.inputs([x]).outputs([window])
    return b.build()


def semantics_model() -> bytes:
    """Initializers run in CALL_ONCE order, each subgraph once (a repeated CALL_ONCE is a no-op, a later
    initializer overrides an earlier one); a READ after an ASSIGN in the same invocation sees the new value;
    a variable without initializer may be read once it is written; a variable only an initializer touches
    is ignored."""
    q = dict(scale=0.05, zero_point=3)
    b = ModelBuilder()
    first_index, first = b.subgraph("init_a")
    first.assign_variable(first.var_handle("a"), first.const(np.full((1, 4), 11), np.int8, **q))
    first.assign_variable(first.var_handle("unused"), first.const(np.full((2,), 1), np.int8, **q))
    second_index, second = b.subgraph("init_b")
    second.assign_variable(second.var_handle("a"), second.const(np.array([[1, -2, 3, -4]]), np.int8, **q))

    b.call_once(first_index)
    b.call_once(second_index)
    b.call_once(first_index)
    x = b.tensor([1, 4], np.int8, name="x", **q)
    a = b.var_handle("a")
    w = b.var_handle("w")
    old = b.read_variable(a, like=x, name="old_a")
    b.assign_variable(a, x)
    new = b.read_variable(a, like=x, name="new_a")
    # READ_VARIABLE copies bytes: an output quantized differently reads the same int8 values.
    other = b.read_variable(a, shape=[1, 4], dtype=np.int8, scale=0.7, zero_point=-9, name="new_a_requantized?")
    b.assign_variable(w, old)
    w_value = b.read_variable(w, like=x, name="w")
    b.inputs([x]).outputs([old, new, other, w_value])
    return b.build()


# ------------------------------------------------------------------------------------------- tests


def test_ring_buffer_conv_over_many_steps():
    model = ring_conv_model(4, 5, 3, 4, 3, (0.05, -3), [0.01, 0.02, 0.015, 0.03], (0.4, 5), seed=1)
    compiled = assert_streams_match(model, steps=40, seed=2)
    assert set(compiled.state) == {"stream/frames"}


def test_accumulator_initialized_by_a_computed_value():
    model = accumulator_model(16, (0.1, -5), (0.2, 7), (f32(1 / 255), -128), (0.37, 20), seed=3)
    assert_streams_match(model, steps=36, seed=4)


@pytest.mark.parametrize("dtype", ["float32", "int16", "int32"])
def test_ring_buffer_of_other_types(dtype):
    model = assert_streams_match(ring_model(dtype, 3, 5, seed=5), steps=32, seed=6)
    planes = {"float32": ["history"], "int16": ["history.byte0", "history.byte1"],
              "int32": [f"history.byte{k}" for k in range(4)]}[dtype]
    assert sorted(model.state) == planes


def test_semantics_of_initializers_and_read_after_write():
    model_bytes = semantics_model()
    model = tosaic.compile(tosaic.import_tflite(model_bytes))
    assert set(model.state) == {"a", "w"}  # 'unused' only exists in an initializer
    assert model.state["w"] is None  # no initializer: written before it is read
    assert model.state["a"].tolist() == [[1, -2, 3, -4]]  # the later initializer wins
    assert_streams_match(model_bytes, steps=30, seed=7, compiled=model)


def test_byte_planes_keep_every_value():
    """int16 and int32 variables (i8 byte planes in TOSA): every int16 value, and int32 edge and random
    values, come back bit for bit (a write then a read in one invocation, and the read of the next one)."""
    rng = np.random.default_rng(16)
    edges = [-2**31, 2**31 - 1, -1, 0, 1, 127, 128, 255, 256, -128, -129, -256, -257, 2**15, -2**15, 2**24 - 1]
    cases = [(np.int16, np.arange(-2**15, 2**15).reshape(1, -1)),
             (np.int32, np.concatenate([edges, rng.integers(-2**31, 2**31, size=240)]).reshape(1, -1))]
    for dtype, values in cases:
        b = ModelBuilder()
        x = b.tensor(values.shape, dtype, name="x")
        h = b.var_handle("v")
        b.assign_variable(h, x)
        y = b.read_variable(h, like=x, name="y")
        b.inputs([x]).outputs([y])
        model = tosaic.compile(tosaic.import_tflite(b.build()))
        first = values.astype(dtype)
        assert model.run([first])[0].tobytes() == first.tobytes()
        assert model.run([first[:, ::-1].copy()])[0].tobytes() == first[:, ::-1].tobytes()


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_scalar_variables(dtype):
    """A rank-0 variable (LiteRT makes READ_VARIABLE's output dynamic then; TOSA declares tensor<i8>)."""
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    init.assign_variable(init.var_handle("v"), init.const(np.array(-7, dtype), scale=0.1, zero_point=0))
    b.call_once(init_index)
    x = b.tensor([], dtype, scale=0.1, zero_point=0, name="x")
    h = b.var_handle("v")
    old = b.read_variable(h, like=x, name="old")
    b.assign_variable(h, x)
    b.inputs([x]).outputs([old])
    assert_streams_match(b.build(), steps=30, seed=18)


def test_stateless_models_are_unchanged():
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="x")
    y = b.like(x, name="y")
    b.op("RELU", [x], [y])
    model = tosaic.compile(tosaic.import_tflite(b.build()))
    assert not model.stateful and model.state == {}
    assert not any(op.name.startswith("tosa.variable") for op in model.graph.ops)
    model.reset()
    assert model.run([np.array([[-3, 0, 4, 9]], np.int8)])[0].tolist() == [[0, 0, 4, 9]]


def test_state_survives_the_mlir_round_trip():
    model_bytes = ring_conv_model(3, 4, 2, 3, 2, (0.1, 4), [0.02, 0.03, 0.01], (0.3, -7), seed=8)
    graph = tosaic.import_tflite(model_bytes)
    for generic in (False, True):
        parsed = parse_mlir(print_graph(graph, generic=generic))
        assert print_graph(parsed) == print_graph(graph)
        assert_streams_match(model_bytes, steps=30, seed=9, compiled=tosaic.compile(parsed))


from tosa_tools import TOSA_OPT, requires_tosa_tools
TARGET = "--tosa-attach-target=profiles=pro_int,pro_fp extensions=doubleround,int16,variable specification_version=1.0"


def tosa_opt(source: Path, *flags: str) -> str:
    out = source.with_suffix(".out.mlir")
    result = subprocess.run([str(TOSA_OPT), str(source), *flags, "-o", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"tosa-opt {' '.join(flags)} rejected {source.name}:\n{result.stderr[-4000:]}"
    return out.read_text()


@pytest.mark.tosa_tools
@requires_tosa_tools
def test_validated_by_tosa_opt(tmp_path):
    """Arm's validator accepts the variables (EXT-VARIABLE; module-level tosa.variable), and prints our
    pretty and generic text back exactly as we print it."""
    models = [ring_conv_model(3, 4, 2, 3, 2, (0.1, 4), [0.02, 0.03, 0.01], (0.3, -7), seed=10),
              accumulator_model(8, (0.1, -5), (0.2, 7), (f32(1 / 255), -128), (0.37, 20), seed=11),
              ring_model("float32", 3, 2, seed=12), ring_model("int16", 3, 2, seed=14),
              ring_model("int32", 2, 3, seed=15), semantics_model()] + \
        [(DATA / f"{name}.tflite").read_bytes() for name in STREAMING]
    for k, model in enumerate(models):
        graph = tosaic.import_tflite(model)
        pretty, generic = print_graph(graph), print_graph(graph, generic=True)
        (tmp_path / f"{k}.mlir").write_text(print_graph(graph, locs=True))
        tosa_opt(tmp_path / f"{k}.mlir", TARGET, "--tosa-validate=strict-op-spec-alignment")
        assert tosa_opt(tmp_path / f"{k}.mlir").rstrip("\n") == pretty.rstrip("\n")
        (tmp_path / f"{k}g.mlir").write_text(generic)
        assert tosa_opt(tmp_path / f"{k}g.mlir", "--mlir-print-op-generic").rstrip("\n") == generic.rstrip("\n")
        their_generic = tosa_opt(tmp_path / f"{k}.mlir", "--mlir-print-op-generic")
        assert print_graph(parse_mlir(their_generic)) == pretty


def test_a_failed_run_leaves_the_state_alone():
    model = tosaic.compile(tosaic.import_tflite(ring_model("float32", 3, 2, seed=13)))
    before = model.state
    with pytest.raises(ValueError):
        model.run([np.zeros((1, 1, 3), np.float32)])  # wrong shape: refused before running
    graph = model.graph
    state = dict(before)
    state["history"] = None  # a variable without value: VARIABLE_READ's REQUIRE(is_written) fails
    with pytest.raises(TosaRuntimeError, match="read before it has a value"):
        interpret(graph, [np.zeros((1, 1, 2), np.float32)], state=state)
    assert all(np.array_equal(model.state[k], v) for k, v in before.items())


# ---------------------------------------------------------------- models converted by TensorFlow

DATA = Path(__file__).parent / "data"
STREAMING = ["stream_kws_float_state", "stream_kws_int8_state"]


@pytest.mark.parametrize("name", STREAMING)
def test_tensorflow_streaming_models(name):
    """Keyword-spotting-style streaming nets made by TF 2.21's converter with resource variables
    (scripts/make_streaming_models.py): float32 state around QUANTIZE/DEQUANTIZE (the converter's default)
    and int8 state (variable quantization). The 40 recorded LiteRT invocations, then live LiteRT."""
    path = DATA / f"{name}.tflite"
    model = tosaic.compile(path)
    with np.load(DATA / f"{name}.io.npz") as io:
        inputs, refs = io["stream_in_0"], io["stream_ref_0"]
    for step, (x, ref) in enumerate(zip(inputs, refs)):
        assert_same(model.run([x]), [ref], f"step {step}")
    model.reset()
    assert_streams_match(path.read_bytes(), steps=40, seed=19, compiled=model)


# ------------------------------------------------------------------------------------- refusals


def test_read_before_any_value_is_refused_like_litert_fails():
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="x")
    h = b.var_handle("v")
    old = b.read_variable(h, like=x, name="old")
    b.assign_variable(h, x)
    b.inputs([x]).outputs([old])
    model = b.build()
    with pytest.raises(LegalizationError, match="read before any ASSIGN_VARIABLE"):
        tosaic.import_tflite(model)
    with pytest.raises(RuntimeError):  # LiteRT: "variable != nullptr was not true"
        LiteRTStepper(model)([np.zeros((1, 4), np.int8)])


def test_bool_variables_are_listed_as_unsupported():
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    init.assign_variable(init.var_handle("v"), init.const(np.zeros((1, 4), np.bool_)))
    b.call_once(init_index)
    x = b.tensor([1, 4], np.bool_, name="x")
    h = b.var_handle("v")
    old = b.read_variable(h, like=x, name="old")
    b.assign_variable(h, x)
    b.inputs([x]).outputs([old])
    with pytest.raises(UnsupportedModelError, match=r"READ_VARIABLE \(version 1\) x1: inputs \[resource\]"):
        tosaic.import_tflite(b.build())


def test_unsupported_ops_of_the_initializer_are_listed():
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    raw = init.const(np.ones((1, 4), np.float32))
    value = init.tensor([1, 4], np.float32)
    init.op("EXP", [raw], [value])
    init.assign_variable(init.var_handle("v"), value)
    b.call_once(init_index)
    x = b.tensor([1, 4], np.float32, name="x")
    h = b.var_handle("v")
    old = b.read_variable(h, like=x, name="old")
    b.assign_variable(h, x)
    b.inputs([x]).outputs([old])
    with pytest.raises(UnsupportedModelError, match=r"EXP \(version 1\) x1: inputs \[float32\]"):
        tosaic.import_tflite(b.build())


def test_initialization_after_use_is_refused():
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    init.assign_variable(init.var_handle("v"), init.const(np.zeros((1, 4), np.int8), scale=0.1, zero_point=0))
    x = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="x")
    h = b.var_handle("v")
    b.assign_variable(h, x)
    b.call_once(init_index)
    old = b.read_variable(h, like=x, name="old")
    b.inputs([x]).outputs([old])
    with pytest.raises(LegalizationError, match="comes after a READ_VARIABLE/ASSIGN_VARIABLE"):
        tosaic.import_tflite(b.build())


def test_a_variable_changing_shape_is_refused():
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    init.assign_variable(init.var_handle("v"), init.const(np.zeros((1, 4), np.int8), scale=0.1, zero_point=0))
    b.call_once(init_index)
    x = b.tensor([1, 2], np.int8, scale=0.1, zero_point=0, name="x")
    h = b.var_handle("v")
    old = b.read_variable(h, shape=[1, 4], dtype=np.int8, scale=0.1, zero_point=0, name="old")
    b.assign_variable(h, x)
    b.inputs([x]).outputs([old])
    with pytest.raises(LegalizationError, match="one static type"):
        tosaic.import_tflite(b.build())


def test_float32_state_between_quantize_and_dequantize():
    """The converter's default for variables in an int8 model: the state stays float32, QUANTIZE after
    READ_VARIABLE and DEQUANTIZE before ASSIGN_VARIABLE. Needs the float-edge legalizations."""
    q = dict(scale=0.05, zero_point=-4)
    b = ModelBuilder()
    init_index, init = b.subgraph("init")
    init.assign_variable(init.var_handle("s"), init.const(np.linspace(-3, 3, 8, dtype=np.float32).reshape(1, 8)))
    b.call_once(init_index)
    x = b.tensor([1, 8], np.int8, name="x", **q)
    h = b.var_handle("s")
    state = b.read_variable(h, shape=[1, 8], dtype=np.float32, name="state")
    state_q = b.like(x, name="state_q")
    b.op("QUANTIZE", [state], [state_q])
    total = b.tensor([1, 8], np.int8, scale=0.08, zero_point=3, name="total")
    b.op("ADD", [state_q, x], [total])
    back = b.tensor([1, 8], np.float32, name="back")
    b.op("DEQUANTIZE", [total], [back])
    b.assign_variable(h, back)
    b.inputs([x]).outputs([total])
    model = b.build()
    assert_streams_match(model, steps=32, seed=17)


# ------------------------------------------------------------------------------- property tests

scales = st.floats(min_value=-10.0, max_value=0.0).map(lambda e: f32(2.0 ** e))
zero_points = st.integers(-128, 127)


@st.composite
def ring_conv_params(draw):
    frames = draw(st.integers(2, 6))
    width = draw(st.integers(1, 5))
    channels = draw(st.integers(1, 3))
    out_channels = draw(st.integers(1, 4))
    kernel_w = draw(st.integers(1, width))
    in_q = (draw(scales), draw(zero_points))
    w_scales = [draw(st.floats(min_value=-9.0, max_value=-3.0).map(lambda e: f32(2.0 ** e)))
                for _ in range(out_channels)]
    # Output scales around the accumulator's typical magnitude, so that outputs use the int8 range.
    spread = draw(st.floats(min_value=-2.0, max_value=4.0))
    taps = frames * kernel_w * channels
    out_scale = f32(in_q[0] * max(w_scales) * 64.0 * taps ** 0.5 * 2.0 ** spread / 16)
    out_q = (out_scale, draw(zero_points))
    return dict(frames=frames, width=width, channels=channels, out_channels=out_channels, kernel_w=kernel_w,
                in_q=in_q, w_scales=w_scales, out_q=out_q, seed=draw(st.integers(0, 2**32 - 1)),
                initial=draw(st.sampled_from(["random", "zero_point"])))


@settings(max_examples=20, deadline=None)
@given(params=ring_conv_params(), steps=st.integers(30, 40), seed=st.integers(0, 2**32 - 1))
def test_ring_buffer_conv_matches_litert(params, steps, seed):
    assert_streams_match(ring_conv_model(**params), steps=steps, seed=seed)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 24), x_q=st.tuples(scales, zero_points), acc_q=st.tuples(scales, zero_points),
       decay_q=st.tuples(scales, zero_points), initial_q=st.tuples(scales, zero_points),
       model_seed=st.integers(0, 2**32 - 1), steps=st.integers(30, 40), seed=st.integers(0, 2**32 - 1))
def test_accumulator_matches_litert(n, x_q, acc_q, decay_q, initial_q, model_seed, steps, seed):
    assert_streams_match(accumulator_model(n, x_q, acc_q, decay_q, initial_q, model_seed), steps=steps, seed=seed)


@settings(max_examples=15, deadline=None)
@given(dtype=st.sampled_from(["int16", "int32", "float32"]), frames=st.integers(2, 6), features=st.integers(1, 6),
       model_seed=st.integers(0, 2**32 - 1), steps=st.integers(30, 36), seed=st.integers(0, 2**32 - 1))
def test_ring_buffers_match_litert(dtype, frames, features, model_seed, steps, seed):
    assert_streams_match(ring_model(dtype, frames, features, model_seed), steps=steps, seed=seed)


# ------------------------------------------------------------------------------------ MLIR text

MLIR_VARIABLES = """\
module {
  tosa.variable @state = dense<[[1, -2, 3]]> : tensor<1x3xi8>
  tosa.variable @"scratch/f32" : tensor<2xf32>
  func.func @main(%arg0: tensor<1x3xi8>) -> tensor<1x3xi8> {
    %0 = tosa.variable_read @state : tensor<1x3xi8>
    tosa.variable_write @state, %arg0 : tensor<1x3xi8>
    return %0 : tensor<1x3xi8>
  }
}
"""


def test_mlir_variables_run_with_state():
    model = tosaic.compile(parse_mlir(MLIR_VARIABLES))
    assert model.stateful and model.state["scratch/f32"] is None
    steps = [np.array([[k, -k, 2 * k]], np.int8) for k in range(5)]
    outputs = [model.run([x])[0].tolist() for x in steps]
    assert outputs == [[[1, -2, 3]]] + [x.tolist() for x in steps[:-1]]
    model.reset()
    assert model.run([steps[0]])[0].tolist() == [[1, -2, 3]]


@pytest.mark.parametrize("text,message", [
    (MLIR_VARIABLES.replace("variable_read @state", "variable_read @other"), "the module does not declare"),
    (MLIR_VARIABLES.replace("%0 = tosa.variable_read @state : tensor<1x3xi8>",
                            "%0 = tosa.variable_read @state : tensor<1x4xi8>"), "it is declared tensor<1x3xi8>"),
    (MLIR_VARIABLES.replace("tosa.variable @\"scratch/f32\"", "tosa.variable @state"), "declared twice"),
    (MLIR_VARIABLES.replace(": tensor<2xf32>", ": tensor<2xi32>"), "TOSA 1.0 variables hold i8, f16, f32"),
    (MLIR_VARIABLES.replace("dense<[[1, -2, 3]]> : tensor<1x3xi8>", "dense<[1, -2, 3]> : tensor<3xi8>"),
     "it is declared tensor<3xi8>"),
    (MLIR_VARIABLES.replace('  tosa.variable @"scratch/f32" : tensor<2xf32>\n', "").replace(
        "{\n    %0 = tosa.variable_read",
        '{\n    tosa.variable @"scratch/f32" : tensor<2xf32>\n    %0 = tosa.variable_read'),
     "belongs at module level"),
])
def test_mlir_variable_errors(text, message):
    with pytest.raises(tosaic.MlirParseError, match=message):
        parse_mlir(text)
