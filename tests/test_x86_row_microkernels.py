"""The AVX-512 row micro-kernels of `kernels/x86_microkernels.py` against their definitions, run on this
host (skipped where it lacks AVX-512BW): the depthwise interior against numpy's sum of products, the
requantizing epilogue against TOSA's apply_scale_32 (`tosaic.quant`), the activation copy against numpy's
XOR, the im2col patches against numpy's slicing. Offsets and strides that are not multiples of a vector,
and every tail length, so the masked last blocks are exercised; the bytes around what a call writes must
stay as they were."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tosaic.kernels.target import host
from tosaic.kernels.x86 import AVX512_FEATURES
from tosaic.quant.tosa_scale import apply_scale_32

if host().arch != "x86_64" or not AVX512_FEATURES <= host().features:
    pytest.skip(f"this machine ({host()}) lacks {', '.join(sorted(AVX512_FEATURES))}", allow_module_level=True)

import numba  # noqa: E402

from tosaic.kernels.x86_microkernels import (depthwise_avx512_9, depthwise_avx512_25,  # noqa: E402
                                             depthwise_border_avx512_9, depthwise_border_avx512_25,
                                             offset_rows_avx512, patch_rows_avx512,
                                             requantize_rows_avx512, requantize_rows_saturating_avx512)


@numba.njit
def _depthwise9(*args):
    depthwise_avx512_9(*args)


@numba.njit
def _depthwise25(*args):
    depthwise_avx512_25(*args)


@numba.njit
def _border9(*args):
    depthwise_border_avx512_9(*args)


@numba.njit
def _border25(*args):
    depthwise_border_avx512_25(*args)


@numba.njit
def _requantize(*args):
    requantize_rows_avx512(*args)


@numba.njit
def _requantize_saturating(*args):
    requantize_rows_saturating_avx512(*args)


@numba.njit
def _patch(*args):
    patch_rows_avx512(*args)


@numba.njit
def _offset(*args):
    offset_rows_avx512(*args)


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([3, 5]), channels=st.integers(1, 70), stride=st.integers(1, 2), dilation=st.integers(1, 2),
       count=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_depthwise_rows_equal_numpy(size, channels, stride, dilation, count, seed):
    rng = np.random.default_rng(seed)
    width = (count - 1) * stride + (size - 1) * dilation + 3 if count else 4
    height = (size - 1) * dilation + 1
    x = rng.integers(-128, 128, (1, height, width, channels), dtype=np.int8)
    w = rng.integers(-128, 128, (size, size, channels), dtype=np.int8)
    bias = rng.integers(-2**20, 2**20, channels, dtype=np.int32)
    taps = np.array([(ky * dilation * width + kx * dilation) * channels for ky in range(size) for kx in range(size)],
                    np.int64)
    acc = np.full((count + 2, channels), 7, np.int32)
    first = 1  # the row starts one pixel in
    (_depthwise9 if size == 3 else _depthwise25)(acc, channels, x, first * channels, stride * channels, taps, w, bias,
                                                 count, channels, -1, 0)
    pixels = first + stride * np.arange(count)
    want = bias + sum(x[0, ky * dilation, pixels + kx * dilation].astype(np.int32) * w[ky, kx]
                      for ky in range(size) for kx in range(size))
    np.testing.assert_array_equal(acc[1:1 + count], want.reshape(count, channels))
    assert (acc[0] == 7).all() and (acc[1 + count:] == 7).all()


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([3, 5]), channels=st.integers(1, 40), corner=st.tuples(st.integers(-4, 3), st.integers(-4, 3)),
       fill=st.integers(-128, 127), seed=st.integers(0, 2**16))
def test_depthwise_border_reads_fill_for_taps_outside(size, channels, corner, fill, seed):
    """One pixel whose kernel window starts at `corner` of a 4x4 input, partly outside it: the taps outside
    add fill * w (the zero point, as TOSA pads), and their addresses are not read (outside the array)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, 4, 4, channels), dtype=np.int8)
    w = rng.integers(-128, 128, (size, size, channels), dtype=np.int8)
    bias = rng.integers(-2**20, 2**20, channels, dtype=np.int32)
    taps = np.array([(ky * 4 + kx) * channels for ky in range(size) for kx in range(size)], np.int64)
    margin = 5  # beyond every corner's window
    padded = np.full((4 + 2 * margin, 4 + 2 * margin, channels), fill, np.int32)
    padded[margin:margin + 4, margin:margin + 4] = x[0]
    valid = 0
    for ky in range(size):
        for kx in range(size):
            if 0 <= corner[0] + ky < 4 and 0 <= corner[1] + kx < 4:
                valid |= 1 << (ky * size + kx)
    acc = np.full((3, channels), 7, np.int32)
    (_border9 if size == 3 else _border25)(acc, channels, x, (corner[0] * 4 + corner[1]) * channels, 0, taps, w, bias, 1,
                                           channels, valid, fill)
    top, left = margin + corner[0], margin + corner[1]
    window = padded[top:top + size, left:left + size]
    np.testing.assert_array_equal(acc[1], bias + (window * w).sum(axis=(0, 1)))
    assert (acc[0] == 7).all() and (acc[2] == 7).all()


