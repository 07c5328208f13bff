"""int8 CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D and MEAN against LiteRT's
reference kernels (BUILTIN_REF), bit for bit.

The tests/data models run first; property tests then build single-op models over shapes, strides, paddings,
dilations, groups, depth multipliers, per-tensor and per-channel scales, zero points, biases and fused
activations, and compare tosaic with LiteRT on the same seeded inputs. FULLY_CONNECTED requantizes in double
precision in LiteRT 2.3.0's reference kernel; the RESCALE that reproduces it is proven separately against an
emulation of the C++ on every accumulator near every rounding step, and on whole ranges.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litert_ref import random_inputs
from exactness import assert_bit_exact, f32
from tflite_builder import ModelBuilder, conv_output_size

import tosaic
from tosaic.importers.tflite.ops.conv import exact_float_requant
from tosaic.importers.tflite.ops.reduce import mean_multiplier
from tosaic.quant import apply_scale_32, round_half_away

DATA = "tests/data"

# ------------------------------------------------------------------------------------------- helpers




zero_points = st.integers(-128, 127)
seeds = st.integers(0, 2**32 - 1)
ACTIVATIONS = st.sampled_from(["NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
# Input scales: log-uniform, or "round" values (powers of two, k/255) that make rounding ties common.
input_scales = st.one_of(st.floats(-10.0, 0.0).map(lambda e: f32(2.0 ** e)),
                         st.builds(lambda k, e: f32(k * 2.0 ** e), st.sampled_from([1, 3, 1 / 255, 2 / 255]),
                                   st.integers(-8, 0)))
# How far the output scale sits from the accumulator's typical real range (2^-2 .. 2^2 around it, exact
# powers of two now and then); keeps outputs mostly unsaturated so rounding is what gets tested.
spread = st.one_of(st.floats(-2.0, 2.0), st.integers(-2, 2).map(float))


def output_scale(s_in: float, s_w: float, depth: int, exponent: float) -> float:
    """An output scale for which a depth-`depth` int8 dot product lands well inside int8."""
    typical = s_in * s_w * 74.0 * 74.0 * math.sqrt(depth)
    return f32(typical / 40.0 * 2.0 ** exponent)


def filter_scales(draw, channels: int, per_channel: bool) -> list[float]:
    base = draw(st.floats(-9.0, -4.0))
    if not per_channel:
        return [f32(2.0 ** base)]
    return [f32(2.0 ** (base + draw(st.floats(-1.0, 1.0)))) for _ in range(channels)]


def window(draw, kernel_max=4, stride_max=3, dilation_max=1):
    """(in size, kernel, stride, dilation) for one spatial axis; VALID needs in >= the dilated kernel."""
    k = draw(st.integers(1, kernel_max))
    s = draw(st.integers(1, stride_max))
    d = draw(st.integers(1, dilation_max)) if k > 1 else 1
    return k, s, d


# --------------------------------------------------------------------------------- tests/data models

DATA_MODELS = ["op_conv2d_big_56x56x64_k3", "op_conv2d_dil2_same", "op_conv2d_s1_same_relu", "op_conv2d_s1_valid_none",
               "op_conv2d_s2_same_relu6", "op_conv2d_s2_valid_k1", "op_dwconv_m1_s1_same_relu6",
               "op_dwconv_m1_s2_valid", "op_dwconv_m2_s1_same", "op_fc_256x100_relu", "op_fc_3d_keepdims_8x48x24",
               "op_fc_64x32", "op_avgpool_2x2_s2_valid", "op_avgpool_3x3_s1_same", "op_maxpool_2x2_s2_valid",
               "op_maxpool_3x3_s2_same", "op_mean_hw_keepdims", "op_mean_lastaxis"]


@pytest.mark.parametrize("name", DATA_MODELS)
def test_data_model_matches_reference(name):
    io = np.load(f"{DATA}/{name}.io.npz")
    inputs = [io[f"in_{i}"] for i in range(sum(k.startswith("in_") for k in io.files))]
    outputs = tosaic.compile(f"{DATA}/{name}.tflite").run(inputs)
    for i, got in enumerate(outputs):
        assert np.array_equal(got, io[f"ref_{i}"]), name


# ----------------------------------------------------------------------------------------- CONV_2D


@st.composite
def conv_models(draw):
    rng = np.random.default_rng(draw(seeds))
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    ic = groups * draw(st.integers(1, 4))
    oc = groups * draw(st.integers(1, 4))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    (kh, sh, dh), (kw, sw, dw) = window(draw, dilation_max=3), window(draw, dilation_max=3)
    h_min = (kh - 1) * dh + 1 if padding == "VALID" else 1
    w_min = (kw - 1) * dw + 1 if padding == "VALID" else 1
    h, w = draw(st.integers(h_min, h_min + 7)), draw(st.integers(w_min, w_min + 7))
    n = draw(st.integers(1, 2))
    s_in, z_in, z_out = draw(input_scales), draw(zero_points), draw(zero_points)
    ws = filter_scales(draw, oc, draw(st.booleans()))
    depth = kh * kw * (ic // groups)
    s_out = output_scale(s_in, max(ws), depth, draw(spread))
    weights = rng.integers(-127, 128, (oc, kh, kw, ic // groups))
    bias = rng.integers(-(1 << 14), 1 << 14, oc) * draw(st.sampled_from([0, 1, 16]))
    b = ModelBuilder()
    x = b.tensor([n, h, w, ic], np.int8, scale=s_in, zero_point=z_in, name="x")
    b.conv2d(x, weights, ws, bias, s_out, z_out, stride=(sh, sw), padding=padding, dilation=(dh, dw),
             fused_activation_function=draw(ACTIVATIONS))
    return b.build()


@settings(max_examples=60, deadline=None)
@given(model=conv_models(), seed=seeds)
def test_conv2d_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


@pytest.mark.parametrize("in_zp", [0, -7, 100])
def test_conv2d_ties_follow_multiply_by_quantized_multiplier(in_zp):
    """1x1 filters of +-1 and +-3 over every int8 value, per-channel effective scales that are short dyadics
    (exponent above and below 0): many accumulators land exactly on rounding ties of the double rounding."""
    tie_scales = [0.5, 0.25, 0.75, 1.5, 3.0, 2.0 ** -7, 3 * 2.0 ** -6, 2.0 ** -12]
    weights = np.array([1, -1, 3, -3, 1, -1, 3, -3]).reshape(8, 1, 1, 1)
    b = ModelBuilder()
    x = b.tensor([1, 16, 16, 1], np.int8, scale=0.5, zero_point=in_zp, name="x")
    b.conv2d(x, weights, tie_scales, np.array([0, 1, -1, 5, 0, -3, 2, 0]), 0.5, -5)
    assert_bit_exact(b.build(), [np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)])


# ------------------------------------------------------------------------------- DEPTHWISE_CONV_2D


@st.composite
def depthwise_models(draw):
    rng = np.random.default_rng(draw(seeds))
    c, m = draw(st.integers(1, 5)), draw(st.sampled_from([1, 1, 2, 3]))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    (kh, sh, dh), (kw, sw, dw) = window(draw, kernel_max=5, dilation_max=3), window(draw, kernel_max=5,
                                                                                  dilation_max=3)
    h_min = (kh - 1) * dh + 1 if padding == "VALID" else 1
    w_min = (kw - 1) * dw + 1 if padding == "VALID" else 1
    h, w = draw(st.integers(h_min, h_min + 7)), draw(st.integers(w_min, w_min + 7))
    n = draw(st.integers(1, 2))
    s_in, z_in, z_out = draw(input_scales), draw(zero_points), draw(zero_points)
    ws = filter_scales(draw, c * m, draw(st.booleans()))
    s_out = output_scale(s_in, max(ws), kh * kw, draw(spread))
    weights = rng.integers(-127, 128, (1, kh, kw, c * m))
    bias = rng.integers(-(1 << 12), 1 << 12, c * m) * draw(st.sampled_from([0, 1, 16]))
    b = ModelBuilder()
    x = b.tensor([n, h, w, c], np.int8, scale=s_in, zero_point=z_in, name="x")
    b.depthwise_conv2d(x, weights, ws, bias, s_out, z_out, stride=(sh, sw), padding=padding, dilation=(dh, dw),
                       fused_activation_function=draw(ACTIVATIONS))
    return b.build()


@settings(max_examples=60, deadline=None)
@given(model=depthwise_models(), seed=seeds)
def test_depthwise_conv2d_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


def test_depthwise_ignores_filter_zero_point_and_depth_multiplier_option():
    """The reference kernel neither subtracts a filter zero point nor reads depth_multiplier (it divides the
    shapes); LiteRT needs a bias tensor or none at all (an omitted optional bias, index -1, fails Prepare)."""
    rng = np.random.default_rng(7)
    b = ModelBuilder()
    x = b.tensor([1, 6, 5, 3], np.int8, scale=0.05, zero_point=3, name="x")
    w = b.tensor([1, 3, 3, 6], np.int8, scale=0.01, zero_point=9, data=rng.integers(-127, 128, (1, 3, 3, 6)))
    y = b.tensor([1, 6, 5, 6], np.int8, scale=0.07, zero_point=2)
    b.op("DEPTHWISE_CONV_2D", [x, w], [y], padding="SAME", depth_multiplier=1, fused_activation_function="RELU")
    model = b.build()
    assert_bit_exact(model, random_inputs(model, seed=1))


# --------------------------------------------------------------------------------- FULLY_CONNECTED


def split(draw, total: int, rank: int) -> list[int]:
    """`total` as a product of `rank` dimensions."""
    dims = []
    for _ in range(rank - 1):
        divisors = [d for d in range(1, total + 1) if total % d == 0]
        dims.append(draw(st.sampled_from(divisors)))
        total //= dims[-1]
    return dims + [total]


@st.composite
def fc_models(draw):
    rng = np.random.default_rng(draw(seeds))
    depth, units, batch = draw(st.integers(1, 48)), draw(st.integers(1, 12)), draw(st.integers(1, 40))
    keep = draw(st.booleans())
    if keep:
        in_shape = split(draw, batch, draw(st.integers(1, 3))) + [depth]
    else:
        in_shape = split(draw, batch * depth, draw(st.integers(1, 4)))
    per_channel = draw(st.booleans())
    s_in, z_in, z_out = draw(input_scales), draw(zero_points), draw(zero_points)
    ws = filter_scales(draw, units, per_channel)
    s_out = output_scale(s_in, max(ws), depth, draw(spread))
    weights = rng.integers(-127, 128, (units, depth))
    has_bias = draw(st.booleans())
    bias = rng.integers(-(1 << 14), 1 << 14, units) if has_bias else None
    b = ModelBuilder()
    x = b.tensor(in_shape, np.int8, scale=s_in, zero_point=z_in, name="x")
    act = draw(ACTIVATIONS)
    if per_channel or not draw(st.booleans()):
        b.fully_connected(x, weights, ws, bias, s_out, z_out, fused_activation_function=act, keep_num_dims=keep)
    else:
        # A per-tensor filter with a zero point: the per-tensor kernel subtracts it.
        w = b.tensor([units, depth], np.int8, scale=ws[0], zero_point=draw(st.integers(-20, 20)), data=weights)
        bt = -1 if bias is None else b.tensor([units], np.int32, scale=f32(s_in * ws[0]), data=bias)
        out_shape = in_shape[:-1] + [units] if keep else [batch, units]
        y = b.tensor(out_shape, np.int8, scale=s_out, zero_point=z_out)
        b.op("FULLY_CONNECTED", [x, w, bt], [y], fused_activation_function=act, keep_num_dims=keep)
    return b.build()


@settings(max_examples=60, deadline=None)
@given(model=fc_models(), seed=seeds)
def test_fully_connected_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


def test_fully_connected_runtime_weights():
    """Weights fed as a graph input: the accumulator range is then bounded by the int8 extremes."""
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    x = b.tensor([5, 16], np.int8, scale=0.05, zero_point=3, name="x")
    w = b.tensor([4, 16], np.int8, scale=0.01, zero_point=0, name="w")
    bias = b.tensor([4], np.int32, scale=0.0005, zero_point=0, data=rng.integers(-500, 500, 4))
    y = b.tensor([5, 4], np.int8, scale=0.2, zero_point=2)
    b.op("FULLY_CONNECTED", [x, w, bias], [y], fused_activation_function="RELU6")
    model = b.build()
    for seed in range(3):
        assert_bit_exact(model, random_inputs(model, seed=seed))


# Effective scales s_in * s_w / s_out that put many accumulators on exact rounding ties.
TIE_SCALES = [0.5, 0.25, 0.75, 1.5, 2.0 ** -7, 3 * 2.0 ** -6, 2.0 ** -12, 5 * 2.0 ** -9]


@settings(max_examples=24, deadline=None)
@given(scale=st.sampled_from(TIE_SCALES), z_in=zero_points, z_out=zero_points, weight=st.integers(-127, 127),
       bias=st.integers(-3000, 3000), act=ACTIVATIONS)
def test_fully_connected_ties_round_half_away_from_zero(scale, z_in, z_out, weight, bias, act):
    """Every int8 input through a 1x1 FULLY_CONNECTED whose effective scale is a short dyadic: half the
    accumulators fall on exact .5 ties, where C++ round() goes away from zero and TOSA rounds up."""
    b = ModelBuilder()
    x = b.tensor([256, 1], np.int8, scale=0.5, zero_point=z_in, name="x")
    b.fully_connected(x, [[weight or 1]], [f32(scale)], [bias], 0.5, z_out, fused_activation_function=act)
    model = b.build()
    assert_bit_exact(model, [np.arange(-128, 128, dtype=np.int8).reshape(256, 1)])


def cpp_float_requant(acc: np.ndarray, scale: float, zp: int, low: int, high: int) -> np.ndarray:
    """reference_integer_ops::FullyConnected's requantization: round(double(acc) * scale) (half away from zero,
    on the IEEE double product), + zp, clamped. numpy's float64 multiply is the same IEEE operation."""
    y = round_half_away(acc.astype(np.float64) * np.float64(scale)).astype(np.int64)
    return np.clip(y + zp, low, high)


