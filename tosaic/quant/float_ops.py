"""TOSA 1.0's floating-point helpers as numpy functions, shared by the TOSA and structured-op interpreters.

The spec defines float max, min and clip exactly (pseudocode/library/arithmetic_helpers.tosac): a NaN
operand gives NaN (`PROPAGATE`) or the other operand (`IGNORE`), and otherwise `a >= b ? a : b` (max) or
`a < b ? a : b` (min), which fixes which zero comes out of a tie between -0.0 and 0.0. numpy's
`maximum` returns the other one of a tie, so it is not used for floats. Reductions and pooling combine
their values one at a time in index order (REDUCE_MAX, MAX_POOL2D, REDUCE_SUM pseudocode), which is what
`reduce_sequential` does. The generated kernels render the same definitions (`kernels/render.py`).
"""

from __future__ import annotations

import numpy as np

PROPAGATE, IGNORE = "PROPAGATE", "IGNORE"


def apply_max(a, b, nan_mode: str = PROPAGATE):
    """apply_max_s on float arrays (broadcasting)."""
    a, b = np.asarray(a), np.asarray(b)
    return _with_nans(a, b, np.where(a >= b, a, b), nan_mode)


def apply_min(a, b, nan_mode: str = PROPAGATE):
    """apply_min_s on float arrays (broadcasting)."""
    a, b = np.asarray(a), np.asarray(b)
    return _with_nans(a, b, np.where(a < b, a, b), nan_mode)


def _with_nans(a, b, ordered, nan_mode):
    """compare_nan where an operand is NaN: NaN, or with IGNORE the operand that is not NaN (b if a is)."""
    a_nan, b_nan = np.isnan(a), np.isnan(b)
    if nan_mode == IGNORE:
        return np.where(a_nan, b, np.where(b_nan, a, ordered)).astype(ordered.dtype)
    return np.where(a_nan | b_nan, np.array(np.nan, dtype=ordered.dtype), ordered).astype(ordered.dtype)


def apply_clip(value, low, high, nan_mode: str = PROPAGATE):
    """apply_clip_s: max with the lower bound, then min with the upper one."""
    return apply_min(apply_max(value, low, nan_mode), high, nan_mode)


def reduce_sequential(combine, values: np.ndarray, axis: int, init) -> np.ndarray:
    """`acc = combine(acc, values[i])` for i along `axis` in order, from `init`; the axis kept as size 1."""
    moved = np.moveaxis(values, axis, 0)
    acc = np.full(moved.shape[1:], init, dtype=values.dtype)
    for i in range(moved.shape[0]):
        acc = np.asarray(combine(acc, moved[i])).astype(values.dtype)
    return np.expand_dims(acc, axis)


def max_init(dtype, nan_mode: str = PROPAGATE):
    """The starting value of a float max reduction: NaN with IGNORE (so an all-NaN input stays NaN), else
    -infinity (minimum_s)."""
    return np.array(np.nan if nan_mode == IGNORE else -np.inf, dtype=dtype)


def min_init(dtype, nan_mode: str = PROPAGATE):
    return np.array(np.nan if nan_mode == IGNORE else np.inf, dtype=dtype)


def round_to_int(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """CAST float to integer: round to nearest with ties to even, clip to [low, high]; NaN, which the spec
    leaves open, becomes 0 (as Arm's FCVTNS gives), in the interpreters and the kernels alike."""
    values = np.asarray(values, dtype=np.float64)
    rounded = np.clip(np.rint(np.where(np.isnan(values), 0.0, values)), low, high)
    return rounded.astype(np.int64)
