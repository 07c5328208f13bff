"""SOFTMAX int8 -> int8 (tosaic/importers/tflite/ops/softmax.py) against LiteRT BUILTIN_REF, bit for bit.

LiteRT's reference kernel aborts the whole process (TFLITE_CHECK) when a row's fixed-point sum of exps
reaches 2^28, so the property tests predict that case from the kernel's own arithmetic and never hand such
inputs to LiteRT in this process; one subprocess test shows the abort.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litert_ref import run_reference
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.importer import LegalizationError
from tosaic.importers.tflite.ops.softmax import exp_table, reciprocal
from tosaic.ir import Graph, TensorType
from tosaic.quant import count_leading_zeros32, get_reciprocal, rounding_divide_by_pot, softmax_int8_params
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.interpreter import interpret

DATA = Path(__file__).parent / "data"
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", ["op_softmax_1x10", "op_softmax_4x32x32"])
def test_data_model_matches_litert(name):
    io = np.load(DATA / f"{name}.io.npz")
    (out,) = tosaic.compile(DATA / f"{name}.tflite").run([io["in_0"]])
    assert out.dtype == np.int8 and np.array_equal(out, io["ref_0"])


def softmax_model(shape, scale, zero_point, beta, out_scale=1 / 256, out_zp=-128) -> bytes:
    b = ModelBuilder()
    x = b.tensor(shape, np.int8, scale=scale, zero_point=zero_point)
    y = b.tensor(shape, np.int8, scale=out_scale, zero_point=out_zp)
    b.op("SOFTMAX", [x], [y], beta=beta)
    return b.build()


def litert_aborts(x: np.ndarray, scale: float, beta: float) -> bool:
    """Whether reference_ops::Softmax reaches TFLITE_CHECK(exponent <= 31): some row's sum >= 2^28."""
    table = exp_table(softmax_int8_params(beta, scale))
    rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
    diffs = rows - rows.max(axis=1, keepdims=True)
    terms = np.asarray(rounding_divide_by_pot(table[diffs + 255], 12))
    return bool((terms.sum(axis=1) >= 1 << 28).any())


def inputs_for(rng, shape, kind):
    if kind == "full":
        return rng.integers(-128, 128, size=shape).astype(np.int8)
    if kind == "narrow":  # many ties with the row maximum
        return rng.integers(-4, 4, size=shape).astype(np.int8)
    # rows clustered near a random level, partly saturated at either end of int8
    level = rng.integers(-160, 160, size=shape[:-1] + [1])
    return np.clip(level + rng.integers(-40, 40, size=shape), -128, 127).astype(np.int8)


@settings(max_examples=120, **SETTINGS)
@given(depth=st.one_of(st.integers(1, 40), st.integers(41, 320)),
       batch=st.lists(st.integers(1, 3), min_size=0, max_size=3),
       log_scale=st.floats(-4.0, 0.7), zero_point=st.integers(-128, 127),
       log_beta=st.one_of(st.just(0.0), st.floats(-2.0, 2.0)),
       kind=st.sampled_from(["full", "narrow", "clustered"]), seed=st.integers(0, 2**31 - 1))
def test_softmax_matches_litert(depth, batch, log_scale, zero_point, log_beta, kind, seed):
    scale = float(np.float32(10.0**log_scale))
    beta = float(np.float32(10.0**log_beta))
    # beta * scale * 2^26 <= 1: LiteRT aborts in Prepare (tested below); keep the strategy inside.
    if beta * scale * 2.0**26 <= 1.0:
        beta = 1.0
    shape = batch + [depth]
    x = inputs_for(np.random.default_rng(seed), shape, kind)
    model = softmax_model(shape, scale, zero_point, beta)
    assert not litert_aborts(x, scale, beta)  # needs a row of 512 or more
    (got,) = tosaic.compile(tosaic.import_tflite(model)).run([x])
    (ref,) = run_reference(model, [x])
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} of {ref.size} elements differ"