def rescale_requant(acc: np.ndarray, multiplier: int, shift: int, zp: int, low: int, high: int) -> np.ndarray:
    """TOSA RESCALE (SINGLE_ROUND, i32 -> i8) then CLAMP."""
    return np.clip(np.clip(apply_scale_32(acc, multiplier, shift, False) + zp, -128, 127), low, high)


def steps(scale: float, cap: int) -> np.ndarray:
    """For j = 1..300, the least a in [1, cap] with double(a) * scale >= j - 1/2, by bisection on the float
    product itself (independent of the legalization's rational arithmetic); cap + 1 when none."""
    half = np.arange(1, 301) - 0.5
    lo, hi = np.ones(300, np.int64), np.full(300, cap + 1, np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        reached = mid.astype(np.float64) * scale >= half
        hi, lo = np.where(reached, mid, hi), np.where(reached, lo, mid + 1)
    return lo


@settings(max_examples=300, deadline=None)
@given(s_in=st.floats(-12.0, 0.0), s_w=st.floats(-10.0, -3.0), s_out=st.floats(-10.0, 1.0),
       round_scale=st.sampled_from([None, None, None] + TIE_SCALES), zp=zero_points,
       act=st.sampled_from(["none", "relu", "relu6", "narrow"]), acc_bits=st.integers(4, 31),
       skew=st.floats(0.0, 1.0), seed=seeds)
def test_exact_float_requant_reproduces_the_double_product(s_in, s_w, s_out, round_scale, zp, act, acc_bits,
                                                           skew, seed):
    """The RESCALE found for the kernel's double requantization equals it on every accumulator next to every
    rounding step in range, on random accumulators, and on the whole range when it is small."""
    scale = (f32(2.0 ** s_in) * f32(2.0 ** s_w)) / f32(2.0 ** s_out) if round_scale is None else round_scale
    low, high = {"none": (-128, 127), "relu": (max(zp, -128), 127), "relu6": (max(zp, -128), min(127, zp + 60)),
                 "narrow": (max(-128, zp - 3), min(127, zp + 3))}[act]
    reach = (1 << acc_bits) - 1
    acc_low, acc_high = -int(reach * skew), reach
    if max(-acc_low, acc_high) * scale >= 2.0**30:
        return  # the legalization refuses these (the kernel's float-to-int32 conversion is undefined)
    (multiplier,), (shift,) = exact_float_requant(scale, zp, low, high, acc_low, acc_high)
    if multiplier is None:
        return  # refused with an error; test_fully_connected_refuses_unreproducible_requantization covers it
    rng = np.random.default_rng(seed)
    near = []
    for cap, sign in ((acc_high, 1), (-acc_low, -1)):
        if cap >= 1:
            a = steps(scale, cap)
            near.append(sign * (a[:, None] + np.arange(-2, 3)).reshape(-1))
    if acc_high - acc_low <= 1 << 20:
        near.append(np.arange(acc_low, acc_high + 1))
    near.append(rng.integers(acc_low, acc_high + 1, 20000))
    acc = np.concatenate(near)
    acc = acc[(acc >= acc_low) & (acc <= acc_high)]
    want = cpp_float_requant(acc, scale, zp, low, high)
    got = rescale_requant(acc, multiplier, shift, zp, low, high)
    bad = np.nonzero(want != got)[0]
    assert bad.size == 0, f"acc {acc[bad[:5]]}: kernel {want[bad[:5]]}, rescale {got[bad[:5]]}"


def test_fully_connected_beyond_a_31_bit_multiplier():
    """4096 inputs, a filter of 127s and an effective scale near 1.9e-6: the accumulator reaches 6.7e7 and the
    steps of round(acc * scale) need more than a 31-bit multiplier to place; the wide multiply places them."""
    s_in, s_w, s_out = 0.0012556654401123524, 0.0010292292572557926, 0.6916844248771667
    b = ModelBuilder()
    x = b.tensor([64, 4096], np.int8, scale=s_in, zero_point=0, name="x")
    b.fully_connected(x, np.full((1, 4096), 127), [s_w], None, s_out, 0)
    rng = np.random.default_rng(0)
    rows = []
    for total in rng.integers(-520000, 520000, 64):  # rows summing to `total`: accumulators 127 * total
        row = np.full(4096, abs(int(total)) // 4096)
        row[:abs(int(total)) % 4096] += 1
        rows.append(np.clip(np.sign(total) * row, -128, 127))
    assert_bit_exact(b.build(), [np.array(rows, dtype=np.int8)])


# ---------------------------------------------------------------------------------------- pooling


@st.composite
def pool_models(draw, opname):
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    (kh, sh, _), (kw, sw, _) = window(draw), window(draw)
    h = draw(st.integers(kh if padding == "VALID" else 1, 10))
    w = draw(st.integers(kw if padding == "VALID" else 1, 10))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    s_in, z_in = draw(input_scales), draw(zero_points)
    # The kernels only DCHECK that input and output quantization agree; now and then they differ.
    s_out, z_out = (s_in, z_in) if draw(st.integers(0, 3)) else (f32(s_in * 1.7), draw(zero_points))
    b = ModelBuilder()
    x = b.tensor([n, h, w, c], np.int8, scale=s_in, zero_point=z_in, name="x")
    oh, ow = conv_output_size(h, kh, sh, 1, padding), conv_output_size(w, kw, sw, 1, padding)
    y = b.tensor([n, oh, ow, c], np.int8, scale=s_out, zero_point=z_out, name="y")
    b.op(opname, [x], [y], padding=padding, filter_height=kh, filter_width=kw, stride_h=sh, stride_w=sw,
         fused_activation_function=draw(ACTIVATIONS))
    return b.build()


@settings(max_examples=50, deadline=None)
@given(model=pool_models("AVERAGE_POOL_2D"), seed=seeds)
def test_average_pool_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


@settings(max_examples=40, deadline=None)
@given(model=pool_models("MAX_POOL_2D"), seed=seeds)
def test_max_pool_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


def test_average_pool_ties_go_away_from_zero():
    """One 2x2 window per channel holding (a, b, a, b) for every int8 pair: sums 2(a + b) over 4 taps put every
    odd a + b on a tie."""
    values = np.arange(-128, 128)
    pairs = np.stack(np.meshgrid(values, values, indexing="ij"), axis=-1).reshape(-1, 2)  # [65536, 2]
    x = np.repeat(pairs.T[None, :, :], 2, axis=0).reshape(1, 2, 2, -1).astype(np.int8)
    b = ModelBuilder()
    xt = b.tensor(list(x.shape), np.int8, scale=0.1, zero_point=0, name="x")
    y = b.tensor([1, 1, 1, x.shape[3]], np.int8, scale=0.1, zero_point=0, name="y")
    b.op("AVERAGE_POOL_2D", [xt], [y], padding="VALID", filter_height=2, filter_width=2, stride_h=2, stride_w=2)
    assert_bit_exact(b.build(), [x])


# ------------------------------------------------------------------------------------------- MEAN


@st.composite
def mean_models(draw):
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 6)) for _ in range(rank)]
    if draw(st.integers(0, 4)) == 0:
        shape[draw(st.integers(0, rank - 1))] = draw(st.sampled_from([33, 64, 200]))  # larger counts
    axes = sorted(set(draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank))))
    keep = draw(st.booleans())
    if len(axes) == rank and not keep:
        # A rank-0 result: tosaic.runtime's np.ascontiguousarray turns it into shape (1,) (reported).
        keep = True
    # ResolveAxis: negative indices and duplicates are allowed.
    written = [a - rank if draw(st.booleans()) else a for a in axes]
    if draw(st.booleans()):
        written.append(written[0])
    out_shape = [1 if i in axes else d for i, d in enumerate(shape)] if keep else \
        [d for i, d in enumerate(shape) if i not in axes]
    s_in, z_in, z_out = draw(input_scales), draw(zero_points), draw(zero_points)
    s_out = f32(s_in * 2.0 ** draw(st.one_of(st.floats(-4.0, 4.0), st.integers(-4, 4).map(float))))
    b = ModelBuilder()
    x = b.tensor(shape, np.int8, scale=s_in, zero_point=z_in, name="x")
    axis = b.const(np.array(written, dtype=np.int32), name="axis")
    y = b.tensor(out_shape, np.int8, scale=s_out, zero_point=z_out, name="y")
    b.op("MEAN", [x, axis], [y], keep_dims=keep)
    return b.build()


