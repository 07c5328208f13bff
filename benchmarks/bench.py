"""Benchmark tosaic's compiled models against LiteRT (XNNPACK and the reference kernels).

    .venv/bin/python benchmarks/bench.py [MODEL ...] [--repeat 30] [--threads 1,2] [--profile] [--markdown]

MODEL is a .tflite path or the stem of a model in tests/data or benchmarks/models (`arch_mobilenet_v2_1.0_224`);
the default is every tests/data/arch_*.tflite, the EfficientNet-B0 and MobileNetV3-Small of benchmarks/models,
the streaming keyword spotter (timed per step: each call is one step on the carried state) and a few big
single-op models. For each model:

1. Compile time, each in a fresh subprocess, timed inside it after `import tosaic`: a cold compile into an
   empty TOSAIC_CACHE_DIR (then `model.save`), a warm `tosaic.load` of the saved model, and a warm
   `tosaic.compile` with the now-filled cache.
2. Latency: one seeded random input; LiteRT with XNNPACK (default resolver) at each thread count, LiteRT's
   reference kernels (BUILTIN_REF), and tosaic at each thread count. After warm-up, every round runs each
   engine once in turn (the slow reference kernels only every few rounds) and the table shows medians.
   A timed call is the whole user-visible call: set inputs, invoke, read outputs.
3. Exactness: each tosaic model's first outputs against the reference kernels' first outputs, as the count
   of elements whose bits differ (0 expected).

Progress and warnings go to stderr; stdout holds only the report (Markdown with --markdown).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tosaic
from tosaic.validate import random_inputs

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
MODELS = REPO / "benchmarks" / "models"
STREAMING_MODELS = ("stream_kws_int8_state",)
BIG_OP_MODELS = ("op_conv2d_big_56x56x64_k3", "op_fc_256x100_relu", "op_batch_matmul", "op_softmax_4x32x32")
REFERENCE = "reference"

# Runs in a fresh interpreter: argv is mode (cold|warm|load), model path, compile kwargs (JSON), saved dir.
CHILD = r"""
import json, sys, time
import tosaic
mode, path, kwargs, saved = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
start = time.perf_counter()
if mode == "load":
    tosaic.load(saved)
else:
    model = tosaic.compile(path, **kwargs)
seconds = time.perf_counter() - start
if mode == "cold" and hasattr(model, "save"):
    model.save(saved)
print(json.dumps({"seconds": seconds}))
"""


@dataclass
class Engine:
    """One way to run the model: `call()` runs it once on the benchmark input, outputs in tosaic's order."""

    name: str
    threads: int
    call: Callable[[], list[np.ndarray]]
    model: object = None  # the tosaic CompiledModel, for tosaic engines
    times: list[float] = field(default_factory=list)
    compile_s: dict[str, float | None] = field(default_factory=dict)
    diff: int | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1e3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_models(names: list[str]) -> list[Path]:
    if not names:
        return (sorted(DATA.glob("arch_*.tflite")) + sorted(MODELS.glob("*.tflite"))
                + [DATA / f"{stem}.tflite" for stem in STREAMING_MODELS + BIG_OP_MODELS])
    paths = []
    for name in names:
        path = Path(name) if Path(name).suffix == ".tflite" else DATA / f"{name}.tflite"
        if not path.is_file() and Path(name).suffix != ".tflite":
            path = MODELS / f"{name}.tflite"
        if not path.is_file():
            sys.exit(f"no such model: {name} (give a .tflite path or a stem from {DATA} or {MODELS})")
        paths.append(path)
    return paths


def compile_kwargs(target: str, threads: int) -> dict:
    # The interpreter target has no threads; it is here to test this script's plumbing.
    return {"target": target, "threads": threads} if target != "interp" else {"target": target}


