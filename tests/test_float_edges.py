"""Float and uint8 model boundaries against LiteRT's reference kernels (BUILTIN_REF), bit for bit.

- QUANTIZE float32 -> int8 / uint8 / int16: ties of the float32 quotient, their float neighbours, values far
  beyond the type, infinities, NaN and the region where the kernel's float -> int32 conversion overflows or
  its zero-point addition wraps (LiteRT 2.3.0 on x86-64 yields INT32_MIN there).
- DEQUANTIZE int8 / uint8 / int16 -> float32 on every integer input, compared bit for bit (as uint32).
- QUANTIZE between integer types in every direction LiteRT has, uint8 included, on every input value.
- uint8 model inputs and outputs (CompiledModel takes and returns uint8), and whole float-edge networks.
"""

from __future__ import annotations

import numpy as np
import pytest
from tosa_tools import requires_tosa_tools
from hypothesis import given, settings
from hypothesis import strategies as st
from litert_ref import run_reference
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.ops.quantize import affine_quantize_reference

DATA = "tests/data"
seeds = st.integers(0, 2**32 - 1)
TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16}


def f32(x: float) -> float:
    return float(np.float32(x))


def run_tosaic(model: bytes, inputs) -> list[np.ndarray]:
    return tosaic.compile(tosaic.import_tflite(model)).run(inputs)


def assert_bit_exact(model: bytes, inputs) -> list[np.ndarray]:
    expected = run_reference(model, inputs)
    actual = run_tosaic(model, inputs)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
        same = got.view(np.uint32) == want.view(np.uint32) if got.dtype == np.float32 else got == want
        assert same.all(), f"{np.count_nonzero(~same)} of {same.size} elements differ"
    return actual


def single_op(op: str, shape, in_dtype, out_dtype, in_quant=None, out_quant=None) -> bytes:
    b = ModelBuilder()
    x = b.tensor(shape, in_dtype, **(in_quant or {}), name="x")
    y = b.tensor(shape, out_dtype, **(out_quant or {}))
    b.op(op, [x], [y])
    return b.build()


def quantize_probe(rng, scale: float, zero_point: int, dtype: str, n: int = 3000) -> np.ndarray:
    """Float inputs where AffineQuantize is hard to get right: half-integer quotients and their float32
    neighbours, values around every integer boundary of the type, the int32 conversion's edges, specials."""
    s = np.float32(scale)
    low, high = np.iinfo(TYPES[dtype]).min, np.iinfo(TYPES[dtype]).max
    k = rng.integers(low - zero_point - 3, high - zero_point + 3, n).astype(np.float32)
    ties = (k + np.float32(0.5)) * s
    tie_like = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                               k * s])
    edges = np.array([2147483520, 2147483648, 2147483392, -2147483648, -2147483904, -2147483520,
                      2147483647 - zero_point, -2147483648 - zero_point], dtype=np.float64)
    edge_values = (edges * float(s)).astype(np.float32)
    edge_values = np.concatenate([edge_values, np.nextafter(edge_values, np.float32(np.inf)),
                                  np.nextafter(edge_values, np.float32(-np.inf))])
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30, 3.4e38, -3.4e38, 1e-45, -1e-45],
                        dtype=np.float32)
    wide = (rng.standard_normal(n) * 10.0 ** rng.uniform(-40, 38, n)).astype(np.float32)
    near = rng.normal(0, float(s) * (high - low), n).astype(np.float32)
    return np.concatenate([tie_like, edge_values, specials, wide, near]).astype(np.float32)


# ------------------------------------------------------------------------------- tests/data model


def test_floatio_data_model_matches_reference():
    name = "var_floatio_op_conv2d_s2_same_relu6"
    io = np.load(f"{DATA}/{name}.io.npz")
    model = tosaic.compile(f"{DATA}/{name}.tflite")
    assert model.inputs[0].dtype == np.float32 and model.outputs[0].dtype == np.float32
    (got,) = model.run([io["in_0"]])
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), io["ref_0"].view(np.uint32))


# --------------------------------------------------------------------------------- float32 -> int


