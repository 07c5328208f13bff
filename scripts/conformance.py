#!/usr/bin/env python
"""Check tosaic's TOSA interpreter bit for bit against Arm's TOSA conformance generator and reference model.

For every op that `tosaic.tosa.interpreter.IMPLEMENTATIONS` implements and that has an integer variant in
TOSA 1.0 PRO-INT (+ EXT-INT16, EXT-DOUBLEROUND), this script

1. generates positive tests with small shapes: `.tosa-venv/bin/tosa_verif_build_tests` (one subprocess per
   op, all dtypes at once; `--tosa-version 1.0.2`, `--test-type positive`, every dimension in
   `--tensor-dim-range 1,5`, small conv/pool limits, and a `--test-selection-config` that keeps at most
   N+3 tests per input type, so that generation stays cheap); when a dtype still has fewer than N tests
   (ops whose tests differ only by rank: matmul, gather, clz, ...), a second run adds a few fixed
   `--target-shape`s for that dtype;
2. picks a deterministic sample of N tests per (op, dtype) (sorted by a hash of the test name);
3. turns each test.tosa into generic MLIR with `tosa-opt --tosa-deserialize ... -o test.mlir`;
4. computes the expected outputs with `tosa_reference_model --test_desc desc.json` (ref-result-*.npy;
   i48 comes back as int64, which is also how tosaic stores i48);
5. parses test.mlir with `tosaic.tosa.mlir.parse_mlir`, runs it on the input .npy files with
   `tosaic.tosa.interpreter.interpret` (`--target interp`, the default), compiled by
   `tosaic.compile(graph, target="cpu")` (`--target cpu`), or both on the same tests (`--target interp,cpu`),
   and compares every output element, dtype and shape included.

Usage (from the repository root):

    .venv/bin/python scripts/conformance.py [--ops conv2d,rescale,...] [--per-op N] [--out DIR] [-j 2]
                                            [--target interp,cpu]

It prints a table (op, dtype, target, generated, sampled, passed, failed, parse errors, unimplemented,
refused by the target, other tosaic errors, tool errors), then every failure with the first differing
element and every error, and writes
the same as report.md and results.json into --out. The exit status is 1 when any comparison failed or
tosaic raised on any test (parse error, unimplemented feature, runtime error), 2 on bad arguments, else 0.
Tests that the reference model itself rejects (tool errors) are reported but do not change the status, and
neither are the compiled target's documented refusals (`tosaic.LoweringError`, raised at compile time with
the op and the reason), which the table counts apart.

The Arm tools live in their own venv (.tosa-venv) and are only ever run as subprocesses: they install
top-level modules (`tosa`, `tests`, ...) that must not shadow this project's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tosaic  # noqa: E402
from tosaic.tosa.interpreter import IMPLEMENTATIONS, interpret  # noqa: E402

try:
    from tosaic.tosa.mlir import parse_mlir  # noqa: E402
except ImportError as _error:  # the parser is not there yet: every test becomes a parse error
    _PARSE_IMPORT_ERROR = f"cannot import tosaic.tosa.mlir.parse_mlir: {_error}"

    def parse_mlir(text):
        raise NotImplementedError(_PARSE_IMPORT_ERROR)

TOSA_BIN = REPO / ".tosa-venv" / "bin"
GENERATOR = TOSA_BIN / "tosa_verif_build_tests"
TOSA_OPT = TOSA_BIN / "tosa-opt"
REFERENCE_MODEL = TOSA_BIN / "tosa_reference_model"

TOSA_VERSION = "1.0.2"
PROFILE = ["tosa-pro-int"]
EXTENSIONS = ["tosa-ext-int16", "tosa-ext-doubleround"]

# The generator's --target-dtype names, also the labels used in the report. bool is PRO-INT too (logical ops,
# reduce_all/any, select conditions, cast from bool), and `shape` is the type of CONST_SHAPE's result (its tests
# return a !tosa.shape, which the reference model writes as an int64 .npy), so both are included by default.
DTYPES = ["int8", "int16", "int32", "int48", "bool", "shape"]
NAME_TO_DTYPE = {"b": "bool", "i8": "int8", "i16": "int16", "i32": "int32", "i48": "int48", "s": "shape"}

# tosaic op name (without "tosa.") -> the generator's operator name, where they differ. The generator's
# --filter matches the TOSA operator name, so templated ops (conv2d_1x1, conv2d_3x3, ...) are all "conv2d".
GENERATOR_NAMES: dict[str, str] = {}

# Implemented ops that have no PRO-INT integer variant in TOSA 1.0 (floating point only), and ops outside
# PRO-INT + EXT-INT16 + EXT-DOUBLEROUND. They are not generated; the report lists them with the reason.
FP_ONLY = {"ceil", "cos", "exp", "floor", "log", "reciprocal", "reduce_product", "rsqrt", "sigmoid", "sin",
           "tanh", "erf", "pow", "fft2d", "rfft2d"}
NOT_GENERATED = {
    "variable": "EXT-VARIABLE, outside PRO-INT + EXT-INT16 + EXT-DOUBLEROUND",
    "variable_read": "EXT-VARIABLE, outside PRO-INT + EXT-INT16 + EXT-DOUBLEROUND",
    "variable_write": "EXT-VARIABLE, outside PRO-INT + EXT-INT16 + EXT-DOUBLEROUND",
    "cond_if": "EXT-CONTROLFLOW, outside PRO-INT + EXT-INT16 + EXT-DOUBLEROUND",
    "while_loop": "EXT-CONTROLFLOW, outside PRO-INT + EXT-INT16 + EXT-DOUBLEROUND",
}

# TOSA 1.0 operators with a PRO-INT (+ EXT-INT16) integer variant, to report the ones tosaic does not implement.
PRO_INT_OPS = {
    "argmax", "avg_pool2d", "conv2d", "depthwise_conv2d", "matmul", "max_pool2d", "transpose_conv2d", "clamp",
    "add", "arithmetic_right_shift", "bitwise_and", "bitwise_or", "bitwise_xor", "intdiv", "logical_and",
    "logical_left_shift", "logical_right_shift", "logical_or", "logical_xor", "maximum", "minimum", "mul", "sub",
    "table", "abs", "bitwise_not", "clz", "logical_not", "negate", "select", "equal", "greater", "greater_equal",
    "reduce_all", "reduce_any", "reduce_max", "reduce_min", "reduce_sum", "concat", "pad", "reshape", "reverse",
    "slice", "tile", "transpose", "gather", "scatter", "resize", "cast", "rescale", "const", "identity",
}

# When the small-dims generation gives fewer than N tests for a dtype (ops whose tests vary only by rank, e.g.
# matmul, gather, clz), a second generator run adds tests for these shapes (each op takes those of its ranks).
EXTRA_SHAPES = ["7", "3,2", "1,3,4", "2,5,3", "1,7,2", "3,2,6", "1,4,4,2", "2,3,3,3", "1,6,5,1"]

# Ops whose generation is slow (many parameter permutations), started first so that -j balances.
EXPENSIVE = ["transpose_conv2d", "depthwise_conv2d", "conv2d", "avg_pool2d", "max_pool2d", "rescale", "resize", "pad",
             "reshape", "tile", "slice", "transpose", "mul", "cast"]

STATUSES = ["pass", "fail", "parse", "unimpl", "refused", "error", "tool"]


# ----------------------------------------------------------------------------------------- generation


def generator_command(op: str, out_dir: Path, args, target_shapes=None, dtypes=None) -> list[str]:
    name = GENERATOR_NAMES.get(op, op)
    cmd = [str(GENERATOR), "-o", str(out_dir), "--filter", f"^{re.escape(name)}$",
           "--profile", *PROFILE, "--extension", *EXTENSIONS,
           "--tosa-version", TOSA_VERSION, "--test-type", "positive", "--seed", str(args.seed),
           "--target-dtype", *(dtypes or args.dtypes),
           "--tensor-dim-range", args.dim_range, "--max-batch-size", "2",
           "--max-conv-padding", "1", "--max-conv-stride", "2", "--max-conv-dilation", "2",
           "--max-pooling-padding", "1", "--max-pooling-stride", "2", "--max-pooling-kernel", "3",
           "--test-selection-config", str(args.selection_config)]
    if target_shapes:
        cmd += ["--target-shape", *target_shapes]
    for extra in args.gen_arg or []:
        cmd += extra.split()
    return cmd


def write_selection_config(path: Path, ops, per_type: int) -> None:
    """A test-selection config that keeps at most `per_type` (seeded, shuffled) tests per input type of each op.
    The generator's special tests (full-range data, ...) are always kept in addition."""
    selection = {"selection": {"default": {"permutes": ["type"], "maximum": per_type}}}
    config = {}
    for op in ops:
        config[GENERATOR_NAMES.get(op, op)] = selection
    path.write_text(json.dumps(config, indent=1))


