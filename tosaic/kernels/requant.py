"""Requantization strategies: how a target's kernels compute TOSA's `apply_scale_32`, a zero point and a
clamp, each modelled here in numpy and tested against `tosaic.quant.apply_scale_32` bit for bit over every
int8 input, int32 extremes and boundary multipliers and shifts (tests/test_requant_strategies.py).

- `int64` (every target, and whatever no other strategy takes): the definition itself, `(v * m + r) >> s`
  in 64-bit integers.
- `float64` (x86, `kernels/render.py`): `floor(v * (m / 2^s) + 1/2 +- 2^(30-s))` in float64 lanes, where
  float64 is provably exact (`float64_applies`); AVX2 has four float64 lanes and no 64-bit multiply.
- `neon` (aarch64, `BodyRenderer._neon_requant`): 32-bit lanes, as TFLite's NEON kernels do. For
  shift s in [31, 62] and e = s - 31, with double rounding or e = 0: `sqrdmulh(v, m)`, i.e.
  floor((v*m + 2^30) / 2^31), then, for double rounding, the sign fixup (-1 for a negative value when
  e > 0) and a rounding shift right by e (`srshl` by -e: floor((x + 2^(e-1)) / 2^e)): gemmlowp's
  RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(v, m), e), which equals TOSA's DOUBLE_ROUND. With
  single rounding and e > 0: `sqdmulh(v, m)`, floor(v*m / 2^31), then the rounding shift: with
  h = floor(v*m / 2^31), floor((v*m + 2^(s-1)) / 2^s) = floor((h + 2^(e-1)) / 2^e) because the dropped
  fraction (below 1) cannot carry an integer numerator past a multiple of 2^e. The kernels compute
  sqrdmulh as sqdmulh plus bit 30 of the product (the low word of a wrapping 32-bit multiply holds it) and
  the rounding shift as (x >> e) + bit e-1 of x, which cannot overflow; LLVM selects `sqdmulh` for the
  high multiply.
"""

from __future__ import annotations

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def float64_applies(value_bound: int, shift_min: int, shift_max: int, zp: int, low: int, high: int) -> bool:
    """Whether `float64` is exact for |v| <= value_bound, shifts in [shift_min, shift_max] and output bounds
    [low, high] around zero point zp: v*m + 2^(s-1) +- 2^30 is exact below 2^53, and above it the result's
    magnitude is at least 2^(53-s) - 3, beyond both bounds, so rounding error cannot change the clamp."""
    return value_bound < 1 << 53 and max(abs(low - zp), abs(high - zp)) + 3 < 2.0 ** (53 - shift_max) \
        and shift_min >= 2


def float64_model(v, m, s, double_round: bool, zp: int, low: int, high: int) -> np.ndarray:
    """What the `float64` rendering computes (before its int32 store)."""
    v, m, s = (np.asarray(a, dtype=np.int64) for a in (v, m, s))
    scaled = v.astype(np.float64) * (m.astype(np.float64) * np.exp2(-s.astype(np.float64))) + 0.5
    if double_round:
        scaled = scaled + np.where(s > 31, np.where(v >= 0, 1.0, -1.0) * np.exp2(30.0 - s), 0.0)
    return np.clip(np.floor(np.clip(scaled, low - zp, high - zp)).astype(np.int64) + zp, low, high)


def neon_applies(value_low: int, value_high: int, multipliers, shifts) -> bool:
    """Whether `neon` computes apply_scale_32 exactly: values in int32, multipliers in [0, 2^31), shifts
    in [31, 62] (a right shift of 0 to 31 after the 32-bit high multiply)."""
    m, s = np.asarray(multipliers), np.asarray(shifts)
    return INT32_MIN <= value_low and value_high <= INT32_MAX and m.min() >= 0 and m.max() <= INT32_MAX \
        and s.min() >= 31 and s.max() <= 62


def neon_model(v, m, s, double_round: bool) -> np.ndarray:
    """What the `neon` requantization computes, instruction by instruction, as exact integers."""
    v, m, s = (np.asarray(a, dtype=np.int64) for a in (v, m, s))
    product = v * m
    e = s - 31
    rounding_high = double_round | (e == 0)
    x = np.where(rounding_high, (product + (1 << 30)) >> 31, product >> 31)   # sqrdmulh / sqdmulh
    x = np.clip(x, INT32_MIN, INT32_MAX)
    if double_round:
        x = np.maximum(x + np.where((x < 0) & (e > 0), -1, 0), INT32_MIN)    # sign fixup, saturating add
    half = np.where(e > 0, np.left_shift(1, np.maximum(e - 1, 0)), 0)
    return (x + half) >> e                                                     # srshl by -e


def requantize(scaled, zp: int, low: int, high: int) -> np.ndarray:
    """The zero point and the clamp every strategy applies after scaling."""
    return np.clip(np.asarray(scaled, dtype=np.int64) + zp, low, high)
