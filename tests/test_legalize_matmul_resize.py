"""BATCH_MATMUL, TRANSPOSE_CONV, RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR (int8 and int16) against LiteRT's
reference kernels (BUILTIN_REF), bit for bit.

The tests/data models run first; property tests then build single-op models over shapes, broadcast batch
dimensions, adjoints, constant operands, strides, paddings, kernel sizes, per-channel scales, biases, fused
activations, resize sizes and flags, and compare tosaic with LiteRT on the same seeded inputs. The roundings
that TOSA does not have natively (half away from zero in RESIZE_BILINEAR) are also proven on their own.
"""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from litert_ref import random_inputs, run_reference
from exactness import assert_bit_exact, f32, run_tosaic
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.importer import LegalizationError
from tosaic.importers.tflite.ops import resize as resize_ops
from tosaic.ir import Graph
from tosaic.quant import apply_scale_32, multiply_by_quantized_multiplier, quantize_multiplier
from tosaic.tosa.mlir import print_graph

DATA = "tests/data"

seeds = st.integers(0, 2**32 - 1)
zero_points = st.integers(-128, 127)




def scale_for(typical: float, exponent: float) -> float:
    """An output scale that puts a value of size `typical` around 40 units (2^exponent times that)."""
    return f32(typical / 40.0 * 2.0 ** exponent)


# --------------------------------------------------------------------------------- tests/data models

DATA_MODELS = ["op_batch_matmul", "op_batch_matmul_adjy", "op_transpose_conv_s2_same",
               "op_transpose_conv_s2_valid_k2", "op_resize_bilinear_align", "op_resize_bilinear_x2",
               "op_resize_nearest_odd", "op_resize_nearest_x2"]


@pytest.mark.parametrize("name", DATA_MODELS)
def test_data_model_matches_reference(name):
    io = np.load(f"{DATA}/{name}.io.npz")
    inputs = [io[f"in_{i}"] for i in range(sum(k.startswith("in_") for k in io.files))]
    outputs = tosaic.compile(f"{DATA}/{name}.tflite").run(inputs)
    for i, got in enumerate(outputs):
        assert np.array_equal(got, io[f"ref_{i}"]), name


# ------------------------------------------------------------------------------------- BATCH_MATMUL

KINDS = [(np.int8, np.int8, np.int8), (np.int8, np.int8, np.int32), (np.int16, np.int16, np.int16),
         (np.int16, np.int8, np.int16)]


@st.composite
def batch_matmul_models(draw):
    rng = np.random.default_rng(draw(seeds))
    lhs_t, rhs_t, out_t = draw(st.sampled_from(KINDS + KINDS[:1]))
    int16 = lhs_t == np.int16
    rows, depth, cols = draw(st.integers(1, 6)), draw(st.integers(1, 24)), draw(st.integers(1, 6))
    out_rank = draw(st.integers(2, 5))
    batch = [draw(st.integers(1, 3)) for _ in range(out_rank - 2)]
    # Each operand keeps a suffix of the batch dimensions, some of them 1 (broadcast).
    lhs_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))):]
    rhs_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))):]
    kept = max(len(lhs_batch), len(rhs_batch))
    out_batch = [max(a, b) for a, b in zip([1] * (kept - len(lhs_batch)) + lhs_batch,
                                            [1] * (kept - len(rhs_batch)) + rhs_batch)]
    adj_x, adj_y = draw(st.booleans()), draw(st.booleans())
    lhs_shape = lhs_batch + ([depth, rows] if adj_x else [rows, depth])
    rhs_shape = rhs_batch + ([cols, depth] if adj_y else [depth, cols])
    const = draw(st.sampled_from(["none", "none", "rhs", "lhs"]))
    zero = 0 if int16 else None
    s_l, s_r = f32(2.0 ** draw(st.floats(-12, -2))), f32(2.0 ** draw(st.floats(-12, -2)))
    z_l = zero if int16 else draw(zero_points)
    z_r = zero if int16 else draw(zero_points)
    # Typical |acc|: uniform operands' spread times sqrt(depth), plus the zero points' bias depth * z_l * z_r.
    spread_l, spread_r = (16384.0 if int16 else 74.0), (16384.0 if rhs_t == np.int16 else 74.0)
    typical = spread_l * spread_r * math.sqrt(depth) + depth * abs((z_l or 0) * (z_r or 0))
    s_o = scale_for(s_l * s_r * typical, draw(st.floats(-3, 3)) - (9 if int16 else 0))
    z_o = 0 if int16 else draw(zero_points)
    b = ModelBuilder()

    def operand(shape, dtype, scale, zp, is_const, name):
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, shape, endpoint=True) if is_const else None
        return b.tensor(shape, dtype, scale=scale, zero_point=zp, data=data, name=name)

    lhs = operand(lhs_shape, lhs_t, s_l, z_l, const == "lhs", "lhs")
    rhs = operand(rhs_shape, rhs_t, s_r, z_r, const == "rhs", "rhs")
    if out_t == np.int32:
        y = b.tensor(out_batch + [rows, cols], np.int32)
    else:
        y = b.tensor(out_batch + [rows, cols], out_t, scale=s_o, zero_point=z_o)
    b.op("BATCH_MATMUL", [lhs, rhs], [y], adj_x=adj_x, adj_y=adj_y)
    return b.build()


