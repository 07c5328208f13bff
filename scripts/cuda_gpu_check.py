"""Run every test model and MobileNetV2 on this machine's GPU: bit-exactness against LiteRT's reference
outputs recorded in tests/data, and latency beside LiteRT XNNPACK on this machine's CPU.

    .venv/bin/python scripts/cuda_gpu_check.py [--runs 50] [--threads 2] [--json OUT]

Needs a CUDA GPU (numba.cuda.is_available()) and the `cuda` extra. Exits non-zero when any model differs
from the reference or fails; prints one line per model, then the MobileNetV2 latencies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import tosaic
from tosaic.kernels import cuda_engine

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def reference_io(stem: str) -> tuple[list, list]:
    with np.load(DATA / f"{stem}.io.npz") as io:
        inputs = [io[f"in_{i}"] for i in range(sum(k.startswith("in_") for k in io))]
        refs = [io[f"ref_{i}"] for i in range(sum(k.startswith("ref_") for k in io))]
    return inputs, refs


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def xnnpack_ms(path: Path, inputs: list, threads: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    for detail, array in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], array)
    return median_ms(interpreter.invoke, runs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per engine (default 50)")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT XNNPACK threads (default 2)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    missing = cuda_engine.missing()
    if missing or cuda_engine.simulated():
        print(f"no GPU to check on: {', '.join(missing) or 'NUMBA_ENABLE_CUDASIM is set'}", file=sys.stderr)
        return 2
    cc = cuda_engine.present_cc()
    print(f"GPU compute capability {cc[0]}.{cc[1]}: target cuda:sm_{cc[0]}{cc[1]}")
    results, failed = [], 0
    stems = sorted(p.stem for p in DATA.glob("*.tflite") if (DATA / f"{p.stem}.io.npz").exists())
    for stem in stems:
        inputs, refs = reference_io(stem)
        if not refs:
            continue
        try:
            model = tosaic.compile(str(DATA / f"{stem}.tflite"), target="cuda")
            outs = model.run(inputs)
            differing = sum(int((o != r).sum()) for o, r in zip(outs, refs))
            error = None
        except Exception as e:  # one model's failure is reported, the others still run
            differing, error = None, f"{type(e).__name__}: {e}"
        failed += bool(error or differing)
        status = error or ("bit-exact" if differing == 0 else f"{differing} elements differ")
        print(f"{stem:45s} {status}")
        results.append({"model": stem, "differing": differing, "error": error})
    path = DATA / "arch_mobilenet_v2_1.0_224.tflite"
    inputs, _ = reference_io(path.stem)
    model = tosaic.compile(str(path), target="cuda")
    gpu = median_ms(lambda: model.run(inputs), args.runs)
    cpu = xnnpack_ms(path, inputs, args.threads, args.runs)
    print(f"MobileNetV2 int8: tosaic cuda {gpu:.3f} ms (inputs and outputs copied each run), LiteRT XNNPACK "
          f"{args.threads} threads {cpu:.3f} ms, ratio {gpu / cpu:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cc": cc, "models": results, "mobilenet_v2_ms": gpu,
                                               "xnnpack_ms": cpu, "xnnpack_threads": args.threads}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
