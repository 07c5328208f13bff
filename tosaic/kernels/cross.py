"""Cross-compilation of generated kernels to another CPU's assembly, for inspection and tests.

Numba types and lowers a kernel on this machine without optimizing it (`NUMBA_OPT` 0 for that one
compilation); LLVM then optimizes that IR for the target's triple, CPU and features, loop and SLP
vectorization included, as Numba's own pipeline would on the target, and prints its assembly. Kernels are
serial functions called for one share of their work (the entry point's threads are not part of them), and
are compiled from their source text with Numba's cache off, so nothing of this reaches the kernel cache.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from tosaic.kernels.engine import Plan, Step
from tosaic.kernels.target import CpuTarget

TRIPLES = {"aarch64": "aarch64-unknown-linux-gnu", "x86_64": "x86_64-unknown-linux-gnu"}
_SCALARS = {"l": np.int64, "q": np.int64, "f": np.float32, "d": np.float64, "?": np.bool_}


def _unoptimized_ir(source: str, args: tuple) -> str:
    import numba
    from numba.core import config

    uncached = source.replace("cache=True", "cache=False")
    namespace: dict = {}
    exec(compile(uncached, "<kernel>", "exec"), namespace)
    kernel = namespace["kernel"]
    level, config.OPT = config.OPT, 0
    try:
        kernel.compile(tuple(numba.typeof(a) for a in args))
        return kernel.inspect_llvm(kernel.signatures[0])
    finally:
        config.OPT = level


def _declare_runtime(text: str) -> str:
    """The IR with Numba's runtime functions (NRT_incref, NRT_decref, ...) declared instead of defined: the
    copies linked into a kernel may already be optimized for this machine (x86 atomic intrinsics), and
    they are calls outside the task bodies anyway."""
    lines, out, skipping = text.splitlines(), [], False
    for line in lines:
        if skipping:
            skipping = line != "}"
            continue
        match = re.match(r"define (?:linkonce_odr )?(.*@NRT_\w+\(.*\))[^()]*\{$", line)
        if match:
            out.append(f"declare {match.group(1)}")
            skipping = True
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def assembly(source: str, args: tuple, target: CpuTarget) -> str:
    """The assembly of kernel `source`, typed by `args`, compiled by LLVM for `target`."""
    from llvmlite import binding as llvm

    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    machine = llvm.Target.from_triple(TRIPLES[target.arch]).create_target_machine(
        cpu=target.cpu, features=",".join(f"+{f}" for f in sorted(target.features)), opt=3, reloc="pic")
    text = _declare_runtime(_unoptimized_ir(source, args))
    text = re.sub(r'target datalayout = ".*"', f'target datalayout = "{machine.target_data}"', text)
    text = re.sub(r'target triple = ".*"', f'target triple = "{TRIPLES[target.arch]}"', text)
    text = re.sub(r'"target-(cpu|features)"="[^"]*"', "", text)   # this machine's, from Numba
    module = llvm.parse_assembly(text)
    module.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = tuning.slp_vectorization = True
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(module, builder)
    return machine.emit_assembly(module)


def step_arguments(plan: Plan, step: Step) -> tuple:
    """Arguments of a plan's kernel step with its real shapes, dtypes and parameters (zero activations)."""
    arrays = []
    for ref in step.arrays:
        if ref[0] == "const":
            arrays.append(plan.consts[ref[1]])
        else:
            _, _, shape, dtype = ref
            arrays.append(np.zeros(shape, np.dtype(dtype)))
    params = tuple(_SCALARS[kind](value) for kind, value in step.params)
    return (*arrays, params, tuple(np.int64(n) for n in step.dims), (np.int64(0), np.int64(1), np.int64(0)))


def step_assembly(plan: Plan, step: Step) -> str:
    return assembly(plan.sources[step.key], step_arguments(plan, step), CpuTarget.from_dict(plan.target))


def instruction_mix(asm: str) -> Counter:
    """How often each mnemonic occurs in `asm` (directives and labels left out)."""
    return Counter(re.findall(r"^\s+([a-z][a-z0-9.]*)\s", asm, re.M))


_VECTOR_OPERAND = re.compile(r"\bv\d+\.(16b|8b|8h|4h|4s|2s|2d|b|h|s)\b|\b[xyz]mm\d+\b")


def vector_mix(asm: str) -> Counter:
    """`instruction_mix` of the instructions with a SIMD register operand (NEON `v0.4s`, x86 `ymm0`):
    the arithmetic a kernel vectorized, apart from the scalar bookkeeping around it."""
    return instruction_mix("\n".join(line for line in asm.splitlines() if _VECTOR_OPERAND.search(line)))
