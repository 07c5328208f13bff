"""CPU code generation: each dispatch becomes the source of one Numba `@njit(parallel=True)` kernel.

A kernel is a template (its loop nest and schedule) plus the scalar bodies rendered into it by
`kernels/render.py`. Templates, chosen from the dispatch's root op:

- `gemm`: a 1x1, stride-1, unpadded conv (and so every fully connected layer) with weight zero point 0, as
  C[m, n] = A[m, :] . W[n, :] over int8 (or int16) activations; the input zero point is folded into the
  bias at compile time; rows are split over threads, four rows share each weight load.
- `conv`: any other conv2d, directly, one output row per parallel iteration with its accumulators in a
  row buffer, output channels innermost (vectorized); padded taps are skipped, the zero points subtracted.
- `depthwise`: depthwise conv the same way, channels innermost.
- `generic`: every other structured op from its indexing maps and body: parallel loops collapsed into one
  `prange`, reduction loops innermost.

The dispatch's epilogue is rendered where the accumulator is final, so requantization, activation and
residual additions run in registers. Loop bounds and constants are runtime arguments: a kernel depends
on the structure of its bodies, its maps' coefficients, kernel size and stride, not on tensor shapes.
Accumulators are int32 (int64 for 16x8 layers, whose TOSA accumulator is i48).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from tosaic.ir import Value
from tosaic.kernels.render import PRELUDE, BodyRenderer, map_source
from tosaic.lowering import scalar as S
from tosaic.lowering.fusion import Dispatch
from tosaic.lowering.structured import PARALLEL, generalize

HEADER = "import numpy as np\nimport numba\nfrom numba import prange\n"
DECORATOR = "@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)"


@dataclass
class ArrayArg:
    """A kernel array argument: an activation `value` viewed with `shape`, or a packed constant `array`."""

    value: Value | None = None
    shape: tuple[int, ...] | None = None
    array: np.ndarray | None = None


@dataclass
class KernelSpec:
    """Everything needed to call one dispatch's kernel: the module source, its template name, the array
    arguments in order, and the runtime scalars (P: parameters, D: loop bounds)."""

    template: str
    source: str
    arrays: list[ArrayArg]
    params: tuple
    dims: tuple

    @property
    def key(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:20]


def _module(template: str, signature: list[str], body: list[str], params) -> str:
    unpack = [f"    p{i} = P[{i}]" for i in range(len(params))]
    lines = [HEADER, PRELUDE, "", f"# template: {template}", DECORATOR,
             f"def kernel({', '.join(signature + ['P', 'D'])}):", *unpack, *("    " + line for line in body)]
    return "\n".join(lines) + "\n"


def _param_values(params) -> tuple:
    values = []
    for value, dtype in params:
        if S.is_float(dtype):
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

    def array(self, i: int) -> str:
        return f"{self.prefix}{i}"

    def read(self, i: int, e: S.Expr) -> str:
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
        arr = self.array(i)
        text = f"{arr}[{', '.join(rows)}]"
        if access.pad is None:
            return text
        self.params.append((access.pad, e.dtype))
        inside = " and ".join(f"0 <= {r} < {arr}.shape[{k}]" for k, r in enumerate(rows))
        return f"{text} if {inside} else p{len(self.params) - 1}"


def _epilogue(d: Dispatch, acc: str, index, params, out: str, store_index: str, prefix: str) -> tuple[list[str], list]:
    """Statements computing the epilogue of `d` on accumulator `acc` and storing it at `out[store_index]`;
    and the epilogue's array arguments (its inputs other than the accumulator) in order."""
    if d.epilogue is None:
        return [f"{out}[{store_index}] = {acc}"], []
    e = d.epilogue
    reads = _Accesses(e, prefix, index, params, skip=d.slot, acc=acc)
    r = BodyRenderer(reads.read, reads.array, index, params=params, prefix=f"{prefix}t")
    (body,) = e.attrs["bodies"]
    value = r.render(body)
    arrays = [ArrayArg(v, v.type.shape) for i, v in enumerate(e.operands) if i != d.slot]
    return r.lines + [f"{out}[{store_index}] = {value}"], arrays


def _epilogue_names(d: Dispatch) -> list[str]:
    e = d.epilogue
    return [] if e is None else [f"e{i}" for i in range(len(e.operands)) if i != d.slot]


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