def test_dtype(test_name: str, op: str, test_dir: Path) -> str:
    """The op's (first input's) element type: parsed from the generator's test name, e.g.
    conv2d_3x3_1x4x4x2_i16xi8_acci48_... -> int16, cast_0_b_outi8 -> bool, rescale_2_i48_outi8_... -> int48."""
    name = GENERATOR_NAMES.get(op, op)
    rest = test_name[len(name) + 1:] if test_name.startswith(name + "_") else test_name
    for token in rest.split("_"):
        match = re.fullmatch(r"(b|s|i8|i16|i32|i48)(x\w+)?", token)
        if match:
            return NAME_TO_DTYPE[match.group(1)]
    try:  # fall back on the descriptor's first generated tensor
        desc = json.loads((test_dir / "desc.json").read_text())
        tensors = desc["meta"]["data_gen"]["tensors"]
        first = min(tensors.values(), key=lambda t: t.get("input_pos", 0))
        return {"BOOL": "bool", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT48": "int48"}.get(
            first["data_type"], first["data_type"].lower())
    except (OSError, KeyError, ValueError):
        return "?"


def sample(names: list[str], n: int) -> list[str]:
    """A deterministic sample: the n names with the smallest SHA-1 (stable across runs and machines)."""
    return sorted(sorted(names, key=lambda s: hashlib.sha1(s.encode()).hexdigest())[:n])


