"""SQUARED_DIFFERENCE, DIV, RSQRT, SQRT, EXP, LOG, GELU and LOG_SOFTMAX (int8, and int16 where LiteRT has a
kernel) against LiteRT's reference kernels (BUILTIN_REF), bit for bit.

Exhaustive in the values wherever that is cheap: unary int8 ops see all 256 inputs, unary int16 ops all 65536,
binary int8 ops all 65536 pairs (a [256, 1] operand against a [1, 256] one), for every drawn set of scales and
zero points. The graphs that compute in i32 (DIV, LOG_SOFTMAX, and the per-row log program) also run on Arm's
TOSA reference model, which reports any REQUIRE the spec places on them (an ADD that overflows, a shift out of
range) -- our interpreter wraps where the spec forbids, so bit-equality alone would not show it.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from litert_ref import run_reference
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.importer import LegalizationError, UnsupportedModelError
from tosaic.importers.tflite.ops.math import IntOps
from tosaic.ir import Graph, TensorType
from tosaic.quant import get_reciprocal
from tosaic.quant import tables as Q
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.interpreter import interpret
from tosaic.tosa.mlir import print_graph

DATA = "tests/data"
from tosa_tools import TOOLS as TOSA_TOOLS, requires_tosa_tools
ALL_INT8 = np.arange(-128, 128, dtype=np.int8)
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)

# ------------------------------------------------------------------------------------------- helpers


def f32(x: float) -> float:
    return float(np.float32(x))


def run_tosaic(model: bytes, inputs) -> list[np.ndarray]:
    return tosaic.compile(tosaic.import_tflite(model)).run(inputs)


def assert_bit_exact(model: bytes, inputs) -> None:
    expected = run_reference(model, inputs)
    actual = run_tosaic(model, inputs)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        if not np.array_equal(got, want):
            diff = got.astype(np.int64) - want.astype(np.int64)
            raise AssertionError(f"{np.count_nonzero(diff)} of {diff.size} elements differ, "
                                 f"max |diff| {np.abs(diff).max()}")


def unary_model(opname: str, dtype, qi, qo, shape, **options) -> bytes:
    b = ModelBuilder()
    x = b.tensor(shape, dtype, scale=qi[0], zero_point=qi[1], name="x")
    y = b.tensor(shape, dtype, scale=qo[0], zero_point=qo[1], name="y")
    b.op(opname, [x], [y], **options)
    return b.build()


def binary_model(opname: str, dtype, shape_a, shape_b, qa, qb, qo, data_b=None, **options) -> bytes:
    b = ModelBuilder()
    a = b.tensor(shape_a, dtype, scale=qa[0], zero_point=qa[1], name="a")
    c = b.tensor(shape_b, dtype, scale=qb[0], zero_point=qb[1], data=data_b, name="b")
    y = b.tensor(np.broadcast_shapes(tuple(shape_a), tuple(shape_b)), dtype, scale=qo[0], zero_point=qo[1],
                 name="y")
    b.op(opname, [a, c], [y], **options)
    return b.build()


log_scales = st.floats(min_value=-12.0, max_value=3.0).map(lambda e: f32(2.0 ** e))
round_scales = st.builds(lambda k, e: f32(k * 2.0 ** e), st.sampled_from([1, 3, 5, 1 / 255, 2 / 255, 1 / 127]),
                         st.integers(-10, 2))
scales = st.one_of(log_scales, round_scales)
zero_points = st.integers(-128, 127)
seeds = st.integers(0, 2**32 - 1)
ACTIVATIONS = st.sampled_from(["NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1"])

# ------------------------------------------------------------------------------------ tests/data models


@pytest.mark.parametrize("name", ["op_squared_difference", "op_rsqrt", "op_gelu_tanh"])
def test_data_model_matches_reference(name):
    io = np.load(f"{DATA}/{name}.io.npz")
    inputs = [io[f"in_{i}"] for i in range(sum(k.startswith("in_") for k in io.files))]
    outputs = tosaic.compile(f"{DATA}/{name}.tflite").run(inputs)
    for i, got in enumerate(outputs):
        assert np.array_equal(got, io[f"ref_{i}"]), name


# ------------------------------------------------------------------------------------------ unary int8

UNARY_INT8 = [("EXP", {}), ("LOG", {}), ("SQRT", {}), ("RSQRT", {}), ("GELU", {"approximate": True}),
              ("GELU", {"approximate": False})]


@settings(max_examples=100, deadline=None)
@given(case=st.sampled_from(UNARY_INT8), si=scales, so=scales, zi=zero_points, zo=zero_points)
def test_unary_int8_all_values(case, si, so, zi, zo):
    op, options = case
    values = ALL_INT8
    if op in ("SQRT", "RSQRT"):  # LiteRT fails the invocation on any input below the zero point
        values = ALL_INT8[ALL_INT8 >= zi]
    assert_bit_exact(unary_model(op, np.int8, (si, zi), (so, zo), values.shape, **options), [values])


@pytest.mark.parametrize("op", ["EXP", "LOG"])
def test_unary_int8_table_entries_beyond_int32_saturate_like_litert(op):
    # LUTPopulateInt8 casts a float beyond int32 to int32 (undefined); LiteRT's binary saturates it.
    assert_bit_exact(unary_model(op, np.int8, (0.5, 0), (1e-12, 3), ALL_INT8.shape), [ALL_INT8])


# ----------------------------------------------------------------------------------------- unary int16

# Input scales keep the functions inside float32 over the int16 range (expf overflows past 88.7).
int16_input_scales = st.floats(min_value=-20.0, max_value=-9.0).map(lambda e: f32(2.0 ** e))
int16_output_scales = st.floats(min_value=-20.0, max_value=-4.0).map(lambda e: f32(2.0 ** e))
UNARY_INT16 = [("EXP", {}), ("LOG", {}), ("RSQRT", {}), ("GELU", {"approximate": True}),
               ("GELU", {"approximate": False})]


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(UNARY_INT16), si=int16_input_scales, so=int16_output_scales,
       zi=st.integers(-300, 300), zo=st.integers(-300, 300))
def test_unary_int16_all_values(case, si, so, zi, zo):
    op, options = case
    if op != "GELU":  # only GELU's Prepare accepts int16 zero points other than 0
        zi = zo = 0
    values = ALL_INT16 if op != "RSQRT" else ALL_INT16[ALL_INT16 >= 0]
    model = unary_model(op, np.int16, (si, zi), (so, zo), values.shape, **options)
    try:
        graph = tosaic.import_tflite(model)
    except LegalizationError as error:
        assert "wraps in int16" in str(error)
        assume(False)
    expected = run_reference(model, [values])[0]
    assert np.array_equal(tosaic.compile(graph).run([values])[0], expected)


def test_int16_lut_port_reproduces_litert_where_expf_overflows():
    # Past expf's overflow LiteRT's LUT holds 0 (a NaN cast to int16) and its LUTLookup wraps int16 slopes: the
    # port follows it, and the legalization refuses because a TOSA TABLE cannot wrap.
    qi, qo = (0.0038968208, 0), (0.023819035, 0)
    model = unary_model("EXP", np.int16, qi, qo, ALL_INT16.shape)
    lut = Q.exp_int16_lut(*qi, *qo)
    assert np.array_equal(Q.int16_lut_lookup(ALL_INT16, lut), run_reference(model, [ALL_INT16])[0])
    assert not Q.int16_lut_is_tosa_exact(lut)
    with pytest.raises(LegalizationError, match="wraps in int16"):
        tosaic.import_tflite(model)


def test_int16_sqrt_is_not_legalized():
    # SqrtEvalQuantized<int16_t> computes in float per element; no 513-entry TABLE reproduces it.
    model = unary_model("SQRT", np.int16, (1e-4, 0), (1e-3, 0), (8,))
    with pytest.raises(UnsupportedModelError, match=r"SQRT .*supported only for int8"):
        tosaic.import_tflite(model)


@pytest.mark.parametrize("op", ["EXP", "LOG", "RSQRT"])
def test_int16_nonzero_zero_points_are_refused_like_litert(op):
    model = unary_model(op, np.int16, (1e-4, 5), (1e-3, 0), (8,))
    with pytest.raises(LegalizationError, match="zero points 0"):
        tosaic.import_tflite(model)


# ---------------------------------------------------------------------------------- SQUARED_DIFFERENCE


def pairs_grid() -> tuple[np.ndarray, np.ndarray]:
    """Operands [256, 1] and [1, 256] whose broadcast holds every (a, b) pair of int8 values."""
    return ALL_INT8.reshape(256, 1).copy(), ALL_INT8.reshape(1, 256).copy()


@settings(max_examples=60, deadline=None)
@given(sa=scales, sb=scales, out_ratio=st.floats(min_value=0.01, max_value=14.0), za=zero_points,
       zb=zero_points, zo=zero_points, swap=st.booleans())
def test_squared_difference_all_value_pairs(sa, sb, out_ratio, za, zb, zo, swap):
    # The output multiplier (2 max(s_a, s_b))^2 / (2^14 s_o) must stay below 1 (LiteRT aborts otherwise).
    so = f32(4 * max(sa, sb) ** 2 / 2.0 ** 14 * 2.0 ** out_ratio)
    assume(so > 0 and np.isfinite(so))
    try:
        Q.squared_difference_multipliers(sa, sb, so)
    except ValueError:
        assume(False)
    a, b = pairs_grid()
    if swap:
        a, b = b, a
    assert_bit_exact(binary_model("SQUARED_DIFFERENCE", np.int8, a.shape, b.shape, (sa, za), (sb, zb), (so, zo)),
                     [a, b])


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), mask=st.lists(st.booleans(), min_size=4,
       max_size=4), const=st.booleans(), seed=seeds)
def test_squared_difference_shapes(shape, mask, const, seed):
    shape_b = [d if keep else 1 for d, keep in zip(shape, mask)][1:]
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, size=shape).astype(np.int8)
    b = rng.integers(-128, 128, size=shape_b).astype(np.int8)
    model = binary_model("SQUARED_DIFFERENCE", np.int8, shape, shape_b, (0.03, 4), (0.05, -9), (0.02, -100),
                         data_b=b if const else None)
    assert_bit_exact(model, [a] if const else [a, b])


def test_squared_difference_port_matches_litert():
    a, b = pairs_grid()
    q = ((0.013, -7), (0.02, 3), (0.04, 11))
    model = binary_model("SQUARED_DIFFERENCE", np.int8, a.shape, b.shape, *q)
    expected = run_reference(model, [a, b])[0]
    assert np.array_equal(Q.squared_difference_int8(a, b, *q[0], *q[1], *q[2]), expected)


def test_squared_difference_refuses_an_output_multiplier_of_one():
    model = binary_model("SQUARED_DIFFERENCE", np.int8, [4], [4], (1.0, 0), (1.0, 0), (1e-6, 0))
    with pytest.raises(LegalizationError, match="LiteRT aborts"):
        tosaic.import_tflite(model)


# ------------------------------------------------------------------------------------------------ DIV


@settings(max_examples=60, deadline=None)
@given(sa=scales, sb=scales, so=scales, za=zero_points, zb=zero_points, zo=zero_points, act=ACTIVATIONS)
def test_div_int8_all_value_pairs(sa, sb, so, za, zb, zo, act):
    a, b = pairs_grid()
    b = b[b != zb].reshape(1, -1)  # LiteRT fails the invocation when a divisor equals its zero point
    model = binary_model("DIV", np.int8, a.shape, b.shape, (sa, za), (sb, zb), (so, zo),
                         fused_activation_function=act)
    try:
        tosaic.import_tflite(model)
    except LegalizationError as error:
        assert "exponents" in str(error)
        assume(False)
    assert_bit_exact(model, [a, b])


@pytest.mark.parametrize("scales_", [(0.05, 0.05, 0.05), (0.02, 0.5, 0.001), (1.0, 1.0, 1.0)])
def test_div_int8_small_dividends_follow_litert_beyond_gemmlowps_shift_range(scales_):
    # 0 / 64 and -1 / 64 send RoundingDivideByPOT exponents past 31; LiteRT's x86 binary gives zp + 1 and -128.
    sa, sb, so = scales_
    a, b = pairs_grid()
    b = b[b != 0].reshape(1, -1)
    assert_bit_exact(binary_model("DIV", np.int8, a.shape, b.shape, (sa, 0), (sb, 0), (so, 0)), [a, b])


@settings(max_examples=25, deadline=None)
@given(sa=st.floats(-16.0, -6.0), sb=st.floats(-16.0, -6.0), real=st.floats(-16.0, 14.0),
       zero=st.booleans(), zps=st.tuples(st.integers(-99, 99), st.integers(-99, 99), st.integers(-99, 99)),
       act=st.sampled_from(["NONE", "RELU"]), seed=seeds)
def test_div_int16(sa, sb, real, zero, zps, act, seed):
    # The multiplier s_a / (s_b s_o) = 2^real; beyond [2^-17, 2^15) the kernel's shifts leave what LiteRT's
    # binary defines (refused, see below).
    so = sa - sb - real
    za, zb, zo = (0, 0, 0) if zero else zps
    rng = np.random.default_rng(seed)
    n = 8192
    a = rng.integers(-32768, 32768, size=n)
    b = rng.integers(-32768, 32768, size=n)
    a[: n // 4] = rng.integers(-300, 300, size=n // 4)  # small dividends: large RoundingDivideByPOT exponents
    b[n // 4: n // 2] = rng.integers(-300, 300, size=n // 4)
    b = np.where(b == zb, zb + 1, b)
    a, b = a.astype(np.int16), b.astype(np.int16)
    qa, qb, qo = (f32(2.0 ** sa), za), (f32(2.0 ** sb), zb), (f32(2.0 ** so), zo)
    model = binary_model("DIV", np.int16, [n], [n], qa, qb, qo, fused_activation_function=act)
    try:
        tosaic.import_tflite(model)
    except LegalizationError as error:
        assert "exponents" in str(error)
        assume(False)
    assert_bit_exact(model, [a, b])


def test_div_port_matches_litert_on_int8_pairs():
    a, b = pairs_grid()
    b = b[b != 3].reshape(1, -1)
    q = ((0.013, -7), (0.2, 3), (0.004, 11))
    model = binary_model("DIV", np.int8, a.shape, b.shape, *q)
    expected = run_reference(model, [a, b])[0]
    assert np.array_equal(Q.div_quantized(a, b, *q[0], *q[1], *q[2], -128, 127), expected)


def test_div_broadcasts_a_constant_divisor():
    a = np.arange(-128, 128).reshape(4, 8, 8).astype(np.int8)
    divisor = np.array([1, -1, 2, -3, 5, 64, -128, 127], dtype=np.int8)
    model = binary_model("DIV", np.int8, a.shape, divisor.shape, (0.1, 0), (0.1, 0), (0.05, 0), data_b=divisor)
    assert_bit_exact(model, [a])


# ---------------------------------------------------------------------------------------- LOG_SOFTMAX


@settings(max_examples=60, deadline=None)
@given(si=st.one_of(st.floats(-12.0, 7.0).map(lambda e: f32(2.0 ** e)), round_scales), zi=zero_points,
       rows=st.integers(1, 8), depth=st.integers(1, 300), spread=st.sampled_from([1, 4, 32, 256]), seed=seeds)
def test_log_softmax_int8(si, zi, rows, depth, spread, seed):
    rng = np.random.default_rng(seed)
    top = int(rng.integers(-128, 128))
    x = np.clip(top - rng.integers(0, spread, size=(rows, depth)), -128, 127).astype(np.int8)
    model = unary_model("LOG_SOFTMAX", np.int8, (si, zi), (16 / 256, 127), x.shape)
    try:
        tosaic.import_tflite(model)
    except LegalizationError as error:
        assert "input scale" in str(error)
        assume(False)
    assert_bit_exact(model, [x])


@pytest.mark.parametrize("shape", [(1, 4095), (2, 3, 1), (5,), (2, 2, 2, 40)])
def test_log_softmax_shapes(shape):
    x = np.random.default_rng(sum(shape)).integers(-128, 128, size=shape).astype(np.int8)
    x.reshape(-1)[::7] = 127
    assert_bit_exact(unary_model("LOG_SOFTMAX", np.int8, (0.07, -3), (16 / 256, 127), x.shape), [x])


def test_log_softmax_refusals():
    with pytest.raises(LegalizationError, match="16/256"):
        tosaic.import_tflite(unary_model("LOG_SOFTMAX", np.int8, (0.1, 0), (1 / 256, 127), (2, 4)))
    with pytest.raises(LegalizationError, match="wrap"):
        tosaic.import_tflite(unary_model("LOG_SOFTMAX", np.int8, (0.1, 0), (16 / 256, 127), (1, 4096)))
    with pytest.raises(UnsupportedModelError, match="LOG_SOFTMAX"):
        tosaic.import_tflite(unary_model("LOG_SOFTMAX", np.int16, (1e-3, 0), (1e-3, 0), (2, 4)))


def test_log_softmax_port_matches_litert():
    x = np.random.default_rng(7).integers(-128, 128, size=(32, 50)).astype(np.int8)
    model = unary_model("LOG_SOFTMAX", np.int8, (0.03, 0), (16 / 256, 127), x.shape)
    params = Q.log_softmax_int8_params(0.03)
    assert np.array_equal(Q.log_softmax_int8(x, params), run_reference(model, [x])[0])


# ----------------------------------------------------------------------- i32 programs vs their ports


def program_graph(n: int, build) -> Graph:
    graph = Graph("main")
    z = graph.add_input(TensorType((n, 1), "i32"), "z")
    graph.set_outputs([build(IntOps(TosaBuilder(graph), 2), z)], ["out"])
    return graph


def log_inputs() -> np.ndarray:
    """Sums of exps a LOG_SOFTMAX row can produce, [2^19, 4095 * 2^19]: the first 2^15 values, the edges of
    every binade, and random values across the range."""
    rng = np.random.default_rng(0)
    edges = [(1 << e) + d for e in range(19, 31) for d in (-2, -1, 0, 1, 2)]
    values = np.concatenate([np.arange(1 << 19, (1 << 19) + (1 << 15)), edges, [4095 << 19],
                             rng.integers(1 << 19, 4095 << 19, size=50_000)])
    return values[(values >= 1 << 19) & (values <= 4095 << 19)].astype(np.int32).reshape(-1, 1)


def test_log_program_matches_port():
    z = log_inputs()
    graph = program_graph(z.shape[0], lambda r, v: r.log_x_for_x_greater_than_or_equal_to_1(v, 12, 5))
    expected = Q.log_x_for_x_greater_than_or_equal_to_1(z.astype(np.int64), 12, 5)
    assert np.array_equal(interpret(graph, [z])[0], expected)


def test_reciprocal_program_matches_port_for_every_int16_divisor():
    divisors = np.arange(1, 65537, dtype=np.int64)
    shift = np.array([32 - int(v).bit_length() for v in divisors])  # count leading zeros
    fractions = (((divisors << shift) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32).reshape(-1, 1)
    graph = program_graph(fractions.shape[0], lambda r, v: r.one_over_one_plus_x_for_x_in_0_1(v))
    expected, _ = get_reciprocal(divisors, 31)
    assert np.array_equal(interpret(graph, [fractions])[0].reshape(-1), expected)


# ------------------------------------------------------------------------------ Arm's reference model

ARM_RUNNER = """
import sys, numpy as np, tosa_reference_model as trm
folder, count = sys.argv[1], int(sys.argv[2])
inputs = [np.load(f"{folder}/in{i}.npy") for i in range(count)]
outputs, status = trm.run(open(f"{folder}/graph.tosa", "rb").read(), inputs)
print("STATUS", status)
for i, output in enumerate(outputs):
    np.save(f"{folder}/out{i}.npy", output)