def generic_kernel(d: Dispatch) -> KernelSpec:
    op = generalize(d.root)
    domain, iterators = op.attrs["domain"], op.attrs["iterators"]
    rank = len(domain)
    par = [j for j in range(rank) if iterators[j] == PARALLEL]
    red = [j for j in range(rank) if iterators[j] != PARALLEL]
    assert par == list(range(len(par))), "parallel loops come first in every lowering"
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
        # Fresh names per step: Numba refuses a reassigned alias of the prange index.
        unravel, rest = [], "f"
        for k, j in enumerate(reversed(outer)):
            if j == outer[0]:
                unravel.append(f"d{j} = {rest}")
            else:
                unravel += [f"d{j} = {rest} % D{j}", f"g{k} = {rest} // D{j}"]
                rest = f"g{k}"
        body += _indent(unravel, 1)
        depth = 1
    if inner:
        body += _indent([f"for d{inner[0]} in {'range' if outer else 'prange'}(D{inner[0]}):"], depth)
        depth += 1
    else:
        body += _indent(["for f in prange(1):"], depth)
        depth += 1
    lines: list[str] = []
    if red:
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
        r = BodyRenderer(reads.read, reads.array, index, params=params, prefix="t")
        values = [r.render(b) for b in op.attrs["bodies"]]
        lines += r.lines + [f"{a} = {v}" for a, v in zip(accs, values)]
    par_index = ", ".join(f"d{j}" for j in par) or "0"
    arrays_epi: list = []
    if d.epilogue is not None:
        out_index = _aligned_index(op.results[0].type.shape if op is d.root else d.root.result.type.shape,
                                   [f"d{j}" for j in par], [domain[j] for j in par])
        epi, arrays_epi = _epilogue(d, accs[0], out_index, params, "o0", par_index, "e")
        lines += epi
    else:
        lines += [f"o{i}[{par_index}] = {a}" for i, a in enumerate(accs)]
    body += _indent(lines, depth)
    shape = tuple(domain[j] for j in par) or (1,)
    outputs = [ArrayArg(v, shape) for v in d.outputs]
    inputs = [ArrayArg(v, v.type.shape) for v in op.operands]
    signature = [f"o{i}" for i in range(len(outputs))] + [f"i{i}" for i in range(len(inputs))] + _epilogue_names(d)
    return KernelSpec("generic", _module("generic", signature, body, params), outputs + inputs + arrays_epi,
                      _param_values(params), tuple(int(n) for n in domain))


# ------------------------------------------------------------------------------------------ templates


def _acc_types(x_dtype: str, acc_dtype: str):
    wide = acc_dtype == "i48"
    return ("np.int64" if wide else "np.int32"), ("np.int32" if x_dtype == "i16" else "np.int16")


