"""CUDA kernel generation: one `@cuda.jit` kernel per dispatch, from the same structured ops and scalar
bodies as the CPU templates (kernels/cpu.py), for a `CudaTarget`.

Three templates, each ending in the dispatch's fused epilogue (bias, RESCALE, CLAMP, TABLE, residual ADD,
SiLU, ...) applied before the single store:

- `cuda_gemm_dp4a`: an int8 convolution (a fully connected layer is a 1x1 one) over enough pixels, as a GEMM tiled in thread blocks, patches and weights staged through
  shared memory as words of four channels, `dp4a` products.
- `cuda_conv_dp4a`: such a convolution over fewer pixels than a tile (a fully connected layer of a few
  rows), one thread per output, `dp4a` over each tap's channels.
- `cuda_matmul_tiled_dp4a`: a matmul of two int8 activations (attention's QK^T and its product with V)
  of a tile of outputs or more and a depth in whole words, tiled the same way, B's columns packed into
  words as they are staged; `cuda_matmul_dp4a` any other, one thread per output.
- `cuda_generic`: one thread per point of the dispatch's parallel loops (the output elements of its root
  op; channels fastest, so neighbouring threads touch neighbouring bytes), the reduction loops inside the
  thread. Every dispatch kind (depthwise, pooling, matmul of activations, 16x8, reductions, elementwise)
  has this form, so every model that runs on the CPU runs here.

Requantization is the `int64` strategy (kernels/requant.py): `(v * m + r) >> s` with a 32x32->64 bit
multiply (`mul.wide.s32`), no float64. The scalar helpers of the renderer (`render.PRELUDE`) become device
functions. A kernel module is standalone (numpy, numba-cuda): it runs under Numba's CUDA simulator as it
is, and `cuda_engine.emit_ptx` compiles it for a compute capability without a GPU.
"""

from __future__ import annotations

import numpy as np

from tosaic.kernels.cpu import (ArrayArg, KernelSpec, _Accesses, _indent, _operand, _param_values, epilogue_index,
                                loop_dims, unravel)
from tosaic.kernels.render import PRELUDE, BodyRenderer
from tosaic.kernels.target import CudaTarget
from tosaic.lowering.fusion import Dispatch
from tosaic.lowering.structured import constant_values, generalize

HEADER = "import numpy as np\nfrom numba import cuda\n"
# Inlined: a call of a device function compiled apart asks the driver for the GPU, which PTX emission
# without a GPU has not.
DEVICE_PRELUDE = PRELUDE.replace("@numba.njit(cache=True, nogil=True)", "@cuda.jit(device=True, inline=\"always\")")
DECORATOR = "@cuda.jit"
BLOCK = 128   # threads per block of the generic template
WIDE = "np.int64({})"   # integer loads, widened as Numba's arithmetic widens them (`_Reads`)

# `dp4a(a, b, c)`: c plus the four products of the signed bytes of int32 words a and b. On the GPU the PTX
# instruction `dp4a.s32.s32` (inline assembly: numba-cuda has no dp4a of its own); the simulator cannot
# run inline PTX, so there the same sum is computed from the bytes.
DP4A = '''
from llvmlite import ir as _ir
from numba import types as _types
from numba.cuda.core import config as _config
from numba.extending import intrinsic as _intrinsic


@_intrinsic
def _dp4a_ptx(typingctx, a, b, c):
    def codegen(context, builder, signature, args):
        i32 = _ir.IntType(32)
        words = [context.cast(builder, v, t, _types.int32) for v, t in zip(args, signature.args)]
        asm = _ir.InlineAsm(_ir.FunctionType(i32, [i32, i32, i32]), "dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r")
        return builder.call(asm, words)
    return _types.int32(a, b, c), codegen


@cuda.jit(device=True, inline="always")
def _dp4a_bytes(a, b, c):
    a, b, s = np.int64(a), np.int64(b), np.int64(c)
    for k in range(4):
        s += ((((a >> (8 * k)) & 255) ^ 128) - 128) * ((((b >> (8 * k)) & 255) ^ 128) - 128)
    return np.int32(s)


dp4a = _dp4a_bytes if _config.ENABLE_CUDASIM else _dp4a_ptx
'''