@settings(max_examples=250, deadline=None)
@given(model=batch_matmul_models(), seed=seeds)
def test_batch_matmul_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


def test_batch_matmul_multiplier_uses_float_product_of_scales():
    """GetQuantizedConvolutionMultipler (no bias) computes double(float(s_lhs * s_rhs)) / double(s_out): the
    scales' product is rounded to float first, unlike CONV_2D's double product. With these scales the two
    multipliers differ (1944703217 vs 1944703272) and so do 16 of the 65536 products of every int8 pair:
    LiteRT and tosaic follow the float product."""
    s_l, s_r, s_o = 0.08293479681015015, 0.08566319197416306, 1.0041937828063965  # float32 values
    m_float, e_float = quantize_multiplier(float(np.float32(s_l) * np.float32(s_r)) / s_o)
    m_double, e_double = quantize_multiplier(s_l * s_r / s_o)
    assert (m_float, e_float) != (m_double, e_double)
    b = ModelBuilder()
    lhs = b.tensor([256, 1], np.int8, scale=s_l, zero_point=0, name="lhs")
    rhs = b.tensor([1, 256], np.int8, scale=s_r, zero_point=0, data=np.arange(-128, 128).reshape(1, 256))
    y = b.tensor([256, 256], np.int8, scale=s_o, zero_point=0)
    b.op("BATCH_MATMUL", [lhs, rhs], [y])
    model = b.build()
    x = np.arange(-128, 128, dtype=np.int8).reshape(256, 1)
    acc = x.astype(np.int64) * np.arange(-128, 128)
    with_double = np.clip(multiply_by_quantized_multiplier(acc, m_double, e_double), -128, 127)
    with_float = np.clip(multiply_by_quantized_multiplier(acc, m_float, e_float), -128, 127)
    (reference,) = run_reference(model, [x])
    assert np.array_equal(reference, with_float) and np.count_nonzero(reference != with_double) == 16
    assert_bit_exact(model, [x])


def test_batch_matmul_int8_to_int32_ignores_zero_points():
    """EvalInt8Int32 multiplies the raw int8 values: the operands' zero points are not subtracted."""
    b = ModelBuilder()
    lhs = b.tensor([2, 3, 5], np.int8, scale=0.1, zero_point=7, name="lhs")
    rhs = b.tensor([5, 4], np.int8, scale=0.2, zero_point=-3, data=np.arange(20).reshape(5, 4) - 10)
    y = b.tensor([2, 3, 4], np.int32)
    b.op("BATCH_MATMUL", [lhs, rhs], [y])
    model = b.build()
    x = random_inputs(model, seed=3)
    (reference,) = run_reference(model, x)
    assert np.array_equal(reference, x[0].astype(np.int32) @ (np.arange(20).reshape(5, 4) - 10))
    assert_bit_exact(model, x)


