"""More random network kinds (tests/network_generator.py ``MORE_KINDS``) against LiteRT's reference
kernels bit for bit: a transformer encoder (FULLY_CONNECTED embedding, MEAN/SQUARED_DIFFERENCE/RSQRT
normalisation, BATCH_MATMUL attention, SOFTMAX, GELU MLP), a U-Net (stride-2 encoder, TRANSPOSE_CONV
or RESIZE_* decoder, jointly quantized skip CONCATENATION), an unrolled LSTM (FULLY_CONNECTED, SPLIT,
LOGISTIC, TANH, MUL, ADD, UNPACK/PACK or STRIDED_SLICE/CONCATENATION), MobileNetV3 (HARD_SWISH,
squeeze-excite with LOGISTIC or hard-sigmoid gating), a 16x8 network (int16 activations, int8
weights, int64 biases), an int8 network with float32 edges (QUANTIZE / DEQUANTIZE) and a ResNet (basic
and bottleneck blocks, stride-2 projection shortcuts, residual ADD with a fused RELU). Then the 16x8
variant of every kind (``build_network(..., int16=True)``).

CI runs two seeds per kind and one 16x8 network per kind; ``-m slow`` sweeps more (and larger) networks.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest

from litert_ref import reference_intermediates, run_reference
from network_generator import ALL_KINDS, MORE_KINDS, OPS_BY_KIND, Network, build_network
from test_random_networks import _inputs, compare_with_reference, sweep

CI_SEEDS = {kind: (0, 1) for kind in MORE_KINDS}
CI_SEEDS["resnet"] = (0, 4)     # a bottleneck and a basic-block network, both with projection shortcuts
VARIANT_KINDS = [kind for kind in ALL_KINDS if kind != "int16"]
CI_CASES = [(kind, seed) for kind in MORE_KINDS for seed in CI_SEEDS[kind]]
COVERAGE_SEEDS = range(8)        # generation only (cheap): the kind's ops all show up
SLOW_SEEDS = range(100, 125)


@functools.lru_cache(maxsize=None)
def _network(kind: str, seed: int, large: bool = False) -> Network:
    return build_network(seed, kind, large=large)


def test_more_kinds_are_deterministic():
    for kind in MORE_KINDS:
        assert build_network(3, kind).model == build_network(3, kind).model
        assert build_network(3, kind).model != build_network(4, kind).model


@pytest.mark.parametrize("kind", MORE_KINDS)
def test_seeds_cover_the_kinds_ops(kind):
    seen = Counter()
    for seed in COVERAGE_SEEDS:
        seen.update(_network(kind, seed).op_counts)
    missing = OPS_BY_KIND[kind] - set(seen)
    assert not missing, f"{kind} seeds {list(COVERAGE_SEEDS)} never use {sorted(missing)}; saw {dict(seen)}"


def check_not_degenerate(net: Network, inputs: list[np.ndarray]) -> None:
    """Outputs take several values; int8/int16 intermediates are not collapsed onto one value."""
    outs = run_reference(net.model, inputs)
    for i, out in enumerate(outs):
        distinct = len(np.unique(out))
        assert distinct >= (3 if out.size >= 8 else 2), \
            f"{net.summary()}: output {i} {out.shape} takes only {distinct} values: {out.ravel()[:16]}"
    values = reference_intermediates(net.model, inputs)
    b = net.builder
    for op in b.ops:
        for t in op.outputs:
            v, spec = values[t], b.tensors[t]
            if v.dtype not in (np.int8, np.int16) or v.size < 32 or op.opname == "SOFTMAX":
                continue
            distinct = len(np.unique(v))
            _, counts = np.unique(v, return_counts=True)
            top = counts.max() / v.size
            assert distinct >= (8 if v.size >= 64 else 4) and top < 0.9, (
                f"{net.summary()}: {op.opname} output '{spec.name}' {spec.shape} is degenerate: "
                f"{distinct} distinct values, {top:.0%} at the commonest")


@pytest.mark.parametrize("kind,seed", CI_CASES)
def test_more_reference_runs_and_is_not_degenerate(kind, seed):
    net = _network(kind, seed)
    for k in range(2):
        check_not_degenerate(net, _inputs(net, k))


@pytest.mark.parametrize("kind,seed", CI_CASES)
def test_more_tosaic_matches_reference(kind, seed, tmp_path):
    exact, report = compare_with_reference(_network(kind, seed), tmp_path)
    print(report)
    assert exact, report


@pytest.mark.parametrize("kind", VARIANT_KINDS)
def test_16x8_variant_matches_reference(kind, tmp_path):
    net = build_network(0, kind, int16=True)
    assert {net.builder.tensors[t].dtype for op in net.builder.ops for t in op.outputs} & {np.dtype(np.int16)}
    check_not_degenerate(net, _inputs(net, 0))
    exact, report = compare_with_reference(net, tmp_path)
    print(report)
    assert exact, report


@pytest.mark.slow
@pytest.mark.parametrize("kind", VARIANT_KINDS)
def test_16x8_variant_sweep(kind, tmp_path):
    sweep((build_network(seed, kind, int16=True) for seed in SLOW_SEEDS), check_not_degenerate, tmp_path, range(2))


@pytest.mark.slow
@pytest.mark.parametrize("kind", MORE_KINDS)
@pytest.mark.parametrize("large", [False, True])
def test_more_sweep(kind, large, tmp_path):
    sweep((build_network(seed, kind, large=large) for seed in SLOW_SEEDS), check_not_degenerate, tmp_path, range(2))
