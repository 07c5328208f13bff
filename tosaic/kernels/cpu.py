"""CPU code generation: each dispatch becomes the source of one Numba kernel, called for one share of its
work at a time.

A kernel is a template (its loop nest and schedule) plus the scalar bodies rendered into it by
`kernels/render.py`. Templates, chosen from the dispatch's root op:

- `gemm`: a 1x1, stride-1, unpadded conv (and so every fully connected layer) with weight zero point 0, as
  C[m, n] = A[m, :] . W[n, :] over int8 (or int16) activations; the input zero point is folded into the
  bias at compile time. On x86 hosts, `gemm_<isa>` runs the broadcast micro-kernels of
  `kernels/x86_microkernels.py` (AVX2, AVX-VNNI, AVX-512 VNNI) on tasks of 16 rows by 128 channels, and
  with AVX-512 an epilogue that is one requantization (or one followed by a residual ADD, split:
  `render.split_requant`) runs as its row kernel; elsewhere one dot product per output (`gemm`), or outer
  products for few input channels (`gemm_outer`).
- `im2col`: an int8 conv2d with weight zero point 0 as a GEMM over each output row's gathered patches (on
  x86 through the same micro-kernels, with AVX-512 interior patches copied a kernel row at a time;
  elsewhere only for KH*KW*IC >= 64).
- `conv`: any other conv2d, directly, one output row per parallel iteration with its accumulators in a
  row buffer, output channels innermost (vectorized); padded taps are skipped, the zero points subtracted.
- `depthwise`: depthwise conv, one output row per parallel iteration, channels innermost; the taps of
  interior pixels summed in registers, border pixels tap by tap (with AVX-512, every pixel by the row
  micro-kernels of kernels/x86_microkernels.py, and an epilogue that is one requantization by them too).
- `generic`: every other structured op from its indexing maps and body: parallel loops collapsed into one
  `prange`, reduction loops innermost.

Templates write their parallel loops as `prange` at the top of the kernel body; `_module` turns each into
a loop over one share of its iterations (`shared_loops`), and the model's entry point (kernels/engine.py)
runs the shares on its own threads. A kernel is compiled serial: no Numba parfor, whose passes and three
wrapper libraries took more than half of each kernel's compile time.

The dispatch's epilogue is rendered where the accumulator is final, so requantization, activation and
residual additions run in registers. Loop bounds, strides and constants are runtime arguments: a kernel
depends on the structure of its bodies, its maps' coefficients and kernel size, not on tensor shapes or
strides (a stride only moves the input index once per output pixel, so stride-1 and stride-2 layers share
one compiled kernel).
Accumulators are int32 (int64 for 16x8 layers, whose TOSA accumulator is i48).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from tosaic.ir import TensorType, Value
from tosaic.kernels.render import PRELUDE, BodyRenderer, RowRequant, map_source, row_requant, split_requant
from tosaic.kernels.target import CpuTarget
from tosaic.kernels.x86 import (AVX512_FEATURES, BLOCK_N, MICROKERNEL_NAMES, MICROKERNEL_SOURCE, TABLE_LOOKUP, MicroKernel,
                                microkernel_for, pack_bias)
from tosaic.lowering import scalar as S
from tosaic.lowering.fusion import Dispatch
from tosaic.lowering.structured import PARALLEL, constant_values, generalize

HEADER = "import numpy as np\nimport numba\n"
DECORATOR = "@numba.njit(cache=True, nogil=True, boundscheck=False)"
# A dispatch of fewer loop iterations than this (outputs times reduction taps) runs as one share, on
# whichever thread reaches it first: splitting it costs a hand-over between threads, about what a
# streaming keyword spotter's small dispatches take whole (1 us on a Zen 5 core).
SERIAL_WORK = 16384
# LLVM's optimization level per template where it is not 3 (`engine.compile_function` reads the module's
# `LLVM_OPT`). Depthwise kernels at O1 ran as fast as at O3 (MobileNetV2, EfficientNet-B0, MobileNetV3-Small
# on Zen 5, within the noise of repeated runs) and spent 1.4-1.5 s in LLVM instead of 2.5; the GEMM
# templates lost 3-5% at O1 for a tenth of their LLVM time, and stay at 3.
LLVM_OPT = {"depthwise": 1}


@dataclass
class ArrayArg:
    """A kernel array argument: an activation `value` viewed with `shape`, a packed constant `array`, or a
    `scratch` buffer (a `value` of its own, planned in the arena for the kernel's step only)."""

    value: Value | None = None
    shape: tuple[int, ...] | None = None
    array: np.ndarray | None = None
    scratch: bool = False
    dtype: str | None = None   # an activation's bytes read as this numpy dtype (int8 channels as int32 words)


@dataclass
class KernelSpec:
    """Everything needed to call one dispatch's kernel: the module source, its template name, the array
    arguments in order, and the runtime scalars (P: parameters, D: loop bounds)."""

    template: str
    source: str
    arrays: list[ArrayArg]
    params: tuple
    dims: tuple
    launch: dict | None = None   # a CUDA kernel's launch (kernels/cuda.py): threads, threads per block
    split: bool = True   # a CPU kernel's work shared between the threads; False: run whole by one

    @property
    def key(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:20]

    @property
    def phases(self) -> int:
        """How many parallel loops the kernel runs in order, each called as a phase of its own (every share of
        one phase ends before the next starts: a later loop reads what the earlier ones wrote)."""
        found = re.search(r"^PHASES = (\d+)$", self.source, re.M)
        return int(found.group(1)) if found else 1


_IR_DTYPES = {"np.int8": "i8", "np.int16": "i16", "np.int32": "i32", "np.int64": "i64"}
_NP_DTYPES = {v: k for k, v in _IR_DTYPES.items()}


class Scratch:
    """A kernel's per-task scratch buffers. Kernels allocate nothing: each buffer is a [threads, *shape]
    array planned in the arena like an activation (alive during its dispatch only; `threads` is the
    target schedule's), and a task works in the row of its share: one thread runs a share, and a run has
    at most the schedule's threads, so at most as many shares."""

    def __init__(self, threads: int):
        self.threads = threads
        self.buffers: list[tuple[str, tuple[int, ...], str]] = []

    def take(self, name: str, shape, dtype: str) -> str:
        """Source binding `name` to this task's buffer of `shape` and `dtype` ("np.int32", ...)."""
        self.buffers.append((name, tuple(int(n) for n in shape), dtype))
        return f"{name} = scratch_{name}[tid]"

    @property
    def names(self) -> list[str]:
        return [f"scratch_{name}" for name, _, _ in self.buffers]

    def arrays(self) -> list[ArrayArg]:
        return [ArrayArg(Value(TensorType((self.threads, *shape), _IR_DTYPES[dtype])), (self.threads, *shape),
                         scratch=True) for _, shape, dtype in self.buffers]


TASK_ID = "tid = SHARE"


def _is_const(v: Value) -> bool:
    return constant_values(v) is not None


def _operand(v: Value) -> ArrayArg:
    """An activation or constant operand as a kernel reads it: a rank-0 tensor as a one-element vector
    (read at [0]: Numba has no empty subscript in source)."""
    return ArrayArg(v, v.type.shape or (1,))


_PARALLEL_LOOP = re.compile(r"^for (\w+) in prange\((.*)\):$")


def shared_loops(body: list[str]) -> tuple[list[str], int]:
    """The kernel body with each parallel loop (`for v in prange(n):`, at the top of the body) over this
    call's share of its iterations: share SHARE of SHARES takes a contiguous, equal part (a thread then reads
    what its share of the previous dispatch wrote, in its own cache). With several parallel loops, each runs
    in its phase PHASE only; the statements between them, assignments of bounds, run in every phase.
    Returns the body and the number of phases."""
    loops = [i for i, line in enumerate(body) if _PARALLEL_LOOP.match(line)]
    stray = [line for i, line in enumerate(body) if "prange(" in line and i not in loops]
    assert not stray, f"a parallel loop inside another statement: {stray}"
    several = len(loops) > 1
    out: list[str] = []
    phase, inside = -1, False
    for line in body:
        match = _PARALLEL_LOOP.match(line)
        if match:
            phase += 1
            var, count = match.groups()
            # Numba wraps negative indices: LLVM must see that the share's first index is not negative.
            line = f"for {var} in range(max(SHARE * ({count}) // SHARES, 0), (SHARE + 1) * ({count}) // SHARES):"
            if several:
                out.append(f"if PHASE == {phase}:")
            inside = True
        elif not line.startswith(" "):
            inside = False
        out.append(("    " if several and inside else "") + line)
    return out, max(1, len(loops))


def _module(template: str, signature: list[str], body: list[str], params) -> str:
    """The kernel module's source; it embeds the x86 micro-kernels' source when its body calls one. The
    kernel takes its arrays, P (parameters), D (loop bounds) and R: (SHARE, SHARES, PHASE)."""
    unpack = [f"    p{i} = P[{i}]" for i in range(len(params))]
    calls = re.compile(rf"\b({'|'.join(MICROKERNEL_NAMES)})\(")
    header = [MICROKERNEL_SOURCE] if any(calls.search(line) for line in body) else []
    opt = [f"LLVM_OPT = {LLVM_OPT[template]}"] if template in LLVM_OPT else []
    body, phases = shared_loops(body)
    lines = [HEADER, *header, PRELUDE, "", *opt, f"PHASES = {phases}", f"# template: {template}", DECORATOR,
             f"def kernel({', '.join(signature + ['P', 'D', 'R'])}):", *unpack, "    SHARE, SHARES, PHASE = R",
             *("    " + line for line in body)]
    return "\n".join(lines) + "\n"


def _param_values(params) -> tuple:
    values = []
    for value, dtype in params:
        if dtype == "f64":
            values.append(np.float64(value))
        elif S.is_float(dtype):
            values.append(np.float32(value))
        elif dtype == "i1":
            values.append(np.bool_(value))
        else:
            values.append(np.int64(value))
    return tuple(values)


def _indent(lines, depth):
    return ["    " * depth + line for line in lines]


class _Accesses:
    """Source for reading a generic op's inputs through their indexing maps (names `<prefix><i>`)."""

    def __init__(self, op, prefix: str, index, params, skip: int | None = None, acc: str | None = None):
        self.op, self.prefix, self.index, self.params = op, prefix, index, params
        self.skip, self.acc = skip, acc
        self.extra: list[tuple[str, np.ndarray]] = []  # derived constants: (argument name, array)

    def array(self, i: int) -> str:
        return f"{self.prefix}{i}"

    def constant(self, i: int):
        v = self.op.operands[i]
        return v.owner.attrs["values"] if i != self.skip and _is_const(v) else None

    def shape(self, i: int) -> tuple[int, ...]:
        """The static shape of input i's array, which the kernel receives whole."""
        return tuple(self.op.operands[i].type.shape)

    def same_layout(self, i: int, j: int) -> bool:
        a, b = self.op.attrs["accesses"][i], self.op.attrs["accesses"][j]
        return a == b and self.op.operands[i].type.shape == self.op.operands[j].type.shape

    def derived(self, i: int, array: np.ndarray) -> str:
        name = f"{self.prefix}x{len(self.extra)}"
        self.extra.append((name, np.reshape(array, np.shape(array) or (1,))))
        return self.read(i, None, name)

    def read(self, i: int, e: S.Expr | None, name: str | None = None) -> str:
        if i == self.skip:
            return self.acc
        access = self.op.attrs["accesses"][i]
        rows = []
        for coeffs, offset in zip(access.map.coeffs, access.map.offsets):
            if offset:
                self.params.append((offset, "i64"))
                rows.append(map_source(coeffs, f"p{len(self.params) - 1}", self.index))
            else:
                terms = [(self.index[j] if c == 1 else f"{c} * {self.index[j]}") for j, c in enumerate(coeffs) if c]
                rows.append(" + ".join(terms) or "0")
        arr = name or self.array(i)
        text = f"{arr}[{', '.join(rows) or '0'}]"
        if access.pad is None:
            return text
        self.params.append((access.pad, e.dtype))
        inside = " and ".join(f"0 <= {r} < {arr}.shape[{k}]" for k, r in enumerate(rows))
        return f"{text} if {inside} else p{len(self.params) - 1}"


def _lookup_pass(array: str, start: str, count: str, table: str | None, target: CpuTarget) -> list[str]:
    """The loop after an epilogue that stored the indices of a TABLE gather (`BodyRenderer.render_before_lookup`)
    in `array[start:start + count]`: the gather in place, 64 values an instruction pair where the target has
    a vector byte permute (x86_microkernels.table_lookup_avx512vbmi), one at a time elsewhere; nothing
    without a table. The loop counts from 0 (with `start` non-negative): over range(start, ...) it ran
    2.8x longer, LLVM no longer seeing the index cannot be negative."""
    if table is None:
        return []
    element = f"{array}[{start} + j]"
    scalar = [f"    {element} = {table}[np.int64({element}) + 128]"]
    lookup = _vector_lookup(target)
    if lookup is None:
        return [f"for j in range({count}):", *scalar]
    return [f"{lookup}({array}, {start}, {count}, {table})"]


def _vector_lookup(target: CpuTarget) -> str | None:
    """The name of the target's 64-value TABLE gather intrinsic, or None."""
    if target.arch != "x86_64":
        return None
    return next((name for feature, name in TABLE_LOOKUP.items() if feature in target.features), None)


def _output_lookup_pass(out: str, table: str | None, target: CpuTarget) -> list[str]:
    """A TABLE gather split off an epilogue (`BodyRenderer.render_before_lookup`) as a parallel loop of its
    own over the whole output `out`, after the kernel's loop nest. Inside the row templates' epilogue loop
    (0.9 ms on EfficientNet's first 112x112x32 depthwise SiLU) or as a pass after each row of channels
    (2.3 ms), it ran slower than this (0.5-0.7 ms), timed as loaded from Numba's cache: a pass after each
    row ran at 0.4 ms only in the process that compiled it. With the masked 64-value gather, one call per
    output row right after its epilogue still lost (0.56-0.58 ms against 0.39 for this pass): its 64-byte
    loads follow the epilogue's narrower stores to the same bytes (likely a store-forwarding stall).
    The vector gather reads `out` by flat offset; the scalar one indexes a flat view."""
    if table is None:
        return []
    flat = _vector_lookup(target) is None
    array = "of" if flat else out
    return [
        *([f"of = {out}.reshape(-1)"] if flat else []),
        f"for f in prange(({out}.size + {FLAT_TASK - 1}) // {FLAT_TASK}):",
        f"    j0 = max(f * {FLAT_TASK}, 0)",
        *_indent(_lookup_pass(array, "j0", f"min({FLAT_TASK}, {out}.size - j0)", table, target), 1),
    ]


def _epilogue(d: Dispatch, acc: str, index, params, out: str, store_index: str, prefix: str, target: CpuTarget):
    """Statements computing the epilogue of `d` on accumulator `acc` and storing it at `out[store_index]`;
    the epilogue's array arguments (its inputs other than the accumulator, then derived constants) and
    their parameter names; and the statements to run after the loop nest (`_output_lookup_pass`)."""
    if d.epilogue is None:
        return [f"{out}[{store_index}] = {acc}"], [], [], []
    e = d.epilogue
    reads = _Accesses(e, prefix, index, params, skip=d.slot, acc=acc)
    r = BodyRenderer(reads.read, reads.array, index, params=params, prefix=f"{prefix}t", inputs=reads,
                     requant=target.requant)
    (body,) = e.attrs["bodies"]
    value, table = r.render_before_lookup(body)
    arrays = [_operand(v) for i, v in enumerate(e.operands) if i != d.slot]
    names = [f"{prefix}{i}" for i in range(len(e.operands)) if i != d.slot]
    arrays += [ArrayArg(array=a) for _, a in reads.extra]
    names += [n for n, _ in reads.extra]
    return r.lines + [f"{out}[{store_index}] = {value}"], arrays, names, _output_lookup_pass(out, table, target)


# --------------------------------------------------------------------------------------------- generic


def _aligned_index(out_shape, par_names, par_shape) -> list[str]:
    """Index names of the root's output dims from the parallel loops: the output shape is the parallel
    shape with size-1 dims inserted or dropped (keep-dims reductions)."""
    names, j = [], 0
    for size in out_shape:
        if j < len(par_shape) and par_shape[j] == size:
            names.append(par_names[j])
            j += 1
        else:
            names.append("0")
    return names


FLAT_TASK = 4096   # elements per parallel task of a flat elementwise kernel


class _FlatReads(_Accesses):
    """Reads of an elementwise op at one flat index `j`: every operand read through its indexing map must
    cover the whole domain in order (an identity map, same shape); `ok` turns False otherwise. Operands
    used only as arrays (a TABLE's table) keep their shape."""

    def __init__(self, op, params):
        super().__init__(op, "i", [], params)
        self.flat: set[int] = set()
        self.ok = True

    def read(self, i: int, e: S.Expr | None, name: str | None = None) -> str:
        access, v = self.op.attrs["accesses"][i], self.op.operands[i]
        if access.map is None or access.pad is not None or not access.map.is_identity() \
                or tuple(v.type.shape) != tuple(self.op.attrs["domain"]) or not v.type.shape:
            self.ok = False
            return "0"
        if name is None:
            self.flat.add(i)
        return f"{name or self.array(i)}[j]"

    def derived(self, i: int, array: np.ndarray) -> str:
        name = f"{self.prefix}x{len(self.extra)}"
        self.extra.append((name, np.reshape(array, -1)))
        return self.read(i, None, name)

    def __getitem__(self, dim: int) -> str:
        """The renderer's loop index `dim`: a body using loop indices (a gather) has no flat form."""
        self.ok = False
        return "0"


def _flat_elementwise_kernel(d: Dispatch, op, target: CpuTarget) -> KernelSpec | None:
    """An elementwise op whose operands all lie in its domain's order, as one flat loop cut into tasks of
    FLAT_TASK elements: long inner loops LLVM vectorizes, instead of a parallel task per row of the last
    dimension (EfficientNet's SiLU on 32 channels ran 8.6 ns per element). None where it does not apply."""
    if d.epilogue is not None or len(op.results) != 1 or any(it != PARALLEL for it in op.attrs["iterators"]) \
            or tuple(op.results[0].type.shape) != tuple(op.attrs["domain"]) or not op.attrs["domain"]:
        return None
    params: list = []
    reads = _FlatReads(op, params)
    r = BodyRenderer(reads.read, reads.array, reads, params=params, prefix="t", inputs=reads, requant=target.requant)
    value, table = r.render_before_lookup(op.attrs["bodies"][0])
    if not reads.ok:
        return None
    body = [
        "TOTAL = D[0]",
        f"for f in prange((TOTAL + {FLAT_TASK - 1}) // {FLAT_TASK}):",
        # Numba wraps negative indices: LLVM must see that j cannot be negative to vectorize.
        f"    j0 = max(f * {FLAT_TASK}, 0)",
        f"    for jj in range(min({FLAT_TASK}, TOTAL - j0)):",
        "        j = j0 + jj",
        *_indent(r.lines + [f"o0[j] = {value}"], 2),
        *_indent(_lookup_pass("o0", "j0", f"min({FLAT_TASK}, TOTAL - j0)", table, target), 1),
    ]
    size = int(np.prod(op.attrs["domain"]))
    outputs = [ArrayArg(d.outputs[0], (size,))]
    inputs = [ArrayArg(v, (size,)) if i in reads.flat else _operand(v) for i, v in enumerate(op.operands)]
    inputs += [ArrayArg(array=a) for _, a in reads.extra]
    signature = ["o0"] + [f"i{i}" for i in range(len(op.operands))] + [n for n, _ in reads.extra]
    return KernelSpec("generic_flat", _module("generic_flat", signature, body, params), outputs + inputs,
                      _param_values(params), (size,))


def loop_dims(op) -> tuple[list[int], list[int]]:
    """A generic op's parallel and reduction loop dimensions (the parallel ones first in every lowering)."""
    iterators = op.attrs["iterators"]
    par = [j for j in range(len(iterators)) if iterators[j] == PARALLEL]
    red = [j for j in range(len(iterators)) if iterators[j] != PARALLEL]
    assert par == list(range(len(par))), "parallel loops come first in every lowering"
    return par, red


def unravel(flat: str, dims: list[int]) -> list[str]:
    """Statements setting loop indices d<j> for `dims` from the flat index `flat`, the last fastest; fresh
    names per step (Numba refuses a reassigned alias of a prange index)."""
    lines, rest = [], flat
    for k, j in enumerate(reversed(dims)):
        if j == dims[0]:
            lines.append(f"d{j} = {rest}")
        else:
            lines += [f"d{j} = {rest} % D{j}", f"g{k} = {rest} // D{j}"]
            rest = f"g{k}"
    return lines


def epilogue_index(d: Dispatch, op, par: list[int]) -> list[str]:
    """The epilogue's index into the root's output from the loop indices d<j> of the generic form `op`."""
    if d.root.name == "linalg.depthwise_conv2d":
        # The generic form's loops (n, oh, ow, c, m) make output channel c * M + m.
        return ["d0", "d1", "d2", f"(d3 * {d.root.operands[1].type.shape[3]} + d4)"]
    return _aligned_index(op.results[0].type.shape if op is d.root else d.root.result.type.shape,
                          [f"d{j}" for j in par], [op.attrs["domain"][j] for j in par])


def generic_kernel(d: Dispatch, target: CpuTarget) -> KernelSpec:
    op = generalize(d.root)
    flat = _flat_elementwise_kernel(d, op, target)
    if flat is not None:
        return flat
    domain = op.attrs["domain"]
    rank = len(domain)
    par, red = loop_dims(op)
    index = [f"d{j}" for j in range(rank)]
    params: list = []
    reads = _Accesses(op, "i", index, params)
    accs = [f"a{i}" for i in range(len(op.results))]
    body: list[str] = [f"D{j} = D[{j}]" for j in range(rank)]
    outer = par[:-1] if len(par) > 1 else []
    inner = par[-1:] if par else []
    depth = 0
    if outer:
        body.append(f"for f in prange({' * '.join(f'D{j}' for j in outer)}):")
        body += _indent(unravel("f", outer), 1)
        depth = 1
    if inner:
        body += _indent([f"for d{inner[0]} in {'range' if outer else 'prange'}(D{inner[0]}):"], depth)
        depth += 1
    else:
        body += _indent(["for f in prange(1):"], depth)
        depth += 1
    lines: list[str] = []
    after: list[str] = []
    scratch = Scratch(target.schedule.threads)
    across_rows = bool(red and outer) and _reduce_across_rows(op, inner[0], red)
    if across_rows:
        # The reduction walks rows of the input while the innermost parallel dimension runs along them:
        # accumulate whole rows (a scratch buffer per result), the row loop innermost, which vectorizes
        # and reads memory in order (reductions innermost read it with a stride of a whole row).
        j = inner[0]
        init_r = BodyRenderer(reads.read, reads.array, index, params=params, prefix="s")
        inits = [init_r.render(init) for init in op.attrs["inits"]]
        step = BodyRenderer(reads.read, reads.array, index, outs=accs, params=params, prefix="t")
        values = [step.render(b) for b in op.attrs["bodies"]]
        lines += [TASK_ID] + [scratch.take(f"row{i}", (domain[j],), _NP_DTYPES[r.type.dtype])
                              for i, r in enumerate(op.results)]
        lines += [f"for d{j} in range(D{j}):", *_indent(init_r.lines + [f"row{i}[d{j}] = {v}" for i, v in
                                                                        enumerate(inits)], 1)]
        loop = ["    " * k + f"for d{r} in range(D{r}):" for k, r in enumerate(red)]
        row_step = [f"for d{j} in range(D{j}):",
                    *_indent([f"{a} = row{i}[d{j}]" for i, a in enumerate(accs)] + step.lines
                             + [f"row{i}[d{j}] = {v}" for i, v in enumerate(values)], 1)]
        lines += loop + _indent(row_step, len(red))
        lines += [f"for d{j} in range(D{j}):", *_indent([f"{a} = row{i}[d{j}]" for i, a in enumerate(accs)], 1)]
        depth -= 1   # the row loops replace the innermost parallel loop
        body = body[:-1]
    elif red:
        init_r = BodyRenderer(reads.read, reads.array, index, params=params, prefix="s")
        inits = [init_r.render(init) for init in op.attrs["inits"]]
        lines += init_r.lines + [f"{a} = {v}" for a, v in zip(accs, inits)]
        step = BodyRenderer(reads.read, reads.array, index, outs=accs, params=params, prefix="t")
        values = [step.render(b) for b in op.attrs["bodies"]]
        loop = []
        for k, j in enumerate(red):
            loop.append("    " * k + f"for d{j} in range(D{j}):")
        inner_lines = step.lines + [f"{', '.join(accs)} = {', '.join(values)}"]
        lines += loop + _indent(inner_lines, len(red))
    else:
        r = BodyRenderer(reads.read, reads.array, index, params=params, prefix="t", inputs=reads,
                         requant=target.requant)
        if len(op.attrs["bodies"]) == 1 and d.epilogue is None:
            value, table = r.render_before_lookup(op.attrs["bodies"][0])
            values = [value]
            after = _output_lookup_pass("o0", table, target)
        else:
            values = [r.render(b) for b in op.attrs["bodies"]]
        lines += r.lines + [f"{a} = {v}" for a, v in zip(accs, values)]
    par_index = ", ".join(f"d{j}" for j in par) or "0"
    arrays_epi: list = []
    epi_names: list = []
    if d.epilogue is not None:
        epi, arrays_epi, epi_names, after = _epilogue(d, accs[0], epilogue_index(d, op, par), params, "o0",
                                                      par_index, "e", target)
    else:
        epi = [f"o{i}[{par_index}] = {a}" for i, a in enumerate(accs)]
    lines += _indent(epi, 1) if across_rows else epi
    body += _indent(lines, depth)
    body += after
    shape = tuple(domain[j] for j in par) or (1,)
    outputs = [ArrayArg(v, shape) for v in d.outputs]
    inputs = [_operand(v) for v in op.operands]
    inputs += [ArrayArg(array=a) for _, a in reads.extra]
    signature = [f"o{i}" for i in range(len(outputs))] + [f"i{i}" for i in range(len(op.operands))] \
        + [n for n, _ in reads.extra] + epi_names + scratch.names
    return KernelSpec("generic", _module("generic", signature, body, params),
                      outputs + inputs + arrays_epi + scratch.arrays(), _param_values(params),
                      tuple(int(n) for n in domain))


def _reduce_across_rows(op, inner: int, red: list[int]) -> bool:
    """Whether a reduction reads its input along the innermost parallel dimension (the input's last axis
    moves with it alone) and across rows with the reduction dimensions, with integer results (kept in
    scratch rows of their own dtype, so no rounding changes)."""
    if any(r.type.dtype not in _NP_DTYPES for r in op.results) or op.attrs["domain"][inner] < 8:
        return False
    access = op.attrs["accesses"][0].map
    if access is None:   # not affine (a transpose conv's strided taps): keep the plain form
        return False
    last = access.coeffs
    return bool(last) and last[-1][inner] == 1 and not any(last[-1][j] for j in red)


# ------------------------------------------------------------------------------------------ templates


def _acc_types(x_dtype: str, acc_dtype: str):
    wide = acc_dtype == "i48"
    return ("np.int64" if wide else "np.int32"), ("np.int32" if x_dtype == "i16" else "np.int16")


def _row_conv_body(header, kernel, dilation, acc_t, per_tap, per_pixel, epilogue, scratch: Scratch,
                   row_shape) -> list[str]:
    """The loop nest the direct conv and depthwise templates share: one output row per parallel task,
    its accumulators [OW, OC] in a row buffer started at the bias, every in-bounds tap added (only the
    output columns whose tap stays inside the row: no per-pixel bounds test), then the epilogue per
    element. `per_tap` runs once per tap, `per_pixel` for each output column with `xr` (the input pixel)
    and `ar` (its accumulators). The strides are loop bounds SY and SX (one kernel for every stride)."""
    (kh, kw), (dy, dx) = kernel, dilation
    return [
        *header,
        "for r in prange(N * OH):",
        "    b = r // OH",
        "    y = r % OH",
        f"    {TASK_ID}",
        f"    {scratch.take('acc', row_shape, acc_t)}",
        "    for xo in range(OW):",
        "        for c in range(OC):",
        "            acc[xo, c] = bias[c]",
        f"    for ky in range({kh}):",
        f"        iy = y * SY + ky * {dy} - p2",
        "        if iy < 0 or iy >= H:",
        "            continue",
        f"        for kx in range({kw}):",
        *_indent(per_tap, 3),
        f"            x0 = max(0, (p3 - kx * {dx} + SX - 1) // SX)",
        f"            x1 = min(OW, (W - 1 + p3 - kx * {dx}) // SX + 1)",
        "            for xo in range(x0, x1):",
        f"                xr = x[b, iy, xo * SX + kx * {dx} - p3]",
        "                ar = acc[xo]",
        *_indent(per_pixel, 4),
        "    for xo in range(OW):",
        "        ar = acc[xo]",
        "        for c in range(OC):",
        "            v = ar[c]",
        *_indent(epilogue, 3),
    ]


def _row_conv_params(d: Dispatch) -> list:
    """The runtime parameters both row templates start with: p0 input zp, p1 weight zp, p2 top and p3 left
    padding."""
    op = d.root
    top, _, left, _ = op.attrs["pad"]
    return [(op.attrs["input_zp"], "i64"), (op.attrs["weight_zp"], "i64"), (top, "i64"), (left, "i64")]


def _row_conv_epilogue(d: Dispatch, target: CpuTarget):
    """`_row_conv_params` and the dispatch's epilogue on accumulator `v` at (b, y, xo, c)."""
    params = _row_conv_params(d)
    epi, epi_arrays, epi_names, after = _epilogue(d, "v", ["b", "y", "xo", "c"], params, "out", "b, y, xo, c", "e",
                                                  target)
    return params, epi, after, epi_arrays, epi_names


def _requant_reader(d: Dispatch, target: CpuTarget) -> _Accesses | None:
    """Where the target runs `requantize_rows_avx512` (x86 with AVX-512BW, the float64 strategy) and the
    dispatch has an epilogue: a throwaway reader of it, into which matching renders the sources of
    constants (the call reads arrays of its own); else None."""
    if d.epilogue is None or target.arch != "x86_64" or not AVX512_FEATURES <= target.features \
            or target.requant != "float64":
        return None
    index = [f"i{k}" for k in range(len(d.epilogue.attrs["domain"]))]
    return _Accesses(d.epilogue, "e", index, [], skip=d.slot)


def _row_requant(d: Dispatch, target: CpuTarget) -> RowRequant | None:
    """The dispatch's epilogue as one requantization of its accumulator to int8 (`render.row_requant`)
    where the target runs `requantize_rows_avx512`; else None."""
    reader = _requant_reader(d, target)
    return None if reader is None else row_requant(d.epilogue, d.slot, reader)


def _split_requant(d: Dispatch, target: CpuTarget) -> tuple[RowRequant, S.Expr] | None:
    """The dispatch's epilogue as a requantization of its accumulator to int8 followed by an elementwise
    function of it and whole-output inputs (`render.split_requant`), where the target runs
    `requantize_rows_avx512`; else None."""
    reader = _requant_reader(d, target)
    return None if reader is None else split_requant(d.epilogue, d.slot, reader)


class FlatEpilogue(NamedTuple):
    """A split epilogue (`_split_requant`): the requantization into a task buffer `y`, then `lines`
    computing `value` from it at flat output index `base + k`, reading `arrays` (named `names`)."""
    rq: RowRequant
    lines: list[str]
    value: str
    arrays: list[ArrayArg]
    names: list[str]


class _SplitReads(_Accesses):
    """Reads of a split epilogue's second part at flat output index `base + k`: the requantized value from
    the task's buffer (`y[k]`), whole-output inputs at the same index, single-element inputs at [0]."""

    def derived(self, i: int, array: np.ndarray) -> str:
        return super().derived(i, np.reshape(array, -1))

    def read(self, i, expr, name=None):
        if i == self.skip:
            return "y[k]"
        arr = name or self.array(i)
        return f"{arr}[0]" if self.op.operands[i].type.size == 1 else f"{arr}[base + k]"


def _flat_epilogue(d: Dispatch, split, params: list, target: CpuTarget) -> FlatEpilogue:
    rq, rest = split
    e = d.epilogue
    reads = _SplitReads(e, "e", [], params, skip=d.slot)
    renderer = BodyRenderer(reads.read, reads.array, [], params=params, prefix="t", inputs=reads,
                            requant=target.requant)
    value = renderer.render(rest)
    used = sorted({n.arg for n in S.nodes(rest) if n.op == "in"} - {d.slot})
    arrays = [ArrayArg(e.operands[i], (e.operands[i].type.size,)) for i in used]
    names = [f"e{i}" for i in used]
    arrays += [ArrayArg(array=a) for _, a in reads.extra]
    names += [n for n, _ in reads.extra]
    return FlatEpilogue(rq, renderer.lines, value, arrays, names)


def _requant_arrays(rq: RowRequant) -> tuple[list[ArrayArg], list[str]]:
    return [ArrayArg(array=a) for a in (rq.scale, rq.round_up, rq.round_down)], ["rq_scale", "rq_up", "rq_down"]


def _requant_rows(rq: RowRequant, params: list, where: str) -> str:
    """The call requantizing rows of int32 accumulators into int8 outputs; `where` are its first nine
    arguments (out, o0, ldo, acc, a0, lda, rows, count, k0)."""
    bounds = []
    for value, dtype in ((rq.low, "f64"), (rq.high, "f64"), (rq.zp, "i64")):
        params.append((value, dtype))
        bounds.append(f"p{len(params) - 1}")
    name = "requantize_rows_saturating_avx512" if rq.saturating else "requantize_rows_avx512"
    return f"{name}({where}, rq_scale, rq_up, rq_down, {', '.join(bounds)})"


def conv_kernel(d: Dispatch, target: CpuTarget) -> KernelSpec:
    """Direct conv2d: per output row, accumulate every in-bounds tap into a row buffer [OW, OC]."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    _, kh, kw, ic = w.type.shape
    acc_t, mul_t = _acc_types(x.type.dtype, op.result.type.dtype)
    packed = np.ascontiguousarray(np.transpose(w.owner.attrs["values"], (1, 2, 3, 0)))  # [KH, KW, IC, OC]
    params, epi, after, epi_arrays, epi_names = _row_conv_epilogue(d, target)
    if x.type.dtype == "i8" and not op.attrs["weight_zp"]:
        # |x - zp| <= 255 and |w| <= 128: the product fits int16 (16 lanes per vector multiply).
        product = "ar[c] += np.int32(np.int16(xv * np.int16(wr[c])))"
    else:
        weight = f"({mul_t}(wr[c]) - zw)" if op.attrs["weight_zp"] else f"{mul_t}(wr[c])"
        product = f"ar[c] = {acc_t}(ar[c] + xv * {weight})"
    per_pixel = [
        "for k in range(IC):",
        f"    xv = {mul_t}(xr[k]) - z",
        "    wr = wp[ky, kx, k]",
        "    for c in range(OC):",
        f"        {product}",
    ]
    header = ["N, OH, OW, OC, H, W, IC, SY, SX = D", f"z = {mul_t}(p0)", f"zw = {mul_t}(p1)"]
    scratch = Scratch(target.schedule.threads)
    body = _row_conv_body(header, (kh, kw), op.attrs["dilation"], acc_t, [], per_pixel, epi, scratch,
                          (ow, oc)) + after
    arrays = [ArrayArg(d.outputs[0], d.outputs[0].type.shape), ArrayArg(x, x.type.shape), ArrayArg(array=packed),
              ArrayArg(array=_bias(bias, oc, op.result.type.dtype))] + epi_arrays + scratch.arrays()
    signature = ["out", "x", "wp", "bias"] + epi_names + scratch.names
    return KernelSpec("conv", _module("conv", signature, body, params), arrays, _param_values(params),
                      (n, oh, ow, oc, x.type.shape[1], x.type.shape[2], ic, *op.attrs["stride"]))


def im2col_conv_kernel(d: Dispatch, target: CpuTarget) -> KernelSpec:
    """Conv2d on int8 by patches: per output row, gather each pixel's patch into a row buffer (padded taps
    hold the zero point, which is folded into the bias), then multiply the patches by the weights. On
    x86 hosts the patches go through the GEMM micro-kernels of kernels/x86_microkernels.py in the form
    the host's micro-kernel reads (int16, or uint8 plus 128 for VNNI; every int8 conv with weight zero
    point 0); elsewhere each output channel is one int32 dot product against weights
    packed [OC, KH*KW*IC], for convs with KH*KW*IC >= 64 (measured 2.5x the direct form on 56x56x64 3x3)."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    _, kh, kw, ic = w.type.shape
    dy, dx = op.attrs["dilation"]
    top, _, left, _ = op.attrs["pad"]
    weights = np.asarray(w.owner.attrs["values"]).reshape(oc, kh * kw * ic)
    zp = op.attrs["input_zp"]
    mk = microkernel_for(target.arch, target.features)
    offset = mk.activation_offset if mk else 0
    folded = _folded_bias(bias, weights, zp + offset, "i32")
    params: list = [(zp + offset, "i64"), (top, "i64"), (left, "i64")]
    rq = _row_requant(d, target) if mk else None
    if rq is None:
        epi, epi_arrays, epi_names, after = _epilogue(d, "v", ["b", "y", "xo", "c"], params, "out", "b, y, xo, c",
                                                      "e", target)
    else:
        (epi_arrays, epi_names), after = _requant_arrays(rq), []
    scratch = Scratch(target.schedule.threads)
    patch_t = mk.activation_dtype if mk else "np.int8"
    gather, row_arrays = [], []
    if mk and mk.activation_offset and AVX512_FEATURES <= target.features and dx == 1 and kw * ic <= 64:
        # Pixels whose taps are all inside the input take a kernel row's taps in one masked copy.
        width = x.type.shape[2]
        row_arrays = [ArrayArg(array=np.array([ky * dy * width * ic for ky in range(kh)], np.int64))]
        gather = [
            "    xa = min(OW, max(0, (p2 + SX - 1) // SX))",
            f"    xb = max(xa, min(OW, (W - 1 + p2 - {kw - 1}) // SX + 1))",
            "    iy0 = y * SY - p1",
            f"    if iy0 < 0 or iy0 + {(kh - 1) * dy} >= H:",
            "        xb = xa",
            "    else:",
            f"        patch_rows_avx512(patch, xa * TP, TP, x, ((b * H + iy0) * W + xa * SX - p2) * IC, SX * IC, rows_at, "
            f"{kw} * IC, xb - xa)",
        ]
    gather += [
        "    for xo in range(OW):",
        *(["        if xa <= xo < xb:", "            continue"] if row_arrays else []),
        "        pr = patch[xo]",
        f"        for ky in range({kh}):",
        f"            iy = y * SY + ky * {dy} - p1",
        f"            for kx in range({kw}):",
        f"                ix = xo * SX + kx * {dx} - p2",
        f"                base = (ky * {kw} + kx) * IC",
        "                if 0 <= iy < H and 0 <= ix < W:",
        "                    xr = x[b, iy, ix]",
        *_indent(_copy_channels(ic, "pr[base + {k}]", _stored_activation("xr[{k}]", mk)), 5),
        "                else:",
        *_indent(_copy_channels(ic, "pr[base + {k}]", "z"), 5),
    ]
    if mk:
        multiply = [
            "    for nb in range(NB):",
            f"        w0 = nb * TP * {BLOCK_N}",
            *_indent(mk.calls("patch", "xo", "OW", "TP", "acc", f"xo * NB * {BLOCK_N} + nb * {BLOCK_N}",
                              f"NB * {BLOCK_N}"),
                     2),
            *(["    " + _requant_rows(rq, params, f"out, (b * OH + y) * OW * OC, OC, acc, 0, NB * {BLOCK_N}, OW, OC, 0")]
              if rq else ["    for xo in range(OW):", "        for c in range(OC):", "            v = acc[xo, c]",
                          *_indent(epi, 3)]),
        ]
        taps = mk.pad(kh * kw * ic)
        setup = [f"TP = {mk.pad_source('T')}", f"NB = (OC + {BLOCK_N - 1}) // {BLOCK_N}"]
        buffers = [f"    {scratch.take('patch', (ow, taps), patch_t)}",
                   f"    {scratch.take('acc', (ow, -(-oc // BLOCK_N) * BLOCK_N), 'np.int32')}",
                   # The micro-kernel reads whole groups of taps; the padding taps meet zero weights.
                   "    for xo in range(OW):",
                   "        for k in range(T, TP):",
                   "            patch[xo, k] = 0"]
        packed = mk.pack_weights(weights)
        bias_arg = pack_bias(folded)
    else:
        multiply = [
            "    for xo in range(OW):",
            "        pr = patch[xo]",
            "        for c in range(OC):",
            "            wc = wp[c]",
            "            s = np.int32(0)",
            "            for k in range(T):",
            "                s = np.int32(s + np.int16(pr[k]) * np.int16(wc[k]))",
            "            acc[c] = np.int32(s + bias[c])",
            "        for c in range(OC):",
            "            v = acc[c]",
            *_indent(epi, 3),
        ]
        setup = []
        buffers = [f"    {scratch.take('patch', (ow, kh * kw * ic), 'np.int8')}",
                   f"    {scratch.take('acc', (oc,), 'np.int32')}"]
        packed, bias_arg = np.ascontiguousarray(weights), folded
    body = [
        "N, OH, OW, OC, H, W, IC, SY, SX = D",
        f"T = {kh * kw} * IC",
        *setup,
        f"z = {patch_t}(p0)",
        "for r in prange(N * OH):",
        "    b = r // OH",
        "    y = r % OH",
        f"    {TASK_ID}",
        *buffers,
        *gather,
        *multiply,
        *after,
    ]
    arrays = [ArrayArg(d.outputs[0], d.outputs[0].type.shape), ArrayArg(x, x.type.shape),
              ArrayArg(array=packed), ArrayArg(array=bias_arg)] + row_arrays + epi_arrays + scratch.arrays()
    signature = ["out", "x", "wp", "bias"] + ["rows_at"] * bool(row_arrays) + epi_names + scratch.names
    return KernelSpec("im2col", _module("im2col", signature, body, params), arrays, _param_values(params),
                      (n, oh, ow, oc, x.type.shape[1], x.type.shape[2], ic, *op.attrs["stride"]))


