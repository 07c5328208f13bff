"""Quickstart: import an int8 MobileNetV2, look at its TOSA, run it in the interpreter, compile it for the
CPU, and check both against LiteRT.

Run from the repository root:  .venv/bin/python examples/quickstart.py
"""

from pathlib import Path
import time

import numpy as np

import tosaic
from tosaic.tosa.mlir import print_graph
from tosaic.validate import validate

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
MODEL = DATA / "arch_mobilenet_v2_1.0_224.tflite"

graph = tosaic.import_tflite(MODEL)
text = print_graph(graph, elide_constants=True)
ops = [line.strip() for line in text.splitlines() if line.strip().startswith("%") and "tosa.const" not in line]
print(f"{MODEL.name}: {len(graph.ops)} TOSA ops (constants included); the first non-constant ones:")
print("\n".join(line[:150] for line in ops[:6]))

model = tosaic.compile(MODEL, target="interp")
print("inputs: ", ", ".join(str(i) for i in model.inputs))
print("outputs:", ", ".join(str(o) for o in model.outputs))

io = np.load(DATA / "arch_mobilenet_v2_1.0_224.io.npz")
start = time.perf_counter()
(logits,) = model.run([io["in_0"]])
elapsed = time.perf_counter() - start
same = np.array_equal(logits, io["ref_0"])
print(f"TOSA interpreter: {elapsed * 1000:.0f} ms; equal to the stored LiteRT reference output: {same}")

report = validate(MODEL, seed=1)
for output in report.outputs:
    print(f"on new random inputs vs LiteRT BUILTIN_REF: {output.elements} elements, {output.differing} differ")

# The compiler proper: structured ops, fused dispatches, one arena, Numba kernels cached on disk.
start = time.perf_counter()
compiled = tosaic.compile(MODEL, target="cpu")
compile_seconds = time.perf_counter() - start
plan, memory = compiled.plan, compiled.memory
print(f"compiled for the CPU in {compile_seconds:.1f} s: {plan.dispatch_count} dispatches, {plan.kernel_count} kernels, "
      f"arena {memory['arena_bytes'] // 1024} KiB for {memory['activation_bytes'] // 1024} KiB of activations")
compiled.run([io["in_0"]])
times = []
for _ in range(10):
    start = time.perf_counter()
    (fast,) = compiled.run([io["in_0"]])
    times.append(time.perf_counter() - start)
print(f"CPU target: {np.median(times) * 1000:.1f} ms median of 10; equal to the stored LiteRT reference output: "
      f"{np.array_equal(fast, io['ref_0'])}")