"""


def run_on_arm_reference_model(graph: Graph, inputs) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "graph.mlir").write_text(print_graph(graph))
        serialized = subprocess.run([str(TOSA_TOOLS / "tosa-opt"), f"{folder}/graph.mlir", "--tosa-serialize",
                                     f"--tosa-flatbuffer-filename={folder}/graph.tosa", "-o", f"{folder}/out.mlir"],
                                    capture_output=True, text=True, timeout=300)
        assert serialized.returncode == 0, serialized.stderr[-2000:]
        for i, x in enumerate(inputs):
            np.save(f"{folder}/in{i}.npy", x)
        (Path(folder) / "run.py").write_text(ARM_RUNNER)
        ran = subprocess.run([str(TOSA_TOOLS / "python"), f"{folder}/run.py", folder, str(len(inputs))],
                             capture_output=True, text=True, timeout=300)
        assert "STATUS GraphStatus.TOSA_VALID" in ran.stdout, ran.stdout[-2000:] + ran.stderr[-2000:]
        return [np.load(f"{folder}/out{i}.npy") for i in range(len(graph.outputs))]


def arm_cases():
    rng = np.random.default_rng(1)
    a, b = pairs_grid()
    yield "div_int8", binary_model("DIV", np.int8, a.shape, b.shape, (0.05, 3), (0.02, -5), (0.1, 1),
                                   fused_activation_function="RELU"), [a, np.where(b == -5, 0, b).astype(np.int8)]
    yield "div_int8_small_multiplier", binary_model("DIV", np.int8, a.shape, b.shape, (0.01, -128), (0.5, 127),
                                                    (0.5, -100)), [a, np.where(b == 127, 1, b).astype(np.int8)]
    x16 = rng.integers(-32768, 32768, size=(2, 8192)).astype(np.int16)
    x16[0, :2000] = rng.integers(-4, 4, size=2000)
    x16[1] = np.where(x16[1] == 0, 1, x16[1])
    yield "div_int16", binary_model("DIV", np.int16, [8192], [8192], (1e-3, 0), (2e-3, 0), (3e-4, 0)), \
        [x16[0].copy(), x16[1].copy()]
    x = rng.integers(-128, 128, size=(64, 200)).astype(np.int8)
    x[:16] //= 32
    yield "log_softmax", unary_model("LOG_SOFTMAX", np.int8, (0.1, 3), (16 / 256, 127), x.shape), [x]
    # Input scales at both ends: left shift 31 (multiplier capped), and reverse shift 0.
    yield "log_softmax_wide", unary_model("LOG_SOFTMAX", np.int8, (100.0, 3), (16 / 256, 127), x.shape), [x]
    yield "log_softmax_narrow", unary_model("LOG_SOFTMAX", np.int8, (3e-8, 3), (16 / 256, 127), x.shape), [x]
    yield "squared_difference", binary_model("SQUARED_DIFFERENCE", np.int8, a.shape, b.shape, (0.05, 3),
                                             (0.02, -5), (0.1, 1)), [a, b]
    yield "gelu_int16", unary_model("GELU", np.int16, (3e-4, 0), (2e-4, 0), ALL_INT16.shape), [ALL_INT16]


@pytest.mark.tosa_tools
@requires_tosa_tools
@pytest.mark.parametrize("case", [name for name, _, _ in arm_cases()])
def test_arm_reference_model_agrees_and_no_require_fails(case):
    name, model, inputs = next(c for c in arm_cases() if c[0] == case)
    graph = tosaic.import_tflite(model)
    ours = interpret(graph, inputs)
    assert all(np.array_equal(x, y) for x, y in zip(run_on_arm_reference_model(graph, inputs), ours))
    assert all(np.array_equal(x, y) for x, y in zip(ours, run_reference(model, inputs)))


@pytest.mark.tosa_tools
@requires_tosa_tools
def test_log_program_on_arm_reference_model():
    z = log_inputs()
    graph = program_graph(z.shape[0], lambda r, v: r.log_x_for_x_greater_than_or_equal_to_1(v, 12, 5))
    (theirs,) = run_on_arm_reference_model(graph, [z])
    assert np.array_equal(theirs, Q.log_x_for_x_greater_than_or_equal_to_1(z.astype(np.int64), 12, 5))