def _copy_channels(channels: int, target: str, value: str) -> list[str]:
    """Source copying `channels` values (`{k}` in `target` and `value` is the channel): a loop, or for up
    to 4 channels (an image's first layer) one statement per channel, since a loop of a few iterations
    costs more than its copies (measured: MobileNetV2's 3-channel first conv, 0.40 -> 0.26 ms). Only such
    layers get a kernel of their own channel count."""
    if channels <= 4:
        return [f"{target} = {value}".format(k=k) for k in range(channels)]
    return ["for k in range(IC):", f"    {target} = {value}".format(k="k")]


def _bias(bias: Value, channels: int, acc_dtype: str) -> np.ndarray:
    values = np.asarray(bias.owner.attrs["values"]).astype(np.int64).reshape(-1)
    values = np.broadcast_to(values, (channels,)) if values.size == 1 else values
    return np.ascontiguousarray(values.astype(np.int64 if acc_dtype == "i48" else np.int32))


def _folded_bias(bias: Value, weights: np.ndarray, zp: int, acc_dtype: str) -> np.ndarray:
    """The bias with the input zero point folded in, for weights [OC, taps]: sum (a - zp) * w is
    sum a * w - zp * sum w."""
    folded = _bias(bias, weights.shape[0], acc_dtype).astype(np.int64) - zp * weights.astype(np.int64).sum(axis=1)
    return folded.astype(np.int64 if acc_dtype == "i48" else np.int32)


