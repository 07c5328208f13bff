"""Run a model exported by `tosaic export`: needs numpy and numba only (no tosaic, TFLite or LiteRT).

    python run.py IN.npz -o OUT.npz          one run: inputs in_0, in_1, ... or named like the model's inputs
    python run.py --steps IN.npy -o OUT.npy  one run per entry of IN's first axis (a single-input model),
                                             carrying the model's state from run to run; outputs stacked
    python run.py --bench [--repeat N]       median latency on seeded random inputs, and per-dispatch times

Before any kernel runs, the CPU is checked against the features the kernels were generated for (on aarch64
from the kernel's hwcaps); a machine without them is refused with exit status 3. The first run compiles the
kernels and caches them in this directory's kernels/ (or `--cache-dir`); later runs compile nothing.
Exit status: 0 success, 2 bad arguments or inputs, 3 a machine that cannot run this bundle.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXIT_ERROR, EXIT_MACHINE = 2, 3


def _numba_environment(target: dict, cache_dir) -> None:
    """Numba reads these when it is imported: the code it generates is for the bundle's CPU (an aarch64
    board's LLVM may not see it, e.g. without /proc/cpuinfo), and its cache goes where asked."""
    if cache_dir:
        os.environ["NUMBA_CACHE_DIR"] = str(cache_dir)
    if target["arch"] == "aarch64":
        os.environ.setdefault("NUMBA_CPU_NAME", target["cpu"])
        os.environ.setdefault("NUMBA_CPU_FEATURES", ",".join("+" + f for f in target["features"]))


def _random_inputs(specs, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        if dtype.kind == "f":
            arrays.append(rng.uniform(-1, 1, shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype))
    return arrays


def _load_npz(path: str, specs) -> list:
    import numpy as np

    with np.load(path) as data:
        names = list(data.keys())
        positional = [f"in_{i}" for i in range(len(specs))]
        if all(n in names for n in positional):
            return [data[n] for n in positional]
        if all(s["name"] in names for s in specs):
            return [data[s["name"]] for s in specs]
    raise ValueError(f"{path} must hold arrays named {positional} or {[s['name'] for s in specs]}; it holds {names}")


def _save(path: str, outputs) -> None:
    import numpy as np

    if path.endswith(".npy") and len(outputs) == 1:
        np.save(path, outputs[0])
    else:
        np.savez(path, **{f"out_{i}": o for i, o in enumerate(outputs)})


def _bench(model, repeat: int, seed: int) -> None:
    import numpy as np

    inputs = _random_inputs(model.inputs, seed)
    for _ in range(3):
        model.run(inputs)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model.run(inputs)
        times.append(time.perf_counter() - start)
    target = model.plan.target
    print(f"{target['cpu']} ({target['arch']}), {model.executable.threads} threads: median {np.median(times) * 1e3:.3f} ms "
          f"over {repeat} runs (min {min(times) * 1e3:.3f} ms)")
    rows = model.profile(inputs, max(3, repeat // 5))
    total = sum(r["seconds"] for r in rows)
    print(f"{'dispatch':14} {'template':12} {'ms':>9} {'share':>6}  ops")
    for r in rows:
        print(f"{r['dispatch']:14} {r['template']:12} {r['seconds'] * 1e3:9.3f} {r['seconds'] / total:6.1%}  {r['ops'][:70]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="?", help="IN.npz (one run), or IN.npy with --steps")
    parser.add_argument("-o", "--output", help="write the outputs here (.npz: out_0, out_1, ...; .npy: one output)")
    parser.add_argument("--steps", action="store_true", help="one run per entry of the first axis of IN.npy")
    parser.add_argument("--bench", action="store_true", help="time the model on random inputs")
    parser.add_argument("--repeat", type=int, default=50, help="runs timed by --bench (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --bench's random inputs")
    parser.add_argument("--threads", type=int, default=None, help="threads the kernels use (default: all cores)")
    parser.add_argument("--cache-dir", help="where compiled kernels are cached (default: beside them, in kernels/)")
    args = parser.parse_args(argv)
    if not args.bench and not args.inputs:
        parser.error("give IN.npz (or IN.npy with --steps), or --bench")

    manifest = json.loads((HERE / "manifest.json").read_text())
    _numba_environment(manifest["target"], args.cache_dir)
    sys.path.insert(0, str(HERE))
    import numpy as np
    import engine

    try:
        model = engine.SavedModel(HERE, args.threads)
    except engine.MachineError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return EXIT_MACHINE
    try:
        if args.bench:
            _bench(model, args.repeat, args.seed)
            return 0
        if args.steps:
            if len(model.inputs) != 1:
                raise ValueError(f"--steps takes a single-input model; this one has {len(model.inputs)} inputs")
            stream = np.load(args.inputs)
            runs = [model.run([entry]) for entry in stream]
            outputs = [np.stack([run[i] for run in runs]) for i in range(len(model.outputs))]
        else:
            outputs = model.run(_load_npz(args.inputs, model.inputs))
    except (OSError, ValueError, engine.KernelRunError) as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if args.output:
        _save(args.output, outputs)
        print(f"wrote {len(outputs)} output(s) to {args.output}")
    else:
        for spec, out in zip(model.outputs, outputs):
            print(f"{spec['name']}: {out.dtype}{list(out.shape)}")
            print(np.array2string(out, threshold=64))
    return 0


if __name__ == "__main__":
    sys.exit(main())