class _Reads(_Accesses):
    """Reads through the indexing maps, integer elements widened to int64 as Numba's arithmetic widens
    them: the simulator computes with numpy scalars, whose int8 or int32 arithmetic would wrap or raise
    where the compiled kernel computes in int64."""

    def read(self, i, e, name=None):
        text = super().read(i, e, name)
        if i == self.skip:
            return text
        if name is None:
            integer = self.op.operands[i].type.dtype not in ("i1",) and self.op.operands[i].type.dtype.startswith("i")
        else:
            integer = np.issubdtype(dict(self.extra)[name].dtype, np.signedinteger)
        return WIDE.format(text) if integer else text


def _flat_launch(threads: int) -> dict:
    """One thread per item, BLOCK threads a block: the grid and block a step records."""
    return {"grid": [max(1, -(-threads // BLOCK)), 1, 1], "block": [BLOCK, 1, 1]}


def _renderer(reads: _Reads, index, params, prefix: str, **kw) -> BodyRenderer:
    return BodyRenderer(reads.read, reads.array, index, params=params, prefix=prefix, requant="int64",
                        int_load=WIDE, **kw)


def _module(template: str, signature: list[str], body: list[str], params) -> str:
    unpack = [f"    p{i} = P[{i}]" for i in range(len(params))]
    extra = [DP4A] if any("dp4a(" in line for line in body) else []
    lines = [HEADER, DEVICE_PRELUDE, *extra, "", f"# template: {template}", DECORATOR,
             f"def kernel({', '.join(signature + ['P', 'D'])}):", *unpack, *("    " + line for line in body)]
    return "\n".join(lines) + "\n"


def _epilogue(d: Dispatch, acc: str, index: list[str], params, store: str) -> tuple[list[str], list, list]:
    """Statements applying the epilogue of `d` to `acc` and storing it at `o0[store]`; its array arguments and
    their names."""
    e = d.epilogue
    reads = _Reads(e, "e", index, params, skip=d.slot, acc=acc)
    r = _renderer(reads, index, params, "et", inputs=reads)
    (body,) = e.attrs["bodies"]
    value = r.render(body)
    arrays = [_operand(v) for i, v in enumerate(e.operands) if i != d.slot]
    names = [f"e{i}" for i in range(len(e.operands)) if i != d.slot]
    arrays += [ArrayArg(array=a) for _, a in reads.extra]
    names += [n for n, _ in reads.extra]
    return r.lines + [f"o0[{store}] = {value}"], arrays, names


def generic_kernel(d: Dispatch, target: CudaTarget) -> KernelSpec:
    """The dispatch as one thread per parallel point: the flat thread index unravelled into the parallel
    loop indices (the last fastest, so neighbouring threads touch neighbouring channels), the reduction
    loops inside, the epilogue before the store."""
    op = generalize(d.root)
    domain = op.attrs["domain"]
    rank = len(domain)
    par, red = loop_dims(op)
    index = [f"d{j}" for j in range(rank)]
    params: list = []
    reads = _Reads(op, "i", index, params)
    accs = [f"a{i}" for i in range(len(op.results))]
    total = int(np.prod([domain[j] for j in par], dtype=np.int64)) if par else 1
    body = [f"D{j} = D[{j}]" for j in range(rank)]
    body += ["f = cuda.grid(1)", f"if f < {' * '.join(f'D{j}' for j in par) or '1'}:"]
    lines = unravel("f", par)
    if red:
        init_r = _renderer(reads, index, params, "s")
        inits = [init_r.render(init) for init in op.attrs["inits"]]
        lines += init_r.lines + [f"{a} = {v}" for a, v in zip(accs, inits)]
        step = _renderer(reads, index, params, "t", outs=accs)
        values = [step.render(b) for b in op.attrs["bodies"]]
        loop = ["    " * k + f"for d{j} in range(D{j}):" for k, j in enumerate(red)]
        lines += loop + _indent(step.lines + [f"{', '.join(accs)} = {', '.join(values)}"], len(red))
    else:
        r = _renderer(reads, index, params, "t", inputs=reads)
        values = [r.render(b) for b in op.attrs["bodies"]]
        lines += r.lines + [f"{a} = {v}" for a, v in zip(accs, values)]
    par_index = ", ".join(f"d{j}" for j in par) or "0"
    arrays_epi, epi_names = [], []
    if d.epilogue is not None:
        epi, arrays_epi, epi_names = _epilogue(d, accs[0], epilogue_index(d, op, par), params, par_index)
    else:
        epi = [f"o{i}[{par_index}] = {a}" for i, a in enumerate(accs)]
    body += _indent(lines + epi, 1)
    shape = tuple(domain[j] for j in par) or (1,)
    outputs = [ArrayArg(v, shape) for v in d.outputs]
    inputs = [_operand(v) for v in op.operands] + [ArrayArg(array=a) for _, a in reads.extra]
    signature = [f"o{i}" for i in range(len(outputs))] + [f"i{i}" for i in range(len(op.operands))] \
        + [n for n, _ in reads.extra] + epi_names
    return KernelSpec("cuda_generic", _module("cuda_generic", signature, body, params), outputs + inputs + arrays_epi,
                      _param_values(params), tuple(int(n) for n in domain), launch=_flat_launch(total))


def _int8_conv(d: Dispatch) -> bool:
    """An int8 convolution (or fully connected layer, a 1x1 one) with constant symmetric weights and bias
    and an int32 accumulator."""
    op = d.root
    if op.name != "linalg.conv2d":
        return False
    x, w, bias = op.operands
    return (x.type.dtype == "i8" and w.type.dtype == "i8" and op.result.type.dtype == "i32"
            and constant_values(w) is not None and constant_values(bias) is not None
            and op.attrs["weight_zp"] == 0)


def _dp4a_applies(d: Dispatch) -> bool:
    """An int8 convolution whose input channels come in whole words of four."""
    return _int8_conv(d) and d.root.operands[0].type.shape[3] % 4 == 0


def conv_dp4a_kernel(d: Dispatch, target: CudaTarget) -> KernelSpec:
    """An int8 convolution, one thread per output (n, oh, ow, oc), oc fastest: for each tap inside the
    input, the products over input channels four at a time with `dp4a` on int32 words of activations and
    of weights packed [OC, KH, KW, IC/4]; the input zero point comes off each tap's sum as zp times the
    tap's weight sum (padded taps, which TOSA fills with the zero point, contribute nothing). The sum is
    kept in int64 and wrapped to int32 once: TOSA's int32 accumulator wraps at every step, and addition
    modulo 2^32 gives the same bits in any order."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    _, h, wd, ic = x.type.shape
    _, kh, kw, _ = w.type.shape
    weights = np.ascontiguousarray(constant_values(w), dtype=np.int8)
    words = np.ascontiguousarray(weights).view(np.int32)
    wsum = weights.astype(np.int32).sum(axis=3)
    params: list = [(op.attrs["input_zp"], "i64")]
    sy, sx = op.attrs["stride"]
    dy, dx = op.attrs["dilation"]
    top, _, left, _ = op.attrs["pad"]
    body = [
        "N, OH, OW, OC, KH, KW, ICW, H, W, SY, SX, DY, DX, TOP, LEFT = D",
        "f = cuda.grid(1)",
        "if f < N * OH * OW * OC:",
        "    oc = f % OC",
        "    g = f // OC",
        "    ow = g % OW",
        "    g = g // OW",
        "    oh = g % OH",
        "    n = g // OH",
        "    acc = np.int64(bias[oc])",
        "    for kh in range(KH):",
        "        ih = oh * SY + kh * DY - TOP",
        "        if 0 <= ih < H:",
        "            for kw in range(KW):",
        "                iw = ow * SX + kw * DX - LEFT",
        "                if 0 <= iw < W:",
        "                    s = np.int32(0)",
        "                    for k in range(ICW):",
        "                        s = dp4a(x[n, ih, iw, k], wp[oc, kh, kw, k], s)",
        "                    acc += np.int64(s) - p0 * np.int64(wsum[oc, kh, kw])",
        "    acc = np.int64(np.int32(acc))",
    ]
    index = ["n", "oh", "ow", "oc"]
    if d.epilogue is not None:
        epi, arrays_epi, epi_names = _epilogue(d, "acc", index, params, "n, oh, ow, oc")
    else:
        epi, arrays_epi, epi_names = ["o0[n, oh, ow, oc] = acc"], [], []
    body += _indent(epi, 1)
    bias_values = np.broadcast_to(np.asarray(constant_values(bias)).astype(np.int32).reshape(-1), (oc,))
    arrays = [ArrayArg(d.outputs[0], (n, oh, ow, oc)), ArrayArg(x, (n, h, wd, ic // 4), dtype="<i4"),
              ArrayArg(array=words), ArrayArg(array=np.ascontiguousarray(wsum)),
              ArrayArg(array=np.ascontiguousarray(bias_values))] + arrays_epi
    signature = ["o0", "x", "wp", "wsum", "bias"] + epi_names
    dims = (n, oh, ow, oc, kh, kw, ic // 4, h, wd, sy, sx, dy, dx, top, left)
    return KernelSpec("cuda_conv_dp4a", _module("cuda_conv_dp4a", signature, body, params), arrays,
                      _param_values(params), dims, launch=_flat_launch(n * oh * ow * oc))


# The tiled GEMM: a block of TILE_THREADS x TILE_THREADS threads computes a TILE x TILE block of outputs
# (pixels by channels, TILE / TILE_THREADS squared each), staging TILE_K words of four channels of both
# operands through shared memory per step.
TILE, TILE_THREADS, TILE_K = 32, 16, 8


def _gemm_applies(d: Dispatch) -> bool:
    """An int8 convolution over pixels enough to fill a tile."""
    if not _int8_conv(d):
        return False
    n, oh, ow, _ = d.root.result.type.shape
    return n * oh * ow >= TILE


def _tile_loop(load_a: list[str], load_b: list[str], sums: tuple[bool, bool] = (False, False)) -> list[str]:
    """The staged loop over K of a TILE x TILE block of outputs (rows m0.., columns n0..): `load_a` and
    `load_b` set word (r, c) of the block's A rows `sa` and B columns `sb` (row mm = m0 + r, word
    kk = k0 + c); each thread keeps its outputs' sums acc<i><j>, and with `sums` its rows' sums of A's bytes
    (asum<i>) and its columns' of B's (bsum<j>), by `dp4a` with a word of ones."""
    per = TILE // TILE_THREADS
    rows, cols = range(per), range(per)
    return [
        f"sa = cuda.shared.array(({TILE}, {TILE_K + 1}), np.int32)",
        f"sb = cuda.shared.array(({TILE}, {TILE_K + 1}), np.int32)",
        "tx = cuda.threadIdx.x",
        "ty = cuda.threadIdx.y",
        f"m0 = cuda.blockIdx.y * {TILE}",
        f"n0 = cuda.blockIdx.x * {TILE}",
        f"t = ty * {TILE_THREADS} + tx",
        "ones = np.int32(0x01010101)",
        *[f"acc{i}{j} = np.int32(0)" for i in rows for j in cols],
        *[f"asum{i} = np.int32(0)" for i in rows if sums[0]],
        *[f"bsum{j} = np.int32(0)" for j in cols if sums[1]],
        f"for k0 in range(0, KT, {TILE_K}):",
        f"    for e in range(t, {TILE * TILE_K}, {TILE_THREADS * TILE_THREADS}):",
        f"        r = e // {TILE_K}",
        f"        c = e % {TILE_K}",
        "        mm = m0 + r",
        "        kk = k0 + c",
        *load_a,
        *load_b,
        "    cuda.syncthreads()",
        f"    for c in range({TILE_K}):",
        *[f"        a{i} = sa[ty + {TILE_THREADS * i}, c]" for i in rows],
        *[f"        b{j} = sb[tx + {TILE_THREADS * j}, c]" for j in cols],
        *[f"        acc{i}{j} = dp4a(a{i}, b{j}, acc{i}{j})" for i in rows for j in cols],
        *[f"        asum{i} = dp4a(a{i}, ones, asum{i})" for i in rows if sums[0]],
        *[f"        bsum{j} = dp4a(b{j}, ones, bsum{j})" for j in cols if sums[1]],
        "    cuda.syncthreads()",
    ]


def _tile_stores(value, position: list[str], epi: list[str]) -> list[str]:
    """Each thread's outputs of the block: `value(i, j)` the source of output (i, j) as `acc`, `position`
    statements placing row mm, column oc in the output, then the epilogue `epi`."""
    per = TILE // TILE_THREADS
    lines = []
    for i in range(per):
        for j in range(per):
            lines += [f"mm = m0 + ty + {TILE_THREADS * i}", f"oc = n0 + tx + {TILE_THREADS * j}",
                      "if mm < M and oc < N:", f"    acc = {value(i, j)}", *_indent(position + epi, 1)]
    return lines


# The tap of patch word kk of pixel mm: input row ih, column iw, word kc of channels.
_GATHER = [
    "        word = 0",
    "        if mm < M and kk < KT:",
    "            pw = mm % OW",
    "            ph = (mm // OW) % OH",
    "            pn = mm // (OW * OH)",
    "            kc = kk % ICW",
    "            tw = (kk // ICW) % KWIDTH",
    "            th = kk // (ICW * KWIDTH)",
    "            ih = ph * SY + th * DY - TOP",
    "            iw = pw * SX + tw * DX - LEFT",
]


def gemm_dp4a_kernel(d: Dispatch, target: CudaTarget) -> KernelSpec:
    """An int8 convolution as a GEMM of [M pixels, K words] patches and [N channels, K words] weights (K:
    the taps' words of four input channels, im2col order), tiled: each block stages TILE_K words of a
    TILE-row slice of both through shared memory (padded a word per row against bank conflicts), then each
    thread adds its outputs' `dp4a` products; threads of a row of the block take neighbouring channels, so
    the epilogue's stores coalesce. A 1x1 stride-1 unpadded convolution reads its patches as rows of the
    input; any other gathers them, a padded tap as a word of four zero points (what TOSA pads with), so
    that every tap counts and the zero point's share, zp times the weights' sum, folds into the bias."""
    op = d.root
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    _, h, wd, ic = x.type.shape
    _, kh, kw, _ = w.type.shape
    icw = -(-ic // 4)   # words of input channels; the last one's missing channels meet zero weights
    m, words = n * oh * ow, kh * kw * icw
    zp = op.attrs["input_zp"]
    weights = np.zeros((oc, kh, kw, 4 * icw), np.int8)
    weights[..., :ic] = constant_values(w)
    weights = weights.reshape(oc, 4 * words)
    bias_values = np.broadcast_to(np.asarray(constant_values(bias)).astype(np.int64).reshape(-1), (oc,))
    folded = (bias_values - zp * weights.astype(np.int64).sum(axis=1)).astype(np.int32)
    pointwise = (kh, kw) == (1, 1) and tuple(op.attrs["stride"]) == (1, 1) and tuple(op.attrs["pad"]) == (0,) * 4
    params: list = [(int(np.array([zp & 255] * 4, np.uint8).view(np.int32)[0]), "i64")]
    if pointwise and ic % 4 == 0:
        patch = ["        sa[r, c] = x[mm, kk] if mm < M and kk < KT else 0"]
        x_arg = ArrayArg(x, (m, ic // 4), dtype="<i4")
    elif ic % 4:
        # Channels not in whole words (an RGB stem): the word packed from the tap's bytes.
        pack = " | ".join(f"(np.int64(x[pn, ih, iw, 4 * kc + {i}]) & 255) << {8 * i}" if i == 0 else
                          f"((np.int64(x[pn, ih, iw, 4 * kc + {i}]) & 255) << {8 * i} if 4 * kc + {i} < C else 0)"
                          for i in range(4))
        patch = [*_GATHER, "            if 0 <= ih < H and 0 <= iw < W:",
                 f"                word = {pack}", "            else:", "                word = p0",
                 "        sa[r, c] = np.int32(word)"]
        x_arg = ArrayArg(x, (n, h, wd, ic))
    else:
        patch = [*_GATHER, "            word = x[pn, ih, iw, kc] if 0 <= ih < H and 0 <= iw < W else p0",
                 "        sa[r, c] = word"]
        x_arg = ArrayArg(x, (n, h, wd, ic // 4), dtype="<i4")
    body = ["M, N, KT, OH, OW, H, W, C, ICW, KWIDTH, SY, SX, DY, DX, TOP, LEFT = D",
            *_tile_loop(patch, ["        sb[r, c] = wp[n0 + r, kk] if n0 + r < N and kk < KT else 0"])]
    index = ["b", "h", "v", "oc"]
    if d.epilogue is not None:
        epi, arrays_epi, epi_names = _epilogue(d, "acc", index, params, "b, h, v, oc")
    else:
        epi, arrays_epi, epi_names = ["o0[b, h, v, oc] = acc"], [], []
    # The int32 sum wraps as TOSA's accumulator does; the bias joins it modulo 2^32 too.
    body += _tile_stores(lambda i, j: f"np.int64(np.int32(np.int64(acc{i}{j}) + np.int64(bias[oc])))",
                         ["v = mm % OW", "h = (mm // OW) % OH", "b = mm // (OW * OH)"], epi)
    arrays = [ArrayArg(d.outputs[0], (n, oh, ow, oc)), x_arg,
              ArrayArg(array=np.ascontiguousarray(weights).view(np.int32)), ArrayArg(array=folded)] + arrays_epi
    signature = ["o0", "x", "wp", "bias"] + epi_names
    launch = {"grid": [-(-oc // TILE), -(-m // TILE), 1], "block": [TILE_THREADS, TILE_THREADS, 1]}
    sy, sx = op.attrs["stride"]
    dy, dx = op.attrs["dilation"]
    top, _, left, _ = op.attrs["pad"]
    dims = (m, oc, words, oh, ow, h, wd, ic, icw, kw, sy, sx, dy, dx, top, left)
    return KernelSpec("cuda_gemm_dp4a", _module("cuda_gemm_dp4a", signature, body, params), arrays,
                      _param_values(params), dims, launch=launch)


def _matmul_applies(d: Dispatch) -> bool:
    """An int8 matmul of two activations with an int32 accumulator."""
    op = d.root
    if op.name != "linalg.matmul":
        return False
    a, b = op.operands
    return a.type.dtype == b.type.dtype == "i8" and op.result.type.dtype == "i32"


def matmul_dp4a_kernel(d: Dispatch, target: CudaTarget) -> KernelSpec:
    """A batched matmul [N, H, C] x [N, C, W] of activations, one thread per output (n, h, w), w fastest:
    `dp4a` of a word of A's row with a word packed from four bytes of B's column, and of both with a word
    of ones for the row and column sums the zero points need: sum (a - az)(b - bz) = sum ab - bz sum a -
    az sum b + C az bz, wrapped to int32 once. A depth not in whole words packs A's words from bytes too,
    the missing bytes zero in both."""
    op = d.root
    a, b = op.operands
    n, h, w = op.result.type.shape
    c = a.type.shape[2]
    params: list = [(op.attrs["a_zp"], "i64"), (op.attrs["b_zp"], "i64")]

    def packed(element: str, i: int) -> str:
        byte = f"(np.int64({element}) & 255) << {8 * i}"
        return byte if c % 4 == 0 or i == 0 else f"({byte} if k4 + {i} < C else 0)"
    column = " | ".join(packed(f"b[n, k4 + {i}, j]", i) for i in range(4))
    row = "a[n, h, k]" if c % 4 == 0 else f"np.int32({' | '.join(packed(f'a[n, h, k4 + {i}]', i) for i in range(4))})"
    body = [
        "N, H, W, CW, C = D",
        "f = cuda.grid(1)",
        "if f < N * H * W:",
        "    j = f % W",
        "    g = f // W",
        "    h = g % H",
        "    n = g // H",
        "    ones = np.int32(0x01010101)",
        "    s = np.int32(0)",
        "    sa = np.int32(0)",
        "    sb = np.int32(0)",
        "    for k in range(CW):",
        "        k4 = 4 * k",
        f"        aw = {row}",
        f"        bw = np.int32({column})",
        "        s = dp4a(aw, bw, s)",
        "        sa = dp4a(aw, ones, sa)",
        "        sb = dp4a(bw, ones, sb)",
        "    acc = np.int64(s) - p1 * np.int64(sa) - p0 * np.int64(sb) + C * p0 * p1",
        "    acc = np.int64(np.int32(acc))",
    ]
    if d.epilogue is not None:
        epi, arrays_epi, epi_names = _epilogue(d, "acc", ["n", "h", "j"], params, "n, h, j")
    else:
        epi, arrays_epi, epi_names = ["o0[n, h, j] = acc"], [], []
    body += _indent(epi, 1)
    a_arg = ArrayArg(a, (n, h, c // 4), dtype="<i4") if c % 4 == 0 else ArrayArg(a, (n, h, c))
    arrays = [ArrayArg(d.outputs[0], (n, h, w)), a_arg, ArrayArg(b, tuple(b.type.shape))] + arrays_epi
    return KernelSpec("cuda_matmul_dp4a", _module("cuda_matmul_dp4a", ["o0", "a", "b"] + epi_names, body, params),
                      arrays, _param_values(params), (n, h, w, -(-c // 4), c), launch=_flat_launch(n * h * w))


def tiled_matmul_kernel(d: Dispatch, target: CudaTarget) -> KernelSpec:
    """A batched matmul of activations big enough for whole tiles, as the tiled GEMM (`_tile_loop`) with a
    block per tile and batch: A's rows are words already, B's columns are packed from bytes as they are
    staged; the zero points take the row and column sums only where they are not zero."""
    op = d.root
    a, b = op.operands
    n, h, w = op.result.type.shape
    c = a.type.shape[2]
    a_zp, b_zp = op.attrs["a_zp"], op.attrs["b_zp"]
    params: list = [(a_zp, "i64"), (b_zp, "i64")]
    column = " | ".join(f"(np.int64(b[nb, 4 * kk + {i}, n0 + r]) & 255) << {8 * i}" for i in range(4))
    body = ["M, N, KT = D", "nb = cuda.blockIdx.z",
            *_tile_loop(["        sa[r, c] = a[nb, mm, kk] if mm < M and kk < KT else 0"],
                        [f"        sb[r, c] = np.int32({column}) if n0 + r < N and kk < KT else 0"],
                        (b_zp != 0, a_zp != 0))]
    if d.epilogue is not None:
        epi, arrays_epi, epi_names = _epilogue(d, "acc", ["nb", "mm", "oc"], params, "nb, mm, oc")
    else:
        epi, arrays_epi, epi_names = ["o0[nb, mm, oc] = acc"], [], []

    def value(i, j):
        terms = [f"np.int64(acc{i}{j})"] + ([f"p1 * np.int64(asum{i})"] if b_zp else []) \
            + ([f"p0 * np.int64(bsum{j})"] if a_zp else [])
        return f"np.int64(np.int32({' - '.join(terms)} + 4 * KT * p0 * p1))"
    body += _tile_stores(value, [], epi)
    arrays = [ArrayArg(d.outputs[0], (n, h, w)), ArrayArg(a, (n, h, c // 4), dtype="<i4"),
              ArrayArg(b, tuple(b.type.shape))] + arrays_epi
    launch = {"grid": [-(-w // TILE), -(-h // TILE), n], "block": [TILE_THREADS, TILE_THREADS, 1]}
    return KernelSpec("cuda_matmul_tiled_dp4a", _module("cuda_matmul_tiled_dp4a", ["o0", "a", "b"] + epi_names,
                                                         body, params),
                      arrays, _param_values(params), (h, w, c // 4), launch=launch)


def kernel_for(d: Dispatch, target: CudaTarget) -> KernelSpec:
    """The CUDA kernel of one dispatch for `target`."""
    if _matmul_applies(d):
        h, w = d.root.result.type.shape[1:]
        whole_words = d.root.operands[0].type.shape[2] % 4 == 0
        return tiled_matmul_kernel(d, target) if h * w >= TILE * TILE and whole_words else matmul_dp4a_kernel(d, target)
    if _gemm_applies(d):
        return gemm_dp4a_kernel(d, target)
    if _dp4a_applies(d):
        return conv_dp4a_kernel(d, target)
    return generic_kernel(d, target)
