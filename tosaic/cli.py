"""The `tosaic` command: import, inspect, compile, run and validate models.

Exit codes: 0 success (for `validate`: every output bit-exact; for `ops`: every op supported),
1 `validate` found differences or `ops` found unsupported ops,
2 an error (bad file, unsupported op, wrong inputs), with one message naming the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

EXIT_MISMATCH, EXIT_ERROR = 1, 2


def _load_inputs(path: str | None, model) -> list[np.ndarray] | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such inputs file: {path}")
    with np.load(path) as data:
        names = list(data.keys())
        by_position = [f"in_{i}" for i in range(len(model.inputs))]
        if all(n in names for n in by_position):
            return [data[n] for n in by_position]
        if all(i.name in names for i in model.inputs):
            return [data[i.name] for i in model.inputs]
        raise ValueError(f"{path} must hold arrays named {by_position} or {[i.name for i in model.inputs]}; "
                         f"it holds {names}")


def cmd_import(args) -> int:
    import tosaic
    from tosaic.tosa.mlir import print_graph

    text = print_graph(tosaic.load_graph(args.model), generic=args.generic, elide_constants=args.elide)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args) -> int:
    import tosaic
    from tosaic.validate import random_inputs

    model = tosaic.compile(args.model, target=args.target, threads=args.threads)
    inputs = _load_inputs(args.inputs, model)
    if inputs is None:
        inputs = random_inputs(model, args.seed)
    outputs = model.run(inputs)
    if args.output:
        np.savez(args.output, **{f"out_{i}": o for i, o in enumerate(outputs)})
        print(f"wrote {len(outputs)} outputs to {args.output}")
    else:
        for info, out in zip(model.outputs, outputs):
            print(f"{info.name}: {out.dtype}{list(out.shape)}")
            print(np.array2string(out, threshold=64))
    return 0


def cmd_validate(args) -> int:
    import tosaic
    from tosaic.validate import validate

    inputs = _load_inputs(args.inputs, tosaic.compile(args.model)) if args.inputs else None
    report = validate(args.model, inputs, target=args.target, per_layer=args.per_layer, seed=args.seed,
                      threads=args.threads)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"{report.model} (target {report.target}) vs LiteRT BUILTIN_REF")
        for o in report.outputs:
            status = "bit-exact" if o.exact else f"{o.differing} differ, max |diff| {o.max_difference:g}"
            print(f"  {o.name}: {o.elements} elements, {status}")
        if args.per_layer:
            d = report.first_divergence
            if d is None:
                print(f"  per layer: all {report.layers_compared} compared tensors bit-exact")
            else:
                print(f"  first differing tensor: '{d['tensor']}' from {d['op']}: "
                      f"{d['differing']}/{d['elements']} differ, max |diff| {d['max_difference']:g}")
    return 0 if report.exact else EXIT_MISMATCH


def _dispatch_text(graph, target) -> str:
    from tosaic.kernels.plan import build_plan, structured_stages

    stages = structured_stages(graph)
    plan = build_plan(graph, target, stages)
    kernels = {step.name: step for step in plan.steps if step.kind == "kernel"}
    lines = []
    for d in stages[1]:
        step = kernels[d.name]
        outs = ", ".join(str(v.type) for v in d.outputs)
        lines.append(f"{d.name}: {step.template} kernel {step.key} -> {outs}")
        for origin in d.origins:
            lines.append(f"    {origin}")
    lines.append(f"{plan.dispatch_count} dispatches, {plan.kernel_count} kernels; arena {plan.arena_bytes} bytes "
                 f"for {plan.activation_bytes} bytes of activations; {sum(c.nbytes for c in plan.consts)} bytes "
                 f"of packed weights")
    return "\n".join(lines) + "\n"


def _kernels_text(graph, target) -> str:
    from tosaic.kernels.plan import build_plan

    plan = build_plan(graph, target)
    users: dict[str, list[str]] = {}
    for step in plan.steps:
        if step.kind == "kernel":
            users.setdefault(step.key, []).append(step.name)
    parts = []
    for key, source in plan.sources.items():
        parts.append(f"# ===== kernel {key}, used by {', '.join(users[key])}\n{source}")
    return "\n".join(parts)


def _assembly_text(graph, target) -> str:
    from tosaic.kernels.cross import step_assembly, vector_mix
    from tosaic.kernels.plan import build_plan

    plan = build_plan(graph, target)
    parts, done = [], set()
    for step in plan.steps:
        if step.kind != "kernel" or step.key in done:
            continue
        done.add(step.key)
        mix = vector_mix(step_assembly(plan, step))
        common = ", ".join(f"{name} {count}" for name, count in mix.most_common(16))
        parts.append(f"kernel {step.key} ({step.template}, first used by {step.name}) for {target.name}: "
                     f"{sum(mix.values())} SIMD instructions: {common}")
    return "\n".join(parts) + "\n"


def cmd_inspect(args) -> int:
    import tosaic
    from tosaic.kernels.target import parse_target
    from tosaic.kernels.plan import fused_program
    from tosaic.lowering.from_tosa import lower
    from tosaic.lowering.structured import print_structured
    from tosaic.tosa.mlir import print_graph

    graph = tosaic.load_graph(args.model)
    if args.stage == "tosa":
        text = print_graph(graph, elide_constants=True)
    elif args.stage == "linalg":
        structured = lower(graph)
        text = print_structured(fused_program(structured) if args.fused else structured) + "\n"
    elif args.stage == "dispatch":
        text = _dispatch_text(graph, parse_target(args.target))
    elif args.stage == "asm":
        text = _assembly_text(graph, parse_target(args.target))
    else:
        text = _kernels_text(graph, parse_target(args.target))
    sys.stdout.write(text)
    return 0


def cmd_compile(args) -> int:
    import tosaic

    if args.output is None and args.emit_ptx is None:
        raise ValueError("give -o DIR (the compiled model) or --emit-ptx DIR (a CUDA target's PTX), or both")
    model = tosaic.compile(args.model, target=args.target, threads=args.threads)
    plan = model.plan
    print(f"compiled {args.model} for {args.target}: {plan.dispatch_count} dispatches, {plan.kernel_count} "
          f"kernels, arena {plan.arena_bytes} bytes")
    if args.output is not None:
        model.save(args.output)
        print(f"saved to {args.output}")
    if args.emit_ptx is not None:
        from tosaic.kernels import cuda_engine
        from tosaic.kernels.target import CudaTarget, target_from_dict

        target = target_from_dict(plan.target)
        if not isinstance(target, CudaTarget):
            raise ValueError(f"--emit-ptx needs a CUDA target (cuda:sm_87, cuda:sm_90), not {args.target}")
        manifest = cuda_engine.emit_ptx(plan, target.cc, Path(args.emit_ptx))
        files = len({k["ptx"] for k in manifest["kernels"]})
        assembled = "assembled by ptxas" if manifest["assembled"] else "not assembled: no ptxas on PATH"
        print(f"PTX of {files} kernels for {target.sm} ({assembled}) and manifest.json in {args.emit_ptx}")
    return 0


def cmd_export(args) -> int:
    import tosaic

    model = tosaic.compile(args.model, target=args.target)
    manifest = model.export(args.output)
    target = manifest["target"]
    size = sum(p.stat().st_size for p in Path(args.output).rglob("*") if p.is_file())
    print(f"exported {args.model} for {target['cpu']} ({target['arch']}, {', '.join(target['features']) or 'no SIMD'}) "
          f"to {args.output}: {manifest['dispatches']} dispatches, {manifest['kernels']} kernels, {size} bytes; "
          f"run it there with: python {Path(args.output) / 'run.py'} IN.npz -o OUT.npz")
    return 0


def cmd_bench(args) -> int:
    from tosaic.bench import benchmark, format_report

    report = benchmark(args.model, target=args.target, threads=args.threads, runs=args.runs, warmup=args.warmup,
                       compare_litert=args.compare_litert, seed=args.seed, top=args.top)
    sys.stdout.write(json.dumps(report, indent=1) + "\n" if args.json else format_report(report))
    return 0


def cmd_ops(args) -> int:
    from tosaic.importers.tflite.reader import read_tflite
    from tosaic.importers.tflite.support import COLUMNS, model_ops, support_markdown, support_table

    if args.all:
        if args.markdown:
            sys.stdout.write(support_markdown())
            return 0
        print(f"{'op':28} " + " ".join(f"{c:24}" for c in COLUMNS))
        for opcode, cells in support_table():
            print(f"{opcode:28} " + " ".join(f"{', '.join(cells[c]) or '-':24}" for c in COLUMNS))
        return 0
    if args.model is None:
        raise ValueError("give a MODEL.tflite, or --all for the whole support table")
    rows = model_ops(read_tflite(args.model))
    print(f"{'op':28} {'version':>7} {'count':>5}  {'types':20} supported")
    for row in rows:
        print(f"{row.opcode:28} {row.version:>7} {row.count:>5}  {row.signature:20} {'yes' if row.supported else 'NO'}")
    missing = sum(row.count for row in rows if not row.supported)
    print(f"{sum(r.count for r in rows)} ops, {missing} unsupported")
    return 0 if missing == 0 else EXIT_MISMATCH


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tosaic", description="A TOSA-centred compiler for quantized TFLite models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", help="print a model's TOSA as MLIR text")
    p.add_argument("model")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--generic", action="store_true", help="MLIR generic op form (accepted across LLVM versions)")
    p.add_argument("--elide", action="store_true", help="elide large constants (the text no longer parses)")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("ops", help="list a model's ops and whether tosaic supports them, or the support table")
    p.add_argument("model", nargs="?")
    p.add_argument("--all", action="store_true", help="print the support table of every op tosaic legalizes")
    p.add_argument("--markdown", action="store_true", help="with --all: as Markdown (docs/SUPPORTED_OPS.md)")
    p.set_defaults(fn=cmd_ops)

    p = sub.add_parser("inspect", help="print one stage of the compiler: tosa, linalg, dispatch, kernels, asm")
    p.add_argument("model")
    p.add_argument("--stage", choices=("tosa", "linalg", "dispatch", "kernels", "asm"), default="dispatch",
                   help="asm: each kernel compiled by LLVM for the target (any architecture), its SIMD instruction mix")
    p.add_argument("--fused", action="store_true", help="with --stage linalg: after elementwise fusion")
    p.add_argument("--target", default="cpu", help="with --stage dispatch, kernels or asm: the CPU target, \"cpu\" "
                                                  "(this machine) or cpu:ARCH:CPU, e.g. cpu:aarch64:cortex-a76")
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("compile", help="compile and save the compiled model to a directory, or a CUDA target's PTX")
    p.add_argument("model")
    p.add_argument("-o", "--output", help="directory to save the compiled model in")
    p.add_argument("--target", default="cpu", help="\"cpu\" (this machine), cpu:ARCH:CPU (e.g. cpu:x86_64:znver5), "
                                                  "cuda (this GPU) or cuda:sm_XY (cuda:sm_87 Jetson Orin, cuda:sm_90)")
    p.add_argument("--emit-ptx", metavar="DIR", help="write each kernel's PTX and manifest.json (CUDA targets)")
    p.add_argument("--threads", type=int, default=None, help="threads the kernels use (default: all cores)")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("export", help="write a deploy bundle a board runs with numpy and numba alone")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="directory of the bundle")
    p.add_argument("--target", default="cpu", help="\"cpu\" (this machine) or cpu:ARCH:CPU, e.g. cpu:aarch64:cortex-a76")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("bench", help="time a compiled model here: latency, profile by dispatch, memory, ISA")
    p.add_argument("model")
    p.add_argument("--target", default="cpu", help="\"cpu\" (this machine) or cpu:ARCH:CPU this machine runs")
    p.add_argument("--threads", type=int, default=None, help="threads of tosaic and LiteRT (default: all cores)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50); the median is reported")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--top", type=int, default=15, help="dispatches in the profile, slowest first (default 15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--compare-litert", action="store_true",
                   help="time LiteRT's default interpreter (XNNPACK) in the same process, interleaved")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(fn=cmd_bench)

    for name, fn, help_text in (("run", cmd_run, "run a model on inputs from an .npz file"),
                                ("validate", cmd_validate, "compare with LiteRT's reference kernels")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model")
        p.add_argument("--inputs", help=".npz with in_0, in_1, ... or arrays named like the model inputs")
        p.add_argument("--target", default="interp", help="interp, cpu (this machine) or cpu:ARCH:CPU")
        p.add_argument("--threads", type=int, default=None, help="threads of the cpu target (default: all cores)")
        p.add_argument("--seed", type=int, default=0, help="seed of the random inputs used when --inputs is absent")
        p.set_defaults(fn=fn)
        if name == "run":
            p.add_argument("-o", "--output", help="write outputs to this .npz (out_0, out_1, ...)")
        else:
            p.add_argument("--json", action="store_true", help="print the report as JSON")
            p.add_argument("--per-layer", action="store_true", help="name the first TFLite tensor that differs")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (OSError, ValueError, RuntimeError, NotImplementedError) as error:  # TargetError is a ValueError
        print(f"tosaic: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("tosaic: error: out of memory (the model's tensors do not fit in this machine's memory)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