def _stored_activation(value: str, mk: MicroKernel | None) -> str:
    """An int8 activation as the micro-kernel `mk` reads it: for VNNI the bits of the uint8 value plus 128
    (the top bit flipped), else as it is (stored widened to int16 for AVX2)."""
    if mk is not None and mk.activation_offset:
        return f"{value} ^ np.int8(-128)"
    return value


def _depthwise_rows(d: Dispatch, target: CpuTarget) -> tuple[str, str] | None:
    """The x86 micro-kernels summing a depthwise layer's interior rows and border pixels, where there are
    some: int8 without a weight zero point or channel multiplier, a kernel size they come in, AVX-512BW
    for the masked tail."""
    op = d.root
    kh, kw, _, mult = op.operands[1].type.shape
    names = (f"depthwise_avx512_{kh * kw}", f"depthwise_border_avx512_{kh * kw}")
    if target.arch != "x86_64" or not AVX512_FEATURES <= target.features or names[0] not in MICROKERNEL_NAMES:
        return None
    if op.operands[0].type.dtype != "i8" or mult != 1 or op.attrs["weight_zp"]:
        return None
    return names


def depthwise_kernel(d: Dispatch, target: CpuTarget) -> KernelSpec:
    """Depthwise conv2d, one output row per parallel task, channels innermost (vectorized). Where every
    tap is inside the input (all but the border), each output's taps are summed in registers, unrolled
    from the kernel size, and stored once into the row buffer; the border accumulates tap by tap,
    skipping padded taps. The epilogue then runs over the row buffer as its own loop, which keeps the
    products 16 lanes wide and the float epilogue 4."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    kh, kw, c, mult = w.type.shape
    sy, sx = op.attrs["stride"]
    dy, dx = op.attrs["dilation"]
    acc_t, mul_t = _acc_types(x.type.dtype, op.result.type.dtype)
    packed = np.ascontiguousarray(np.asarray(w.owner.attrs["values"]).reshape(kh, kw, c * mult))
    rq = _row_requant(d, target)
    if rq is None:
        params, epi, after, epi_arrays, epi_names = _row_conv_epilogue(d, target)
        epilogue = ["    for xo in range(OW):", "        ar = acc[xo]", "        for c in range(OC):", "            v = ar[c]",
                    *_indent(epi, 3), *after]
    else:
        params, (epi_arrays, epi_names) = _row_conv_params(d), _requant_arrays(rq)
        epilogue = ["    " + _requant_rows(rq, params, "out, (b * OH + y) * OW * OC, OC, acc, 0, OC, OW, OC, 0")]
    scratch = Scratch(target.schedule.threads)
    channel = "c" if mult == 1 else f"c // {mult}"

    def product(xv: str, wv: str) -> str:
        if x.type.dtype == "i8" and mult == 1 and not op.attrs["weight_zp"]:
            # |x - zp| <= 255 and |w| <= 128: the product fits int16, so LLVM multiplies 16 lanes at a time.
            return f"np.int32(np.int16((np.int16({xv}) - z) * np.int16({wv})))"
        weight = f"({mul_t}({wv}) - zw)" if op.attrs["weight_zp"] else f"{mul_t}({wv})"
        return f"({mul_t}({xv}) - zx) * {weight}"

    taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]
    bias_values = _bias(bias, oc, op.result.type.dtype)
    interior_bias, interior_product = bias_values, product
    if x.type.dtype == "i8" and mult == 1 and not op.attrs["weight_zp"]:
        # Every tap of an interior output is inside the input: sum (x - zp) * w is sum x * w - zp * sum w,
        # the second term folded into the interior's bias (one subtraction fewer per tap, 10%), and
        # |x * w| <= 2^14 still fits int16.
        interior_bias = _folded_bias(bias, packed.reshape(kh * kw, oc).T, op.attrs["input_zp"], "i32")

        def interior_product(xv: str, wv: str) -> str:
            return f"np.int32(np.int16(np.int16({xv}) * np.int16({wv})))"
    interior_sum = " + ".join(interior_product(f"x{ky}[ix + {kx * dx}, {channel}]", f"w{ky}_{kx}[c]")
                              for ky, kx in taps)
    micro = _depthwise_rows(d, target)
    row_arrays = []
    if micro:
        rows, border_pixel = micro
        # The interior by the micro-kernel: taps as offsets into the flattened input from one row's start.
        interior = [f"        {rows}(acc, xa * OC, x, ((b * H + iy0) * W + xa * SX - p3) * OC, SX * OC, taps, wp, "
                    "bias_in, xb - xa, OC, -1, 0)"]
        width = x.type.shape[2]
        row_arrays = [ArrayArg(array=np.array([(ky * dy * width + kx * dx) * c for ky, kx in taps], np.int64))]
        setup = []
        # A border pixel is the same sum with its padded taps reading the zero point (bit t of `valid` clear).
        border = [
            "        ix0 = xo * SX - p3",
            "        valid = 0",
            f"        for ky in range({kh}):",
            f"            for kx in range({kw}):",
            f"                if 0 <= iy0 + ky * {dy} < H and 0 <= ix0 + kx * {dx} < W:",
            f"                    valid |= 1 << (ky * {kw} + kx)",
            f"        {border_pixel}(acc, xo * OC, x, ((b * H + iy0) * W + ix0) * OC, "
            "0, taps, wp, bias_in, 1, OC, valid, p0)",
        ]
    else:
        interior = [*[f"        x{ky} = x[b, iy0 + {ky * dy}]" for ky in range(kh)],
                    "        for xo in range(xa, xb):",
                    "            ix = xo * SX - p3",
                    "            ar = acc[xo]",
                    "            for c in range(OC):",
                    f"                ar[c] = {acc_t}(bias_in[c] + {interior_sum})"]
        setup = ["z = np.int16(p0)", f"zx = {mul_t}(p0)", f"zw = {mul_t}(p1)",
                 *[f"w{ky}_{kx} = wp[{ky}, {kx}]" for ky, kx in taps]]
        border = [
            "        ar = acc[xo]",
            "        for c in range(OC):",
            "            ar[c] = bias[c]",
            f"        for ky in range({kh}):",
            f"            iy = iy0 + ky * {dy}",
            "            ix = xo * SX - p3",
            f"            for kx in range({kw}):",
            f"                if 0 <= iy < H and 0 <= ix + kx * {dx} < W:",
            f"                    xr = x[b, iy, ix + kx * {dx}]",
            "                    wr = wp[ky, kx]",
            "                    for c in range(OC):",
            f"                        ar[c] = {acc_t}(ar[c] + {product(f'xr[{channel}]', 'wr[c]')})",
        ]
    body = [
        "N, OH, OW, OC, H, W, SY, SX = D",
        *setup,
        "for r in prange(N * OH):",
        "    b = r // OH",
        "    y = r % OH",
        f"    {TASK_ID}",
        f"    {scratch.take('acc', (ow, oc), acc_t)}",
        "    iy0 = y * SY - p2",
        "    xa = min(OW, max(0, (p3 + SX - 1) // SX))",
        f"    xb = max(xa, min(OW, (W - 1 + p3 - {(kw - 1) * dx}) // SX + 1))",
        f"    if iy0 < 0 or iy0 + {(kh - 1) * dy} >= H:",
        "        xb = xa",
        "    else:",
        *interior,
        "    for xo in range(OW):",
        "        if xa <= xo < xb:",
        "            continue",
        *border,
        *epilogue,
    ]
    # The micro-kernels read only the folded bias; the loops also read the plain one at the border.
    biases = [ArrayArg(array=interior_bias)] if micro else [ArrayArg(array=bias_values), ArrayArg(array=interior_bias)]
    arrays = [ArrayArg(d.outputs[0], d.outputs[0].type.shape), ArrayArg(x, x.type.shape), ArrayArg(array=packed),
              *biases] + row_arrays + epi_arrays + scratch.arrays()
    signature = ["out", "x", "wp", *(["bias_in"] if micro else ["bias", "bias_in"])] + ["taps"] * bool(micro) \
        + epi_names + scratch.names
    return KernelSpec("depthwise", _module("depthwise", signature, body, params), arrays, _param_values(params),
                      (n, oh, ow, oc, x.type.shape[1], x.type.shape[2], sy, sx))


def _gemm_epilogue_flattens(d: Dispatch) -> bool:
    """Whether the epilogue reads only whole-output-shaped inputs at the same index, per-channel inputs,
    or scalars, and no loop index: then it runs on the [M, N] view of the output."""
    e = d.epilogue
    if e is None:
        return True
    rank = len(e.attrs["domain"])
    for i, (v, access) in enumerate(zip(e.operands, e.attrs["accesses"])):
        if i == d.slot:
            continue
        if access.map is None or access.map.is_identity() and access.pad is None:
            continue  # a TABLE read whole, or the output's own index
        if any(any(row[:rank - 1]) for row in access.map.coeffs) or access.pad is not None:
            return False
    return not any(n.op == "index" for n in S.nodes(e.attrs["bodies"][0]))


def is_gemm(d: Dispatch) -> bool:
    op = d.root
    if op.name != "linalg.conv2d":
        return False
    w = op.operands[1]
    return (w.type.shape[1:3] == (1, 1) and tuple(op.attrs["stride"]) == (1, 1) and tuple(op.attrs["pad"]) == (0,) * 4
            and op.attrs["weight_zp"] == 0 and _gemm_epilogue_flattens(d))


def gemm_kernel(d: Dispatch, target: CpuTarget) -> KernelSpec:
    """1x1 conv as GEMM over [M, K] activations and [N, K] weights. Each output is one int32 dot product
    (a single reduction is what LLVM turns into vpmaddwd; register blocking several makes it widen to
    i64), the row's accumulators go to a buffer, and the epilogue runs as its own loop over channels,
    which vectorizes. Sixteen rows per parallel task amortize the buffer. On x86 hosts with AVX2 int8
    GEMMs use the register-blocked micro-kernels instead (`_gemm_x86`)."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    ic = w.type.shape[3]
    m_rows = n * oh * ow
    acc_t, mul_t = _acc_types(x.type.dtype, op.result.type.dtype)
    weights = np.asarray(w.owner.attrs["values"]).reshape(oc, ic)
    zp = op.attrs["input_zp"]
    mk = microkernel_for(target.arch, target.features) if x.type.dtype == "i8" else None
    folded = _folded_bias(bias, weights, zp + (mk.activation_offset if mk else 0), op.result.type.dtype)
    params: list = []
    e = d.epilogue
    rq = _row_requant(d, target) if mk else None
    if rq is not None:
        return _gemm_x86(d, mk, weights, folded, params, rq, None, None, target)
    split = _split_requant(d, target) if mk and oc <= target.schedule.gemm_task_blocks * BLOCK_N else None
    if split is not None:
        return _gemm_x86(d, mk, weights, folded, params, _flat_epilogue(d, split, params, target), None, None,
                         target)
    if e is not None:
        reads = _GemmReads(e, d.slot, "v", "mm", params, (m_rows, oc))
        renderer = BodyRenderer(reads.read, reads.array, ["mm", "0", "0", "c"], params=params, prefix="t",
                                inputs=reads, requant=target.requant)
        value, table = renderer.render_before_lookup(e.attrs["bodies"][0])
        epilogue = renderer.lines + [f"o[c] = {value}"]
    else:
        epilogue, table = ["o[c] = v"], None
    # Few input channels and many output channels: the dot product would run in LLVM's scalar remainder
    # loop, so accumulate outer products instead, output channels innermost, (x - zp) * w in int16
    # (|x - zp| <= 255, |w| <= 128), which vectorizes 16 lanes wide (measured 1.3-1.4x for K <= 24).
    outer = mk is None and x.type.dtype == "i8" and ic < 32 and oc >= 64
    rows = target.schedule.gemm_task_rows
    if mk:
        return _gemm_x86(d, mk, weights, folded, params, epilogue, table, reads if e is not None else None, target)
    scratch = Scratch(target.schedule.threads)
    if outer:
        params.append((zp, "i64"))
        accumulate = [
            "        for c in range(N):",
            "            row[c] = bias[c]",
            "        for k in range(K):",
            "            xv = np.int16(am[k]) - z",
            "            wk = wp[k]",
            "            for c in range(N):",
            "                row[c] += np.int32(np.int16(xv * np.int16(wk[c])))",
        ]
        weights = weights.T
        folded = _bias(bias, oc, op.result.type.dtype)
    else:
        accumulate = [
            "        for c in range(N):",
            "            wc = wp[c]",
            f"            s = {acc_t}(0)",
            "            for k in range(K):",
            f"                s = {acc_t}(s + {mul_t}(am[k]) * {mul_t}(wc[k]))",
            f"            row[c] = {acc_t}(s + bias[c])",
        ]
    body = [
        "M, N, K = D",
        # Conversions of parameters happen once, outside the parallel loop: inside it they kept LLVM
        # from vectorizing the accumulation (measured 9.1 ms against 2.6 ms).
        *([f"z = np.int16(p{len(params) - 1})"] if outer else []),
        f"for chunk in prange((M + {rows - 1}) // {rows}):",
        f"    {TASK_ID}",
        f"    {scratch.take('row', (oc,), acc_t)}",
        f"    for mm in range(chunk * {rows}, min(M, chunk * {rows} + {rows})):",
        "        am = a[mm]",
        *accumulate,
        "        o = out[mm]",
        "        for c in range(N):",
        "            v = row[c]",
        *_indent(epilogue, 3),
        *_indent(_lookup_pass("o", "0", "N", table, target), 2),
    ]
    template = "gemm_outer" if outer else "gemm"
    return _gemm_spec(d, template, body, params, weights, folded, reads if e is not None else None, scratch)


