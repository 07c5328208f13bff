"""What `run` does with the inputs a user hands it, on every target (issue 13, item 4): a clear error naming
the input and what is wrong, or the right answer (bit-exact with LiteRT BUILTIN_REF) for arrays that are
valid but unusual: strided, Fortran-ordered, read-only, given by name; and NaN and infinities into a float
model answered as LiteRT answers them. The CUDA target runs in Numba's simulator where no GPU is found.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from litert_ref import run_reference
from test_float_edges import single_op

import tosaic

DATA = Path(__file__).parent / "data"
CONV = DATA / "op_conv2d_s2_same_relu6.tflite"


def _cuda_target():
    try:
        from tosaic.kernels import cuda_engine
    except ImportError:
        return pytest.param("cuda:sm_87", marks=pytest.mark.skip(reason="numba-cuda is not installed"))
    if cuda_engine.missing():
        return pytest.param("cuda:sm_87", marks=pytest.mark.skip(reason="no CUDA GPU and the simulator is off"))
    return "cuda:sm_87"


TARGETS = ["interp", "cpu", _cuda_target()]


@pytest.fixture(scope="module", params=TARGETS)
def conv(request):
    io = np.load(DATA / "op_conv2d_s2_same_relu6.io.npz")
    return tosaic.compile(str(CONV), target=request.param), io["in_0"], io["ref_0"]


def test_errors_name_the_input_and_the_problem(conv):
    model, x, _ = conv
    name = model.inputs[0].name
    cases = [
        (x.astype(np.float32), f"input '{name}' must be int8, got float32"),
        (x.astype(np.uint8), f"input '{name}' must be int8, got uint8"),
        (x[:, :-1], f"input '{name}' must have shape {list(x.shape)}"),
        (x.reshape(-1), f"input '{name}' must have shape {list(x.shape)}"),
        (x.tolist(), f"input '{name}' must be int8, got int64"),
        ([x, x], "the model takes 1 inputs, got 2"),
        ([], "the model takes 1 inputs, got 0"),
        ({name: x, "extra": x}, "unknown input names ['extra']"),
        ({}, f"missing inputs ['{name}']"),
    ]
    for inputs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            model.run(inputs)


def test_unusual_but_valid_arrays_answer_right(conv):
    model, x, ref = conv
    strided = np.zeros(x.shape[:3] + (2 * x.shape[3],), np.int8)[..., ::2]
    strided[...] = x
    fortran = np.asfortranarray(x)
    readonly = x.copy()
    readonly.flags.writeable = False
    for array in (strided, fortran, readonly):
        assert not array.flags.c_contiguous or not array.flags.writeable
        (out,) = model.run(array)
        assert np.array_equal(out, ref)
    (out,) = model.run({model.inputs[0].name: readonly})
    assert np.array_equal(out, ref)
    assert np.array_equal(x, readonly)   # inputs are never written


@pytest.mark.parametrize("target", TARGETS)
def test_nan_and_infinities_into_a_float_model(target):
    model_bytes = single_op("QUANTIZE", [8], np.float32, np.int8, out_quant={"scale": 0.1, "zero_point": -7})
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.25, -0.0, 12.7], np.float32)
    (want,) = run_reference(model_bytes, [x])
    (got,) = tosaic.compile(tosaic.import_tflite(model_bytes), target=target).run([x])
    assert got.dtype == want.dtype and np.array_equal(got, want)
