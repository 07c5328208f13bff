"""The test-side TFLite builder emits models LiteRT loads and runs, with the metadata asked for."""

from __future__ import annotations

import numpy as np
import pytest
import tflite

from litert_ref import make_interpreter, random_inputs, reference_intermediates, run_reference
from tflite_builder import ModelBuilder, conv_output_size, options_table_name


# ----------------------------------------------------------------------------------------- helpers
def _details_by_index(model: bytes) -> dict[int, dict]:
    return {d["index"]: d for d in make_interpreter(model).get_tensor_details()}


def _ops(model: bytes) -> list[dict]:
    interp = make_interpreter(model)
    interp.allocate_tensors()
    return interp._get_ops_details()


def _dequant(q: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return (q.astype(np.float64) - zp) * scale


def _requant_float(real: np.ndarray, scale: float, zp: int, lo: int = -128, hi: int = 127) -> np.ndarray:
    return np.clip(np.round(real / scale) + zp, lo, hi)


def _conv_float(x: np.ndarray, w: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """NHWC x OHWI convolution in float64 (dilation 1), TFLite padding rules."""
    n, h, wd, c = x.shape
    oc, kh, kw, _ = w.shape
    oh = conv_output_size(h, kh, stride, 1, padding)
    ow = conv_output_size(wd, kw, stride, 1, padding)
    if padding == "SAME":
        ph = max((oh - 1) * stride + kh - h, 0) // 2
        pw = max((ow - 1) * stride + kw - wd, 0) // 2
    else:
        ph = pw = 0
    out = np.zeros((n, oh, ow, oc))
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * stride - ph + ky, ox * stride - pw + kx
                    if 0 <= iy < h and 0 <= ix < wd:
                        out[:, oy, ox, :] += x[:, iy, ix, :] @ w[:, ky, kx, :].T
    return out


# TFLite integer arithmetic (REFERENCE.md section 3), written out by hand for the ADD check.
def _quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0.0:
        return 0, 0
    q, e = np.frexp(real)
    m = int(np.sign(q) * np.floor(abs(q) * (1 << 31) + 0.5))  # round half away from zero
    if m == 1 << 31:
        m //= 2
        e += 1
    if e < -31:
        return 0, 0
    return m, int(e)


def _srdhm(a: int, b: int) -> int:
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    return int(v / (1 << 31)) if v >= 0 else -((-v) >> 31)  # C division truncates toward zero


def _rdbpot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _mbqm(x: int, m: int, e: int) -> int:
    left, right = max(e, 0), max(-e, 0)
    return _rdbpot(_srdhm(x * (1 << left), m), right)


def _tflite_int8_add(a, sa, za, b, sb, zb, so, zo):
    sa, sb, so = np.float32(sa), np.float32(sb), np.float32(so)
    left_shift = 20
    twice_max = float(np.float32(2) * max(sa, sb))
    m1, e1 = _quantize_multiplier(float(sa) / twice_max)
    m2, e2 = _quantize_multiplier(float(sb) / twice_max)
    mo, eo = _quantize_multiplier(twice_max / float(np.float32((1 << left_shift) * so)))
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, np.int8)
    for idx in np.ndindex(a.shape):
        x1 = (int(a[idx]) - za) * (1 << left_shift)
        x2 = (int(b[idx]) - zb) * (1 << left_shift)
        raw = _mbqm(x1, m1, e1) + _mbqm(x2, m2, e2)
        out[idx] = min(127, max(-128, _mbqm(raw, mo, eo) + zo))
    return out


# ------------------------------------------------------------------------------------ model format
def test_flatbuffer_layout():
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0)
    y = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0)
    z = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0)
    b.op("GELU", [x], [y])  # builtin code 150 > 127
    b.op("RELU", [y], [z])
    data = b.build()
    assert data[4:8] == b"TFL3"
    m = tflite.Model.GetRootAs(data, 0)
    assert m.Version() == 3
    assert m.Buffers(0).DataLength() == 0
    assert m.SubgraphsLength() == 1
    codes = [(m.OperatorCodes(i).DeprecatedBuiltinCode(), m.OperatorCodes(i).BuiltinCode())
             for i in range(m.OperatorCodesLength())]
    assert codes == [(127, tflite.BuiltinOperator.GELU), (tflite.BuiltinOperator.RELU,) * 2]
    sg = m.Subgraphs(0)
    assert list(sg.InputsAsNumpy()) == [x] and list(sg.OutputsAsNumpy()) == [z]
    out = run_reference(data, [np.arange(-2, 2, dtype=np.int8).reshape(1, 4)])
    assert out[0].shape == (1, 4)


