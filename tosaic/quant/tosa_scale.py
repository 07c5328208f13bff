"""TOSA 1.0 scaling arithmetic: ``apply_scale_32``, ``apply_scale_16``, ``reciprocal_scale`` and
``count_leading_zeros``, exactly as the specification's pseudocode defines them
(arm/tosa-specification, pseudocode/library/scale_helpers.tosac, tag v1.0.0).

Every function takes Python ints or numpy integer arrays (broadcast together, e.g. per-channel
multipliers and shifts) and returns Python ints or int64 arrays.

Exactness in int64: the spec types the value of ``apply_scale_32`` as int32_t (RESCALE rejects
``scale32`` with an i48 input), so ``|value * multiplier| < 2**62`` and the rounding term is below
``2**61 + 2**30``; ``apply_scale_16`` takes an int48 value and an int16 multiplier, so its product is
below ``2**62`` too. Values outside those types are rejected with ValueError rather than wrapped, so
the numpy path never overflows and needs no big-integer fallback.
"""

from __future__ import annotations

import numpy as np

from ._ints import (
    INT16_MAX,
    INT32_MAX,
    INT32_MIN,
    INT48_MAX,
    INT48_MIN,
    check_range,
    int64,
    is_scalar,
    result,
)

__all__ = ["apply_scale_32", "apply_scale_16", "reciprocal_scale", "count_leading_zeros32"]


def count_leading_zeros32(value):
    """Leading zero bits of ``value`` read as uint32 (32 for 0): the spec's ``count_leading_zeros``
    as used by ``reciprocal_scale``. ``value`` must be in [0, 2**32)."""
    scalar = is_scalar(value)
    x = int64("value", value)
    check_range("value", x, 0, (1 << 32) - 1)
    # Binary search on the bit position, vectorised: no float log2, which rounds near powers of two.
    n = np.zeros_like(x)
    for step in (16, 8, 4, 2, 1):
        small = x < (1 << (32 - step))
        n = np.where(small, n + step, n)
        x = np.where(small, x << step, x)
    n = np.where(x == 0, 32, n)
    return result(scalar, n)


def _check_shift(shift: np.ndarray) -> None:
    check_range("shift", shift, 2, 62)


def apply_scale_32(value, multiplier, shift, double_round: bool = False):
    """``(value * multiplier + round) >> shift`` with ``round = 1 << (shift - 1)``; with
    ``double_round`` and ``shift > 31`` the round term moves by ``+(1 << 30)`` for ``value >= 0``
    and ``-(1 << 30)`` otherwise (TOSA DOUBLE_ROUND, which reproduces TFLite's two-step
    SaturatingRoundingDoublingHighMul + RoundingDivideByPOT). Right shift is arithmetic.

    REQUIREs of the spec raise ValueError: ``0 <= multiplier <= INT32_MAX``, ``2 <= shift <= 62``,
    ``value`` an int32 with ``-(1 << (shift - 1)) <= value < 1 << (shift - 1)``. The result then fits
    in int32 (it is returned as int; callers add the zero point and saturate)."""
    scalar = is_scalar(value, multiplier, shift)
    v = int64("value", value)
    m = int64("multiplier", multiplier)
    s = int64("shift", shift)
    check_range("multiplier", m, 0, INT32_MAX)
    _check_shift(s)
    check_range("value", v, INT32_MIN, INT32_MAX)
    limit = np.left_shift(1, s - 1)
    outside = (v < -limit) | (v >= limit)
    if outside.any():
        v_b, s_b, bad = np.broadcast_arrays(v, s, outside)
        i = np.flatnonzero(bad)[0]
        raise ValueError(
            f"value={int(v_b.flat[i])} violates -(1 << (shift-1)) <= value < 1 << (shift-1) "
            f"for shift={int(s_b.flat[i])}"
        )
    rnd = limit
    if double_round:
        rnd = rnd + np.where(s > 31, np.where(v >= 0, 1 << 30, -(1 << 30)), 0)
    return result(scalar, (v * m + rnd) >> s)


def apply_scale_16(value, multiplier, shift):
    """``(value * multiplier + (1 << (shift - 1))) >> shift`` for an int48 ``value`` and a 16-bit
    ``multiplier`` (no double rounding in the spec). Raises ValueError for the spec's REQUIREs:
    ``0 <= multiplier <= INT16_MAX``, ``2 <= shift <= 62``, result inside int32."""
    scalar = is_scalar(value, multiplier, shift)
    v = int64("value", value)
    m = int64("multiplier", multiplier)
    s = int64("shift", shift)
    check_range("value", v, INT48_MIN, INT48_MAX)
    check_range("multiplier", m, 0, INT16_MAX)
    _check_shift(s)
    out = (v * m + np.left_shift(1, s - 1)) >> s
    check_range("apply_scale_16 result", out, INT32_MIN, INT32_MAX)
    return result(scalar, out)


def reciprocal_scale(count):
    """``(multiplier, shift)`` approximating ``1 / count`` for AVG_POOL2D:
    ``k = 32 - count_leading_zeros(count - 1)``, ``multiplier = (((1 << 30) + 1) << k) // count``
    (in ``[1 << 30, 1 << 31)`` for ``count <= 2**30``; from ``2**30 + 1``, beyond every TOSA level's pooling
    window, it can reach ``1 << 31``), ``shift = 30 + k``. ``count`` must be in [1, 2**32)."""
    scalar = is_scalar(count)
    c = int64("count", count)
    check_range("count", c, 1, (1 << 32) - 1)
    k = 32 - np.asarray(count_leading_zeros32(c - 1), dtype=np.int64)
    multiplier = (((1 << 30) + 1) << k) // c
    return result(scalar, multiplier), result(scalar, 30 + k)