# ---------------------------------------------------------------------------------------- running


def run_tool(cmd, timeout, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if "Different TOSA spec" not in line]
    return " | ".join(kept[-lines:])


def first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text.splitlines()[0][:300] if text else type(error).__name__


def compare(expected: np.ndarray, got) -> str | None:
    """None when `got` equals `expected` bit for bit (shape, dtype and every element), else a description."""
    # tosaic holds a !tosa.shape value as a tuple of ints; the reference model writes it as an int64 vector.
    got = np.asarray(got, dtype=np.int64) if isinstance(got, tuple) else np.asarray(got)
    if got.shape != expected.shape:
        return f"shape {got.shape} != expected {expected.shape}"
    problems = []
    if got.dtype != expected.dtype:
        problems.append(f"dtype {got.dtype} != expected {expected.dtype}")
    if expected.dtype.kind == "f" or got.dtype.kind == "f":
        both_nan = np.isnan(expected.astype(np.float64)) & np.isnan(got.astype(np.float64))
        differ = (expected != got) & ~both_nan
        if got.dtype == expected.dtype:  # same float type: compare bit patterns (-0.0 vs 0.0, NaN payloads)
            bits = np.dtype(f"u{expected.dtype.itemsize}")
            differ |= expected.view(bits) != got.view(bits)
    else:
        differ = expected.astype(np.int64) != got.astype(np.int64)
    if differ.any():
        index = tuple(int(i) for i in np.argwhere(differ)[0])
        problems.append(f"first difference at {list(index)}: expected {expected[index].item()!r} "
                        f"got {got[index].item()!r} ({int(differ.sum())}/{expected.size} elements differ)")
    return "; ".join(problems) or None


def run_tosaic(graph, inputs, target: str):
    """The graph's outputs on `target`: the TOSA interpreter, or the compiled model (one thread)."""
    if target == "interp":
        return interpret(graph, inputs)
    return tosaic.compile(graph, target=target, threads=1).run(inputs)