def run_child(mode: str, path: Path, kwargs: dict, saved: Path, cache: Path) -> float | None:
    """Seconds measured inside a fresh Python process, or None (with a warning) if it failed."""
    env = dict(os.environ, TOSAIC_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), json.dumps(kwargs), str(saved)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        log(f"  {mode} subprocess failed: {(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def compile_times(path: Path, kwargs: dict) -> dict[str, float | None]:
    """Cold compile, warm load of the saved model, and warm compile, in seconds (None: not available)."""
    with tempfile.TemporaryDirectory(prefix="tosaic-bench-") as tmp:
        cache, saved = Path(tmp) / "cache", Path(tmp) / "saved"
        cache.mkdir()
        times = {"cold": run_child("cold", path, kwargs, saved, cache)}
        can_load = hasattr(tosaic, "load") and saved.exists()
        times["load"] = run_child("load", path, kwargs, saved, cache) if can_load else None
        times["warm"] = run_child("warm", path, kwargs, saved, cache)
    return times


def litert_engine(name: str, path: Path, threads: int, inputs: dict[str, np.ndarray], output_names: list[str],
                  **options) -> Engine:
    interpreter = Interpreter(model_path=str(path), num_threads=threads, **options)
    interpreter.allocate_tensors()
    feeds = [(d["index"], inputs[d["name"]]) for d in interpreter.get_input_details()]
    by_name = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    fetches = [by_name[n] for n in output_names]

    def call() -> list[np.ndarray]:
        for index, array in feeds:
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in fetches]

    return Engine(name, threads, call)


def tosaic_engine(name: str, model, threads: int, inputs: list[np.ndarray]) -> Engine:
    return Engine(name, threads, lambda: model.run(inputs), model=model)


def differing_elements(ours: list[np.ndarray], reference: list[np.ndarray]) -> int:
    """Elements whose bits differ; a whole output counts as differing if its shape or dtype does."""
    total = 0
    for a, b in zip(ours, reference):
        if a.shape != b.shape or a.dtype != b.dtype:
            total += max(a.size, b.size)
        else:
            unsigned = np.dtype(f"u{a.dtype.itemsize}")
            total += int(np.count_nonzero(a.view(unsigned) != b.view(unsigned)))
    return total


def build_engines(path: Path, args) -> tuple[list[Engine], list[np.ndarray]]:
    models = {t: tosaic.compile(path, **compile_kwargs(args.target, t)) for t in args.threads}
    first = models[args.threads[0]]
    inputs = random_inputs(first, args.seed)
    by_name = {info.name: array for info, array in zip(first.inputs, inputs)}
    output_names = [info.name for info in first.outputs]
    engines = [litert_engine(f"xnnpack {t}t", path, t, by_name, output_names) for t in args.threads]
    try:
        engines.append(litert_engine(REFERENCE, path, 1, by_name, output_names,
                                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF))
    except (RuntimeError, ValueError) as error:
        log(f"  no reference kernels for this model: {str(error).strip().splitlines()[0]}")
    label = "tosaic" if args.target == "cpu" else f"tosaic-{args.target}"
    engines += [tosaic_engine(f"{label} {t}t", m, t, inputs) for t, m in models.items()]
    return engines, inputs


def check_exactness(engines: list[Engine]) -> None:
    """Compare each tosaic engine's first run with the reference kernels' first run (fresh state both)."""
    reference = next((e for e in engines if e.name == REFERENCE), None)
    if reference is None:
        return
    expected = reference.call()
    for engine in engines:
        if engine.model is not None:
            engine.diff = differing_elements(engine.call(), expected)