@given(seed=seeds, data=st.data())
@settings(max_examples=60, deadline=None)
def test_quantize_from_float(seed, data):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from(["int8", "uint8", "int16"]))
    scale = f32(data.draw(st.one_of(st.floats(-30.0, 10.0).map(lambda e: 2.0**e),
                                    st.sampled_from([1 / 255, 0.1, 1 / 128, 3.0517578125e-05, 0.00784289]))))
    low, high = int(np.iinfo(TYPES[dtype]).min), int(np.iinfo(TYPES[dtype]).max)
    zero_point = data.draw(st.one_of(st.integers(low, high), st.sampled_from([low, high, 0]))) \
        if dtype != "int16" else data.draw(st.sampled_from([0, 0, 5, -300]))
    x = quantize_probe(rng, scale, zero_point, dtype)
    model = single_op("QUANTIZE", [x.size], np.float32, TYPES[dtype],
                      out_quant={"scale": scale, "zero_point": zero_point})
    (got,) = assert_bit_exact(model, [x])
    # The numpy emulation used to place the thresholds is LiteRT's kernel too.
    np.testing.assert_array_equal(affine_quantize_reference(x, scale, zero_point, dtype), got)


def test_quantize_out_of_range_values_follow_litert():
    """Where the C++ conversion overflows (inf, NaN, 1e30) LiteRT yields INT32_MIN + zp: the type's minimum for
    zp >= 0 and, the addition wrapping, its maximum for zp < 0; tosaic reproduces both."""
    x = np.array([np.inf, -np.inf, np.nan, 1e30, -1e30, 0.25], np.float32)
    for dtype, zero_point, expected in [("int8", 5, [-128] * 5 + [8]), ("int8", -7, [127] * 5 + [-4]),
                                        ("uint8", 130, [0] * 5 + [133]), ("int16", 0, [-32768] * 5 + [3])]:
        model = single_op("QUANTIZE", [6], np.float32, TYPES[dtype], out_quant={"scale": 0.1, "zero_point": zero_point})
        (got,) = assert_bit_exact(model, [x])
        assert got.tolist() == expected


# --------------------------------------------------------------------------------- int -> float32


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_dequantize_every_input(data):
    dtype = data.draw(st.sampled_from(["int8", "uint8", "int16"]))
    info = np.iinfo(TYPES[dtype])
    zero_point = 0 if dtype == "int16" else data.draw(st.integers(int(info.min), int(info.max)))
    scale = f32(data.draw(st.one_of(st.floats(-40.0, 20.0).map(lambda e: 2.0**e), st.floats(1e-6, 1.0))))
    x = np.arange(info.min, info.max + 1).astype(TYPES[dtype])
    model = single_op("DEQUANTIZE", [x.size], TYPES[dtype], np.float32,
                      in_quant={"scale": scale, "zero_point": zero_point})
    assert_bit_exact(model, [x])


def test_dequantize_constant_per_channel():
    """A per-channel DEQUANTIZE of constant weights is folded at import time into LiteRT's float32 values."""
    rng = np.random.default_rng(5)
    weights = rng.integers(-128, 128, (4, 3, 5)).astype(np.int8)
    b = ModelBuilder()
    w = b.tensor(weights.shape, np.int8, scale=[0.1, 0.013, 1e-3, 7.5], zero_point=[0, 3, -2, 0], data=weights,
                 quant_dim=0)
    y = b.tensor(weights.shape, np.float32)
    x = b.tensor([1], np.float32, name="x")
    x2 = b.tensor([1], np.float32)
    b.op("DEQUANTIZE", [w], [y])
    b.op("RESHAPE", [x, b.const(np.array([1], np.int32))], [x2], new_shape=[1])
    b.outputs([y, x2])
    assert_bit_exact(b.build(), [np.array([1.5], np.float32)])


# ------------------------------------------------------------------------ integer <-> integer, uint8


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_requantize_every_direction(data):
    source, target = data.draw(st.sampled_from([("int8", "int8"), ("int8", "uint8"), ("uint8", "int8"),
                                                ("uint8", "uint8"), ("int8", "int16"), ("uint8", "int16"),
                                                ("int16", "int8"), ("int16", "int16")]))
    s_in = f32(2.0 ** data.draw(st.floats(-14, 0)))
    same_scale = data.draw(st.booleans())
    s_out = s_in if same_scale else f32(s_in * 2.0 ** data.draw(st.floats(-6, 6)))
    info_in, info_out = np.iinfo(TYPES[source]), np.iinfo(TYPES[target])
    zp_in = 0 if source == "int16" else data.draw(st.integers(int(info_in.min), int(info_in.max)))
    zp_out = 0 if target == "int16" else data.draw(st.integers(int(info_out.min), int(info_out.max)))
    if same_scale and {source, target} == {"int8", "uint8"} and data.draw(st.booleans()):
        zp_out = zp_in + (128 if target == "uint8" else -128)  # LiteRT's `q ^ 0x80` fast path
    x = np.arange(info_in.min, info_in.max + 1).astype(TYPES[source])
    model = single_op("QUANTIZE", [x.size], TYPES[source], TYPES[target], {"scale": s_in, "zero_point": zp_in},
                      {"scale": s_out, "zero_point": zp_out})
    assert_bit_exact(model, [x])


