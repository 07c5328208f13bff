"""Deploy bundles (`tosaic export`, `CompiledModel.export`): what the directory holds, and that it runs in a
Python that cannot import tosaic, TFLite or LiteRT: one run, a stream of steps carrying state, the benchmark,
and a refusal (exit status 3, a message naming what is missing) on a machine without the bundle's
architecture or features. The aarch64 bundles run under emulation in scripts/arm_check.sh."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import model_zoo
import tosaic
from exactness import assert_same
from test_models import io_arrays
from test_stateful import LiteRTStepper, input_stream
from tosaic.cli import main
from tosaic.kernels.engine import hwcap_features, missing

# Runs run.py as __main__ with tosaic, TFLite and LiteRT made unimportable.
_WITHOUT_TOSAIC = """
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tosaic", "tflite", "ai_edge_litert", "tensorflow"):
            raise ImportError(f"{name} must not be imported by a bundle")
sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_bundle(bundle, *args, cwd):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(_WITHOUT_TOSAIC), str(bundle / "run.py"),
                           *map(str, args)], capture_output=True, text=True, cwd=cwd)


def _snapshot(directory):
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


def test_bundle_runs_without_tosaic_and_compiles_once(tmp_path):
    # One conv layer: the subprocess compiles its kernels cold (a whole network costs CI half a minute;
    # scripts/arm_check.sh runs whole networks as bundles).
    name = "op_conv2d_s1_same_relu"
    path = model_zoo.DATA / f"{name}.tflite"
    bundle = tmp_path / "bundle"
    manifest = tosaic.compile(path, target="cpu").export(bundle)
    assert sorted(p.name for p in bundle.iterdir()) == ["arrays.npz", "digest", "engine.py", "kernels",
                                                         "manifest.json", "plan.json", "run.py"]
    assert manifest == json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"] == {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert manifest["target"] == tosaic.kernels.target.host().as_dict() and manifest["tosaic_version"] == "0.1.0"
    (spec,) = manifest["inputs"]
    assert spec["shape"] == [1, 16, 16, 8] and spec["dtype"] == "|i1" and len(spec["scale"]) == 1
    for source in (bundle / "kernels").glob("*.py"):
        tree = ast.parse(source.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported <= {"numpy", "numba", "llvmlite", "numba.core", "numba.extending"}, imported
    inputs, refs = io_arrays(name)
    np.savez(tmp_path / "in.npz", in_0=inputs[0])
    first = run_bundle(bundle, tmp_path / "in.npz", "-o", tmp_path / "out.npz", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert_same([np.load(tmp_path / "out.npz")["out_0"]], refs, "bundle vs stored LiteRT")
    cached = _snapshot(bundle)
    assert any(k.endswith(".nbi") for k in cached), "the first run cached no kernels in the bundle"
    again = run_bundle(bundle, tmp_path / "in.npz", "-o", tmp_path / "again.npz", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _snapshot(bundle) == cached, "a second run compiled (wrote to the bundle)"
    bench = run_bundle(bundle, "--bench", "--repeat", "5", cwd=tmp_path)
    assert bench.returncode == 0 and "median" in bench.stdout and "dispatch_0" in bench.stdout, bench.stderr


def test_bundle_steps_carry_state_like_litert(tmp_path):
    name = "stream_kws_int8_state"
    model = tosaic.compile(model_zoo.DATA / f"{name}.tflite", target="cpu")
    model.export(tmp_path / "bundle")
    stream = input_stream(model, 8, seed=4)
    np.save(tmp_path / "steps.npy", np.stack([step[0] for step in stream]))
    done = run_bundle(tmp_path / "bundle", "--steps", tmp_path / "steps.npy", "-o", tmp_path / "out.npy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "out.npy")
    litert = LiteRTStepper((model_zoo.DATA / f"{name}.tflite").read_bytes())
    want = np.stack([litert(step)[0] for step in stream])
    assert_same([got], [want], "bundle --steps vs LiteRT step by step")
    assert len({got[i].tobytes() for i in range(len(got))}) > 1


def test_bundle_refuses_a_machine_without_its_architecture(tmp_path):
    if tosaic.kernels.target.host().arch == "aarch64":
        pytest.skip("this machine is an aarch64")
    assert main(["export", str(model_zoo.DATA / "op_add_same.tflite"), "--target", "cpu:aarch64:cortex-a76",
                 "-o", str(tmp_path / "bundle")]) == 0
    done = run_bundle(tmp_path / "bundle", "--bench", cwd=tmp_path)
    assert done.returncode == 3
    assert "compiled for cortex-a76 (aarch64, dotprod, neon); this machine lacks the aarch64 architecture" in done.stderr


def test_bundle_reports_bad_inputs(tmp_path):
    tosaic.compile(model_zoo.DATA / "op_add_same.tflite", target="cpu").export(tmp_path / "bundle")
    np.savez(tmp_path / "wrong.npz", in_0=np.zeros((1, 2), np.int8), in_1=np.zeros((1, 2), np.int8))
    done = run_bundle(tmp_path / "bundle", tmp_path / "wrong.npz", cwd=tmp_path)
    assert done.returncode == 2 and "must have shape" in done.stderr, done.stderr


def test_bundle_reports_a_division_by_zero(tmp_path):
    """A run whose values divide by zero (TOSA INTDIV) ends with exit status 2 and a message naming the
    dispatch, not an exception's traceback."""
    from tosaic.tosa.mlir import parse_mlir

    graph = parse_mlir("""module {
      func.func @main(%a: tensor<64x64xi32>, %b: tensor<64x64xi32>) -> tensor<64x64xi32> {
        %0 = tosa.intdiv %a, %b : (tensor<64x64xi32>, tensor<64x64xi32>) -> tensor<64x64xi32>
        return %0 : tensor<64x64xi32>
      }
    }
    """)
    tosaic.compile(graph, target="cpu").export(tmp_path / "bundle")
    np.savez(tmp_path / "zero.npz", in_0=np.ones((64, 64), np.int32), in_1=np.zeros((64, 64), np.int32))
    done = run_bundle(tmp_path / "bundle", tmp_path / "zero.npz", cwd=tmp_path)
    assert done.returncode == 2 and "dispatch_0 (tosa.intdiv) divided by zero" in done.stderr, done.stderr


def test_export_refuses_a_directory_that_is_not_a_bundle(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a tosaic bundle"):
        tosaic.compile(model_zoo.DATA / "op_add_same.tflite", target="cpu").export(tmp_path)


# Hwcaps as the kernel (and qemu-user, per emulated CPU) report them: Cortex-A72 has ASIMD but not the dot
# product (AT_HWCAP 0x8fb), Cortex-A76 has both (0x119ffb).
@pytest.mark.parametrize("hwcap,features", [(0x8FB, {"neon"}), (0x119FFB, {"neon", "dotprod"})])
def test_aarch64_features_from_hwcaps(hwcap, features):
    assert hwcap_features({16: hwcap, 26: 0}) == frozenset(features)
    a76 = {"arch": "aarch64", "cpu": "cortex-a76", "features": ["dotprod", "neon"]}
    assert missing(a76, "aarch64", hwcap_features({16: hwcap})) == sorted({"dotprod", "neon"} - features)