def conv_kernel(d: Dispatch) -> KernelSpec:
    """Direct conv2d: per output row, accumulate every in-bounds tap into a row buffer [OW, OC]."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    _, kh, kw, ic = w.type.shape
    sy, sx = op.attrs["stride"]
    dy, dx = op.attrs["dilation"]
    top, _, left, _ = op.attrs["pad"]
    acc_t, mul_t = _acc_types(x.type.dtype, op.result.type.dtype)
    packed = np.ascontiguousarray(np.transpose(w.owner.attrs["values"], (1, 2, 3, 0)))  # [KH, KW, IC, OC]
    params: list = [(op.attrs["input_zp"], "i64"), (op.attrs["weight_zp"], "i64"), (top, "i64"), (left, "i64")]
    index = ["b", "y", "xo", "c"]
    epi, epi_arrays = _epilogue(d, "v", index, params, "out", "b, y, xo, c", "e")
    body = [
        "N, OH, OW, OC, H, W, IC = D",
        "for r in prange(N * OH):",
        "    b = r // OH",
        "    y = r % OH",
        f"    acc = np.empty((OW, OC), dtype={acc_t})",
        "    for xo in range(OW):",
        "        for c in range(OC):",
        "            acc[xo, c] = bias[c]",
        f"    for ky in range({kh}):",
        f"        iy = y * {sy} + ky * {dy} - p2",
        "        if iy < 0 or iy >= H:",
        "            continue",
        f"        for kx in range({kw}):",
        "            for xo in range(OW):",
        f"                ix = xo * {sx} + kx * {dx} - p3",
        "                if ix < 0 or ix >= W:",
        "                    continue",
        "                for k in range(IC):",
        f"                    xv = {mul_t}(x[b, iy, ix, k] - p0)",
        "                    for c in range(OC):",
        f"                        acc[xo, c] = {acc_t}(acc[xo, c] + xv * {mul_t}(wp[ky, kx, k, c] - p1))",
        "    for xo in range(OW):",
        "        for c in range(OC):",
        "            v = acc[xo, c]",
        *_indent(epi, 3),
    ]
    if op.attrs["weight_zp"] == 0:
        body = [line.replace(f"{mul_t}(wp[ky, kx, k, c] - p1)", f"{mul_t}(wp[ky, kx, k, c])") for line in body]
    arrays = [ArrayArg(d.outputs[0], d.outputs[0].type.shape), ArrayArg(x, x.type.shape), ArrayArg(array=packed),
              ArrayArg(array=_bias(bias, oc, op.result.type.dtype))] + epi_arrays
    signature = ["out", "x", "wp", "bias"] + _epilogue_names(d)
    return KernelSpec("conv", _module("conv", signature, body, params), arrays, _param_values(params),
                      (n, oh, ow, oc, x.type.shape[1], x.type.shape[2], ic))


def _bias(bias: Value, channels: int, acc_dtype: str) -> np.ndarray:
    values = np.asarray(bias.owner.attrs["values"]).astype(np.int64).reshape(-1)
    values = np.broadcast_to(values, (channels,)) if values.size == 1 else values
    return np.ascontiguousarray(values.astype(np.int64 if acc_dtype == "i48" else np.int32))


def depthwise_kernel(d: Dispatch) -> KernelSpec:
    """Depthwise conv2d: per output row, taps outermost, channels innermost (vectorized)."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    kh, kw, c, mult = w.type.shape
    sy, sx = op.attrs["stride"]
    dy, dx = op.attrs["dilation"]
    top, _, left, _ = op.attrs["pad"]
    acc_t, mul_t = _acc_types(x.type.dtype, op.result.type.dtype)
    packed = np.ascontiguousarray(np.asarray(w.owner.attrs["values"]).reshape(kh, kw, c * mult))
    params: list = [(op.attrs["input_zp"], "i64"), (op.attrs["weight_zp"], "i64"), (top, "i64"), (left, "i64")]
    index = ["b", "y", "xo", "c"]
    epi, epi_arrays = _epilogue(d, "v", index, params, "out", "b, y, xo, c", "e")
    weight = f"{mul_t}(wp[ky, kx, c] - p1)" if op.attrs["weight_zp"] else f"{mul_t}(wp[ky, kx, c])"
    if mult == 1:
        tap = [
            "                for c in range(OC):",
            f"                    acc[xo, c] = {acc_t}(acc[xo, c] + {mul_t}(x[b, iy, ix, c] - p0) * {weight})",
        ]
    else:
        tap = [
            "                for c in range(OC):",
            f"                    acc[xo, c] = {acc_t}(acc[xo, c] + {mul_t}(x[b, iy, ix, c // {mult}] - p0) * {weight})",
        ]
    body = [
        "N, OH, OW, OC, H, W = D",
        "for r in prange(N * OH):",
        "    b = r // OH",
        "    y = r % OH",
        f"    acc = np.empty((OW, OC), dtype={acc_t})",
        "    for xo in range(OW):",
        "        for c in range(OC):",
        "            acc[xo, c] = bias[c]",
        f"    for ky in range({kh}):",
        f"        iy = y * {sy} + ky * {dy} - p2",
        "        if iy < 0 or iy >= H:",
        "            continue",
        f"        for kx in range({kw}):",
        "            for xo in range(OW):",
        f"                ix = xo * {sx} + kx * {dx} - p3",
        "                if ix < 0 or ix >= W:",
        "                    continue",
        *tap,
        "    for xo in range(OW):",
        "        for c in range(OC):",
        "            v = acc[xo, c]",
        *_indent(epi, 3),
    ]
    arrays = [ArrayArg(d.outputs[0], d.outputs[0].type.shape), ArrayArg(x, x.type.shape), ArrayArg(array=packed),
              ArrayArg(array=_bias(bias, oc, op.result.type.dtype))] + epi_arrays
    signature = ["out", "x", "wp", "bias"] + _epilogue_names(d)
    return KernelSpec("depthwise", _module("depthwise", signature, body, params), arrays, _param_values(params),
                      (n, oh, ow, oc, x.type.shape[1], x.type.shape[2]))


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
        if access.map is None:
            return False
        if access.map.is_identity() and access.pad is None:
            continue
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