def reference_runs(repeat: int) -> int:
    return min(repeat, max(3, repeat // 10))


def measure(engines: list[Engine], repeat: int, warmup: int) -> None:
    """Warm up, then interleave: each round runs every engine once; the reference only in evenly spread rounds."""
    runs = reference_runs(repeat)
    reference_rounds = {i * repeat // runs for i in range(runs)}
    for engine in engines:
        for _ in range(1 if engine.name == REFERENCE else warmup):
            engine.call()
    gc.collect()
    gc.disable()
    try:
        for round_ in range(repeat):
            for engine in engines:
                if engine.name == REFERENCE and round_ not in reference_rounds:
                    continue
                start = time.perf_counter()
                engine.call()
                engine.times.append(time.perf_counter() - start)
    finally:
        gc.enable()


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def kib(model, key: str) -> str:
    memory = getattr(model, "memory", None)
    return fmt(memory[key] / 1024, 4) if memory and key in memory else "-"


def result_rows(stem: str, engines: list[Engine], max_threads: int) -> list[list[str]]:
    xnnpack = {e.threads: e.median_ms for e in engines if e.name.startswith("xnnpack")}
    reference = next((e.median_ms for e in engines if e.name == REFERENCE), None)
    rows = []
    for e in engines:
        same = xnnpack.get(e.threads) if e.threads != max_threads else None
        tosaic_row = e.model is not None
        rows.append([
            stem, e.name, fmt(e.median_ms), str(len(e.times)),
            ratio(e.median_ms / xnnpack[max_threads]),
            ratio(e.median_ms / same) if same else "",
            ratio(reference / e.median_ms) if reference and e.name != REFERENCE else "",
            *([fmt(e.compile_s.get(k)) for k in ("cold", "load", "warm")] if tosaic_row else ["", "", ""]),
            kib(e.model, "arena_bytes") if tosaic_row else "",
            kib(e.model, "activation_bytes") if tosaic_row else "",
            ("-" if e.diff is None else str(e.diff)) if tosaic_row else "",
        ])
    return rows


def geomean(values: list[float]) -> float | None:
    return float(np.exp(np.mean(np.log(values)))) if values else None


def summary_rows(results: list[list[Engine]], threads: list[int]) -> list[list[str]]:
    """Per thread count, geometric means over models of tosaic/XNNPACK and reference/tosaic."""
    rows = []
    for t in threads:
        vs_xnnpack, vs_reference, diffs = [], [], []
        for engines in results:
            ours = next(e for e in engines if e.model is not None and e.threads == t)
            xnn = next(e for e in engines if e.name == f"xnnpack {t}t")
            vs_xnnpack.append(ours.median_ms / xnn.median_ms)
            vs_reference += [e.median_ms / ours.median_ms for e in engines if e.name == REFERENCE]
            diffs += [] if ours.diff is None else [ours.diff]
        rows.append([f"{t}", str(len(results)), ratio(geomean(vs_xnnpack)), ratio(geomean(vs_reference)),
                     str(sum(diffs)) if diffs else "-"])
    return rows


def compact_ops(ops: str) -> str:
    """A dispatch's TOSA ops without their TFLite origins, runs of one op counted: `tosa.rescale x5`."""
    names = [re.sub(r" \(.*", "", op) for op in ops.split(" + tosa.")]
    names = [n if n.startswith("tosa.") else f"tosa.{n}" for n in names]
    runs = [(name, len(list(group))) for name, group in itertools.groupby(names)]
    return " + ".join(name if count == 1 else f"{name} x{count}" for name, count in runs)


def profile_rows(model, inputs: list[np.ndarray], repeat: int, top: int) -> list[list[str]]:
    dispatches = sorted(model.profile(inputs, repeat=repeat), key=lambda d: d["seconds"], reverse=True)
    total = sum(d["seconds"] for d in dispatches) or 1.0
    return [[d["dispatch"], fmt(d["seconds"] * 1e3), f"{100 * d['seconds'] / total:.1f}", compact_ops(d["ops"])]
            for d in dispatches[:top]]


def render(headers: list[str], rows: list[list[str]], markdown: bool, left=(0, 1)) -> str:
    """A Markdown table, or aligned text; the columns in `left` are left-aligned, the rest right-aligned."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join(":---" if i in left else "---:" for i in range(len(headers))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(c) for c in column) for column in zip(headers, *rows)]

    def align(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([align(headers), align(["-" * w for w in widths])] + [align(row) for row in rows])


def heading(text: str, markdown: bool) -> str:
    return f"\n### {text}\n" if markdown else f"\n{text}"


def machine_header(args) -> list[str]:
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--exclude", "*"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("numpy", "numba", "ai-edge-litert"))
    return [
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"machine: {cpu}, {os.cpu_count()} cores ({usable} usable)",
        f"software: python {platform.python_version()}, {versions}, tosaic {commit}",
        f"settings: target {args.target}, threads {','.join(map(str, args.threads))}, {args.repeat} rounds "
        f"(reference {reference_runs(args.repeat)}), {args.warmup} warm-up runs, seed {args.seed}",
    ]


HEADERS = ["model", "engine", "median ms", "runs", "vs xnn {T}t", "vs xnn same t", "ref speedup",
           "cold compile s", "warm load s", "warm compile s", "arena KiB", "activations KiB", "diff vs ref"]
SUMMARY_HEADERS = ["threads", "models", "geomean tosaic/xnnpack", "geomean ref/tosaic", "diff vs ref"]
PROFILE_HEADERS = ["dispatch", "median ms", "%", "ops"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="tests/data stems or .tflite paths (default: arch_* and big ops)")
    parser.add_argument("--repeat", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per engine first (default 3)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--target", default="cpu", help="tosaic target (default cpu; interp tests plumbing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    parser.add_argument("--profile", action="store_true", help="print each tosaic model's slowest dispatches")
    parser.add_argument("--top", type=int, default=10, help="how many dispatches --profile prints (default 10)")
    parser.add_argument("--skip-compile-timing", action="store_true", help="skip the cold/warm subprocesses")
    parser.add_argument("--markdown", action="store_true", help="print Markdown for benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    try:
        args.threads = sorted({int(t) for t in args.threads.split(",")})
    except ValueError:
        parser.error(f"--threads takes comma-separated integers, got {args.threads!r}")
    if args.repeat < 1 or args.threads[0] < 1:
        parser.error("--repeat and --threads must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    max_threads = args.threads[-1]
    rows, results, profiles = [], [], []
    for path in resolve_models(args.models):
        log(f"{path.stem}:")
        try:
            engines, inputs = build_engines(path, args)
        except Exception as error:  # an unsupported model must not stop the others
            log(f"  skipped: {type(error).__name__}: {error}")
            continue
        ours = [e for e in engines if e.model is not None]
        if not args.skip_compile_timing:
            timed: dict[str, dict] = {}  # engines with identical compile arguments share one measurement
            for engine in ours:
                key = json.dumps(compile_kwargs(args.target, engine.threads))
                if key not in timed:
                    log(f"  compile timing {key}")
                    timed[key] = compile_times(path, json.loads(key))
                engine.compile_s = timed[key]
        check_exactness(engines)
        log(f"  timing {len(engines)} engines, {args.repeat} rounds")
        measure(engines, args.repeat, args.warmup)
        rows += result_rows(path.stem, engines, max_threads)
        results.append(engines)
        if args.profile and not hasattr(ours[0].model, "profile"):
            log(f"  target {args.target} has no profile")
        elif args.profile:
            profiles += [(f"{path.stem}, {e.name}", profile_rows(e.model, inputs, args.repeat, args.top))
                         for e in ours]

    headers = [h.replace("{T}", str(max_threads)) for h in HEADERS]
    header = machine_header(args)
    print("## tosaic benchmark\n\n" + "\n".join(f"- {line}" for line in header) if args.markdown
          else "\n".join(header))
    print("\n" + render(headers, rows, args.markdown))
    if results:
        print(heading("summary: geometric means over models", args.markdown))
        print(render(SUMMARY_HEADERS, summary_rows(results, args.threads), args.markdown, left=()))
    for title, table in profiles:
        print(heading(f"profile: {title}", args.markdown))
        print(render(PROFILE_HEADERS, table, args.markdown, left=(0, 3)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
