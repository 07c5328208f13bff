"""SUM, REDUCE_MAX, REDUCE_MIN, ARG_MAX and ARG_MIN (tosaic/importers/tflite/ops/reductions.py) against
LiteRT BUILTIN_REF.

Every comparison is exact (np.array_equal, same dtype and shape). Property tests build single-op models with
tflite_builder and run them on LiteRT's reference kernels and on tosaic's TOSA interpreter.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litert_ref import run_reference
from test_legalize_data import DTYPES, check_with_arm_validator, compare, random_array
from tosa_tools import requires_tosa_tools
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.importer import LegalizationError, UnsupportedModelError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**31 - 1)
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4)
scales = st.floats(1e-3, 1.0).map(lambda s: float(np.float32(s)))


def reduce_model(opname, shape, dtype, axes, keep_dims, q_in, q_out):
    rank = len(shape)
    resolved = {a % rank for a in axes}
    out_shape = [1 if i in resolved else d for i, d in enumerate(shape)] if keep_dims else \
        [d for i, d in enumerate(shape) if i not in resolved]
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **q_in)
    out = b.tensor(out_shape, DTYPES[dtype], **q_out)
    b.op(opname, [x, b.const(np.array(axes, np.int32))], [out], keep_dims=keep_dims)
    return b.build()


def draw_axes(data, rank):
    return data.draw(st.lists(st.integers(-rank, rank - 1), min_size=0, max_size=rank + 1), label="axes")


# ------------------------------------------------------------------------------------------------ SUM


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), shape=shapes, keep_dims=st.booleans(), s_in=scales, s_out=scales,
       zp_in=st.integers(-128, 127), zp_out=st.integers(-128, 127), seed=seeds)
def test_sum_int8(data, shape, keep_dims, s_in, s_out, zp_in, zp_out, seed):
    axes = draw_axes(data, len(shape))
    model = reduce_model("SUM", shape, "int8", axes, keep_dims, dict(scale=s_in, zero_point=zp_in),
                         dict(scale=s_out, zero_point=zp_out))
    compare(model, [random_array(np.random.default_rng(seed), shape, "int8")])


def test_sum_int8_reads_its_input_as_uint8():
    """LiteRT 2.3.0 BUILTIN_REF: EvalSum -> QuantizedMeanOrSum<int8_t, kReference> passes
    GetTensorData<uint8_t> to reference_ops::QuantizedMeanOrSum, so -100 counts as 156 and the result is a
    uint8 byte. Row 0: (156 + 206 + 1 + 2 - 4 * 3) * 0.5 = 176.5 -> 177, + 3 = 180, read as int8: -76 (the
    int8 sum would give -77). tosaic reproduces the reference."""
    model = reduce_model("SUM", [2, 4], "int8", [1], False, dict(scale=0.1, zero_point=3),
                         dict(scale=0.2, zero_point=3))
    x = np.array([[-100, -50, 1, 2], [10, 20, 30, 40]], np.int8)
    (ref,) = run_reference(model, [x])
    assert ref.tolist() == [-76, 47]
    compare(model, [x])


def test_sum_int16_is_refused():
    """The same reference code reads an int16 buffer as bytes and writes only half the output buffer."""
    model = reduce_model("SUM", [2, 4], "int16", [1], False, dict(scale=0.1), dict(scale=0.2))
    with pytest.raises(UnsupportedModelError, match="SUM"):
        tosaic.import_tflite(model)


# --------------------------------------------------------------------------------- REDUCE_MAX, REDUCE_MIN


@settings(max_examples=60, **SETTINGS)
@given(data=st.data(), shape=shapes, opname=st.sampled_from(["REDUCE_MAX", "REDUCE_MIN"]),
       dtype=st.sampled_from(["int8", "int8", "int16", "int32"]), keep_dims=st.booleans(), seed=seeds)
def test_reduce_max_min(data, shape, opname, dtype, keep_dims, seed):
    axes = draw_axes(data, len(shape))
    q = dict(scale=0.05, zero_point=-9) if dtype == "int8" else dict(scale=0.05) if dtype == "int16" else {}
    model = reduce_model(opname, shape, dtype, axes, keep_dims, q, q)
    compare(model, [random_array(np.random.default_rng(seed), shape, dtype)])


def test_reduce_max_requantization_is_refused():
    model = reduce_model("REDUCE_MAX", [2, 4], "int8", [1], False, dict(scale=0.1), dict(scale=0.2))
    with pytest.raises(Exception):
        run_reference(model, [np.zeros([2, 4], np.int8)])
    with pytest.raises(LegalizationError, match="quantized differently"):
        tosaic.import_tflite(model)


# ------------------------------------------------------------------------------------ ARG_MAX, ARG_MIN


def arg_model(opname, shape, dtype, axis, output_type, axis_type):
    rank = len(shape)
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **(dict(scale=0.05, zero_point=2) if dtype == "int8" else {}))
    out = b.tensor([d for i, d in enumerate(shape) if i != axis % rank],
                   np.int32 if output_type == "INT32" else np.int64)
    b.op(opname, [x, b.const(np.array([axis], axis_type))], [out], output_type=output_type)
    return b.build()


@settings(max_examples=80, **SETTINGS)
@given(data=st.data(), shape=shapes, opname=st.sampled_from(["ARG_MAX", "ARG_MIN"]),
       dtype=st.sampled_from(["int8", "int8", "bool"]), output_type=st.sampled_from(["INT32", "INT64"]),
       axis_type=st.sampled_from([np.int32, np.int64]), narrow=st.booleans(), seed=seeds)
def test_arg_max_min(data, shape, opname, dtype, output_type, axis_type, narrow, seed):
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1), label="axis")
    # Narrow inputs make ties common: the first extreme index must win.
    x = random_array(np.random.default_rng(seed), shape, dtype, *((-2, 2) if narrow and dtype == "int8" else ()))
    compare(arg_model(opname, shape, dtype, axis, output_type, axis_type), [x])


def test_arg_min_extremes():
    x = np.array([[5, -128, 127, -128], [127, 127, -128, 0]], np.int8)
    for opname in ("ARG_MIN", "ARG_MAX"):
        for axis in (0, 1):
            compare(arg_model(opname, [2, 4], "int8", axis, "INT32", np.int32), [x])


# ------------------------------------------------------------------------------------ Arm's validator


def representative_models():
    models = [reduce_model("SUM", [2, 3, 4], "int8", [0, 2], keep_dims, dict(scale=0.02, zero_point=-5),
                           dict(scale=0.3, zero_point=zp)) for keep_dims, zp in ((True, 7), (False, -7))]
    models += [reduce_model(op, [2, 3, 4], dtype, [1], False, q, q)
               for op in ("REDUCE_MAX", "REDUCE_MIN")
               for dtype, q in (("int8", dict(scale=0.1, zero_point=3)), ("int16", dict(scale=0.1)), ("int32", {}))]
    models += [arg_model(op, [3, 4], dtype, 1, "INT32", np.int32)
               for op in ("ARG_MAX", "ARG_MIN") for dtype in ("int8", "bool")]
    models.append(arg_model("ARG_MIN", [5], "int8", 0, "INT32", np.int32))  # a rank-0 index
    models.append(reduce_model("SUM", [2, 3], "int8", [0, 1], False, dict(scale=0.02), dict(scale=0.5)))
    return models


@requires_tosa_tools
def test_representative_graphs_pass_arm_validator(tmp_path):
    check_with_arm_validator(representative_models(), tmp_path)
