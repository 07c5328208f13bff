"""CUDA kernel generation: one `@cuda.jit` kernel per dispatch, from the same structured ops and scalar
bodies as the CPU templates (kernels/cpu.py), for a `CudaTarget`.

The generic template: one CUDA thread per point of the dispatch's parallel loops (the output elements of
its root op), the reduction loops serial inside the thread in int32 or int64 as the body types them, then
the fused epilogue (bias, RESCALE, CLAMP, TABLE, residual ADD, ...) applied before the single store. Every
dispatch kind (conv, depthwise, matmul, pooling, reductions, elementwise) has this form, so every model
that runs on the CPU runs here; the conv and matmul templates with `dp4a` come on top of it.

Requantization is the `int64` strategy (kernels/requant.py): `(v * m + r) >> s` with a 32x32->64 bit
multiply (`mul.wide.s32`), no float64. The scalar helpers of the renderer (`render.PRELUDE`) become device
functions. A kernel module is standalone (numpy, numba-cuda): it runs under Numba's CUDA simulator as it
is, and `cuda_engine.emit_ptx` compiles it for a compute capability without a GPU.
"""

from __future__ import annotations

import numpy as np

from tosaic.kernels.cpu import ArrayArg, KernelSpec, _Accesses, _aligned_index, _indent, _operand, _param_values
from tosaic.kernels.render import PRELUDE, BodyRenderer
from tosaic.kernels.target import CudaTarget
from tosaic.lowering.fusion import Dispatch
from tosaic.lowering.structured import PARALLEL, generalize

HEADER = "import numpy as np\nfrom numba import cuda\n"
DEVICE_PRELUDE = PRELUDE.replace("@numba.njit(cache=True, nogil=True)", "@cuda.jit(device=True)")
DECORATOR = "@cuda.jit"
BLOCK = 128   # threads per block of the generic template


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
        return f"np.int64({text})" if integer else text


def _module(signature: list[str], body: list[str], params) -> str:
    unpack = [f"    p{i} = P[{i}]" for i in range(len(params))]
    lines = [HEADER, DEVICE_PRELUDE, "", "# template: cuda_generic", DECORATOR,
             f"def kernel({', '.join(signature + ['P', 'D'])}):", *unpack, *("    " + line for line in body)]
    return "\n".join(lines) + "\n"


def _epilogue(d: Dispatch, acc: str, index: list[str], params, store: str) -> tuple[list[str], list, list]:
    """Statements applying the epilogue of `d` to `acc` and storing it at `o0[store]`; its array arguments and
    their names."""
    e = d.epilogue
    reads = _Reads(e, "e", index, params, skip=d.slot, acc=acc)
    r = BodyRenderer(reads.read, reads.array, index, params=params, prefix="et", inputs=reads, requant="int64")
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
    domain, iterators = op.attrs["domain"], op.attrs["iterators"]
    rank = len(domain)
    par = [j for j in range(rank) if iterators[j] == PARALLEL]
    red = [j for j in range(rank) if iterators[j] != PARALLEL]
    assert par == list(range(len(par))), "parallel loops come first in every lowering"
    index = [f"d{j}" for j in range(rank)]
    params: list = []
    reads = _Reads(op, "i", index, params)
    accs = [f"a{i}" for i in range(len(op.results))]
    total = int(np.prod([domain[j] for j in par], dtype=np.int64)) if par else 1
    body = [f"D{j} = D[{j}]" for j in range(rank)]
    body += ["f = cuda.grid(1)", f"if f < {' * '.join(f'D{j}' for j in par) or '1'}:"]
    unravel, rest = [], "f"
    for k, j in enumerate(reversed(par)):
        if j == par[0]:
            unravel.append(f"d{j} = {rest}")
        else:
            unravel += [f"d{j} = {rest} % D{j}", f"g{k} = {rest} // D{j}"]
            rest = f"g{k}"
    lines = list(unravel)
    if red:
        init_r = BodyRenderer(reads.read, reads.array, index, params=params, prefix="s", requant="int64")
        inits = [init_r.render(init) for init in op.attrs["inits"]]
        lines += init_r.lines + [f"{a} = {v}" for a, v in zip(accs, inits)]
        step = BodyRenderer(reads.read, reads.array, index, outs=accs, params=params, prefix="t", requant="int64")
        values = [step.render(b) for b in op.attrs["bodies"]]
        loop = ["    " * k + f"for d{j} in range(D{j}):" for k, j in enumerate(red)]
        lines += loop + _indent(step.lines + [f"{', '.join(accs)} = {', '.join(values)}"], len(red))
    else:
        r = BodyRenderer(reads.read, reads.array, index, params=params, prefix="t", inputs=reads, requant="int64")
        values = [r.render(b) for b in op.attrs["bodies"]]
        lines += r.lines + [f"{a} = {v}" for a, v in zip(accs, values)]
    par_index = ", ".join(f"d{j}" for j in par) or "0"
    arrays_epi, epi_names = [], []
    if d.epilogue is not None:
        if d.root.name == "linalg.depthwise_conv2d":
            # The generic form's loops (n, oh, ow, c, m) make output channel c * M + m.
            out_index = ["d0", "d1", "d2", f"(d3 * {d.root.operands[1].type.shape[3]} + d4)"]
        else:
            out_index = _aligned_index(op.results[0].type.shape if op is d.root else d.root.result.type.shape,
                                       [f"d{j}" for j in par], [domain[j] for j in par])
        epi, arrays_epi, epi_names = _epilogue(d, accs[0], out_index, params, par_index)
    else:
        epi = [f"o{i}[{par_index}] = {a}" for i, a in enumerate(accs)]
    body += _indent(lines + epi, 1)
    shape = tuple(domain[j] for j in par) or (1,)
    outputs = [ArrayArg(v, shape) for v in d.outputs]
    inputs = [_operand(v) for v in op.operands] + [ArrayArg(array=a) for _, a in reads.extra]
    signature = [f"o{i}" for i in range(len(outputs))] + [f"i{i}" for i in range(len(op.operands))] \
        + [n for n, _ in reads.extra] + epi_names
    return KernelSpec("cuda_generic", _module(signature, body, params), outputs + inputs + arrays_epi,
                      _param_values(params), tuple(int(n) for n in domain), launch={"threads": total, "block": BLOCK})


def kernel_for(d: Dispatch, target: CudaTarget) -> KernelSpec:
    """The CUDA kernel of one dispatch for `target`."""
    return generic_kernel(d, target)