@pytest.mark.parametrize("depth, beta, scale", [
    (1, 1.0, 0.1),  # a single element: the output is 127
    (300, 1.0, 0.00390625),
    (1001, 1.0, 0.1),  # an ImageNet-sized row
    (5000, 1.0, 0.1),  # longer than 4095: partial sums capped in chunks
    (64, 100.0, 1.0),  # beta * scale >= 16: input_left_shift 31, only the row maximum counts
    (64, 1e-6, 0.5),  # tiny beta * scale: every element counts almost equally
])
def test_softmax_parameter_corners(depth, beta, scale):
    rng = np.random.default_rng(depth)
    x = rng.integers(-128, 128, size=(2, depth)).astype(np.int8)
    assert not litert_aborts(x, scale, beta)
    model = softmax_model([2, depth], scale, 5, beta)
    (got,) = tosaic.compile(tosaic.import_tflite(model)).run([x])
    (ref,) = run_reference(model, [x])
    assert np.array_equal(got, ref)


def test_rows_litert_aborts_on_give_minus_128():
    # 600 equal values: sum = 600 * 2^19 >= 2^28, exponent 32 > 31. LiteRT aborts; tosaic continues the
    # arithmetic (RoundingDivideByPOT by 2^32 of a value below 2^31 is 0), i.e. every output is -128.
    model = softmax_model([2, 600], 0.05, 0, 1.0)
    x = np.zeros((2, 600), np.int8)
    x[1] = np.arange(600) % 256 - 128  # a normal row next to the degenerate one
    assert litert_aborts(x, 0.05, 1.0)
    (got,) = tosaic.compile(tosaic.import_tflite(model)).run([x])
    assert (got[0] == -128).all()
    (ref_row,) = run_reference(softmax_model([1, 600], 0.05, 0, 1.0), [x[1:]])
    assert np.array_equal(got[1:], ref_row)


def test_litert_aborts_when_a_row_sum_reaches_2_pow_28(tmp_path):
    model = tmp_path / "softmax512.tflite"
    model.write_bytes(softmax_model([1, 512], 0.05, 0, 1.0))
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from litert_ref import run_reference
        run_reference({str(model)!r}, [np.zeros((1, 512), np.int8)])
        print("returned")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "returned" not in done.stdout


def test_unrunnable_parameters_are_rejected():
    with pytest.raises(LegalizationError, match="beta"):
        tosaic.import_tflite(softmax_model([1, 8], 0.05, 0, 1e-9))  # LiteRT aborts in Prepare
    with pytest.raises(LegalizationError, match="1/256"):
        tosaic.import_tflite(softmax_model([1, 8], 0.05, 0, 1.0, out_scale=1 / 128))
    with pytest.raises(LegalizationError, match="1/256"):
        tosaic.import_tflite(softmax_model([1, 8], 0.05, 0, 1.0, out_zp=0))


# ------------------------------------------------------------- the per-row reciprocal, on its whole domain


def run_reciprocal(sums: np.ndarray):
    graph = Graph()
    b = TosaBuilder(graph)
    row_sum = graph.add_input(TensorType((sums.size, 1), "i32"), "sum")
    scale, exponent = reciprocal(b, row_sum)
    graph.set_outputs([scale, exponent], ["scale", "exponent"])
    return [v.reshape(-1) for v in interpret(graph, [sums.reshape(-1, 1).astype(np.int32)])]


def test_reciprocal_matches_get_reciprocal():
    rng = np.random.default_rng(7)
    edges = [v + d for k in range(19, 28) for v in (1 << k,) for d in (-1, 0, 1)]
    sums = np.concatenate([np.array([s for s in edges if (1 << 19) <= s < (1 << 28)]),
                           rng.integers(1 << 19, 1 << 28, size=200_000),
                           (1 << rng.integers(19, 28, size=2000)) + rng.integers(-3, 4, size=2000)])
    sums = np.clip(sums, 1 << 19, (1 << 28) - 1)
    scale, exponent = run_reciprocal(sums)
    expected_scale, num_bits_over_unit = get_reciprocal(sums, 12)
    assert np.array_equal(scale, expected_scale)
    assert np.array_equal(exponent, np.asarray(num_bits_over_unit) + 31 - 8)


def test_reciprocal_where_litert_aborts():
    sums = np.array([1 << 28, (1 << 28) + 12345, (1 << 30) + 1, (1 << 31) - 1])
    scale, exponent = run_reciprocal(sums)
    assert (scale == 0).all() and (exponent == 31).all()
    assert (np.asarray(count_leading_zeros32(sums)) < 4).all()
