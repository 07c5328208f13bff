"""A damaged or unusable cache costs a recompile, never a failure or a wrong answer (issue 13, item 3).

Each case damages one kind of entry of a cache that a first process filled, then compiles and runs the
model in a fresh process (a process keeps the modules it imported) and checks the outputs against
LiteRT BUILTIN_REF's recorded ones, and that the entry was healed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
MODEL = "op_conv2d_s1_same_relu"

# Compile and run MODEL for the cpu target; exit 0 only when every output equals the recorded reference.
RUN = f"""
import sys
import numpy as np
import tosaic
with np.load({str(DATA / MODEL)!r} + ".io.npz") as io:
    inputs = [io[k] for k in sorted(io.files) if k.startswith("in_")]
    refs = [io[k] for k in sorted(io.files) if k.startswith("ref_")]
outs = tosaic.compile({str(DATA / MODEL)!r} + ".tflite", target="cpu").run(inputs)
sys.exit(0 if all(np.array_equal(o, r) for o, r in zip(outs, refs)) else 1)
"""


def run_model(cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TOSAIC_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("filled")
    done = run_model(cache)
    assert done.returncode == 0, done.stderr
    return cache


@pytest.fixture
def cache(filled_cache, tmp_path) -> Path:
    copy = tmp_path / "cache"
    shutil.copytree(filled_cache, copy)
    return copy


def kernel_files(cache: Path, pattern: str) -> list[Path]:
    files = sorted((cache / "kernels").glob(pattern))
    assert files, f"no {pattern} in the cache"
    return files


def assert_runs(cache: Path) -> subprocess.CompletedProcess:
    done = run_model(cache)
    assert done.returncode == 0, done.stderr
    return done


def test_generated_module_overwritten_with_garbage(cache):
    modules = kernel_files(cache, "tosaic_kernel_*.py")
    originals = {m: m.read_text() for m in modules}
    for m in modules:
        m.write_bytes(b"\x00garbage = )(\n")
    assert_runs(cache)
    assert {m: m.read_text() for m in modules} == originals


def test_numba_index_truncated(cache):
    for index in kernel_files(cache, "__pycache__/*.nbi"):
        index.write_bytes(index.read_bytes()[:7])
    assert_runs(cache)


def test_numba_machine_code_damaged(cache):
    for code in kernel_files(cache, "__pycache__/*.nbc"):
        data = bytearray(code.read_bytes())
        data[len(data) // 2:] = b"\xff" * (len(data) - len(data) // 2)
        code.write_bytes(bytes(data))
    assert_runs(cache)


def test_plan_entry_with_a_flipped_weight_byte(cache):
    (entry,) = (cache / "plans").iterdir()
    arrays = entry / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0x01
    arrays.write_bytes(bytes(data))
    assert_runs(cache)
    (healed,) = (cache / "plans").iterdir()
    assert (healed / "arrays.npz").read_bytes() != bytes(data)


def test_plan_entry_with_a_garbage_kernel_source(cache):
    (entry,) = (cache / "plans").iterdir()
    for source in entry.glob("kernels/*.py"):
        source.write_text("garbage = (\n")
    shutil.rmtree(cache / "kernels")
    assert_runs(cache)


def test_unusable_cache_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = assert_runs(blocker / "cache")
    assert done.stderr.count("cannot be used") == 1, done.stderr


# A saved model (`CompiledModel.save`, or a bundle) is the user's, not a cache: damage is refused, never
# healed and never run. Every file it keeps is checked against the digest saved with it.


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    import tosaic

    directory = tmp_path_factory.mktemp("saved") / "model"
    tosaic.compile(DATA / f"{MODEL}.tflite", target="cpu").save(directory)
    return directory


@pytest.mark.parametrize("name", ["plan.json", "arrays.npz", "kernel", "digest"])
def test_saved_model_with_a_flipped_byte_is_refused(saved, tmp_path, name):
    import tosaic

    copy = tmp_path / "model"
    shutil.copytree(saved, copy)
    path = next(copy.glob("kernels/*.py")) if name == "kernel" else copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(tosaic.SavedModelError, match="does not match its digest|not a readable compiled model"):
        tosaic.load(copy)


def test_saved_model_with_a_missing_kernel_is_refused(saved, tmp_path):
    import tosaic

    copy = tmp_path / "model"
    shutil.copytree(saved, copy)
    next(copy.glob("kernels/*.py")).unlink()
    with pytest.raises(tosaic.SavedModelError, match="not a readable compiled model"):
        tosaic.load(copy)