def _gemm_spec(d: Dispatch, template, body, params, weights, folded, reads, scratch: Scratch,
               requant=None, flat_out: bool = False) -> KernelSpec:
    """The GEMM kernel's spec; `requant` are the arrays and names a `requantize_rows_avx512` epilogue reads
    instead of the epilogue's inputs; `flat_out`: the output as one flat array, not [M, N]."""
    x, w = d.root.operands[:2]
    n, oh, ow, oc = d.root.result.type.shape
    m_rows, ic = n * oh * ow, w.type.shape[3]
    arrays = [ArrayArg(d.outputs[0], (m_rows * oc,) if flat_out else (m_rows, oc)), ArrayArg(x, (m_rows, ic)),
              ArrayArg(array=np.ascontiguousarray(weights)),
              ArrayArg(array=folded)]
    signature = ["out", "a", "wp", "bias"]
    e = d.epilogue
    if requant is not None:
        arrays += requant[0]
        signature += requant[1]
    elif e is not None:
        for i, v in enumerate(e.operands):
            if i == d.slot:
                continue
            access = e.attrs["accesses"][i]
            shape = (m_rows, oc) if access.map is not None and access.map.is_identity() else v.type.shape
            arrays.append(ArrayArg(v, shape))
            signature.append(f"e{i}")
        arrays += [ArrayArg(array=a) for _, a in reads.extra]
        signature += [n for n, _ in reads.extra]
    arrays += scratch.arrays()
    signature += scratch.names
    return KernelSpec(template, _module(template, signature, body, params), arrays, _param_values(params),
                      (m_rows, oc, ic))


