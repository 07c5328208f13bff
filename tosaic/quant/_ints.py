"""Integer plumbing shared by tosaic.quant: accept Python ints or numpy integer arrays, compute in
int64, hand back the same kind, and emulate C/C++ fixed-width integer behaviour (wrap-around,
truncating division) where the ported kernels rely on it."""

from __future__ import annotations

import numpy as np

INT8_MIN, INT8_MAX = -(1 << 7), (1 << 7) - 1
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT48_MIN, INT48_MAX = -(1 << 47), (1 << 47) - 1

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def is_scalar(*values) -> bool:
    """True when every argument is a Python int or 0-d array: results then come back as ints."""
    return all(np.ndim(v) == 0 for v in values)


def int64(name: str, value) -> np.ndarray:
    """``value`` as an int64 array; floats and out-of-range Python ints are rejected, never
    truncated, because a silently rounded operand would break bit-exactness."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if not _INT64_MIN <= int(value) <= _INT64_MAX:
            raise ValueError(f"{name}={int(value)} does not fit in int64")
        return np.asarray(int(value), dtype=np.int64)
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or an integer array, got {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > _INT64_MAX:
        raise ValueError(f"{name} has values that do not fit in int64")
    return arr.astype(np.int64, copy=False)


def result(scalar: bool, value: np.ndarray):
    """Python int for scalar calls, int64 array otherwise."""
    return int(value) if scalar else np.asarray(value, dtype=np.int64)


def check_range(name: str, value: np.ndarray, lo: int, hi: int) -> None:
    """Raise ValueError unless every element lies in [lo, hi]."""
    if value.size and (int(value.min()) < lo or int(value.max()) > hi):
        bad = value[(value < lo) | (value > hi)].flat[0]
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {int(bad)}")


def wrap(value: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap to a signed ``bits``-wide integer: what a C++ conversion to int32_t /
    int16_t does with an out-of-range value on every platform LiteRT ships on."""
    half = 1 << (bits - 1)
    return ((value + half) & ((half << 1) - 1)) - half


def trunc_shift(value: np.ndarray, n) -> np.ndarray:
    """C++ ``value / (1 << n)``: division by a power of two rounding toward zero."""
    return np.where(value >= 0, value >> n, -((-value) >> n))


def int_bounds(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