def run_test(op: str, dtype: str, test_dir: Path, targets=("interp",)) -> list[dict]:
    """Deserialize, run the reference model, run tosaic on each target and compare. One record per target."""
    record = {"op": op, "dtype": dtype, "test": test_dir.name, "dir": str(test_dir), "status": "pass", "detail": ""}

    def each(**change) -> list[dict]:
        return [{**record, "target": target, **change} for target in targets]

    try:
        desc = json.loads((test_dir / "desc.json").read_text())
        mlir_path = test_dir / "test.mlir"
        done = run_tool([str(TOSA_OPT), "-", "--tosa-deserialize",
                         f"--tosa-deserialize-filename={test_dir / desc['tosa_file']}",
                         "--mlir-print-op-generic", "-o", str(mlir_path)], 120, input="module {}")
        if done.returncode != 0 or not mlir_path.exists():
            return each(status="tool", detail=f"tosa-opt --tosa-deserialize failed: {tail(done.stderr)}")
        for name in desc["ofm_file"]:
            (test_dir / name).unlink(missing_ok=True)
        done = run_tool([str(REFERENCE_MODEL), "--test_desc", str(test_dir / "desc.json")], 300)
        if done.returncode != 0 or not all((test_dir / f).exists() for f in desc["ofm_file"]):
            return each(status="tool",
                        detail=f"reference model rc={done.returncode}: {tail(done.stdout + done.stderr)}")
        expected = {name: np.load(test_dir / f) for name, f in zip(desc["ofm_name"], desc["ofm_file"])}
        inputs_by_name = {name: np.load(test_dir / f) for name, f in zip(desc["ifm_name"], desc["ifm_file"])}
    except subprocess.TimeoutExpired as error:
        return each(status="tool", detail=f"timeout: {error.cmd[0]}")
    except (OSError, KeyError, ValueError) as error:
        return each(status="tool", detail=first_line(error))

    try:
        graph = parse_mlir(mlir_path.read_text())
    except NotImplementedError as error:
        return each(status="unimpl", detail="parse_mlir: " + first_line(error))
    except Exception as error:  # noqa: BLE001 - any parser exception is a parser problem to report
        return each(status="parse", detail=first_line(error))

    input_names = list(getattr(graph, "input_names", []) or [])
    if len(input_names) == len(graph.inputs) and all(n in inputs_by_name for n in input_names):
        inputs = [inputs_by_name[n] for n in input_names]
    else:
        inputs = [inputs_by_name[n] for n in desc["ifm_name"]]
    output_names = list(getattr(graph, "output_names", []) or [])
    return [{**record, "target": target, **run_target(graph, inputs, target, expected, output_names, desc)}
            for target in targets]


def run_target(graph, inputs, target: str, expected: dict, output_names: list, desc: dict) -> dict:
    """The status and detail of one target's run of a parsed test."""
    try:
        outputs = run_tosaic(graph, inputs, target)
    except NotImplementedError as error:
        return {"status": "unimpl", "detail": first_line(error)}
    except tosaic.LoweringError as error:
        return {"status": "refused", "detail": first_line(error)}
    except Exception as error:  # noqa: BLE001
        where = traceback.extract_tb(error.__traceback__)[-1]
        return {"status": "error", "detail": f"{first_line(error)} (at {Path(where.filename).name}:{where.lineno})"}
    if not (len(output_names) == len(outputs) and all(n in expected for n in output_names)):
        output_names = list(desc["ofm_name"])[:len(outputs)]
    if len(outputs) != len(expected):
        return {"status": "fail", "detail": f"{len(outputs)} outputs, expected {len(expected)}"}
    problems = []
    for name, got in zip(output_names, outputs):
        problem = compare(expected[name], got)
        if problem:
            problems.append(f"{name}: {problem}")
    if problems:
        return {"status": "fail", "detail": "; ".join(problems)}
    return {"status": "pass", "detail": ""}