@settings(max_examples=60, deadline=None)
@given(model=mean_models(), seed=seeds)
def test_mean_matches_reference(model, seed):
    assert_bit_exact(model, random_inputs(model, seed=seed))


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("ratio", [1.0, 0.37, 4.0, 1 / 49])
def test_mean_4d_height_width_uses_the_folded_multiplier(keep, ratio):
    """The 4-D height/width keep_dims MEAN (the case with a special integer kernel in the optimized resolver)
    also runs reference_ops::QuantizedMeanOrSum under BUILTIN_REF, output scale and zero point differing."""
    b = ModelBuilder()
    x = b.tensor([2, 7, 7, 5], np.int8, scale=0.05, zero_point=-7, name="x")
    axis = b.const(np.array([1, 2], dtype=np.int32))
    y = b.tensor([2, 1, 1, 5] if keep else [2, 5], np.int8, scale=f32(0.05 * ratio), zero_point=11, name="y")
    b.op("MEAN", [x, axis], [y], keep_dims=keep)
    model = b.build()
    for seed in range(3):
        assert_bit_exact(model, random_inputs(model, seed=seed))


def test_mean_multiplier_folds_the_count_like_the_kernel():
    # QuantizeMultiplier(0.5) = (2^30, 0); count 49: shift = min(63 - clz64(49) = 5, 32, 31) = 5;
    # multiplier = (2^30 << 5) / 49 = 701219150 (truncated), exponent 0 - 5.
    assert mean_multiplier(0.5, 1.0, 49) == (701219150, -5)
    # A tiny ratio limits the shift to 31 + exponent.
    # QuantizeMultiplier(2^-25) = (2^30, -24); count 2^20: shift = min(20, 32, 31 - 24) = 7.
    assert mean_multiplier(2.0**-25, 1.0, 1 << 20) == ((1 << 37) >> 20, -31)


# ------------------------------------------------------------------------------------ whole networks

# These also need ADD and SOFTMAX (ops/elementwise.py, ops/softmax.py) and RESHAPE.
NETWORKS = ["arch_mobilenet_v2_1.0_224", "arch_mobilenet_v1_0.25_128", "arch_ds_cnn_kws_49x10"]


@pytest.mark.parametrize("name", NETWORKS)
def test_network_matches_reference(name):
    io = np.load(f"{DATA}/{name}.io.npz")
    inputs = [io[f"in_{i}"] for i in range(sum(k.startswith("in_") for k in io.files))]
    outputs = tosaic.compile(f"{DATA}/{name}.tflite").run(inputs)
    for i, got in enumerate(outputs):
        assert np.array_equal(got, io[f"ref_{i}"]), name
