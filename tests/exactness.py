"""The one comparison every legalization test makes: tosaic against LiteRT BUILTIN_REF, bit for bit."""

import numpy as np

import tosaic
from litert_ref import run_reference


def f32(x: float) -> float:
    """The float32 a TFLite scale is stored as, widened exactly."""
    return float(np.float32(x))


def run_tosaic(model: bytes, inputs) -> list[np.ndarray]:
    return tosaic.compile(tosaic.import_tflite(model)).run(inputs)


def assert_bit_exact(model: bytes, inputs) -> None:
    expected = run_reference(model, inputs)
    actual = run_tosaic(model, inputs)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape, (got.shape, want.shape)
        if not np.array_equal(got, want):
            diff = got.astype(np.int64) - want.astype(np.int64)
            raise AssertionError(f"{np.count_nonzero(diff)} of {diff.size} elements differ, "
                                 f"max |diff| {np.abs(diff).max()}")