def test_batch_matmul_refuses_unprovable_int16_requantization():
    """int16 x int16 with a tiny output scale: accumulators times the scale can leave int32, where LiteRT's
    MultiplyByQuantizedMultiplier(int64) truncates its result; tosaic refuses instead of guessing."""
    b = ModelBuilder()
    lhs = b.tensor([4, 64], np.int16, scale=1.0, zero_point=0, name="lhs")
    rhs = b.tensor([64, 4], np.int16, scale=1.0, zero_point=0, name="rhs")
    y = b.tensor([4, 4], np.int16, scale=1.0 / 16, zero_point=0)
    b.op("BATCH_MATMUL", [lhs, rhs], [y])
    with pytest.raises(LegalizationError, match="leave int32"):
        tosaic.import_tflite(b.build())


# ----------------------------------------------------------------------------------- TRANSPOSE_CONV

ACTIVATIONS = st.sampled_from(["NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1"])


@st.composite
def transpose_conv_models(draw):
    rng = np.random.default_rng(draw(seeds))
    int16 = draw(st.booleans())
    dtype = np.int16 if int16 else np.int8
    ic, oc = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    n, ih, iw = draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    if padding == "SAME":
        # Any output size whose ceil(out / stride) is the input size.
        oh, ow = draw(st.integers((ih - 1) * sh + 1, ih * sh)), draw(st.integers((iw - 1) * sw + 1, iw * sw))
    else:
        oh = draw(st.integers((ih - 1) * sh + kh, (ih - 1) * sh + kh + sh - 1))
        ow = draw(st.integers((iw - 1) * sw + kw, (iw - 1) * sw + kw + sw - 1))
    s_in = f32(2.0 ** draw(st.floats(-12, -2)))
    z_in = 0 if int16 else draw(zero_points)
    z_out = 0 if int16 else draw(zero_points)
    per_channel = draw(st.booleans())
    base = draw(st.floats(-9.0, -4.0))
    ws = [f32(2.0 ** (base + (draw(st.floats(-1, 1)) if per_channel else 0))) for _ in range(oc if per_channel else 1)]
    typical = s_in * max(ws) * (16384.0 if int16 else 74.0) * 74.0 * math.sqrt(ic * kh * kw / (sh * sw))
    s_out = scale_for(typical, draw(st.floats(-2, 2)) - (9 if int16 else 0))
    weights = rng.integers(-127, 128, (oc, kh, kw, ic))
    bias_kind = draw(st.sampled_from(["none", "bias", "bias"] + (["int32 bias"] if int16 else [])))
    b = ModelBuilder()
    shape = b.tensor([4], np.int32, data=np.array([n, oh, ow, oc]), name="output_shape")
    w = b.tensor(weights.shape, np.int8, scale=ws, zero_point=0, data=weights, quant_dim=0, name="w")
    x = b.tensor([n, ih, iw, ic], dtype, scale=s_in, zero_point=z_in, name="x")
    y = b.tensor([n, oh, ow, oc], dtype, scale=s_out, zero_point=z_out, name="y")
    inputs = [shape, w, x]
    options = {"padding": padding, "stride_h": sh, "stride_w": sw}
    bias_scale = (np.float32(s_in) * np.asarray(ws, np.float32)).astype(np.float32)
    bias_scale = np.repeat(bias_scale, oc) if bias_scale.size == 1 else bias_scale
    if bias_kind == "bias":
        bias_type = np.int64 if int16 else np.int32
        values = rng.integers(-(1 << 14), 1 << 14, oc) * draw(st.sampled_from([1, 16]))
        inputs.append(b.tensor([oc], bias_type, scale=bias_scale, zero_point=0, data=values, name="bias"))
    elif bias_kind == "int32 bias":
        values = rng.integers(-(1 << 14), 1 << 14, oc)
        inputs.append(b.tensor([oc], np.int32, scale=bias_scale, zero_point=0, data=values, name="bias"))
        options["quantized_bias_type"] = "INT32"
    activation = draw(ACTIVATIONS)
    if activation != "NONE":
        options["fused_activation_function"] = activation
    b.op("TRANSPOSE_CONV", inputs, [y], **options)
    return b.build()


@settings(max_examples=250, deadline=None)
@given(model=transpose_conv_models(), seed=seeds)
def test_transpose_conv_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