@settings(max_examples=60, deadline=None)
@given(channels=st.integers(1, 50), rows=st.integers(0, 4), shift=st.integers(2, 44), double_round=st.booleans(),
       zp=st.integers(-128, 127), bounds=st.tuples(st.integers(-128, 127), st.integers(-128, 127)),
       per_channel=st.booleans(), saturating=st.booleans(), seed=st.integers(0, 2**16))
def test_requantize_rows_equal_apply_scale_32(channels, rows, shift, double_round, zp, bounds, per_channel, saturating,
                                              seed):
    """Where float64 is exact (`requant.float64_applies`: shifts to 44 with int8 bounds), over the whole int32
    range of accumulators, zeros and the extremes among them; the saturating form where it applies (the whole
    int8 range, shifts from 32)."""
    rng = np.random.default_rng(seed)
    low, high = (-128, 127) if saturating else (min(bounds), max(bounds))
    lanes = channels if per_channel else 1
    m = np.broadcast_to(rng.integers(0, 2**31, lanes), channels)
    s = np.broadcast_to(rng.integers(32 if saturating else 2, max(shift, 32 if saturating else 2) + 1, lanes), channels)
    # apply_scale_32 REQUIREs |value| < 2^(shift - 1): accumulators within that at each channel, a fifth of
    # them its extremes, 0 or -1.
    # The call reads from flat offset 2 with rows of channels + 3: element f is channel (f - 2) % (channels + 3).
    channel = (np.arange((rows + 1) * (channels + 3)) - 2) % (channels + 3)
    bound = np.minimum(np.left_shift(1, np.pad(s, (0, 3), mode="edge")[channel] - 1), 2**31)
    acc = (rng.random(bound.shape) * 2 * bound - bound).astype(np.int64)
    specials = np.stack([-bound, bound - 1, np.zeros_like(bound), -np.ones_like(bound)])
    pick = rng.integers(0, 4, acc.shape)
    acc = np.where(rng.random(acc.shape) < 0.2, np.take_along_axis(specials, pick[None], 0)[0], acc)
    acc = acc.astype(np.int32).reshape(rows + 1, channels + 3)
    # The per-channel arrays are read from k0 = 2 on, as a GEMM task's later channel blocks read them.
    scale = np.concatenate([[np.nan, np.nan], m * np.exp2(-s.astype(np.float64))])
    term = np.concatenate([[np.nan, np.nan], np.where(s > 31, np.exp2(30.0 - s), 0.0) if double_round
                           else np.zeros(channels)])
    out = np.full((rows + 2, channels + 5), 9, np.int8)
    (_requantize_saturating if saturating else _requantize)(out, channels + 5 + 1, channels + 5, acc, 2, channels + 3, rows, channels, 2, scale, 0.5 + term,
                0.5 - term, float(low - zp), float(high - zp), zp)
    got = out.reshape(-1)[channels + 6:channels + 6 + rows * (channels + 5)].reshape(rows, channels + 5)[:, :channels]
    values = acc.reshape(-1)[2:2 + rows * (channels + 3)].reshape(rows, channels + 3)[:, :channels].astype(np.int64)
    want = np.array([[min(max(apply_scale_32(int(v), int(m[c]), int(s[c]), double_round) + zp, low), high)
                      for c, v in enumerate(row)] for row in values], dtype=np.int64).reshape(rows, channels)
    np.testing.assert_array_equal(got, want)
    written = np.zeros(out.size, bool)
    for i in range(rows):
        start = channels + 6 + i * (channels + 5)
        written[start:start + channels] = True
    assert (out.reshape(-1)[~written] == 9).all()


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 200), pad=st.integers(0, 3), rows=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_offset_rows_flip_the_top_bit_and_pad_with_zeros(count, pad, rows, seed):
    rng = np.random.default_rng(seed)
    padded = count + pad
    src = rng.integers(-128, 128, (rows + 1, count + 3), dtype=np.int8)
    dst = np.full((rows + 1, padded + 4), 9, np.int8)
    _offset(dst, 1, padded + 4, src, 2, count + 3, rows, count, padded)
    got = dst.reshape(-1)[1:1 + rows * (padded + 4)].reshape(rows, padded + 4)
    values = src.reshape(-1)[2:2 + rows * (count + 3)].reshape(rows, count + 3)[:, :count]
    np.testing.assert_array_equal(got[:, :count], values ^ np.int8(-128))
    assert (got[:, count:padded] == 0).all() and (got[:, padded:] == 9).all() and dst.reshape(-1)[0] == 9


