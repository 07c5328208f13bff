"""The one comparison every legalization test makes: tosaic against LiteRT BUILTIN_REF, bit for bit."""

import numpy as np

import tosaic
from litert_ref import run_reference


def f32(x: float) -> float:
    """The float32 a TFLite scale is stored as, widened exactly."""
    return float(np.float32(x))


def run_tosaic(model: bytes, inputs) -> list[np.ndarray]:
    return tosaic.compile(tosaic.import_tflite(model)).run(inputs)


def assert_same(got, want, what: str = "") -> None:
    """Every output array equal in dtype, shape and every element; the message counts the differences."""
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, (what, i, g.dtype, g.shape, w.dtype, w.shape)
        if g.dtype.kind == "f":
            # Floats: the same bits (so -0.0 is not 0.0), except that any NaN equals any NaN (TOSA leaves
            # the payload open).
            bits = np.dtype(f"u{g.dtype.itemsize}")
            differ = (g.view(bits) != w.view(bits)) & ~(np.isnan(g) & np.isnan(w))
            if differ.any():
                raise AssertionError(f"{what} output {i}: {np.count_nonzero(differ)} of {differ.size} elements "
                                     f"differ, first at {np.argwhere(differ)[0].tolist()}: {g[differ][0]!r} "
                                     f"against {w[differ][0]!r}")
            continue
        if not np.array_equal(g, w):
            diff = g.astype(np.float64) - w.astype(np.float64)
            raise AssertionError(f"{what} output {i}: {np.count_nonzero(diff)} of {diff.size} elements differ, "
                                 f"max |diff| {np.abs(diff).max()}")


def assert_bit_exact(model: bytes, inputs) -> None:
    assert_same(run_tosaic(model, inputs), run_reference(model, inputs), "tosaic vs LiteRT")