def test_transpose_conv_ignores_filter_zero_point():
    """A per-tensor filter with a non-zero zero point: the reference kernel uses the filter values raw."""
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    shape = b.tensor([4], np.int32, data=np.array([1, 9, 9, 3]))
    w = b.tensor([3, 3, 3, 2], np.int8, scale=0.02, zero_point=11, data=rng.integers(-127, 128, (3, 3, 3, 2)))
    x = b.tensor([1, 5, 5, 2], np.int8, scale=0.05, zero_point=-4, name="x")
    y = b.tensor([1, 9, 9, 3], np.int8, scale=0.1, zero_point=3)
    b.op("TRANSPOSE_CONV", [shape, w, x], [y], padding="SAME", stride_h=2, stride_w=2)
    model = b.build()
    assert_bit_exact(model, random_inputs(model, seed=2))


def test_transpose_conv_refuses_int16_with_int32_bias_without_its_option():
    """int16 input with an int32 bias but no quantized_bias_type INT32: LiteRT's 16x8 path reads the bias
    buffer as int64 (past its end), so there is nothing meaningful to reproduce."""
    b = ModelBuilder()
    shape = b.tensor([4], np.int32, data=np.array([1, 4, 4, 2]))
    w = b.tensor([2, 3, 3, 2], np.int8, scale=0.02, zero_point=0, data=np.ones((2, 3, 3, 2)))
    x = b.tensor([1, 4, 4, 2], np.int16, scale=0.001, zero_point=0, name="x")
    bias = b.tensor([2], np.int32, scale=[2e-5, 2e-5], zero_point=0, data=[5, -5])
    y = b.tensor([1, 4, 4, 2], np.int16, scale=0.01, zero_point=0)
    b.op("TRANSPOSE_CONV", [shape, w, x, bias], [y], padding="SAME", stride_h=1, stride_w=1)
    with pytest.raises(LegalizationError, match="reads it as int64"):
        tosaic.import_tflite(b.build())


# ---------------------------------------------------------------------------------- RESIZE_BILINEAR


def half_away_steps(k: int) -> int:
    """The least out20 for which round_half_away(out20 / 2^20) >= k."""
    return (2 * k - 1) << 19 if k >= 1 else ((2 * k - 1) << 19) + 1


def test_bilinear_int8_rounding_rescale_is_half_away_from_zero():
    """RESCALE by (2^28 + 1) / 2^48 (SINGLE_ROUND) rounds every int8 out20 (|out20| <= 2^27) to nearest,
    half away from zero. Both are monotone step functions of out20: they agree on the whole range when
    every step k in [-127, 128] happens at the same least out20, checked here exactly."""
    m, s = resize_ops.HALF_AWAY_MULTIPLIER, resize_ops.HALF_AWAY_SHIFT
    for k in range(-127, 129):
        least = half_away_steps(k)
        assert apply_scale_32(least, m, s) >= k > apply_scale_32(least - 1, m, s), k
    # and on every value near the steps, plus the ends
    values = np.array([half_away_steps(k) + d for k in range(-127, 129) for d in (-2, -1, 0, 1)]
                      + [-(1 << 27), 1 << 27], dtype=np.int64)
    expected = np.where(values >= 0, (values + (1 << 19)) >> 20, -((-values + (1 << 19)) >> 20))
    assert np.array_equal(apply_scale_32(values, m, s), expected)


