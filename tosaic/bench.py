"""`tosaic bench`: a compiled model's latency on this machine, what LiteRT's `benchmark_model` reports and
more: the profile by dispatch (with the TOSA ops fused into each), the arena and weight bytes, the target
and the micro-kernel ISA its kernels use, and optionally LiteRT's default interpreter (XNNPACK) timed in
the same process, interleaved round by round, with the same thread count.

A stateful model is timed per step: each run advances its variables, as each LiteRT invoke does.
"""

from __future__ import annotations

import platform
import time

import numpy as np


def kernel_isa(target: dict) -> str:
    """The instruction set the GEMM and conv kernels of a plan's target use (and its TABLE gathers, where
    they have their own)."""
    from tosaic.kernels.x86 import TABLE_LOOKUP, microkernel_for

    features = frozenset(target.get("features", ()))
    mk = microkernel_for(target.get("arch", ""), features)
    if mk is not None:
        gathers = [feature for feature in TABLE_LOOKUP if feature in features]
        return mk.isa + "".join(f", TABLE gathers {feature}" for feature in gathers)
    if target.get("arch") == "aarch64":
        return "neon+dotprod" if "dotprod" in features else "neon"
    if target.get("family") == "cuda":
        return f"dp4a, sm_{target['cc'][0]}{target['cc'][1]}"
    return "portable"


def _litert(path, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise RuntimeError("--compare-litert needs LiteRT: pip install ai-edge-litert") from None
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _median_ms(times: list[float]) -> float:
    return float(np.median(times)) * 1e3


def benchmark(path, target: str = "cpu", threads: int | None = None, runs: int = 50, warmup: int = 5,
              compare_litert: bool = False, seed: int = 0, top: int = 15) -> dict:
    """Compile `path` for `target`, time `runs` runs after `warmup` and return the report as a dict."""
    import tosaic
    from tosaic.validate import random_inputs

    if runs < 1 or warmup < 0:
        raise ValueError(f"--runs must be at least 1 and --warmup at least 0, got {runs} and {warmup}")
    start = time.perf_counter()
    model = tosaic.compile(path, target=target, threads=threads)
    compile_seconds = time.perf_counter() - start
    if model.plan is None:
        raise ValueError(f"bench needs a compiled target (cpu or cpu:ARCH:CPU), not {target!r}")
    inputs = random_inputs(model, seed)
    model.run(inputs)   # a plan for a CPU this machine cannot run stops here, naming what it lacks
    threads = model.threads
    engines = {"tosaic": lambda: model.run(inputs)}
    if compare_litert:
        interpreter = _litert(path, threads)
        details = interpreter.get_input_details()

        def litert():
            for detail, array in zip(details, inputs):
                interpreter.set_tensor(detail["index"], array)
            interpreter.invoke()
        engines["litert_xnnpack"] = litert
    for call in engines.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, call in engines.items():
            t = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t)
    profile = model.profile(inputs, repeat=min(runs, 20))
    total = sum(d["seconds"] for d in profile) or 1.0
    plan = model.plan
    report = {
        "model": str(path),
        "target": plan.target.get("cpu", target) if plan.target.get("family") != "cuda" else target,
        "arch": plan.target.get("arch"),
        "features": plan.target.get("features", []), "isa": kernel_isa(plan.target),
        "machine": platform.processor() or platform.machine(),
        "threads": threads, "runs": runs, "stateful": model.stateful,
        "compile_seconds": round(compile_seconds, 3),
        "dispatches": plan.dispatch_count, "kernels": plan.kernel_count,
        **model.memory,
        "tosaic_ms": _median_ms(times["tosaic"]),
        "profile": [{"dispatch": d["dispatch"], "template": d["template"], "ms": d["seconds"] * 1e3,
                     "percent": 100 * d["seconds"] / total,
                     "ops": " + ".join(o.split(" (")[0] for o in d["ops"].split(" + "))} for d in profile[:top]],
    }
    if compare_litert:
        report["litert_xnnpack_ms"] = _median_ms(times["litert_xnnpack"])
        report["ratio"] = report["tosaic_ms"] / report["litert_xnnpack_ms"]
    return report


def format_report(r: dict) -> str:
    per = "per step (stateful)" if r["stateful"] else "per run"
    lines = [
        f"model:      {r['model']}",
        f"target:     {r['target']} ({r['arch']}; {', '.join(r['features']) or 'no SIMD features'}); "
        f"kernels use {r['isa']}",
        f"threads:    {r['threads']}; {r['runs']} runs, median {per}",
        f"compiled:   {r['dispatches']} dispatches, {r['kernels']} kernels in {r['compile_seconds']:.2f} s",
        f"memory:     arena {r['arena_bytes'] / 1024:.0f} KiB (activations {r['activation_bytes'] / 1024:.0f} KiB "
        f"unshared), weights {r['weight_bytes'] / 1024:.0f} KiB",
        f"tosaic:     {r['tosaic_ms']:.3f} ms",
    ]
    if "litert_xnnpack_ms" in r:
        lines.append(f"LiteRT:     {r['litert_xnnpack_ms']:.3f} ms (XNNPACK, same process, {r['threads']} threads); "
                     f"tosaic / LiteRT = {r['ratio']:.2f}")
    lines += ["", f"{'dispatch':12} {'template':18} {'ms':>8} {'%':>5}  ops"]
    lines += [f"{d['dispatch']:12} {d['template']:18} {d['ms']:8.3f} {d['percent']:5.1f}  {d['ops']}"
              for d in r["profile"]]
    return "\n".join(lines) + "\n"