def _uint8_boundary_network(rng, s_in: float, zp_in: int, s_out: float, zp_out: int) -> bytes:
    """uint8 input -> QUANTIZE int8 -> conv + relu -> average pool -> QUANTIZE uint8 output (a microcontroller
    model's boundaries)."""
    b = ModelBuilder()
    x = b.tensor([1, 6, 6, 3], np.uint8, scale=s_in, zero_point=zp_in, name="x")
    q = b.tensor([1, 6, 6, 3], np.int8, scale=s_in, zero_point=zp_in - 128)
    b.op("QUANTIZE", [x], [q])
    ws = [f32(2.0 ** rng.uniform(-8, -6)) for _ in range(4)]
    c = b.conv2d(q, rng.integers(-127, 128, (4, 3, 3, 3)), ws, rng.integers(-500, 500, 4), 0.05, -20,
                 padding="SAME", fused_activation_function="RELU")
    p = b.tensor([1, 3, 3, 4], np.int8, scale=0.05, zero_point=-20)
    b.op("AVERAGE_POOL_2D", [c], [p], filter_height=2, filter_width=2, stride_h=2, stride_w=2, padding="VALID")
    y = b.tensor([1, 3, 3, 4], np.uint8, scale=s_out, zero_point=zp_out)
    b.op("QUANTIZE", [p], [y])
    return b.build()


@given(seed=seeds, data=st.data())
@settings(max_examples=20, deadline=None)
def test_uint8_model_boundaries(seed, data):
    rng = np.random.default_rng(seed)
    zp_in = data.draw(st.integers(0, 255))
    model = _uint8_boundary_network(rng, f32(2.0 ** data.draw(st.floats(-8, -2))), zp_in,
                                    f32(0.05 * 2.0 ** data.draw(st.floats(-1, 1))), data.draw(st.integers(0, 255)))
    compiled = tosaic.compile(tosaic.import_tflite(model))
    assert compiled.inputs[0].dtype == np.uint8 and compiled.outputs[0].dtype == np.uint8
    x = rng.integers(0, 256, (1, 6, 6, 3)).astype(np.uint8)
    (got,) = assert_bit_exact(model, [x])
    assert got.dtype == np.uint8
    with pytest.raises(ValueError, match="must be uint8"):
        compiled.run([x.astype(np.int8)])


# -------------------------------------------------------------------------------- whole networks


@given(seed=seeds, data=st.data())
@settings(max_examples=8, deadline=None)
def test_float_edge_int8_network(seed, data):
    """float32 -> QUANTIZE -> conv -> depthwise -> add -> mean -> FC -> softmax -> DEQUANTIZE -> float32."""
    rng = np.random.default_rng(seed)
    s_in = f32(2.0 ** data.draw(st.floats(-8, -4)))
    zp_in = data.draw(st.integers(-20, 20))
    b = ModelBuilder()
    x = b.tensor([1, 6, 6, 3], np.float32, name="x")
    q = b.tensor([1, 6, 6, 3], np.int8, scale=s_in, zero_point=zp_in)
    b.op("QUANTIZE", [x], [q])
    c = b.conv2d(q, rng.integers(-127, 128, (6, 3, 3, 3)), [f32(2.0 ** rng.uniform(-8, -6)) for _ in range(6)],
                 rng.integers(-500, 500, 6), 0.04, -10, padding="SAME", fused_activation_function="RELU6")
    d = b.depthwise_conv2d(c, rng.integers(-127, 128, (1, 3, 3, 6)),
                           [f32(2.0 ** rng.uniform(-8, -6)) for _ in range(6)], rng.integers(-500, 500, 6), 0.04, 3,
                           padding="SAME")
    a = b.tensor([1, 6, 6, 6], np.int8, scale=0.06, zero_point=-5)
    b.op("ADD", [c, d], [a])
    m = b.tensor([1, 6], np.int8, scale=0.03, zero_point=0)
    b.op("MEAN", [a, b.const(np.array([1, 2], np.int32))], [m], keep_dims=False)
    logits = b.fully_connected(m, rng.integers(-127, 128, (5, 6)), [0.01] * 5, rng.integers(-100, 100, 5), 0.1, 0)
    probabilities = b.tensor([1, 5], np.int8, scale=1 / 256, zero_point=-128)
    b.op("SOFTMAX", [logits], [probabilities], beta=1.0)
    y = b.tensor([1, 5], np.float32)
    b.op("DEQUANTIZE", [probabilities], [y])
    xs = rng.uniform(-1.5, 1.5, (1, 6, 6, 3)).astype(np.float32)
    xs.flat[:4] = [np.float32((k + 0.5) * s_in) for k in range(4)]  # exact ties at the QUANTIZE
    assert_bit_exact(b.build(), [xs])