def bilinear_reference_int16(x: np.ndarray, out_hw, align, half) -> np.ndarray:
    """A direct port of reference_ops::ResizeBilinearInteger (used to check the int16 rounding on chosen
    values, beyond what LiteRT's random inputs hit)."""
    (ih, iw), (oh, ow) = x.shape[1:3], out_hw

    def axis(i, o):
        scale = resize_ops.bilinear_scale_10(i, o, align)
        p = np.arange(o) * scale + (scale // 2 - 512 if half else 0)
        i0 = np.maximum(np.trunc(p / 1024).astype(np.int64), 0)
        i1 = np.minimum(np.trunc((p + 1023) / 1024).astype(np.int64), i - 1)
        return i0, i1, p - 1024 * i0

    y0, y1, fy = axis(ih, oh)
    x0, x1, fx = axis(iw, ow)
    v = x.astype(np.int64)
    fy, fx = fy[:, None, None], fx[None, :, None]
    out20 = (v[:, y0][:, :, x0] * (1024 - fy) * (1024 - fx) + v[:, y1][:, :, x0] * fy * (1024 - fx)
             + v[:, y0][:, :, x1] * (1024 - fy) * fx + v[:, y1][:, :, x1] * fy * fx)
    rounded = (out20 + np.where(out20 > 0, 1 << 19, -(1 << 19)))
    return (np.sign(rounded) * (np.abs(rounded) >> 20)).astype(np.int16)  # C++ division truncates


@st.composite
def resize_models(draw, op):
    dtype = draw(st.sampled_from([np.int8, np.int8, np.int16]))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    ih, iw = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    oh, ow = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    align = draw(st.booleans())
    half = draw(st.booleans()) and not (align and op == "RESIZE_BILINEAR")
    zp = 0 if dtype == np.int16 else draw(zero_points)
    b = ModelBuilder()
    x = b.tensor([n, ih, iw, c], dtype, scale=0.05, zero_point=zp, name="x")
    size = b.tensor([2], np.int32, data=np.array([oh, ow]), name="size")
    y = b.tensor([n, oh, ow, c], dtype, scale=0.05, zero_point=zp, name="y")
    b.op(op, [x, size], [y], align_corners=align, half_pixel_centers=half)
    return b.build()


# Small inputs make exact half-way interpolations common (int range [-3, 3]), full-range ones the rest.
value_ranges = st.sampled_from([None, (-3, 3), (-1, 0)])


@settings(max_examples=250, deadline=None)
@given(model=resize_models("RESIZE_BILINEAR"), seed=seeds, int_range=value_ranges)
def test_resize_bilinear_matches_reference(model, seed, int_range):
    assert_bit_exact(model, random_inputs(model, seed=seed, int_range=int_range))


@settings(max_examples=60, deadline=None)
@given(in_hw=st.tuples(st.integers(1, 9), st.integers(1, 9)), out_hw=st.tuples(st.integers(1, 24), st.integers(1, 24)),
       flags=st.sampled_from([(False, False), (True, False), (False, True)]), seed=seeds)
def test_resize_bilinear_int16_ties_round_half_away(in_hw, out_hw, flags, seed):
    """int16 through RESIZE(x) and RESIZE(~x): values of +-(k + 1/2) land exactly on ties of both signs."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 2, (1,) + in_hw + (2,)) * 2 + 1).astype(np.int16)
    x[..., 1] = rng.choice([-32768, 32767, -32767, 32766], in_hw)
    b = ModelBuilder()
    xt = b.tensor(list(x.shape), np.int16, scale=0.01, zero_point=0, name="x")
    size = b.tensor([2], np.int32, data=np.array(out_hw))
    y = b.tensor([1, *out_hw, 2], np.int16, scale=0.01, zero_point=0)
    b.op("RESIZE_BILINEAR", [xt, size], [y], align_corners=flags[0], half_pixel_centers=flags[1])
    model = b.build()
    ours = run_tosaic(model, [x])[0]
    assert np.array_equal(ours, bilinear_reference_int16(x, out_hw, *flags))
    assert np.array_equal(ours, run_reference(model, [x])[0])


def test_resize_bilinear_ignores_output_quantization():
    """The output holds the interpolated input integers even when its scale and zero point differ."""
    b = ModelBuilder()
    x = b.tensor([1, 3, 4, 2], np.int8, scale=0.05, zero_point=3, name="x")
    size = b.tensor([2], np.int32, data=np.array([7, 5]))
    y = b.tensor([1, 7, 5, 2], np.int8, scale=0.5, zero_point=-20)
    b.op("RESIZE_BILINEAR", [x, size], [y], half_pixel_centers=True)
    model = b.build()
    assert_bit_exact(model, random_inputs(model, seed=4))


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([np.int8, np.int16]), in_hw=st.tuples(st.integers(16, 70), st.integers(1, 40)),
       out_hw=st.tuples(st.integers(1, 4), st.integers(1, 40)), align=st.booleans(), half=st.booleans(),
       seed=seeds, int_range=value_ranges)
def test_resize_bilinear_beyond_tosa_resize_bounds_gathers(dtype, in_hw, out_hw, align, half, seed, int_range):
    """A downscale to 1/16 or below is outside TOSA RESIZE's bounds (unless one output row is all the axis
    has): GATHERs and i32 arithmetic instead."""
    half = half and not align
    assume(in_hw[0] >= 16 * out_hw[0])
    b = ModelBuilder()
    x = b.tensor([1, *in_hw, 2], dtype, scale=0.05, zero_point=0, name="x")
    size = b.tensor([2], np.int32, data=np.array(out_hw))
    y = b.tensor([1, *out_hw, 2], dtype, scale=0.05, zero_point=0)
    b.op("RESIZE_BILINEAR", [x, size], [y], align_corners=align, half_pixel_centers=half)
    model = b.build()
    ops = {op.name for op in tosaic.import_tflite(model).ops}
    assert ("tosa.gather" in ops) != ("tosa.resize" in ops)
    assert out_hw[0] == 1 or "tosa.gather" in ops
    inputs = random_inputs(model, seed=seed, int_range=int_range)
    assert_bit_exact(model, inputs)
    if dtype == np.int16:
        assert np.array_equal(run_tosaic(model, inputs)[0], bilinear_reference_int16(inputs[0], out_hw, align, half))


# -------------------------------------------------------------------------- RESIZE_NEAREST_NEIGHBOR


@settings(max_examples=250, deadline=None)
@given(model=resize_models("RESIZE_NEAREST_NEIGHBOR"), seed=seeds)
def test_resize_nearest_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


def float_rounding_cases(limit: int = 40):
    """(in, out, align, half) whose float32 index map differs from the exact rational one."""
    cases = []
    for i in range(1, limit):
        for o in range(1, limit):
            for align, half in ((False, False), (True, False), (False, True), (True, True)):
                # position (k + h/2) * num / den = P / Q exactly; floor, or round (half up: positive)
                num, den = (i - 1, o - 1) if align and o > 1 else (i, o)
                p, q = (2 * np.arange(o) + (1 if half else 0)) * num, 2 * den
                exact = np.minimum((2 * p + q) // (2 * q) if align else p // q, i - 1)
                if not np.array_equal(resize_ops.nearest_indices(i, o, align, half), exact):
                    cases.append((i, o, align, half))
    return cases


def test_resize_nearest_float_index_maps_need_gather():
    """Where LiteRT's float32 index arithmetic departs from the exact rational map (e.g. in=3, out=... an
    exact integer product rounded down), TOSA RESIZE cannot follow it: tosaic gathers with the kernel's
    own indices, and matches LiteRT."""
    cases = float_rounding_cases()
    assert len(cases) >= 8, "expected sizes where float32 rounding changes the nearest index"
    for i, o, align, half in cases[::len(cases) // 8][:8]:
        assert resize_ops.nearest_axis(i, o, align, half) is None
        b = ModelBuilder()
        x = b.tensor([1, i, 2, 3], np.int8, scale=0.05, zero_point=0, name="x")
        size = b.tensor([2], np.int32, data=np.array([o, 3]))
        y = b.tensor([1, o, 3, 3], np.int8, scale=0.05, zero_point=0)
        b.op("RESIZE_NEAREST_NEIGHBOR", [x, size], [y], align_corners=align, half_pixel_centers=half)
        model = b.build()
        assert "tosa.gather" in {op.name for op in tosaic.import_tflite(model).ops}
        assert_bit_exact(model, random_inputs(model, seed=i * 100 + o))


# ----------------------------------------------------------------------------------------- a chain


@settings(max_examples=12, deadline=None)
@given(int16=st.booleans(), seed=seeds)
def test_decoder_chain_matches_reference(int16, seed):
    """A small decoder: TRANSPOSE_CONV (stride 2) -> RESIZE_BILINEAR -> RESIZE_NEAREST_NEIGHBOR ->
    BATCH_MATMUL with constant weights (a 1x1 projection), int8 or int16 activations throughout."""
    rng = np.random.default_rng(seed)
    dtype = np.int16 if int16 else np.int8
    zp = (lambda: 0) if int16 else (lambda: int(rng.integers(-20, 20)))
    unit = 1.0 / 4096 if int16 else 1.0 / 16
    b = ModelBuilder()
    x = b.tensor([1, 5, 6, 3], dtype, scale=unit, zero_point=zp(), name="x")
    shape = b.tensor([4], np.int32, data=np.array([1, 10, 12, 4]))
    w = b.tensor([4, 3, 3, 3], np.int8, scale=[0.01, 0.02, 0.015, 0.03], zero_point=0, quant_dim=0,
                 data=rng.integers(-127, 128, (4, 3, 3, 3)))
    t = b.tensor([1, 10, 12, 4], dtype, scale=unit * 4, zero_point=zp())
    b.op("TRANSPOSE_CONV", [shape, w, x], [t], padding="SAME", stride_h=2, stride_w=2)
    size1 = b.tensor([2], np.int32, data=np.array([17, 9]))
    r1 = b.tensor([1, 17, 9, 4], dtype, scale=unit * 4, zero_point=0 if int16 else 0)
    b.op("RESIZE_BILINEAR", [t, size1], [r1], half_pixel_centers=True)
    size2 = b.tensor([2], np.int32, data=np.array([23, 31]))
    r2 = b.tensor([1, 23, 31, 4], dtype, scale=unit * 4, zero_point=0)
    b.op("RESIZE_NEAREST_NEIGHBOR", [r1, size2], [r2], align_corners=True)
    proj = b.tensor([4, 6], dtype, scale=0.02, zero_point=0, data=rng.integers(-100, 100, (4, 6)))
    y = b.tensor([1, 23, 31, 6], dtype, scale=unit * 8, zero_point=zp())
    b.op("BATCH_MATMUL", [r2, proj], [y])
    model = b.build()
    assert_bit_exact(model, random_inputs(model, seed=seed))


# ------------------------------------------------------------------------------ Arm's TOSA validator

from tosa_tools import TOSA_OPT, requires_tosa_tools


def _bmm(lhs_t, rhs_t, out_t, lhs_shape, rhs_shape, out_shape, const=None, **options):
    b = ModelBuilder()
    zp = 0 if lhs_t == np.int16 else 3
    lhs = b.tensor(lhs_shape, lhs_t, scale=0.01, zero_point=zp, name="lhs",
                   data=np.ones(lhs_shape) if const == "lhs" else None)
    rhs = b.tensor(rhs_shape, rhs_t, scale=0.02, zero_point=0 if lhs_t == np.int16 else -2, name="rhs",
                   data=np.ones(rhs_shape) if const == "rhs" else None)
    y = b.tensor(out_shape, out_t) if out_t == np.int32 else \
        b.tensor(out_shape, out_t, scale=0.05, zero_point=0 if lhs_t == np.int16 else 1)
    b.op("BATCH_MATMUL", [lhs, rhs], [y], **options)
    return b.build()


def _transpose_conv(dtype, bias_type, quantized_bias_type=None):
    b = ModelBuilder()
    shape = b.tensor([4], np.int32, data=np.array([1, 8, 8, 3]))
    w = b.tensor([3, 3, 3, 2], np.int8, scale=[0.02, 0.03, 0.01], zero_point=0, data=np.ones((3, 3, 3, 2)))
    x = b.tensor([1, 4, 4, 2], dtype, scale=0.01, zero_point=0 if dtype == np.int16 else -3, name="x")
    bias = b.tensor([3], bias_type, scale=[1e-4] * 3, zero_point=0, data=[5, -5, 7])
    y = b.tensor([1, 8, 8, 3], dtype, scale=0.05, zero_point=0 if dtype == np.int16 else 2)
    options = {"quantized_bias_type": quantized_bias_type} if quantized_bias_type else {}
    b.op("TRANSPOSE_CONV", [shape, w, x, bias], [y], padding="SAME", stride_h=2, stride_w=2,
         fused_activation_function="RELU", **options)
    return b.build()


def _resize(op, dtype, in_hw, out_hw, align=False, half=False):
    b = ModelBuilder()
    x = b.tensor([1, *in_hw, 2], dtype, scale=0.05, zero_point=0, name="x")
    size = b.tensor([2], np.int32, data=np.array(out_hw))
    y = b.tensor([1, *out_hw, 2], dtype, scale=0.05, zero_point=0)
    b.op(op, [x, size], [y], align_corners=align, half_pixel_centers=half)
    return b.build()


# Every form the legalizations emit: broadcast (TILE), adjoints (TRANSPOSE), int8 -> int32, int16 and
# int16 x int8 (CAST), constant operands, i48 bias and the int32-scratch path, RESIZE with and without a
# TILE, the int16 rounding (BITWISE_NOT, GREATER_EQUAL, SELECT), and the GATHER forms of both resizes.
VALIDATED = {
    "bmm_int8_broadcast": lambda: _bmm(np.int8, np.int8, np.int8, [2, 1, 3, 4], [3, 4, 5], [2, 3, 3, 5]),
    "bmm_int8_adjoints": lambda: _bmm(np.int8, np.int8, np.int8, [2, 4, 3], [2, 5, 4], [2, 3, 5], adj_x=True,
                                      adj_y=True),
    "bmm_int8_to_int32": lambda: _bmm(np.int8, np.int8, np.int32, [3, 4], [4, 5], [3, 5], const="rhs"),
    "bmm_int16": lambda: _bmm(np.int16, np.int16, np.int16, [2, 3, 4], [2, 4, 5], [2, 3, 5]),
    "bmm_int16x8": lambda: _bmm(np.int16, np.int8, np.int16, [2, 3, 4], [4, 5], [2, 3, 5]),
    "tconv_int8": lambda: _transpose_conv(np.int8, np.int32),
    "tconv_int16": lambda: _transpose_conv(np.int16, np.int64),
    "tconv_int16_int32_bias": lambda: _transpose_conv(np.int16, np.int32, "INT32"),
    "bilinear_int8": lambda: _resize("RESIZE_BILINEAR", np.int8, (5, 7), (9, 3), half=True),
    "bilinear_int16": lambda: _resize("RESIZE_BILINEAR", np.int16, (5, 7), (9, 3), align=True),
    "bilinear_tile": lambda: _resize("RESIZE_BILINEAR", np.int8, (1, 7), (9, 3), align=True),
    "bilinear_gather_int8": lambda: _resize("RESIZE_BILINEAR", np.int8, (40, 7), (2, 3)),
    "bilinear_gather_int16": lambda: _resize("RESIZE_BILINEAR", np.int16, (40, 7), (2, 3), half=True),
    "nearest_int8": lambda: _resize("RESIZE_NEAREST_NEIGHBOR", np.int8, (5, 7), (9, 3), half=True),
    "nearest_int16": lambda: _resize("RESIZE_NEAREST_NEIGHBOR", np.int16, (5, 7), (9, 3), align=True),
    "nearest_gather": lambda: _resize("RESIZE_NEAREST_NEIGHBOR", np.int8, (40, 7), (2, 3)),
}


@pytest.mark.tosa_tools
@requires_tosa_tools
def test_emitted_tosa_passes_arm_validator(tmp_path):
    """All the forms above side by side in one function, checked by `tosa-opt --tosa-validate` (strict,
    PRO-INT + PRO-FP with the doubleround and int16 extensions), as tests/test_tosa_validate.py does."""
    combined = Graph("main")
    for name, make in VALIDATED.items():
        graph = tosaic.import_tflite(make())
        combined.inputs += graph.inputs
        combined.input_names += [f"{name}:{n}" for n in graph.input_names]
        combined.ops += graph.ops
        combined.outputs += graph.outputs
        combined.output_names += [f"{name}:{n}" for n in graph.output_names]
    source = tmp_path / "graphs.mlir"
    source.write_text(print_graph(combined))
    result = subprocess.run([str(TOSA_OPT), str(source),
                             "--tosa-attach-target=profiles=pro_int,pro_fp extensions=doubleround,int16 "
                             "specification_version=1.0", "--tosa-validate=strict-op-spec-alignment",
                             "-o", str(tmp_path / "out.mlir")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
