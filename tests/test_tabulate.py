"""Tabulation and the squeeze-excite fusion rule, against LiteRT BUILTIN_REF.

SiLU as the converter writes it (LOGISTIC and MUL both reading a conv's output) must become one kernel:
the conv with its requantization and one TABLE lookup of the whole `x * sigmoid(x)`, whatever the conv's
template (GEMM, depthwise, im2col). A squeeze-excite gate (MEAN, LOGISTIC, MUL broadcast over the feature
map) must be computed once, in its own kernel, not per element of the feature map.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tflite_builder import ModelBuilder

import tosaic
from exactness import assert_same
from litert_ref import random_inputs, run_reference

SCALE = st.floats(0.01, 0.2).map(lambda s: float(np.float32(s)))
ZP = st.integers(-100, 100)


def _silu_model(root: str, x_scale, x_zp, y_scale, y_zp, out_scale, out_zp, seed) -> bytes:
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.tensor([1, 9, 9, 8], np.int8, scale=x_scale, zero_point=x_zp, name="x")
    if root == "gemm":
        y = b.conv2d(x, rng.integers(-127, 128, (24, 1, 1, 8)), [0.01] * 24, rng.integers(-900, 900, 24), y_scale, y_zp)
    elif root == "im2col":
        y = b.conv2d(x, rng.integers(-127, 128, (24, 3, 3, 8)), [0.004] * 24, rng.integers(-900, 900, 24), y_scale,
                     y_zp)
    else:
        y = b.depthwise_conv2d(x, rng.integers(-127, 128, (1, 3, 3, 8)), [0.02] * 8, rng.integers(-900, 900, 8),
                               y_scale, y_zp)
    gate = b.like(y, scale=1 / 256, zero_point=-128)
    b.op("LOGISTIC", [y], [gate])
    out = b.like(y, scale=out_scale, zero_point=out_zp)
    b.op("MUL", [y, gate], [out])
    return b.build()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(root=st.sampled_from(["gemm", "im2col", "depthwise"]), x_scale=SCALE, x_zp=ZP, y_scale=SCALE, y_zp=ZP,
       out_scale=SCALE, out_zp=ZP, seed=st.integers(0, 2**31))
def test_silu_is_one_kernel_with_one_table(root, x_scale, x_zp, y_scale, y_zp, out_scale, out_zp, seed):
    model = _silu_model(root, x_scale, x_zp, y_scale, y_zp, out_scale, out_zp, seed)
    compiled = tosaic.compile(tosaic.import_tflite(model), target="cpu")
    (step,) = compiled.plan.steps
    ops = [o.split(" ")[0] for o in step.origins]
    assert ops.count("tosa.table") == 1 and "tosa.mul" in ops, ops
    inputs = random_inputs(model, seed)
    assert_same(compiled.run(inputs), run_reference(model, inputs), f"SiLU after {root}")


def _squeeze_excite_model(scale, zp, seed) -> bytes:
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.tensor([1, 12, 12, 16], np.int8, scale=scale, zero_point=zp, name="x")
    pooled = b.tensor([1, 1, 1, 16], np.int8, scale=scale, zero_point=zp, name="pooled")
    b.op("MEAN", [x, b.const(np.array([1, 2], np.int32))], [pooled], keep_dims=True)
    squeezed = b.conv2d(pooled, rng.integers(-127, 128, (16, 1, 1, 16)), [0.01] * 16, rng.integers(-500, 500, 16),
                        0.05, 3)
    gate = b.like(squeezed, scale=1 / 256, zero_point=-128)
    b.op("LOGISTIC", [squeezed], [gate])
    out = b.like(x, scale=scale * 0.9, zero_point=-zp // 2)
    b.op("MUL", [x, gate], [out])
    return b.build()


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(scale=SCALE, zp=ZP, seed=st.integers(0, 2**31))
def test_squeeze_excite_gate_is_computed_once(scale, zp, seed):
    model = _squeeze_excite_model(scale, zp, seed)
    compiled = tosaic.compile(tosaic.import_tflite(model), target="cpu")
    scaling = [s for s in compiled.plan.steps if "tosa.mul" in " ".join(s.origins)]
    (step,) = scaling
    assert not any(o.startswith("tosa.table") for o in step.origins), step.origins
    gates = [s for s in compiled.plan.steps if any(o.startswith("tosa.table") for o in s.origins)]
    assert len(gates) == 1 and any(o.startswith("tosa.conv2d") for o in gates[0].origins)
    inputs = random_inputs(model, seed)
    assert_same(compiled.run(inputs), run_reference(model, inputs), "squeeze-excite")


def test_avx512vbmi_table_lookup_equals_numpy():
    """The 64-value TABLE gather (`vpermi2b` twice and a select on the sign) against numpy's indexing, on
    every int8 value and random tables, at offsets that are not multiples of 64, with tails of 1 to 63 values
    (masked loads and stores, which leave the values after the tail alone), on a 2-D array read by flat
    offset, and up to the array's last byte."""
    from tosaic.kernels.target import host

    if host().arch != "x86_64" or "avx512vbmi" not in host().features:
        pytest.skip(f"this machine ({host()}) lacks avx512vbmi")
    import numba

    from tosaic.kernels.x86_microkernels import table_lookup_avx512vbmi

    @numba.njit
    def lookup(values, start, count, table):
        table_lookup_avx512vbmi(values, start, count, table)

    rng = np.random.default_rng(7)
    for start, count in ((0, 456), (5, 300), (63, 64), (7, 1), (100, 63), (0, 0), (391, 65)):
        values = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, 200)]).astype(np.int8)
        table = rng.integers(-128, 128, 256).astype(np.int8)
        want = values.copy()
        want[start:start + count] = table[values[start:start + count].astype(np.int64) + 128]
        grid = values.reshape(8, 57)
        lookup(grid, start, count, table)
        np.testing.assert_array_equal(values, want, f"start {start}, count {count}")