def _gemm_x86(d: Dispatch, mk: MicroKernel, weights, folded, params, epilogue, table, reads,
              target: CpuTarget) -> KernelSpec:
    """The GEMM on x86 from the broadcast micro-kernels of kernels/x86_microkernels.py. Each of the
    schedule's workers (one per thread) takes an equal contiguous share of the rows, or of the channel
    groups where rows are few: equal, so that no thread waits at the end of the dispatch (tasks of 16 rows
    dealt to threads split MobileNetV2's 49-row GEMMs 32:17), and contiguous, so that a thread reads the
    rows the previous dispatch wrote into its own cache (tasks claimed one at a time from an atomic
    counter made the large GEMMs 1.2-2.2x slower at 2 threads). A worker takes R rows at a time (the
    schedule's, 16), copied once into a buffer in the form the micro-kernel reads (int16 for AVX2, uint8
    plus 128 for VNNI; K padded to the micro-kernel's group with zeros), then per group of at most B blocks
    of 16 output channels (8; the groups made equal), blocks of rows by 16 channels are written with their
    bias into a row buffer, and the epilogue runs over the buffer as its own loop, which vectorizes. `epilogue` is
    its statements, or a RowRequant run by `requantize_rows_avx512`; with AVX-512 the copy is
    `offset_rows_avx512`."""
    r, blocks = target.schedule.gemm_task_rows, target.schedule.gemm_task_blocks
    scratch = Scratch(target.schedule.threads)
    kp = mk.pad(d.root.operands[1].type.shape[3])
    if mk.activation_offset and AVX512_FEATURES <= target.features:
        copy = ["    offset_rows_avx512(ak, 0, KP, a, m0 * K, K, rows, K, KP)"]
    else:
        copy = [
            "    for i in range(rows):",
            "        am = a[m0 + i]",
            "        ai = ak[i]",
            "        for k in range(K):",
            f"            ai[k] = {_stored_activation('am[k]', mk)}",
            "        for k in range(K, KP):",
            "            ai[k] = 0  # padding to whole groups of K, which meet zero weights",
        ]
    if isinstance(epilogue, RowRequant):
        rq, extra = epilogue, _requant_arrays(epilogue)
        finish = ["    " + _requant_rows(rq, params, f"out, m0 * N + c0, N, row, 0, {blocks * BLOCK_N}, rows, c1 - c0, c0")]
    elif isinstance(epilogue, FlatEpilogue):
        # One task holds whole rows (every channel): the requantized rows go to a buffer of their own (the
        # output may share its bytes with the residual input, read below), and the rest of the epilogue
        # runs over the task's rows as one flat loop.
        rq_arrays, rq_names = _requant_arrays(epilogue.rq)
        extra = (rq_arrays + epilogue.arrays, rq_names + epilogue.names)
        n = d.root.result.type.shape[3]
        finish = [f"    {scratch.take('y', (r * n,), 'np.int8')}",
                  "    " + _requant_rows(epilogue.rq, params,
                                         f"y, 0, N, row, 0, {blocks * BLOCK_N}, rows, c1 - c0, c0"),
                  "    base = max(m0 * N, 0)",
                  "    for k in range(rows * N):",
                  *_indent(epilogue.lines, 2),
                  f"        out[base + k] = {epilogue.value}"]
    else:
        extra = None
        finish = [
            "    for i in range(rows):",
            "        mm = m0 + i",
            "        o = out[mm]",
            "        rj = row[i]",
            "        for j in range(c1 - c0):",
            "            c = c0 + j",
            "            v = rj[j]",
            *_indent(epilogue, 3),
            # The gather pass in the epilogue loop's form: over c0 + j, LLVM sees the index cannot be negative
            # (over range(c0, c1) the pass took 2.8x longer on EfficientNet's 112x112x96 expansion).
            *_indent(_lookup_pass("o", "c0", "c1 - c0", table, target), 2),
        ]
    workers = scratch.threads
    body = [
        "M, N, K = D",
        f"KP = {mk.pad_source('K')}",
        f"NB = (N + {BLOCK_N - 1}) // {BLOCK_N}",
        f"GROUPS = (NB + {blocks - 1}) // {blocks}",
        "PER_GROUP = (NB + GROUPS - 1) // GROUPS",
        # Each worker takes a contiguous share of the rows, or where rows are few, of the channel groups.
        f"SPLIT_ROWS = M >= {workers * r} or GROUPS < {workers}",
        f"for tid in prange({workers}):",
        "    lo, hi, g0, g1 = 0, M, 0, GROUPS",
        "    if SPLIT_ROWS:",
        f"        lo, hi = tid * M // {workers}, (tid + 1) * M // {workers}",
        "    else:",
        f"        g0, g1 = tid * GROUPS // {workers}, (tid + 1) * GROUPS // {workers}",
        f"    {scratch.take('ak', (r, kp), mk.activation_dtype)}",
        f"    {scratch.take('row', (r, blocks * BLOCK_N), 'np.int32')}",
        f"    for m0 in range(lo, hi, {r}):",
        f"        rows = min({r}, hi - m0)",
        *_indent(copy, 1),
        "        for group in range(g0, g1):",
        "            nb0 = group * PER_GROUP",
        "            nb1 = min(NB, nb0 + PER_GROUP)",
        "            for nb in range(nb0, nb1):",
        f"                w0 = nb * KP * {BLOCK_N}",
        f"                r0 = (nb - nb0) * {BLOCK_N}",
        *_indent(mk.calls("ak", "i", "rows", "KP", "row", f"i * {blocks * BLOCK_N} + r0", f"{blocks * BLOCK_N}"),
                 4),
        # Numba wraps negative indices; LLVM must see that c0 + j cannot be negative, or the epilogue's
        # loads and stores become gathers and scatters (measured 4.4x on MobileNetV2's 112x112x96
        # expansion): the worker index comes from the call's share, of unknown sign.
        f"            c0 = max(nb0 * {BLOCK_N}, 0)",
        f"            c1 = min(N, nb1 * {BLOCK_N})",
        *_indent(finish, 2),
    ]
    return _gemm_spec(d, f"gemm_{mk.isa}", body, params, mk.pack_weights(weights), pack_bias(folded), reads,
                      scratch, extra, flat_out=isinstance(epilogue, FlatEpilogue))