def gemm_kernel(d: Dispatch) -> KernelSpec:
    """1x1 conv as GEMM over [M, K] activations and [N, K] weights; four rows per weight load."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    ic = w.type.shape[3]
    m_rows = n * oh * ow
    acc_t, mul_t = _acc_types(x.type.dtype, op.result.type.dtype)
    weights = np.asarray(w.owner.attrs["values"]).reshape(oc, ic)
    zp = op.attrs["input_zp"]
    folded = _bias(bias, oc, op.result.type.dtype).astype(np.int64) - zp * weights.astype(np.int64).sum(axis=1)
    folded = folded.astype(np.int64 if op.result.type.dtype == "i48" else np.int32)
    params: list = []
    flat = ["m", "0", "0", "c"]
    e = d.epilogue
    rows = {}
    lines = []
    for r in range(4):
        if e is not None:
            reads = _GemmReads(e, d.slot, f"v{r}", f"m{r}", params)
            renderer = BodyRenderer(reads.read, reads.array, flat, params=params, prefix=f"r{r}t")
            value = renderer.render(e.attrs["bodies"][0])
            rows[r] = renderer.lines + [f"out[m{r}, c] = {value}"]
        else:
            rows[r] = [f"out[m{r}, c] = v{r}"]
    k_loop = [
        "for k in range(K):",
        f"    wv = {mul_t}(wp[c, k])",
        *[f"    s{r} = {acc_t}(s{r} + {mul_t}(a[m{r}, k]) * wv)" for r in range(4)],
    ]
    body = [
        "M, N, K = D",
        "for blk in prange((M + 3) // 4):",
        "    m0 = blk * 4",
        "    if m0 + 4 <= M:",
        "        m1, m2, m3 = m0 + 1, m0 + 2, m0 + 3",
        "        for c in range(N):",
        *[f"            s{r} = {acc_t}(0)" for r in range(4)],
        *_indent(k_loop, 3),
        *[f"            v{r} = {acc_t}(s{r} + bias[c])" for r in range(4)],
        *[line for r in range(4) for line in _indent(rows[r], 3)],
        "    else:",
        "        for m0 in range(blk * 4, M):",
        "            for c in range(N):",
        f"                s0 = {acc_t}(0)",
        "                for k in range(K):",
        f"                    s0 = {acc_t}(s0 + {mul_t}(a[m0, k]) * {mul_t}(wp[c, k]))",
        f"                v0 = {acc_t}(s0 + bias[c])",
        *_indent(rows[0], 4),
    ]
    arrays = [ArrayArg(d.outputs[0], (m_rows, oc)), ArrayArg(x, (m_rows, ic)), ArrayArg(array=np.ascontiguousarray(weights)),
              ArrayArg(array=folded)]
    signature = ["out", "a", "wp", "bias"]
    if e is not None:
        for i, v in enumerate(e.operands):
            if i == d.slot:
                continue
            access = e.attrs["accesses"][i]
            shape = (m_rows, oc) if access.map.is_identity() else v.type.shape
            arrays.append(ArrayArg(v, shape))
            signature.append(f"e{i}")
    return KernelSpec("gemm", _module("gemm", signature, body, params), arrays, _param_values(params),
                      (m_rows, oc, ic))


class _GemmReads:
    """Epilogue reads on the [M, N] view: identity-mapped inputs at [m, c], the rest at their map with
    only the channel loop (c) and constant offsets."""

    def __init__(self, e, slot, acc, m, params):
        self.e, self.slot, self.acc, self.m, self.params = e, slot, acc, m, params

    def array(self, i):
        return f"e{i}"

    def read(self, i, expr):
        if i == self.slot:
            return self.acc
        access = self.e.attrs["accesses"][i]
        if access.map.is_identity():
            return f"e{i}[{self.m}, c]"
        rank = len(self.e.attrs["domain"])
        rows = []
        for coeffs, offset in zip(access.map.coeffs, access.map.offsets):
            c = coeffs[rank - 1]
            term = "c" if c == 1 else (f"{c} * c" if c else "")
            rows.append(" + ".join(t for t in (term, str(offset) if offset else "") if t) or "0")
        return f"e{i}[{', '.join(rows)}]"


def kernel_for(d: Dispatch) -> KernelSpec:
    """The kernel of one dispatch on the host CPU."""
    root = d.root
    if root.name == "linalg.conv2d" and root.operands[1].owner.name == "linalg.const" \
            and root.operands[2].owner.name == "linalg.const":
        return gemm_kernel(d) if is_gemm(d) else conv_kernel(d)
    if root.name == "linalg.depthwise_conv2d" and root.operands[1].owner.name == "linalg.const" \
            and root.operands[2].owner.name == "linalg.const":
        return depthwise_kernel(d)
    return generic_kernel(d)

