"""SELECT_V2, comparison and CAST legalizations (tosaic/importers/tflite/ops/logic.py) against LiteRT BUILTIN_REF.

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
from tosaic.importers.tflite.importer import LegalizationError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**31 - 1)


@st.composite
def broadcast_shapes(draw, count):
    """`count` shapes that broadcast together numpy-style (trailing alignment, ranks may differ)."""
    full = draw(st.lists(st.integers(1, 4), min_size=0, max_size=4))
    shapes = []
    for _ in range(count):
        rank = draw(st.integers(0, len(full)))
        shapes.append([d if draw(st.booleans()) else 1 for d in full[len(full) - rank:]])
    return shapes


def broadcast(*shapes):
    return list(np.broadcast_shapes(*[tuple(s) for s in shapes]))


# ----------------------------------------------------------------------------------------- SELECT_V2


@settings(max_examples=50, **SETTINGS)
@given(shapes=broadcast_shapes(3), dtype=st.sampled_from(["int8", "int16", "int32", "float32", "bool"]),
       seed=seeds)
def test_select_v2(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    q = dict(scale=0.1, zero_point=3) if dtype == "int8" else dict(scale=0.1, zero_point=0) \
        if dtype == "int16" else {}
    condition = b.tensor(shapes[0], np.bool_)
    x = b.tensor(shapes[1], DTYPES[dtype], **q)
    y = b.tensor(shapes[2], DTYPES[dtype], **q)
    out = b.tensor(broadcast(*shapes), DTYPES[dtype], **q)
    b.op("SELECT_V2", [condition, x, y], [out])
    compare(b.build(), [random_array(rng, s, t) for s, t in zip(shapes, ["bool", dtype, dtype])])


def test_select_v2_keeps_the_output_shape_of_one_element_operands():
    """select.cc Prepare: when every operand and the output hold one element, the output keeps its shape."""
    b = ModelBuilder()
    condition, x, y = b.tensor([], np.bool_), b.tensor([1], np.int8, scale=0.1), b.tensor([1, 1], np.int8, scale=0.1)
    out = b.tensor([1, 1, 1], np.int8, scale=0.1)
    b.op("SELECT_V2", [condition, x, y], [out])
    for c in (True, False):
        compare(b.build(), [np.array(c), np.array([5], np.int8), np.array([[-7]], np.int8)])


# --------------------------------------------------------------------------------------- comparisons

ORDERED = ["LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL"]
ALL = ["EQUAL", "NOT_EQUAL"] + ORDERED


def comparison_model(opname, shapes, dtype, q1, q2):
    b = ModelBuilder()
    x = b.tensor(shapes[0], DTYPES[dtype], **q1)
    y = b.tensor(shapes[1], DTYPES[dtype], **q2)
    out = b.tensor(broadcast(*shapes), np.bool_)
    b.op(opname, [x, y], [out])
    return b.build()


# Scales below 1 (at or above 1 the kernel divides by a negative power of two: refused); small ones make
# distinct values compare equal, which the legalization must reproduce.
comparison_scales = st.one_of(st.floats(1e-4, 0.99), st.floats(1e-4, 0.01)).map(lambda s: float(np.float32(s)))


@settings(max_examples=150, **SETTINGS)
@given(opname=st.sampled_from(ALL), shapes=broadcast_shapes(2), s1=comparison_scales, s2=comparison_scales,
       zp1=st.integers(-128, 127), zp2=st.integers(-128, 127), same=st.booleans(), seed=seeds)
def test_int8_comparisons(opname, shapes, s1, s2, zp1, zp2, same, seed):
    """ComparisonWithScaling: each operand is `(q - zp) << 8` requantized by its own scale."""
    if same:
        s2, zp2 = s1, zp1
    rng = np.random.default_rng(seed)
    model = comparison_model(opname, shapes, "int8", dict(scale=s1, zero_point=zp1), dict(scale=s2, zero_point=zp2))
    compare(model, [random_array(rng, s, "int8") for s in shapes])


@settings(max_examples=60, **SETTINGS)
@given(opname=st.sampled_from(ALL), shapes=broadcast_shapes(2), s1=comparison_scales, s2=comparison_scales,
       zp=st.sampled_from([0, 0, 0, 5, -300]), narrow=st.booleans(), seed=seeds)
def test_int16_comparisons(opname, shapes, s1, s2, zp, narrow, seed):
    """EQUAL and NOT_EQUAL scale quantized int16 operands; the ordered comparisons compare raw int16 values."""
    rng = np.random.default_rng(seed)
    model = comparison_model(opname, shapes, "int16", dict(scale=s1, zero_point=zp), dict(scale=s2, zero_point=zp))
    bounds = (-40, 40) if narrow else (None, None)
    compare(model, [random_array(rng, s, "int16", *bounds) for s in shapes])


@settings(max_examples=60, **SETTINGS)
@given(opname=st.sampled_from(ALL), shapes=broadcast_shapes(2),
       dtype=st.sampled_from(["int32", "float32", "bool", "int16"]), seed=seeds)
def test_unquantized_comparisons(opname, shapes, dtype, seed):
    """Raw values: int32, float32 (with NaN and infinities), bool (EQUAL, NOT_EQUAL), unquantized int16."""
    if dtype == "bool" and opname in ORDERED:
        dtype = "int32"
    if dtype == "int16" and opname == "NOT_EQUAL":
        dtype = "int32"  # refused: see test_comparison_refusals
    rng = np.random.default_rng(seed)
    inputs = [random_array(rng, s, dtype, *((-3, 3) if dtype in ("int32", "int16") else ())) for s in shapes]
    if dtype == "float32":
        for x in inputs:
            flat = x.reshape(-1)
            flat[rng.random(flat.size) < 0.3] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0])
    compare(comparison_model(opname, shapes, dtype, {}, {}), inputs)


def test_int8_equal_merges_values_closer_than_its_rounding():
    """A LiteRT reference quirk, reproduced: with scale 0.001, q in {-1, 0, 1} all become
    round((q << 8) * 0.001) = 0, so EQUAL calls them equal (and LESS calls -1 < 0 false)."""
    q = dict(scale=0.001, zero_point=0)
    x = np.arange(-3, 4, dtype=np.int8)
    for opname, expected in (("EQUAL", [0, 0, 1, 1, 1, 0, 0]), ("LESS", [1, 1, 0, 0, 0, 0, 0])):
        model = comparison_model(opname, [[7], [7]], "int8", q, q)
        (ref,) = run_reference(model, [x, np.zeros(7, np.int8)])
        assert ref.astype(int).tolist() == expected
        compare(model, [x, np.zeros(7, np.int8)])


def test_comparison_refusals():
    q = dict(scale=1.5, zero_point=0)
    with pytest.raises(LegalizationError, match="must lie in"):
        tosaic.import_tflite(comparison_model("LESS", [[4], [4]], "int8", q, q))
    with pytest.raises(LegalizationError, match="writes no output"):
        tosaic.import_tflite(comparison_model("NOT_EQUAL", [[4], [4]], "int16", {}, {}))
    with pytest.raises(LegalizationError, match="unquantized int8"):
        tosaic.import_tflite(comparison_model("EQUAL", [[4], [4]], "int8", {}, {}))


# ----------------------------------------------------------------------------------------------- CAST

CAST_TYPES = ["int8", "int16", "int32", "float32", "bool"]
SPECIAL_FLOATS = np.array([0.0, -0.0, 0.4, 0.5, -0.5, 0.99, -1.5, 2.5, -2.7, 127.9, 128.0, -128.0, -129.0, 255.5,
                           32767.5, 32768.0, -32769.0, 2.0**31 - 128, 2.0**31, -2.0**31, -2.0**31 - 256, 3e9, -3e9,
                           1e38, np.nan, np.inf, -np.inf], dtype=np.float32)


def cast_model(source, target, shape):
    b = ModelBuilder()
    q = dict(scale=0.05, zero_point=-4) if source == "int8" else {}
    x = b.tensor(shape, DTYPES[source], **q)
    out = b.tensor(shape, DTYPES[target])
    b.op("CAST", [x], [out])
    return b.build()


@pytest.mark.parametrize("source", CAST_TYPES)
@pytest.mark.parametrize("target", CAST_TYPES)
def test_cast(source, target):
    """static_cast of the stored values (quantization ignored): wrapping integer narrowing, float truncation
    toward zero with saturation and NaN -> max, `!= 0` to bool."""
    rng = np.random.default_rng(11)
    if source == "float32":
        x = np.concatenate([SPECIAL_FLOATS, -SPECIAL_FLOATS, rng.standard_normal(40).astype(np.float32) * 300])
    elif source == "int32":
        x = np.concatenate([np.array([0, 1, -1, 127, 128, 255, 256, -129, 70000, -70000, 2**31 - 1, -2**31,
                                      16777217, -16777217, 2**24 + 3], np.int32),
                            rng.integers(-2**31, 2**31, 40, dtype=np.int64).astype(np.int32)])
    else:
        x = random_array(rng, [60], source)
    compare(cast_model(source, target, [x.size]), [x.astype(DTYPES[source])])


@settings(max_examples=20, **SETTINGS)
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=4), source=st.sampled_from(CAST_TYPES),
       target=st.sampled_from(CAST_TYPES), seed=seeds)
def test_cast_shapes(shape, source, target, seed):
    compare(cast_model(source, target, shape), [random_array(np.random.default_rng(seed), shape, source)])


# ------------------------------------------------------------------------------------ Arm's validator


def representative_models():
    models = [comparison_model(op, [[2, 3], [3]], "int8", dict(scale=0.02, zero_point=-5),
                               dict(scale=0.03, zero_point=7)) for op in ALL]
    models += [comparison_model(op, [[2, 3], [1, 3]], "int16", dict(scale=0.02, zero_point=5),
                                dict(scale=0.03, zero_point=5)) for op in ("EQUAL", "LESS")]
    models += [comparison_model(op, [[4], [4]], dtype, {}, {})
               for dtype in ("int32", "float32", "bool") for op in ("EQUAL", "NOT_EQUAL")]
    models += [cast_model(s, t, [2, 2]) for s in CAST_TYPES for t in CAST_TYPES if s != t]
    for dtype in ("int8", "bool", "float32"):
        b = ModelBuilder()
        condition, x, y = b.tensor([2, 1], np.bool_), b.tensor([3], DTYPES[dtype]), b.tensor([2, 3], DTYPES[dtype])
        b.op("SELECT_V2", [condition, x, y], [b.tensor([2, 3], DTYPES[dtype])])
        models.append(b.build())
    return models


@requires_tosa_tools
def test_representative_graphs_pass_arm_validator(tmp_path):
    check_with_arm_validator(representative_models(), tmp_path)
