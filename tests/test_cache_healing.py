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