@settings(max_examples=40, deadline=None)
@given(channels=st.integers(1, 12), size=st.tuples(st.integers(1, 5), st.integers(1, 5)), stride=st.integers(1, 3),
       dilation=st.integers(1, 2), count=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_patch_rows_equal_numpy_slices(channels, size, stride, dilation, count, seed):
    kh, kw = size
    if kw * channels > 64:
        kw = 64 // channels
    rng = np.random.default_rng(seed)
    height, width = (kh - 1) * dilation + 2, max(count - 1, 0) * stride + kw + 2
    x = rng.integers(-128, 128, (1, height, width, channels), dtype=np.int8)
    taps = -(-kh * kw * channels // 4) * 4
    patch = np.full((count + 2, taps + 3), 9, np.int8)
    rows_at = np.array([ky * dilation * width * channels for ky in range(kh)], np.int64)
    _patch(patch, taps + 3, taps + 3, x, (width + 1) * channels, stride * channels, rows_at, kw * channels, count)
    for i in range(count):
        want = x[0, 1:1 + (kh - 1) * dilation + 1:dilation, 1 + i * stride:1 + i * stride + kw] ^ np.int8(-128)
        np.testing.assert_array_equal(patch[1 + i, :kh * kw * channels], want.reshape(-1))
        assert (patch[1 + i, kh * kw * channels:] == 9).all()
    assert (patch[0] == 9).all() and (patch[1 + count:] == 9).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_epilogue_in_place_against_litert(seed):
    """A bottleneck's projection with its residual ADD (conv -> expand -> project + conv's output): the
    ADD's output may take the residual's bytes, and the split epilogue (`render.split_requant`) requantizes
    a task's rows into a buffer of its own before the ADD reads the residual there (a version that wrote
    them into the output first read residuals it had overwritten: random networks caught it)."""
    from litert_ref import random_inputs, run_reference
    from tflite_builder import ModelBuilder

    import tosaic

    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.tensor([1, 10, 10, 24], np.int8, scale=0.05, zero_point=3, name="x")

    def conv(source, cin, cout, scale, zp, act, name):
        weights = rng.integers(-127, 128, (cout, 1, 1, cin))
        w_scale = [float(np.float32(2.0 ** rng.uniform(-8, -6))) for _ in range(cout)]
        return b.conv2d(source, weights, w_scale, rng.integers(-2000, 2000, cout), scale, zp,
                        fused_activation_function=act, name=name)

    r = conv(x, 24, 24, 0.06, -5, "NONE", "first")
    expanded = conv(r, 24, 96, 6 / 255, -128, "RELU6", "expand")
    projected = conv(expanded, 96, 24, 0.07, 2, "NONE", "project")
    out = b.tensor([1, 10, 10, 24], np.int8, scale=0.08, zero_point=-1, name="sum")
    b.op("ADD", [projected, r], [out])
    final = conv(out, 24, 8, 0.1, 0, "NONE", "final")   # the sum is no model output: it may share bytes
    b.inputs([x]).outputs([final])
    model = b.build()
    compiled = tosaic.compile(tosaic.import_tflite(model), target="cpu")
    (step,) = [s for s in compiled.plan.steps if any(o.startswith("tosa.add") for o in s.origins)]
    assert "base + k" in compiled.plan.sources[step.key], "no split epilogue"
    residual = [s for s in compiled.plan.steps if any("first" in o for o in s.origins)][0]
    assert step.arrays[0][:2] == residual.arrays[0][:2], "the sum does not take the residual's bytes"
    for k in range(2):
        inputs = random_inputs(model, seed=seed * 10 + k)
        (got,), (want,) = compiled.run(inputs), run_reference(model, inputs)
        np.testing.assert_array_equal(got, want)
