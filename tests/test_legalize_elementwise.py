"""int8 ADD, SUB, MUL, MAXIMUM, MINIMUM, PRELU, RELU, RELU6, LEAKY_RELU, LOGISTIC, TANH, HARD_SWISH and
QUANTIZE (int8 -> int8) against LiteRT's reference kernels (BUILTIN_REF), bit for bit.

Most property tests are exhaustive in the values: unary ops see all 256 int8 inputs, and binary ops see all
65536 input pairs (a [256, 1] operand broadcast against a [1, 256] one), for every drawn set of scales, zero
points and activations. Shape tests cover broadcasting, rank mismatches and constant operands.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from litert_ref import run_reference
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.importer import LegalizationError

DATA = "tests/data"
ALL_INT8 = np.arange(-128, 128, dtype=np.int8)

# ------------------------------------------------------------------------------------------- helpers


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


def f32(x: float) -> float:
    return float(np.float32(x))


# Scales: log-uniform over a wide range, or "round" values (powers of two, k/255) that make rounding ties
# common, which is where a wrong rounding mode shows.
log_scales = st.floats(min_value=-14.0, max_value=3.0).map(lambda e: f32(2.0 ** e))
round_scales = st.builds(lambda k, e: f32(k * 2.0 ** e), st.sampled_from([1, 3, 5, 1 / 255, 2 / 255, 1 / 127]),
                         st.integers(-10, 2))
scales = st.one_of(log_scales, round_scales)
zero_points = st.integers(-128, 127)
seeds = st.integers(0, 2**32 - 1)


def ratio(low_exp: float, high_exp: float):
    """Multipliers (scale ratios) log-uniform in [2^low, 2^high], with exact powers of two now and then."""
    return st.one_of(st.floats(min_value=low_exp, max_value=high_exp).map(lambda e: 2.0 ** e),
                     st.integers(math.ceil(low_exp), math.floor(high_exp)).map(lambda e: 2.0 ** e))


def pairs_grid() -> tuple[np.ndarray, np.ndarray]:
    """Operands [256, 1] and [1, 256] whose broadcast holds every (a, b) pair of int8 values."""
    return ALL_INT8.reshape(256, 1).copy(), ALL_INT8.reshape(1, 256).copy()


def binary_model(opname: str, shape_a, shape_b, qa, qb, qo, data_a=None, data_b=None, **options) -> bytes:
    b = ModelBuilder()
    a = b.tensor(shape_a, np.int8, scale=qa[0], zero_point=qa[1], data=data_a, name="a")
    c = b.tensor(shape_b, np.int8, scale=qb[0], zero_point=qb[1], data=data_b, name="b")
    out_shape = np.broadcast_shapes(tuple(shape_a), tuple(shape_b))
    y = b.tensor(out_shape, np.int8, scale=qo[0], zero_point=qo[1], name="y")
    b.op(opname, [a, c], [y], **options)
    return b.build()


def unary_model(opname: str, qi, qo, shape=(2, 128), **options) -> bytes:
    b = ModelBuilder()
    x = b.tensor(shape, np.int8, scale=qi[0], zero_point=qi[1], name="x")
    y = b.tensor(shape, np.int8, scale=qo[0], zero_point=qo[1], name="y")
    b.op(opname, [x], [y], **options)
    return b.build()


# ------------------------------------------------------------------------------------ tests/data models

DATA_MODELS = ["op_add_bcast", "op_add_relu", "op_add_same", "op_sub_bcast", "op_sub_same", "op_mul_bcast",
               "op_mul_same", "op_maximum", "op_maximum_const", "op_minimum", "op_prelu", "op_relu6",
               "op_leaky_relu_0.2", "op_logistic", "op_tanh", "op_hard_swish"]


@pytest.mark.parametrize("name", DATA_MODELS)
def test_data_model_matches_reference(name):
    io = np.load(f"{DATA}/{name}.io.npz")
    inputs = [io[f"in_{i}"] for i in range(sum(k.startswith("in_") for k in io.files))]
    outputs = tosaic.compile(f"{DATA}/{name}.tflite").run(inputs)
    for i, got in enumerate(outputs):
        assert np.array_equal(got, io[f"ref_{i}"]), name


# ------------------------------------------------------------------------------------ ADD, SUB, MUL

ACTIVATIONS = st.sampled_from(["NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
# CalculateActivationRangeQuantized refuses a model (no_integer_overflow_from_quantization) when round(6 / s_o)
# leaves int32; such tiny output scales are kept out of the strategies.
MIN_OUTPUT_SCALE = 6.0 / 2.0**31


@settings(max_examples=80, deadline=None)
@given(op=st.sampled_from(["ADD", "SUB"]), sa=scales, sb=scales, out_ratio=ratio(-6.0, 12.0),
       za=zero_points, zb=zero_points, zo=zero_points, act=ACTIVATIONS, swap=st.booleans())
def test_add_sub_all_value_pairs(op, sa, sb, out_ratio, za, zb, zo, act, swap):
    # The output scale is drawn relative to the larger input scale. LiteRT aborts the process (TFLITE_CHECK in
    # QuantizeMultiplierSmallerThanOneExp) when 2 max(s_a, s_b) / (2^20 s_o) >= 1: out_ratio stays far from it.
    so = f32(max(sa, sb) / out_ratio)
    a, b = pairs_grid()
    if swap:
        a, b = b, a
    model = binary_model(op, a.shape, b.shape, (sa, za), (sb, zb), (so, zo), fused_activation_function=act)
    assert_bit_exact(model, [a, b])


@settings(max_examples=80, deadline=None)
@given(sa=scales, sb=scales, real=ratio(-20.0, 13.0), za=zero_points, zb=zero_points, zo=zero_points,
       act=ACTIVATIONS)
def test_mul_all_value_pairs(sa, sb, real, za, zb, zo, act):
    # real = s_a s_b / s_o; up to 2^13 the product (at most 65025 in magnitude) rescales exactly.
    so = f32(sa * sb / real)
    assume(so > MIN_OUTPUT_SCALE)
    a, b = pairs_grid()
    model = binary_model("MUL", a.shape, b.shape, (sa, za), (sb, zb), (so, zo), fused_activation_function=act)
    assert_bit_exact(model, [a, b])


@st.composite
def broadcast_shapes(draw, max_rank=5):
    """Two TFLite-broadcastable shapes: trailing-aligned, each dimension equal or 1, ranks may differ."""
    out = draw(st.lists(st.integers(1, 4), min_size=1, max_size=max_rank))
    shapes = []
    for _ in range(2):
        rank = draw(st.integers(0, len(out)))
        tail = out[len(out) - rank:]
        shapes.append([d if draw(st.booleans()) else 1 for d in tail])
    # The output must have the full shape: give any dimension no operand covers to the first one.
    full = list(np.broadcast_shapes(tuple(shapes[0]), tuple(shapes[1])))
    if len(full) < len(out) or full != out[len(out) - len(full):]:
        shapes[0] = list(out)
    return shapes


@settings(max_examples=120, deadline=None)
@given(op=st.sampled_from(["ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"]), shapes=broadcast_shapes(),
       const=st.sampled_from([None, 0, 1]), qa=st.tuples(scales, zero_points), qb=st.tuples(scales, zero_points),
       out_ratio=ratio(-4.0, 4.0), zo=zero_points, act=ACTIVATIONS, seed=seeds)
def test_binary_broadcasting_and_constants(op, shapes, const, qa, qb, out_ratio, zo, act, seed):
    # litert_ref feeds inputs through np.ascontiguousarray, which turns a 0-d array into a 1-d one, so only
    # constants may be scalars here.
    shapes = [s if s or i == const else [1] for i, s in enumerate(shapes)]
    rng = np.random.default_rng(seed)
    values = [rng.integers(-128, 128, size=s, dtype=np.int64).astype(np.int8) for s in shapes]
    if op == "MUL":
        so = f32(qa[0] * qb[0] / out_ratio)
        options = {"fused_activation_function": act}
    elif op in ("ADD", "SUB"):
        so = f32(max(qa[0], qb[0]) / out_ratio)
        options = {"fused_activation_function": act}
    else:  # MAXIMUM/MINIMUM ignore quantization: different parameters on each tensor show it
        so = f32(qa[0] * out_ratio)
        options = {}
    assume(so > MIN_OUTPUT_SCALE and np.isfinite(so))
    data = [None, None]
    if const is not None:
        data[const] = values[const]
    model = binary_model(op, shapes[0], shapes[1], qa, qb, (so, zo), data[0], data[1], **options)
    assert_bit_exact(model, [v for v, d in zip(values, data) if d is None])


@pytest.mark.parametrize("op", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum_all_value_pairs(op):
    a, b = pairs_grid()
    model = binary_model(op, a.shape, b.shape, (0.02, 3), (0.5, -7), (0.1, 100))
    assert_bit_exact(model, [a, b])


def test_add_refuses_output_multiplier_of_one_or_more():
    # LiteRT itself aborts on this model (QuantizeMultiplierSmallerThanOneExp's TFLITE_CHECK), so it is not run.
    model = binary_model("ADD", [4], [4], (1.0, 0), (1.0, 0), (1e-7, 0))
    with pytest.raises(LegalizationError, match="must lie in"):
        tosaic.import_tflite(model)


def test_sub_refuses_output_multiplier_above_one():
    # SUB's Prepare accepts it but the int8 kernel then calls RoundingDivideByPOT with a negative exponent
    # (undefined behaviour). Seen with LiteRT 2.3.0 at s_o = 1e-6: equal inputs give 1 instead of the zero point,
    # and any positive difference gives 1 where 127 is due.
    model = binary_model("SUB", [4], [4], (1.0, 0), (1.0, 0), (1e-7, 0))
    with pytest.raises(LegalizationError, match="must lie in"):
        tosaic.import_tflite(model)


def test_mul_refuses_multipliers_that_overflow():
    model = binary_model("MUL", [4], [4], (4.0, 0), (4.0, 0), (1e-4, 0))
    with pytest.raises(LegalizationError, match="cannot rescale"):
        tosaic.import_tflite(model)


def test_mul_flushes_tiny_multipliers_to_zero_like_the_kernel():
    # s_a s_b / s_o < 2^-32: QuantizeMultiplier flushes the multiplier to 0, so every output is the zero point.
    a, b = pairs_grid()
    model = binary_model("MUL", a.shape, b.shape, (2.0 ** -20, 3), (2.0 ** -20, -5), (2.0 ** -7, 9))
    assert_bit_exact(model, [a, b])


# -------------------------------------------------------------------------------------------- PRELU


def prelu_model(x_shape, alpha_shape, qx, qa, qo, alpha_data=None) -> bytes:
    b = ModelBuilder()
    x = b.tensor(x_shape, np.int8, scale=qx[0], zero_point=qx[1], name="x")
    alpha = b.tensor(alpha_shape, np.int8, scale=qa[0], zero_point=qa[1], data=alpha_data, name="alpha")
    y = b.tensor(x_shape, np.int8, scale=qo[0], zero_point=qo[1], name="y")
    b.op("PRELU", [x, alpha], [y])
    return b.build()


@settings(max_examples=40, deadline=None)
@given(sx=scales, sa=scales, out_ratio=ratio(-10.0, 6.0), zx=zero_points, za=zero_points, zo=zero_points)
def test_prelu_all_value_pairs(sx, sa, out_ratio, zx, za, zo):
    # x[i, j] = i - 128 meets alpha[j] = j - 128: every (input, alpha) pair. Multiplier 2 is
    # s_x s_alpha / s_o; keep it below 2^13 so products rescale exactly (larger ones are refused, see below).
    so = f32(sx / out_ratio)
    assume(so > 0 and sx * sa / so < 2.0 ** 13)
    x = np.repeat(ALL_INT8.reshape(256, 1), 256, axis=1)
    alpha = ALL_INT8.reshape(1, 256).copy()
    model = prelu_model(x.shape, alpha.shape, (sx, zx), (sa, za), (so, zo))
    assert_bit_exact(model, [x, alpha])


@st.composite
def prelu_shapes(draw):
    x_shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    rank = draw(st.integers(1, len(x_shape)))
    alpha_shape = [d if draw(st.booleans()) else 1 for d in x_shape[len(x_shape) - rank:]]
    return x_shape, alpha_shape


@settings(max_examples=50, deadline=None)
@given(shapes=prelu_shapes(), qx=st.tuples(scales, zero_points), qa=st.tuples(scales, zero_points),
       out_ratio=ratio(-4.0, 4.0), zo=zero_points, const_alpha=st.booleans(), seed=seeds)
def test_prelu_shapes_and_constant_alpha(shapes, qx, qa, out_ratio, zo, const_alpha, seed):
    x_shape, alpha_shape = shapes
    so = f32(qx[0] / out_ratio)
    assume(so > 0 and qx[0] * qa[0] / so < 2.0 ** 13)
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=x_shape, dtype=np.int64).astype(np.int8)
    alpha = rng.integers(-128, 128, size=alpha_shape, dtype=np.int64).astype(np.int8)
    model = prelu_model(x_shape, alpha_shape, qx, qa, (so, zo), alpha if const_alpha else None)
    assert_bit_exact(model, [x] if const_alpha else [x, alpha])


# --------------------------------------------------------------------------------- unary activations


@settings(max_examples=80, deadline=None)
@given(op=st.sampled_from(["RELU", "RELU6"]), si=scales, real=ratio(-14.0, 14.0), zi=zero_points,
       zo=zero_points)
def test_relu_relu6_all_values(op, si, real, zi, zo):
    so = f32(si / real)
    assume(so > MIN_OUTPUT_SCALE and np.isfinite(so))
    assert_bit_exact(unary_model(op, (si, zi), (so, zo)), [ALL_INT8.reshape(2, 128)])


def test_relu6_refuses_a_bound_that_overflows_int32():
    # QuantizedReluX casts roundf(6 / s_o) to int32 unchecked; LiteRT 2.3.0 on x86 then outputs 0 everywhere.
    with pytest.raises(LegalizationError, match="overflows int32"):
        tosaic.import_tflite(unary_model("RELU6", (3.8e-6, 0), (1.87e-9, 0)))


@settings(max_examples=60, deadline=None)
@given(si=scales, real=ratio(-10.0, 8.0), zi=zero_points, zo=zero_points,
       alpha=st.one_of(st.floats(min_value=-2.0, max_value=2.0, width=32), st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0])))
def test_leaky_relu_all_values(si, real, zi, zo, alpha):
    so = f32(si / real)
    assume(so > 0 and np.isfinite(so))
    assert_bit_exact(unary_model("LEAKY_RELU", (si, zi), (so, zo), alpha=alpha), [ALL_INT8.reshape(2, 128)])


@settings(max_examples=50, deadline=None)
@given(si=st.one_of(scales, st.floats(min_value=1e-3, max_value=0.2)), zi=zero_points, zo=zero_points)
def test_logistic_all_values(si, zi, zo):
    # SigmoidPrepare requires the output scale 1/256 (any zero point runs on the reference kernel).
    assert_bit_exact(unary_model("LOGISTIC", (si, zi), (1 / 256, zo)), [ALL_INT8.reshape(2, 128)])


@settings(max_examples=50, deadline=None)
@given(si=st.one_of(scales, st.floats(min_value=1e-3, max_value=0.2)), so=st.one_of(scales, st.just(1 / 128)),
       zi=zero_points, zo=zero_points)
def test_tanh_all_values(si, so, zi, zo):
    assume(1.0 / so < 2.0 ** 30)  # the float LUT's int cast must stay defined
    assert_bit_exact(unary_model("TANH", (si, zi), (so, zo)), [ALL_INT8.reshape(2, 128)])


@settings(max_examples=60, deadline=None)
@given(si=scales, real=ratio(-6.0, 7.0), zi=zero_points, zo=zero_points)
def test_hard_swish_all_values(si, real, zi, zo):
    # HardSwishPrepare requires s_i / (128 s_o) to quantize with exponent <= 0: real = s_i / s_o <= 2^7.
    so = f32(si / real)
    assume(so > 0 and np.isfinite(so))
    assume(si / (128 * so) < 0.99)
    assert_bit_exact(unary_model("HARD_SWISH", (si, zi), (so, zo)), [ALL_INT8.reshape(2, 128)])


def test_logistic_refuses_other_output_scales():
    with pytest.raises(LegalizationError, match="1/256"):
        tosaic.import_tflite(unary_model("LOGISTIC", (0.05, 0), (1 / 128, 0)))


# ------------------------------------------------------------------------------------------ QUANTIZE


@settings(max_examples=80, deadline=None)
@given(si=scales, real=ratio(-14.0, 14.0), zi=zero_points, zo=zero_points)
def test_quantize_int8_to_int8_all_values(si, real, zi, zo):
    so = f32(si / real)
    assume(so > 0 and np.isfinite(so))
    assert_bit_exact(unary_model("QUANTIZE", (si, zi), (so, zo)), [ALL_INT8.reshape(2, 128)])


def test_quantize_identity_and_zero_point_shift():
    x = ALL_INT8.reshape(2, 128)
    for qi, qo in [((0.1, 0), (0.1, 0)), ((0.1, 5), (0.1, -5)), ((0.1, 0), (0.05, 0)), ((0.02, -128), (0.04, 127))]:
        assert_bit_exact(unary_model("QUANTIZE", qi, qo), [x])


# ---------------------------------------------------------------------------- rounding witnesses
# Parameter sets found by sweeping ports of the kernels: at the listed (q_a, q_b) the reference output differs
# by one from a plausible shortcut, so these cases pin the exact arithmetic. Random sweeps rarely meet them
# (folding ADD's << 20 into the input multiplier changed 10 of 2e8 outputs over 3000 parameter sets; computing
# MUL's s_a s_b / s_o in double instead of float32 changed some output in 11 of 3000).

ADD_FOLDING_WITNESSES = [  # scale_a, scale_b, zp_a, zp_b, scale_out, zp_out, q_a, q_b, reference, folded
    (0.061995141208171844, 0.1391170173883438, 49, -26, 0.0002769488201010972, -77, -103, 42, 55, 56),
    (0.00015101258759386837, 0.0047117238864302635, 82, -71, 5.291905836202204e-05, -96, -70, -64, 93, 94),
    (0.9920393228530884, 7.02396297454834, -50, 33, 8.51181411743164, -43, 111, 86, 20, 19),
    (0.24773825705051422, 0.9145083427429199, -38, 52, 0.0281998123973608, 116, 119, 6, 4, 3),
]


@pytest.mark.parametrize("sa,sb,za,zb,so,zo,qa,qb,reference,folded", ADD_FOLDING_WITNESSES)
def test_add_keeps_the_left_shift_as_its_own_rescale(sa, sb, za, zb, so, zo, qa, qb, reference, folded):
    a, b = pairs_grid()
    model = binary_model("ADD", a.shape, b.shape, (sa, za), (sb, zb), (so, zo))
    (out,) = run_reference(model, [a, b])
    assert out[qa + 128, qb + 128] == reference != folded
    assert_bit_exact(model, [a, b])


MUL_FLOAT32_WITNESSES = [  # scale_a, scale_b, zp_a, zp_b, scale_out, zp_out, q_a, q_b, reference (float32), double
    (0.18825270235538483, 0.014205215498805046, -51, 10, 0.08588909357786179, -63, -106, -37, 18, 17),
    (0.1472671627998352, 1.1252551078796387, 56, 100, 3.390345811843872, 87, -83, 122, -63, -62),
    (0.0009912772802636027, 0.5153428316116333, -88, -6, 0.08182753622531891, -34, 121, -47, -88, -87),
]


@pytest.mark.parametrize("sa,sb,za,zb,so,zo,qa,qb,reference,double", MUL_FLOAT32_WITNESSES)
def test_mul_multiplier_is_computed_in_float32(sa, sb, za, zb, so, zo, qa, qb, reference, double):
    a, b = pairs_grid()
    model = binary_model("MUL", a.shape, b.shape, (sa, za), (sb, zb), (so, zo))
    (out,) = run_reference(model, [a, b])
    assert out[qa + 128, qb + 128] == reference != double
    assert_bit_exact(model, [a, b])


# RELU's Prepare divides the scales in float32, QUANTIZE's in double: at these parameters the two kernels give
# different bits for the same q (found by a sweep of 200000 parameter sets, 13 of which differ anywhere).
UNARY_DIVISION_WITNESSES = [  # scale_in, zp_in, scale_out, zp_out, q, float32 ratio result, double ratio result
    (1.4751439094543457, -21, 0.20552566647529602, 124, -52, -98, -99),
    (0.005094506312161684, 121, 0.002074409741908312, 101, 87, 18, 17),
    (0.055662717670202255, -110, 0.12042206525802612, 42, 29, 106, 107),
]


@pytest.mark.parametrize("si,zi,so,zo,q,single,double", UNARY_DIVISION_WITNESSES)
def test_quantize_divides_in_double_and_relu_in_float32(si, zi, so, zo, q, single, double):
    x = ALL_INT8.reshape(2, 128)
    quantize = unary_model("QUANTIZE", (si, zi), (so, zo))
    assert run_reference(quantize, [x])[0].reshape(-1)[q + 128] == double
    assert_bit_exact(quantize, [x])
    relu = unary_model("RELU", (si, zi), (so, zo))
    expected = max(single, zo)
    assert run_reference(relu, [x])[0].reshape(-1)[q + 128] == expected
    assert_bit_exact(relu, [x])
