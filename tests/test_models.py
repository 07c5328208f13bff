"""Every model in tests/data: bit-exact with its stored LiteRT BUILTIN_REF outputs, or refused up front.

The `.io.npz` files hold `in_*` inputs and `ref_*` outputs of LiteRT's reference kernels, recorded when the
models were made (see tests/data/README.md); `test_models_against_live_litert` re-runs LiteRT here.
"""

from pathlib import Path

import numpy as np
import pytest

import model_zoo
import tosaic
from litert_ref import run_reference

DATA = Path(__file__).parent / "data"


def io_arrays(name: str):
    with np.load(DATA / f"{name}.io.npz") as io:
        inputs = [io[f"in_{i}"] for i in range(sum(k.startswith("in_") for k in io))]
        refs = [io[f"ref_{i}"] for i in range(sum(k.startswith("ref_") for k in io))]
    return inputs, refs


SUPPORTED = [path.stem for path in model_zoo.SUPPORTED]
# op_tile has no ref_* outputs (LiteRT's reference resolver refuses its TILE version); test_legalize_data.py
# checks it against BUILTIN_REF after patching the version.
WITH_REFERENCE = [name for name in SUPPORTED if io_arrays(name)[1]]


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_bit_exact_with_stored_reference(name):
    inputs, refs = io_arrays(name)
    outputs = tosaic.compile(model_zoo.graph_of(DATA / f"{name}.tflite")).run(inputs)
    for i, (ours, ref) in enumerate(zip(outputs, refs)):
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        differing = int((ours != ref).sum())
        assert differing == 0, f"{name} output {i}: {differing}/{ref.size} elements differ"


@pytest.mark.parametrize("name", [n for n in SUPPORTED if n.startswith("op_")][::4])
def test_models_against_live_litert(name):
    """The same comparison against LiteRT run now, on fresh random inputs (a sample of the op models)."""
    model = tosaic.compile(DATA / f"{name}.tflite")
    rng = np.random.default_rng(7)
    inputs = [rng.integers(np.iinfo(i.dtype).min, np.iinfo(i.dtype).max, size=i.shape, endpoint=True,
                           dtype=i.dtype) if i.dtype.kind in "iu" else rng.uniform(-1, 1, i.shape).astype(i.dtype)
              for i in model.inputs]
    for ours, ref in zip(model.run(inputs), run_reference(DATA / f"{name}.tflite", inputs)):
        assert np.array_equal(ours, ref)


def test_every_model_supported():
    """Every model in tests/data imports: none is refused any more (refusals are tested in test_errors_and_cli)."""
    assert not model_zoo.REFUSED


def test_whole_networks_supported():
    assert {"arch_mobilenet_v2_1.0_224", "arch_mobilenet_v1_0.25_128", "arch_ds_cnn_kws_49x10"} <= set(SUPPORTED)