def generate(op: str, out_dir: Path, args, target_shapes=None, dtypes=None) -> tuple[str, str | None]:
    """Run the generator for one op into out_dir. Returns (command, error or None)."""
    cmd = generator_command(op, out_dir, args, target_shapes, dtypes)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    try:
        done = run_tool(cmd, 900, env=env)
    except subprocess.TimeoutExpired:
        return " ".join(cmd), "tosa_verif_build_tests timed out"
    (out_dir / "generator.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return " ".join(cmd), f"tosa_verif_build_tests rc={done.returncode}: {tail(done.stdout + done.stderr)}"
    return " ".join(cmd), None


def collect(op: str, gen_dir: Path, by_dtype: dict[str, dict[str, Path]]) -> None:
    for test_dir in sorted(p.parent for p in gen_dir.glob("**/desc.json")):
        by_dtype.setdefault(test_dtype(test_dir.name, op, test_dir), {}).setdefault(test_dir.name, test_dir)


def run_op(op: str, args) -> dict:
    """Generate, sample and run the tests of one op. Runs in a worker process."""
    started = time.time()
    gen_dir = Path(args.out) / "tests" / op
    shutil.rmtree(gen_dir, ignore_errors=True)
    (gen_dir / "main").mkdir(parents=True)
    result = {"op": op, "generated": {}, "records": [], "generator_error": None, "seconds": 0.0,
              "generator_commands": []}
    shapes = args.target_shape or None
    command, result["generator_error"] = generate(op, gen_dir / "main", args, shapes)
    result["generator_commands"].append(command)
    by_dtype: dict[str, dict[str, Path]] = {}
    collect(op, gen_dir / "main", by_dtype)
    short = [d for d in args.dtypes if 0 < len(by_dtype.get(d, {})) < args.per_op]
    if not shapes and not result["generator_error"] and short:
        (gen_dir / "extra").mkdir()
        command, error = generate(op, gen_dir / "extra", args, EXTRA_SHAPES, short)
        result["generator_commands"].append(command)
        if error:
            result["generator_error"] = "extra shapes: " + error
        collect(op, gen_dir / "extra", by_dtype)
    result["generator_seconds"] = time.time() - started
    for dtype, named in sorted(by_dtype.items()):
        result["generated"][dtype] = len(named)
        for name in sample(list(named), args.per_op):
            result["records"] += run_test(op, dtype, named[name], args.targets)
    result["seconds"] = time.time() - started
    return result


# ---------------------------------------------------------------------------------------- reporting


def summarize(results: list[dict], targets) -> list[dict]:
    """One row per (op, dtype, target)."""
    rows = []
    for result in sorted(results, key=lambda r: r["op"]):
        dtypes = sorted(set(result["generated"]) | {r["dtype"] for r in result["records"]},
                        key=lambda d: (DTYPES.index(d) if d in DTYPES else 99, d))
        if not dtypes:
            rows.append({"op": result["op"], "dtype": "-", "target": "-", "generated": 0, "sampled": 0,
                         **{s: 0 for s in STATUSES}})
        for dtype in dtypes:
            for target in targets:
                records = [r for r in result["records"] if r["dtype"] == dtype and r.get("target") == target]
                row = {"op": result["op"], "dtype": dtype, "target": target,
                       "generated": result["generated"].get(dtype, 0), "sampled": len(records)}
                for status in STATUSES:
                    row[status] = sum(r["status"] == status for r in records)
                rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    header = ["op", "dtype", "target", "generated", "sampled", "passed", "failed", "parse err", "unimpl", "refused",
              "other err", "tool err"]
    keys = ["op", "dtype", "target", "generated", "sampled", "pass", "fail", "parse", "unimpl", "refused", "error",
            "tool"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row[k]) for k in keys) + " |")
    for target in dict.fromkeys(row["target"] for row in rows if row["target"] != "-"):
        total = {k: sum(row[k] for row in rows if row["target"] == target) for k in keys[3:]}
        lines.append(f"| **total** | | {target} | " + " | ".join(f"**{total[k]}**" for k in keys[3:]) + " |")
    return "\n".join(lines)


def report(results: list[dict], args, seconds: float, skipped: dict[str, str]) -> str:
    rows = summarize(results, args.targets)
    records = [r for result in results for r in result["records"]]
    parts = [f"# tosaic conformance run, targets {', '.join(args.targets)}\n",
             f"TOSA {TOSA_VERSION}, {' + '.join(PROFILE + EXTENSIONS)}; dtypes {', '.join(args.dtypes)}; "
             f"{args.per_op} tests per (op, dtype); dims in [{args.dim_range}]; seed {args.seed}; "
             f"-j {args.jobs}; {seconds:.0f} s.\n",
             markdown_table(rows), ""]
    labels = {"fail": "Failures (output differs from the reference model)", "parse": "Parse errors",
              "unimpl": "Unimplemented features", "refused": "Refused at compile time by the target",
              "error": "Other tosaic errors (exceptions while interpreting)",
              "tool": "Tool errors (generator / tosa-opt / reference model; not counted against tosaic)"}
    for status, label in labels.items():
        chosen = [r for r in records if r["status"] == status]
        if chosen:
            parts.append(f"## {label}\n")
            parts += [f"- `{r['op']}` {r['dtype']} `{r['test']}` ({r['target']}): {r['detail']}" for r in chosen]
            parts.append("")
    generator_errors = [r for r in results if r["generator_error"]]
    if generator_errors:
        parts.append("## Generator errors\n")
        parts += [f"- `{r['op']}`: {r['generator_error']}" for r in generator_errors]
        parts.append("")
    if skipped:
        parts.append("## Implemented ops not generated\n")
        parts += [f"- `{op}`: {why}" for op, why in sorted(skipped.items())]
        parts.append("")
    missing = sorted(PRO_INT_OPS - set(implemented_ops()))
    if missing:
        parts.append("## TOSA 1.0 PRO-INT ops that tosaic's interpreter does not implement (not tested)\n")
        parts.append(", ".join(f"`{op}`" for op in missing))
        parts.append("")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------- main


