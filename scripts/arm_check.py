#!/usr/bin/env python
"""The aarch64 target under emulation: bundles exported on this host run in an arm64 root under qemu-user
as each emulated CPU, against LiteRT BUILTIN_REF outputs computed on this host, bit for bit.

Run through scripts/arm_check.sh, which makes the arm64 root. For each model and CPU it exports a bundle
(`CompiledModel.export`) into the root, runs `run.py` there twice (the first run compiles the kernels into
the bundle, the second only loads them) under `QEMU_CPU=<cpu>` in a cleared environment, and compares the
outputs. Then it runs the Cortex-A76 bundle on an emulated Cortex-A72, which lacks the dot product, and
expects run.py's refusal (exit status 3 naming `dotprod`), not a SIGILL. One line per (model, CPU), then a
summary; exit status 0 when everything is bit-exact and the refusal is clean.

Times are emulation times, for context only: qemu-user is not ARM speed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import tosaic  # noqa: E402
from litert_ref import random_inputs, run_reference  # noqa: E402
from network_generator import build_network  # noqa: E402
from test_stateful import LiteRTStepper  # noqa: E402

DATA = REPO / "tests" / "data"
CPUS = ("cortex-a72", "cortex-a76")
STEPS = 24


def _model_bytes(name: str, scratch: Path) -> Path:
    """The .tflite of each checked model (generated ones written to `scratch`)."""
    files = {"mobilenet_v2": DATA / "arch_mobilenet_v2_1.0_224.tflite", "ds_cnn": DATA / "arch_ds_cnn_kws_49x10.tflite",
             "streaming_kws": DATA / "stream_kws_int8_state.tflite"}
    if name in files:
        return files[name]
    net = {"mobilenet_v2_16x8": lambda: build_network(0, "mobilenet_v2", int16=True),
           "float_edges": lambda: build_network(0, "float_edges")}[name]()
    path = scratch / f"{name}.tflite"
    path.write_bytes(net.model)
    return path


MODELS = ("mobilenet_v2", "ds_cnn", "mobilenet_v2_16x8", "float_edges", "streaming_kws")


def _reference(name: str, path: Path, model) -> tuple[dict, list[np.ndarray], bool]:
    """(arrays to write as the bundle's input file, LiteRT's outputs, whether the run is --steps)."""
    data = path.read_bytes()
    if name == "streaming_kws":
        rng = np.random.default_rng(11)
        info = model.inputs[0]
        stream = rng.integers(-128, 128, (STEPS, *info.shape)).astype(info.dtype)
        stepper = LiteRTStepper(data)
        outputs = [stepper([entry]) for entry in stream]
        return {"steps": stream}, [np.stack([o[i] for o in outputs]) for i in range(len(outputs[0]))], True
    inputs = random_inputs(data, seed=5)
    return {f"in_{i}": x for i, x in enumerate(inputs)}, run_reference(data, inputs), False


def _chroot_run(root: Path, cpu: str, bundle: str, args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    # QEMU_CPU reaches each process as it is exec'd: `env -i` would drop it, so it is set inside.
    command = ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", f"QEMU_CPU={cpu}",
               "/opt/venv/bin/python", f"{bundle}/run.py", *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    return done, time.perf_counter() - start


def _compare(got: list[np.ndarray], want: list[np.ndarray]) -> str | None:
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"output {i}: {g.dtype}{list(g.shape)} against {w.dtype}{list(w.shape)}"
        differ = int(np.count_nonzero(g.view(np.uint8) != w.view(np.uint8))) if g.dtype.kind == "f" \
            else int(np.count_nonzero(g != w))
        if differ:
            return f"output {i}: {differ} of {g.size} elements differ"
    return None


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def check(root: Path, models, cpus) -> int:
    work_inside = "/tmp/tosaic-arm-check"
    work = root / work_inside.lstrip("/")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    failures, lines = 0, []
    for name in models:
        path = _model_bytes(name, work)
        for cpu in cpus:
            model = tosaic.compile(path, target=f"cpu:aarch64:{cpu}")
            bundle = work / f"{name}-{cpu}"
            model.export(bundle)
            inputs, want, steps = _reference(name, path, tosaic.compile(path))
            inside = f"{work_inside}/{bundle.name}"
            if steps:
                np.save(bundle / "in.npy", inputs["steps"])
                args = ["--steps", f"{inside}/in.npy", "-o", f"{inside}/out.npz"]
            else:
                np.savez(bundle / "in.npz", **inputs)
                args = [f"{inside}/in.npz", "-o", f"{inside}/out.npz"]
            size = _size(bundle)
            first, compile_seconds = _chroot_run(root, cpu, inside, args)
            second, run_seconds = _chroot_run(root, cpu, inside, args)
            if first.returncode or second.returncode:
                failure = (first if first.returncode else second).stderr.strip().splitlines()[-1:]
                status = f"ERROR (exit {first.returncode or second.returncode}): {' '.join(failure)}"
            else:
                with np.load(bundle / "out.npz") as out:
                    got = [out[f"out_{i}"] for i in range(len(out.files))]
                problem = _compare(got, want)
                status = problem and f"NOT bit-exact: {problem}" or \
                    f"bit-exact ({sum(w.size for w in want)} elements{f', {STEPS} steps with state' if steps else ''})"
            failures += not status.startswith("bit-exact")
            line = (f"{name:18} {cpu:12} {status}; bundle {size / 1e6:.2f} MB, {model.plan.dispatch_count} dispatches, "
                    f"{model.plan.kernel_count} kernels; emulated: first run {compile_seconds:.1f} s (compiles), "
                    f"second {run_seconds:.1f} s")
            print(line, flush=True)
            lines.append(line)
    refusal = "not checked"
    if "cortex-a76" in cpus:
        bundle = next(work.glob("*-cortex-a76"))
        done, _ = _chroot_run(root, "cortex-a72", f"{work_inside}/{bundle.name}", ["--bench", "--repeat", "1"])
        clean = done.returncode == 3 and "lacks dotprod" in done.stderr
        refusal = ("clean refusal: " if clean else f"NOT a clean refusal (exit {done.returncode}): ") + \
            done.stderr.strip().splitlines()[-1]
        failures += not clean
        print(f"{bundle.name} on cortex-a72: {refusal}", flush=True)
    exact = sum("bit-exact (" in line for line in lines)
    print(f"summary: {exact}/{len(lines)} (model, CPU) pairs bit-exact with LiteRT BUILTIN_REF; A76 bundle on A72: "
          f"{refusal.split(':')[0]}")
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the arm64 root made by scripts/arm_check.sh")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--cpus", default=",".join(CPUS), help=f"comma-separated emulated CPUs (default {','.join(CPUS)})")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    return check(Path(args.root), models, [c for c in args.cpus.split(",") if c])


if __name__ == "__main__":
    sys.exit(main())
