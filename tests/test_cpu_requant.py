"""Requantization in compiled kernels against the TOSA interpreter.

The CPU renderer computes `clamp(apply_scale(v, m, s) + zp, lo, hi)` in float64 where value ranges make
that exact, in integers elsewhere, and turns power-of-two scales into shifts. These properties drive
RESCALE (followed by CLAMP) through both paths with multipliers, shifts, zero points and accumulator
values drawn to sit on rounding boundaries and at the ends of the ranges.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tosaic
from tosaic.ir import Graph, TensorType, integer_range
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.interpreter import interpret


def _boundary_values(rng, multipliers, shifts, low, high, count):
    """Accumulators whose scaled value lands on or next to a rounding tie, plus the range's ends."""
    m = multipliers.astype(np.int64)
    s = shifts.astype(np.int64)
    target = rng.integers(-300, 300, size=count)
    channel = rng.integers(0, m.size, size=count)
    mc = np.maximum(m[channel], 1)
    tie = ((2 * target + 1) << (s[channel] - 1).clip(max=62)) // (2 * mc)
    values = tie + rng.integers(-2, 3, size=count)
    values = np.concatenate([values, rng.integers(low, high, size=count, endpoint=True), [low, high, 0, -1, 1]])
    return np.clip(values, low, high)


@settings(max_examples=20, deadline=None)
@given(channels=st.integers(1, 6), out_dtype=st.sampled_from(["i8", "i16", "i32"]),
       double_round=st.booleans(), per_channel=st.booleans(), power_of_two=st.booleans(),
       shift=st.integers(20, 45), out_zp=st.integers(-100, 100), clamp=st.booleans(), seed=st.integers(0, 2**16))
def test_rescale_then_clamp_matches_interpreter(channels, out_dtype, double_round, per_channel, power_of_two, shift,
                                                out_zp, clamp, seed):
    rng = np.random.default_rng(seed)
    n = channels if per_channel else 1
    shifts = np.clip(shift + rng.integers(-3, 4, size=n), 2, 62)
    if power_of_two:
        multipliers = np.left_shift(1, rng.integers(min(30, max(0, int(shifts.min()) - 5)), 31, size=n)).astype(np.int64)
    else:
        multipliers = rng.integers(1 << 30, 1 << 31, size=n)
    # apply_scale_32 requires -(1 << (shift - 1)) <= value < 1 << (shift - 1).
    limit = min(1 << int(shifts.min() - 1), 1 << 31)
    low, high = -limit, min(limit, 1 << 31) - 1
    values = _boundary_values(rng, multipliers, shifts, low, high, 200)
    x_shape = (1, 1, len(values), channels)
    x = np.broadcast_to(values[:, None], x_shape[2:]).reshape(x_shape).astype(np.int32)
    if out_dtype != "i8":
        out_zp = 0  # TOSA allows a non-zero output zero point only for 8-bit types
    graph = Graph()
    b = TosaBuilder(graph)
    arg = graph.add_input(TensorType(x_shape, "i32"), "acc")
    y = b.rescale(arg, multipliers, shifts, 0, out_zp, out_dtype,
                  rounding="DOUBLE_ROUND" if double_round else "SINGLE_ROUND")
    if clamp:
        lo, hi = integer_range(out_dtype)
        y = b.clamp(y, max(lo, out_zp - 5), min(hi, out_zp + 60))
    graph.set_outputs([y], ["out"])
    expected = interpret(graph, [x])[0]
    got = tosaic.compile(graph, target="cpu").run([x])[0]
    assert got.dtype == expected.dtype
    assert np.array_equal(got, expected)


@settings(max_examples=200, deadline=None)
@given(k=st.integers(0, 31), extra=st.integers(1, 30), double_round=st.booleans(), seed=st.integers(0, 2**16))
def test_power_of_two_scale_becomes_a_rounding_shift(k, extra, double_round, seed):
    """simplify() rewrites apply_scale(v, 2^k, s) with k < s into an add and a shift; TOSA's apply_scale
    (scalar.evaluate, in Python-exact int64) agrees on rounding ties, their neighbours and the range ends."""
    from tosaic.lowering import scalar as S

    s = k + extra
    if s > 62:
        return
    rng = np.random.default_rng(seed)
    limit = 1 << min(s - 1, 31)   # apply_scale_32 takes int32 values in [-2^(s-1), 2^(s-1))
    ties = ((2 * rng.integers(-500, 500, 300) + 1) << max(extra - 1, 0)) + rng.integers(-2, 3, 300)
    values = np.clip(np.concatenate([ties, rng.integers(-limit, limit, 300), [-limit, limit - 1, 0, -1, 1]]),
                     -limit, limit - 1)
    original = S.apply_scale(S.inp(0, "i64"), S.const(1 << k, "i64"), S.const(s, "i64"), double_round)
    rewritten = S.simplify(original)
    if double_round and s > 31 and k > 30:
        assert rewritten.op == "apply_scale"   # the round term is no multiple of 2^k: left alone
        return
    assert "apply_scale" not in {n.op for n in S.nodes(rewritten)}
    leaf = lambda node, _: values  # noqa: E731
    assert np.array_equal(S.evaluate(rewritten, leaf), S.evaluate(original, leaf))


@settings(max_examples=4, deadline=None)
@given(scales=st.tuples(*[st.floats(0.002, 0.5).map(lambda v: float(np.float32(v)))] * 3),
       zps=st.tuples(*[st.integers(-128, 127)] * 3), seed=st.integers(0, 2**16))
def test_add_input_scaling_in_float64_matches_litert(scales, zps, seed):
    """TFLite's ADD scales each input as apply_scale((x - zp) << 20, m, s) with no clamp after it; the
    renderer computes that in float64 (exact for 8-bit inputs). Every int8 value of one input against
    random values of the other, through target cpu, against LiteRT's reference kernels."""
    from litert_ref import run_reference
    from tflite_builder import ModelBuilder

    from tosaic.kernels.engine import cache_dir, module_name

    b = ModelBuilder()
    x = b.tensor([1, 16, 16, 1], np.int8, scale=scales[0], zero_point=zps[0], name="x")
    y = b.tensor([1, 16, 16, 1], np.int8, scale=scales[1], zero_point=zps[1], name="y")
    z = b.tensor([1, 16, 16, 1], np.int8, scale=scales[2], zero_point=zps[2], name="sum")
    b.op("ADD", [x, y], [z])
    model = b.build()
    rng = np.random.default_rng(seed)
    inputs = [np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1),
              rng.integers(-128, 128, (1, 16, 16, 1)).astype(np.int8)]
    compiled = tosaic.compile(tosaic.import_tflite(model), target="cpu")
    sources = [(cache_dir() / f"{module_name(s.key)}.py").read_text() for s in compiled.plan.steps if s.kind == "kernel"]
    if not float(np.log2(scales[0] / scales[1])).is_integer():
        # The larger input is scaled by 1/2, a shift; the other by the ratio of the input scales, which
        # takes the float64 path unless it is a power of two.
        assert any("np.floor(" in source for source in sources)
    assert np.array_equal(compiled.run(inputs)[0], run_reference(model, inputs)[0])