def test_options_lookup_and_validation():
    assert options_table_name("CONV_2D") == ("Conv2DOptions", 1)
    assert options_table_name("AVERAGE_POOL_2D") == ("Pool2DOptions", 1)
    assert options_table_name("MEAN") == ("ReducerOptions", 1)
    assert options_table_name("STRIDED_SLICE") == ("StridedSliceOptions", 1)
    assert options_table_name("PADV2") == ("PadV2Options", 1)
    assert options_table_name("RELU") == (None, 0)
    b = ModelBuilder()
    x = b.tensor([1, 4, 4, 3], np.int8, scale=0.1)
    y = b.tensor([1, 4, 4, 3], np.int8, scale=0.1)
    with pytest.raises(TypeError, match="no field"):
        b.op("CONV_2D", [x], [y], strid_w=2)
    with pytest.raises(TypeError, match="no options"):
        b.op("RELU", [x], [y], alpha=1.0)
    with pytest.raises(ValueError):
        b.op("CONV_2D", [x], [y], padding="SAMEISH")
    with pytest.raises(KeyError):
        b.op("NOT_AN_OP", [x], [y])


# ------------------------------------------------------------------------------------------ conv
def test_conv2d_per_channel_same_stride2_relu6():
    rng = np.random.default_rng(1)
    in_s, in_zp, out_s, out_zp = 0.05, -3, 0.04, -20
    w_s = np.array([0.004, 0.006, 0.008, 0.01], np.float32)
    w_q = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    bias_q = rng.integers(-500, 500, 4).astype(np.int32)
    b = ModelBuilder()
    x = b.tensor([1, 9, 9, 3], np.int8, scale=in_s, zero_point=in_zp, name="x")
    w = b.tensor([4, 3, 3, 3], np.int8, scale=w_s, zero_point=0, data=w_q, quant_dim=0, name="w")
    bias = b.tensor([4], np.int32, scale=np.float32(in_s) * w_s, zero_point=0, data=bias_q, name="b")
    y = b.tensor([1, 5, 5, 4], np.int8, scale=out_s, zero_point=out_zp, name="y")
    b.op("CONV_2D", [x, w, bias], [y], padding="SAME", stride_w=2, stride_h=2,
         fused_activation_function="RELU6")
    model = b.build()

    det = _details_by_index(model)
    assert list(det[w]["shape"]) == [4, 3, 3, 3]
    qp = det[w]["quantization_parameters"]
    # Scales are stored as float32: the builder must store exactly the float32 of what it was given.
    np.testing.assert_array_equal(qp["scales"], np.float32(w_s))
    assert list(qp["zero_points"]) == [0] * 4 and qp["quantized_dimension"] == 0
    np.testing.assert_array_equal(det[bias]["quantization_parameters"]["scales"], np.float32(in_s) * np.float32(w_s))
    assert det[bias]["dtype"] == np.int32
    assert det[y]["quantization"] == (pytest.approx(out_s), out_zp)
    ops = _ops(model)
    assert [o["op_name"] for o in ops] == ["CONV_2D"]
    assert list(ops[0]["inputs"]) == [x, w, bias]

    (xin,) = random_inputs(model, seed=3)
    (out,) = run_reference(model, [xin])
    assert out.shape == (1, 5, 5, 4) and out.dtype == np.int8
    assert out.min() >= out_zp and out.max() <= out_zp + round(6 / out_s)
    real = _conv_float(_dequant(xin, in_s, in_zp), w_q * w_s.astype(np.float64)[:, None, None, None],
                       2, "SAME") + bias_q * (in_s * w_s)
    expect = _requant_float(np.clip(real, 0, 6), out_s, out_zp)
    assert np.abs(out - expect).max() <= 1