@pytest.mark.parametrize("vbmi", [True, False])
def test_silu_with_and_without_the_vector_lookup(vbmi):
    """The same SiLU network bit-exact with LiteRT whether its TABLE gathers run 64 at a time (AVX-512 VBMI)
    or one at a time."""
    import dataclasses

    from tosaic.kernels.target import host

    target = host()
    if vbmi and "avx512vbmi" not in target.features:
        pytest.skip(f"this machine ({target}) lacks avx512vbmi")
    target = dataclasses.replace(target, features=target.features - (set() if vbmi else {"avx512vbmi"}))
    model = _silu_model("gemm", 0.05, 3, 0.08, -20, 0.04, 9, 1)
    compiled = tosaic.compile(tosaic.import_tflite(model), target=target)
    bodies = [src.split("# template:")[1] for src in compiled.plan.sources.values()]
    assert any("table_lookup_avx512vbmi(" in body for body in bodies) == vbmi
    inputs = random_inputs(model, 1)
    assert_same(compiled.run(inputs), run_reference(model, inputs), f"SiLU, vbmi={vbmi}")


def _rescaling_model(x_scale, x_zp, k_scale, k, b_scale, b, mid_scale, mid_zp, out_scale, out_zp) -> bytes:
    """Keras' Rescaling layer as the converter writes it: x * k + b with scalar int8 constants."""
    b_ = ModelBuilder()
    x = b_.tensor([1, 6, 7, 3], np.int8, scale=x_scale, zero_point=x_zp, name="x")
    scaled = b_.like(x, scale=mid_scale, zero_point=mid_zp)
    b_.op("MUL", [x, b_.const(np.array([k], np.int8), scale=k_scale, zero_point=0)], [scaled])
    out = b_.like(x, scale=out_scale, zero_point=out_zp)
    b_.op("ADD", [scaled, b_.const(np.array([b], np.int8), scale=b_scale, zero_point=0)], [out])
    return b_.build()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(x_scale=SCALE, x_zp=ZP, k_scale=SCALE, k=st.integers(-127, 127), b_scale=SCALE, b=st.integers(-127, 127),
       mid_scale=SCALE, mid_zp=ZP, out_scale=SCALE, out_zp=ZP, seed=st.integers(0, 2**31))
def test_constant_operands_fold_and_the_op_becomes_a_table(x_scale, x_zp, k_scale, k, b_scale, b, mid_scale, mid_zp,
                                                           out_scale, out_zp, seed):
    """The rescales of the constant operands are folded at compile time, which leaves x the only varying
    input: the whole chain is one TABLE lookup, bit-exact with LiteRT."""
    from tosaic.kernels.plan import structured_stages

    model = _rescaling_model(x_scale, x_zp, k_scale, k, b_scale, b, mid_scale, mid_zp, out_scale, out_zp)
    graph = tosaic.import_tflite(model)
    fused, dispatches, _ = structured_stages(graph)
    (d,) = dispatches
    assert [op.name for op in fused.ops if op.name != "linalg.const"] == ["linalg.generic"]
    assert d.root.operands[1].owner.name == "linalg.const" and d.root.operands[1].type.shape == (256,)
    compiled = tosaic.compile(graph, target="cpu")
    inputs = random_inputs(model, seed)
    assert_same(compiled.run(inputs), run_reference(model, inputs), "x * k + b")
