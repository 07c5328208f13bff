"""Whole random networks (tests/network_generator.py), compiled by tosaic, against LiteRT's reference
kernels bit for bit.

First the generator is checked on its own: every network runs in LiteRT BUILTIN_REF and is not
degenerate (outputs and intermediate activations take many values, not one saturated one). Then
``tosaic.compile(path).run(inputs)`` must equal ``run_reference`` exactly on seeded random inputs.
A failure names the network (kind, seed, op counts), each differing output, and the first TFLite
tensor that differs with the op producing it, so it can be cut out with
``network_generator.single_op_model``.

The CI part is a fixed set of seeds per kind; ``-m slow`` runs a larger sweep with bigger networks.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest

import tosaic
from litert_ref import random_inputs, reference_intermediates, run_reference
from network_generator import KINDS, OPS_BY_KIND, Network, build_network

CI_SEEDS = {
    "mobilenet_v2": (0, 1, 2, 3),
    "mobilenet_v1": (0, 3, 4),
    "kws": (0, 1, 2),
    "mixed": (0, 1, 2, 3, 4, 5, 6, 7),
}
CI_CASES = [(kind, seed) for kind in KINDS for seed in CI_SEEDS[kind]]
INPUT_SEEDS = 2            # random inputs per network

SLOW_SEEDS = range(100, 140)


@functools.lru_cache(maxsize=None)
def _network(kind: str, seed: int, large: bool = False) -> Network:
    return build_network(seed, kind, large=large)


def _inputs(net: Network, k: int) -> list[np.ndarray]:
    return random_inputs(net.model, seed=net.seed * 7919 + k)


# ------------------------------------------------------------------------------- generator checks
def test_generator_is_deterministic():
    for kind in KINDS:
        assert build_network(3, kind).model == build_network(3, kind).model
        assert build_network(3, kind).model != build_network(4, kind).model


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown network kind"):
        build_network(0, "no_such_kind")


@pytest.mark.parametrize("kind", KINDS)
def test_ci_seeds_cover_the_kinds_ops(kind):
    seen = Counter()
    for seed in CI_SEEDS[kind]:
        seen.update(_network(kind, seed).op_counts)
    missing = OPS_BY_KIND[kind] - set(seen)
    assert not missing, f"{kind} CI seeds {CI_SEEDS[kind]} never use {sorted(missing)}; saw {dict(seen)}"


def _check_not_degenerate(net: Network, inputs: list[np.ndarray]) -> None:
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
            if v.dtype != np.int8 or v.size < 32 or op.opname in ("SOFTMAX", "PAD"):
                continue  # softmax over many classes fills few 1/256 steps (outputs are checked
                # above); a padded small map is mostly padding
            distinct = len(np.unique(v))
            top = np.bincount(v.ravel().astype(np.int64) + 128).max() / v.size
            assert distinct >= (8 if v.size >= 64 else 4) and top < 0.9, (
                f"{net.summary()}: {op.opname} output '{spec.name}' {spec.shape} is degenerate: "
                f"{distinct} distinct values, {top:.0%} at the commonest")


@pytest.mark.parametrize("kind,seed", CI_CASES)
def test_reference_runs_and_is_not_degenerate(kind, seed):
    net = _network(kind, seed)
    for k in range(INPUT_SEEDS):
        _check_not_degenerate(net, _inputs(net, k))


# ---------------------------------------------------------------------------- tosaic vs reference
def _first_divergence(net: Network, model, path, inputs) -> str:
    try:
        from tosaic.validate import first_divergence
        div, compared = first_divergence(model, path, inputs)
    except Exception as error:  # noqa: BLE001 - diagnostics only
        return f"(per-layer comparison failed: {type(error).__name__}: {error})"
    if div is None:
        return f"(all {compared} compared intermediate tensors equal)"
    idx = net.producer(div["tensor"])
    where = net.describe_op(idx) if idx is not None else str(div.get("op"))
    return (f"first differing tensor '{div['tensor']}' ({div['differing']}/{div['elements']} "
            f"elements differ, max |diff| {div['max_difference']:g}) after {compared - 1} equal ones; "
            f"produced by {where}")


def compare_with_reference(net: Network, tmp_path, input_seeds=range(INPUT_SEEDS)) -> tuple[bool, str]:
    """(exact, report) for one network over several seeded inputs."""
    path = tmp_path / f"{net.kind}_{net.seed}{'_large' if net.large else ''}.tflite"
    path.write_bytes(net.model)
    try:
        model = tosaic.compile(path)
    except (tosaic.UnsupportedModelError, tosaic.LegalizationError, NotImplementedError) as error:
        return False, f"{net.summary()}: tosaic cannot compile it: {type(error).__name__}: {error}"
    problems = []
    for k in input_seeds:
        inputs = _inputs(net, k)
        reference = run_reference(net.model, inputs)
        try:
            ours = model.run(inputs)
        except Exception as error:  # noqa: BLE001 - report any runtime failure with context
            return False, f"{net.summary()}: tosaic run failed on input {k}: {type(error).__name__}: {error}"
        lines = []
        for i, (o, r) in enumerate(zip(ours, reference)):
            if o.shape != r.shape or o.dtype != r.dtype:
                lines.append(f"output {i}: tosaic {o.dtype}{list(o.shape)} vs reference {r.dtype}{list(r.shape)}")
            elif not np.array_equal(o, r):
                d = np.abs(o.astype(np.int64) - r.astype(np.int64))
                lines.append(f"output {i}: {int((d > 0).sum())}/{r.size} elements differ, max |diff| {int(d.max())}")
        if lines:
            problems.append(f"input {k}: " + "; ".join(lines) + "; "
                            + _first_divergence(net, model, path, inputs))
            break
    if problems:
        return False, f"{net.summary()}: NOT bit-exact: " + " | ".join(problems)
    return True, f"{net.summary()}: bit-exact on {len(input_seeds)} inputs"


def sweep(nets, check_not_degenerate, tmp_path, input_seeds) -> None:
    """Every network valid (not degenerate) and bit-exact; one failure message listing every failure."""
    reports, failures = [], []
    for net in nets:
        check_not_degenerate(net, _inputs(net, 0))
        exact, report = compare_with_reference(net, tmp_path, input_seeds=input_seeds)
        reports.append(report)
        if not exact:
            failures.append(report)
    print("\n".join(reports))
    assert not failures, (f"{len(reports) - len(failures)}/{len(reports)} networks bit-exact; failures:\n"
                          + "\n".join(failures))


@pytest.mark.parametrize("kind,seed", CI_CASES)
def test_tosaic_matches_reference(kind, seed, tmp_path):
    net = _network(kind, seed)
    exact, report = compare_with_reference(net, tmp_path)
    print(report)
    assert exact, report


# ---------------------------------------------------------------------------------- slow sweep
@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_sweep_large_networks(kind, tmp_path):
    """Many seeds of bigger networks per kind; all must be valid and bit-exact."""
    sweep((build_network(seed, kind, large=True) for seed in SLOW_SEEDS), _check_not_degenerate, tmp_path, range(3))