@given(seed=seeds, data=st.data())
@settings(max_examples=6, deadline=None)
def test_float_edge_16x8_network(seed, data):
    """float32 -> QUANTIZE int16 -> 16x8 conv -> logistic -> FC -> DEQUANTIZE -> float32."""
    rng = np.random.default_rng(seed)
    s_in = f32(2.0 ** data.draw(st.floats(-14, -10)))
    b = ModelBuilder()
    x = b.tensor([1, 5, 5, 2], np.float32, name="x")
    q = b.tensor([1, 5, 5, 2], np.int16, scale=s_in, zero_point=0)
    b.op("QUANTIZE", [x], [q])
    c = b.conv2d(q, rng.integers(-127, 128, (4, 3, 3, 2)), [f32(2.0 ** rng.uniform(-8, -6)) for _ in range(4)],
                 rng.integers(-(1 << 20), 1 << 20, 4), f32(2.0**-11), 0, padding="SAME")
    s = b.tensor([1, 5, 5, 4], np.int16, scale=2.0**-15, zero_point=0)
    b.op("LOGISTIC", [c], [s])
    flat = b.tensor([1, 100], np.int16, scale=2.0**-15, zero_point=0)
    b.op("RESHAPE", [s, b.const(np.array([1, 100], np.int32))], [flat], new_shape=[1, 100])
    fc = b.fully_connected(flat, rng.integers(-127, 128, (7, 100)), [f32(2.0 ** rng.uniform(-8, -6)) for _ in range(7)],
                           rng.integers(-(1 << 16), 1 << 16, 7), f32(2.0**-9), 0)
    y = b.tensor([1, 7], np.float32)
    b.op("DEQUANTIZE", [fc], [y])
    xs = rng.uniform(-3, 3, (1, 5, 5, 2)).astype(np.float32)
    assert_bit_exact(b.build(), [xs])


# ------------------------------------------------------------------------------- Arm's validator


def _validation_models():
    for dtype, zero_point in (("int8", -3), ("uint8", 130), ("int16", 0)):
        yield f"quantize_{dtype}", single_op("QUANTIZE", [2, 5], np.float32, TYPES[dtype],
                                             out_quant={"scale": 0.1, "zero_point": zero_point})
        yield f"dequantize_{dtype}", single_op("DEQUANTIZE", [2, 5], TYPES[dtype], np.float32,
                                               in_quant={"scale": 0.1, "zero_point": zero_point})
    for source, target in (("int8", "uint8"), ("uint8", "int8"), ("uint8", "uint8"), ("uint8", "int16"),
                           ("int16", "int8")):
        yield f"requantize_{source}_{target}", single_op(
            "QUANTIZE", [4], TYPES[source], TYPES[target], {"scale": 0.01, "zero_point": 0 if source == "int16" else 5},
            {"scale": 0.02, "zero_point": 0 if target == "int16" else 7})


@pytest.mark.tosa_tools
@pytest.mark.parametrize("name, model", list(_validation_models()), ids=lambda v: v if isinstance(v, str) else "")
@requires_tosa_tools
def test_tosa_opt_accepts_float_edge_graphs(name, model, tmp_path):
    from test_tosa_validate import check_with_tosa_opt
    check_with_tosa_opt(tosaic.import_tflite(model), tmp_path)