class _GemmReads(_Accesses):
    """Epilogue reads on the [M, N] view: identity-mapped inputs at [m, c], the rest at their map with
    only the channel loop (c) and constant offsets."""

    def __init__(self, e, slot, acc, m, params, flat_shape):
        super().__init__(e, "e", [], params, skip=slot, acc=acc)
        self.m, self.flat_shape = m, flat_shape

    def derived(self, i: int, array: np.ndarray) -> str:
        if self.op.attrs["accesses"][i].map.is_identity():
            array = array.reshape(self.flat_shape)
        return super().derived(i, array)

    def read(self, i, expr, name=None):
        if i == self.skip:
            return self.acc
        arr = name or self.array(i)
        access = self.op.attrs["accesses"][i]
        if access.map.is_identity():
            return f"{arr}[{self.m}, c]"
        rank = len(self.op.attrs["domain"])
        rows = []
        for coeffs, offset in zip(access.map.coeffs, access.map.offsets):
            c = coeffs[rank - 1]
            term = "c" if c == 1 else (f"{c} * c" if c else "")
            rows.append(" + ".join(t for t in (term, str(offset) if offset else "") if t) or "0")
        return f"{arr}[{', '.join(rows)}]"


def kernel_for(d: Dispatch, target: CpuTarget) -> KernelSpec:
    """The kernel of one dispatch for `target`, run as one share where the dispatch is small
    (SERIAL_WORK)."""
    spec = _template_kernel(d, target)
    if int(np.prod(generalize(d.root).attrs["domain"], dtype=np.int64)) < SERIAL_WORK:
        spec = replace(spec, split=False)
    return spec


def _template_kernel(d: Dispatch, target: CpuTarget) -> KernelSpec:
    """The conv templates pack their weights and bias at compile time; a conv whose weights or bias are
    runtime values (graph inputs, results of other ops) runs the generic loop nest, which reads them in
    their TOSA layout."""
    root = d.root
    packable = root.name in ("linalg.conv2d", "linalg.depthwise_conv2d") and all(map(_is_const, root.operands[1:]))
    if packable and root.name == "linalg.conv2d":
        if is_gemm(d):
            return gemm_kernel(d, target)
        x, w = root.operands[:2]
        if x.type.dtype == "i8" and not root.attrs["weight_zp"] \
                and (microkernel_for(target.arch, target.features) or w.type.size // w.type.shape[0] >= 64):
            return im2col_conv_kernel(d, target)
        return conv_kernel(d, target)
    if packable:
        return depthwise_kernel(d, target)
    return generic_kernel(d, target)

