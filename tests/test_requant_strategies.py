"""Every requantization strategy a target may choose (tosaic/kernels/requant.py) against the definition,
`tosaic.quant.apply_scale_32` plus zero point and clamp, bit for bit: every int8 input and the int32
extremes, against boundary and random multipliers, every shift the strategy takes, both rounding modes,
per-tensor and per-channel. The `neon` model is what the aarch64 kernels compute instruction by
instruction (their code also runs on this machine in tests/test_cpu_kernels.py, and under emulation in
scripts/arm_check.sh)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tosaic.kernels.requant import float64_applies, float64_model, neon_applies, neon_model, requantize
from tosaic.quant import apply_scale_32

INT8 = np.arange(-128, 128, dtype=np.int64)
EXTREMES = np.array([-(1 << 31), -(1 << 31) + 1, -(1 << 30), -1, 0, 1, (1 << 30), (1 << 31) - 1], dtype=np.int64)
MULTIPLIERS = [0, 1, 2, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, 1518500250, (1 << 31) - 2, (1 << 31) - 1]


def reference(v, m, s, double_round, zp=0, low=-(1 << 40), high=1 << 40):
    return requantize(apply_scale_32(v, m, s, double_round), zp, low, high)


def _values(shift: int) -> np.ndarray:
    """int8 inputs, widened by the left shifts TFLite's ADD uses, and int32 values apply_scale_32 accepts at
    this shift (it REQUIREs |v| < 2^(s-1))."""
    bound = 1 << min(shift - 1, 31)
    values = np.concatenate([INT8, INT8 << 20, EXTREMES])
    return values[(values >= -bound) & (values < bound)]


@pytest.mark.parametrize("double_round", [False, True])
@pytest.mark.parametrize("shift", range(31, 63))
def test_neon_equals_apply_scale_32(shift, double_round):
    values = _values(shift)
    for m in MULTIPLIERS:
        assert neon_applies(values.min(), values.max(), m, shift)
        np.testing.assert_array_equal(neon_model(values, m, shift, double_round),
                                      apply_scale_32(values, m, shift, double_round), err_msg=f"m={m} s={shift}")


@settings(max_examples=300, deadline=None)
@given(v=st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=16),
       m=st.integers(0, (1 << 31) - 1), s=st.integers(31, 62), double_round=st.booleans())
def test_neon_on_int32_accumulators(v, m, s, double_round):
    v = np.array([x for x in v if -(1 << (s - 1)) <= x < (1 << (s - 1))] or [0], dtype=np.int64)
    np.testing.assert_array_equal(neon_model(v, m, s, double_round), apply_scale_32(v, m, s, double_round))


def test_neon_per_channel_multipliers_and_shifts():
    rng = np.random.default_rng(0)
    m = rng.integers(1 << 29, 1 << 31, 64)
    s = rng.integers(31, 63, 64)
    v = rng.integers(-(1 << 30), 1 << 30, (500, 64))
    for double_round in (False, True):
        np.testing.assert_array_equal(neon_model(v, m, s, double_round), apply_scale_32(v, m, s, double_round))


def test_neon_refuses_what_it_cannot_compute():
    assert not neon_applies(-5, 5, 1 << 30, 30)            # a shift below 31 would need more than the high word
    assert not neon_applies(-5, 5, -1, 40)                  # negative multipliers
    assert not neon_applies(-(1 << 33), 5, 1 << 30, 40)     # a value beyond int32 (an i48 accumulator)


@pytest.mark.parametrize("double_round", [False, True])
@pytest.mark.parametrize("shift", [2, 8, 20, 30, 31, 32, 38, 45, 50, 62])
@pytest.mark.parametrize("zp,low,high", [(0, -128, 127), (-7, -128, 127), (12, 0, 127), (0, -32768, 32767)])
def test_float64_equals_apply_scale_32_where_it_applies(shift, double_round, zp, low, high):
    for values in (INT8, INT8 << 20, EXTREMES):
        values = values[(values >= -(1 << (shift - 1))) & (values < (1 << (shift - 1)))]
        if not values.size or not float64_applies(int(abs(values).max()), shift, shift, zp, low, high):
            continue
        for m in MULTIPLIERS:
            np.testing.assert_array_equal(float64_model(values, m, shift, double_round, zp, low, high),
                                          reference(values, m, shift, double_round, zp, low, high),
                                          err_msg=f"m={m} s={shift}")


def test_float64_refuses_shifts_too_small_for_its_bounds():
    assert float64_applies(1 << 31, 38, 38, 0, -128, 127)
    assert not float64_applies(1 << 31, 2, 2, 0, -(1 << 52), 1 << 52)