def test_depthwise_conv2d_multiplier_2():
    rng = np.random.default_rng(2)
    b = ModelBuilder()
    x = b.tensor([1, 6, 6, 3], np.int8, scale=0.05, zero_point=4)
    w_s = np.linspace(0.005, 0.02, 6).astype(np.float32)
    w_q = rng.integers(-127, 128, (1, 3, 3, 6)).astype(np.int8)
    y = b.depthwise_conv2d(x, w_q, w_s, rng.integers(-300, 300, 6), 0.03, -5, stride=1,
                           padding="VALID")
    model = b.build()
    det = _details_by_index(model)
    assert list(det[y]["shape"]) == [1, 4, 4, 6]
    assert det[1]["quantization_parameters"]["quantized_dimension"] == 3
    assert len(det[2]["quantization_parameters"]["scales"]) == 6
    (xin,) = random_inputs(model, seed=0)
    (out,) = run_reference(model, [xin])
    xf = _dequant(xin, 0.05, 4)
    bias = b.tensors[2].data * (np.float32(0.05) * w_s)
    real = np.zeros((1, 4, 4, 6))
    for ch in range(6):
        for ky in range(3):
            for kx in range(3):
                real[0, :, :, ch] += xf[0, ky:ky + 4, kx:kx + 4, ch // 2] * w_q[0, ky, kx, ch] * w_s[ch]
    expect = _requant_float(real + bias, 0.03, -5)
    assert np.abs(out.astype(int) - expect).max() <= 1


def test_fully_connected_per_channel():
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    x = b.tensor([2, 16], np.int8, scale=0.04, zero_point=-10)
    w_s = np.linspace(0.002, 0.01, 5).astype(np.float32)
    w_q = rng.integers(-127, 128, (5, 16)).astype(np.int8)
    y = b.fully_connected(x, w_q, w_s, rng.integers(-800, 800, 5), 0.05, 2)
    model = b.build()
    det = _details_by_index(model)
    assert list(det[y]["shape"]) == [2, 5]
    np.testing.assert_array_equal(det[1]["quantization_parameters"]["scales"], np.float32(w_s))
    assert [o["op_name"] for o in _ops(model)] == ["FULLY_CONNECTED"]
    (xin,) = random_inputs(model, seed=1)
    (out,) = run_reference(model, [xin])
    real = _dequant(xin, 0.04, -10) @ (w_q * w_s[:, None]).T + b.tensors[2].data * (np.float32(0.04) * w_s)
    assert np.abs(out.astype(int) - _requant_float(real, 0.05, 2)).max() <= 1


def test_conv2d_int16x8_int64_bias():
    rng = np.random.default_rng(4)
    b = ModelBuilder()
    x = b.tensor([1, 5, 5, 2], np.int16, scale=0.001, zero_point=0)
    b.conv2d(x, rng.integers(-127, 128, (3, 3, 3, 2)), [0.01, 0.02, 0.03],
                 rng.integers(-5000, 5000, 3), 0.002, 0, padding="VALID")
    model = b.build()
    det = _details_by_index(model)
    assert det[2]["dtype"] == np.int64
    (out,) = run_reference(model, random_inputs(model, seed=0))
    assert out.shape == (1, 3, 3, 3) and out.dtype == np.int16


# ----------------------------------------------------------------------------- elementwise & pool
def test_add_broadcast_matches_tflite_int8_arithmetic():
    b = ModelBuilder()
    a = b.tensor([1, 4, 4, 3], np.int8, scale=0.07, zero_point=-9)
    c = b.tensor([1, 1, 1, 3], np.int8, scale=0.031, zero_point=12)
    y = b.tensor([1, 4, 4, 3], np.int8, scale=0.09, zero_point=5)
    b.op("ADD", [a, c], [y], fused_activation_function="NONE")
    model = b.build()
    det = _details_by_index(model)
    assert list(det[c]["shape"]) == [1, 1, 1, 3]
    assert det[y]["quantization"] == (pytest.approx(0.09), 5)
    for seed in range(3):
        ain, cin = random_inputs(model, seed=seed)
        (out,) = run_reference(model, [ain, cin])
        np.testing.assert_array_equal(out, _tflite_int8_add(ain, 0.07, -9, cin, 0.031, 12, 0.09, 5))


@pytest.mark.parametrize("pad,k,s", [("VALID", 2, 2), ("SAME", 3, 1)])
def test_average_pool_2d(pad, k, s):
    b = ModelBuilder()
    x = b.tensor([1, 5, 5, 2], np.int8, scale=0.1, zero_point=-7)
    o = conv_output_size(5, k, s, 1, pad)
    y = b.tensor([1, o, o, 2], np.int8, scale=0.1, zero_point=-7)
    b.op("AVERAGE_POOL_2D", [x], [y], padding=pad, stride_w=s, stride_h=s, filter_width=k,
         filter_height=k)
    model = b.build()
    (xin,) = random_inputs(model, seed=5)
    (out,) = run_reference(model, [xin])
    # Reference int8 kernel: raw sum of in-bounds taps, divided rounding half away from zero.
    pad_lo = max((o - 1) * s + k - 5, 0) // 2 if pad == "SAME" else 0
    expect = np.zeros_like(out)
    for oy in range(o):
        for ox in range(o):
            y0, x0 = oy * s - pad_lo, ox * s - pad_lo
            win = xin[0, max(y0, 0):min(y0 + k, 5), max(x0, 0):min(x0 + k, 5), :].astype(int)
            n = win.shape[0] * win.shape[1]
            acc = win.sum(axis=(0, 1))
            q = np.where(acc > 0, (acc + n // 2) // n, -((-acc + n // 2) // n))
            expect[0, oy, ox] = q
    np.testing.assert_array_equal(out, expect)


def test_softmax_int8():
    b = ModelBuilder()
    x = b.tensor([2, 10], np.int8, scale=0.1, zero_point=3)
    y = b.tensor([2, 10], np.int8, scale=1 / 256, zero_point=-128)  # required by the int8 kernel
    b.op("SOFTMAX", [x], [y], beta=1.0)
    model = b.build()
    (xin,) = random_inputs(model, seed=2)
    (out,) = run_reference(model, [xin])
    probs = _dequant(out, 1 / 256, -128)
    # A sanity check that the builder wired a real softmax (LiteRT's quantized output sums to about 1);
    # exactness of tosaic against this kernel is tested in test_legalize_softmax.py.
    assert np.all(np.abs(probs.sum(axis=1) - 1.0) <= 0.03)
    xf = _dequant(xin, 0.1, 3)
    ref = np.exp(xf - xf.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    assert np.abs(probs - ref).max() <= 1.5 / 256


# ---------------------------------------------------------------------------------- data movement
def test_reshape_with_shape_tensor():
    b = ModelBuilder()
    x = b.tensor([1, 4, 4, 3], np.int8, scale=0.1, zero_point=1)
    shape = b.const(np.array([2, 24], np.int32), name="shape")
    y = b.tensor([2, 24], np.int8, scale=0.1, zero_point=1)
    b.op("RESHAPE", [x, shape], [y], new_shape=[2, 24])
    model = b.build()
    det = _details_by_index(model)
    assert list(det[shape]["shape"]) == [2] and det[shape]["dtype"] == np.int32
    assert b.graph_inputs() == [x]
    (xin,) = random_inputs(model, seed=0)
    (out,) = run_reference(model, [xin])
    np.testing.assert_array_equal(out, xin.reshape(2, 24))


def test_concatenation():
    b = ModelBuilder()
    ins = [b.tensor([1, 3, 2, c], np.int8, scale=0.2, zero_point=-1) for c in (1, 2, 3)]
    y = b.tensor([1, 3, 2, 6], np.int8, scale=0.2, zero_point=-1)
    b.op("CONCATENATION", ins, [y], axis=3)
    model = b.build()
    xs = random_inputs(model, seed=9)
    assert [x.shape for x in xs] == [(1, 3, 2, 1), (1, 3, 2, 2), (1, 3, 2, 3)]
    (out,) = run_reference(model, xs)
    np.testing.assert_array_equal(out, np.concatenate(xs, axis=3))


def test_squeeze_transpose_vector_options():
    b = ModelBuilder()
    x = b.tensor([1, 1, 4, 3], np.int8, scale=0.1)
    s = b.tensor([4, 3], np.int8, scale=0.1)
    perm = b.const(np.array([1, 0], np.int32))
    t = b.tensor([3, 4], np.int8, scale=0.1)
    b.op("SQUEEZE", [x], [s], squeeze_dims=[0, 1])
    b.op("TRANSPOSE", [s, perm], [t])
    model = b.build()
    (xin,) = random_inputs(model, seed=0)
    (out,) = run_reference(model, [xin])
    np.testing.assert_array_equal(out, xin.reshape(4, 3).T)


# ------------------------------------------------------------------------------------- two-op chain
def test_two_op_chain_and_intermediates():
    rng = np.random.default_rng(6)
    b = ModelBuilder()
    x = b.tensor([1, 6, 6, 2], np.int8, scale=0.05, zero_point=0, name="x")
    h = b.conv2d(x, rng.integers(-127, 128, (4, 3, 3, 2)), 0.01, rng.integers(-100, 100, 4),
                 0.08, -10, padding="SAME", fused_activation_function="RELU")
    y = b.tensor([1, 3, 3, 4], np.int8, scale=0.08, zero_point=-10, name="y")
    b.op("MAX_POOL_2D", [h], [y], padding="VALID", stride_w=2, stride_h=2, filter_width=2,
         filter_height=2)
    model = b.build()
    assert b.graph_inputs() == [x] and b.graph_outputs() == [y]
    assert [o["op_name"] for o in _ops(model)] == ["CONV_2D", "MAX_POOL_2D"]
    xin = random_inputs(model, seed=4)
    (out,) = run_reference(model, xin)
    inter = reference_intermediates(model, xin)
    np.testing.assert_array_equal(inter[y], out)
    np.testing.assert_array_equal(inter[x], xin[0])
    mid = inter[h]
    assert mid.shape == (1, 6, 6, 4) and mid.min() >= -10  # RELU clamps at the zero point
    np.testing.assert_array_equal(out, mid.reshape(1, 3, 2, 3, 2, 4).max(axis=(2, 4)))


# ------------------------------------------------------------------------------------ misc helpers
def test_random_inputs_seeded_and_resize():
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int16, scale=0.001)
    f = b.tensor([1, 4], np.float32)
    y = b.tensor([1, 4], np.int16, scale=0.001)
    g = b.tensor([1, 4], np.float32)
    b.op("RELU", [x], [y])
    b.op("RELU", [f], [g])
    b.inputs([x, f]).outputs([y, g])
    model = b.build()
    a1, a2 = random_inputs(model, seed=11), random_inputs(model, seed=11)
    assert [v.dtype for v in a1] == [np.int16, np.float32]
    for u, v in zip(a1, a2):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a1[0], random_inputs(model, seed=12)[0])
    big = [np.arange(-6, 6, dtype=np.int16).reshape(3, 4), np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)]
    o1, o2 = run_reference(model, big)
    np.testing.assert_array_equal(o1, np.maximum(big[0], 0))
    np.testing.assert_array_equal(o2, np.maximum(big[1], 0))
    with pytest.raises(TypeError):
        run_reference(model, [big[1], big[1]])