def implemented_ops() -> list[str]:
    return sorted(name.split(".", 1)[1] for name in IMPLEMENTATIONS if name.startswith("tosa."))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", help="comma-separated op names (default: every implemented op with a PRO-INT "
                                      "integer variant)")
    parser.add_argument("--per-op", type=int, default=5, help="tests per (op, dtype) (default 5)")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "tosaic-conformance"),
                        help="work and report directory (default: %(default)s); tests/<op> is recreated")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="ops processed in parallel (default 2)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="generator target dtypes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    parser.add_argument("--dim-range", default="1,5", help="generator --tensor-dim-range (default %(default)s)")
    parser.add_argument("--target-shape", nargs="*", help="generator --target-shape list used instead of the "
                        "dims range (off by default: ops of every rank get small random shapes)")
    parser.add_argument("--gen-arg", action="append", metavar="'OPTION VALUE'",
                        help="extra generator options, appended (later options win), e.g. "
                             "--gen-arg '--max-pooling-kernel 8'; repeatable")
    parser.add_argument("--pool", type=int, default=0,
                        help="tests the generator's selection keeps per input type (default per-op + 3: "
                             "it drops the tests outside the profile after selecting)")
    parser.add_argument("--target", default="interp",
                        help="comma-separated targets run on the same tests: interp (tosaic's TOSA interpreter), "
                             "cpu (the compiled CPU target); default %(default)s")
    args = parser.parse_args(argv)
    args.targets = [t for t in args.target.split(",") if t]
    if not args.targets or set(args.targets) - {"interp", "cpu"}:
        parser.error(f"--target takes interp and/or cpu, got {args.target!r}")
    args.dtypes = [d for d in args.dtypes.split(",") if d]

    for tool in (GENERATOR, TOSA_OPT, REFERENCE_MODEL):
        if not tool.exists():
            print(f"missing {tool}: run scripts/setup_tosa_tools.sh first", file=sys.stderr)
            return 2

    implemented = implemented_ops()
    skipped = {op: "floating point only in TOSA 1.0 (no PRO-INT variant)" for op in implemented if op in FP_ONLY}
    skipped.update({op: NOT_GENERATED[op] for op in implemented if op in NOT_GENERATED})
    if args.ops:
        ops = [op.strip().removeprefix("tosa.") for op in args.ops.split(",") if op.strip()]
        unknown = [op for op in ops if op not in implemented]
        if unknown:
            print(f"not implemented by tosaic's interpreter: {', '.join(unknown)}", file=sys.stderr)
            return 2
        skipped = {op: why for op, why in skipped.items() if op in ops}
        ops = [op for op in ops if op not in skipped]
    else:
        ops = [op for op in implemented if op not in skipped]
    ops.sort(key=lambda op: (EXPENSIVE.index(op) if op in EXPENSIVE else len(EXPENSIVE), op))

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    args.selection_config = out / "selection.json"
    write_selection_config(args.selection_config, ops, args.pool or args.per_op + 3)

    started = time.time()
    results = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_op, op, args): op for op in ops}
        for count, future in enumerate(concurrent.futures.as_completed(futures), 1):
            op = futures[future]
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 - a crashed worker is reported, not fatal
                result = {"op": op, "generated": {}, "records": [], "seconds": 0.0,
                          "generator_error": f"worker crashed: {first_line(error)}"}
            results.append(result)
            counts = {s: sum(r["status"] == s for r in result["records"]) for s in STATUSES}
            summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            print(f"[{count}/{len(ops)}] {op}: {len(result['records'])} tests ({summary or 'none'})"
                  f"{' GENERATOR ERROR' if result['generator_error'] else ''} in {result['seconds']:.1f} s"
                  f" (generation {result.get('generator_seconds', 0.0):.1f} s)",
                  file=sys.stderr, flush=True)
    seconds = time.time() - started

    text = report(results, args, seconds, skipped)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": seconds, "skipped": skipped,
         "results": results}, indent=1, default=str))
    print(text)
    print(f"(report: {out / 'report.md'}, details: {out / 'results.json'})")
    records = [r for result in results for r in result["records"]]
    bad = [r for r in records if r["status"] in ("fail", "parse", "unimpl", "error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
