"""The structured-op dialect: linalg-like ops over tensors, declared as data.

`linalg.generic` is the one general op: an iteration domain (loop bounds), an iterator type per loop
(parallel or reduction), one `Access` per input (an affine indexing map, with the value read outside the
tensor when the map may leave it, or no map for inputs the body reads with `extract`), and one scalar body
per output (`tosaic.lowering.scalar`). Outputs are indexed by the parallel loops in order; a reduction's
`init` gives each output's starting value.

Named ops keep what a kernel template needs to know and `generalize` to `linalg.generic`:
`linalg.conv2d`, `linalg.depthwise_conv2d`, `linalg.matmul`, `linalg.pool`. Data that moves without
computing is `linalg.reshape` (a view of the same bytes), `linalg.concat`, and `linalg.const`; model state
is `linalg.variable_read` / `linalg.variable_write`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tosaic.errors import TosaicError
from tosaic.ir import Graph, Operation, TensorType, Value, integer_range
from tosaic.lowering import scalar as S

PARALLEL, REDUCTION = "parallel", "reduction"


@dataclass(frozen=True)
class AffineMap:
    """`tensor index k = sum_j coeffs[k][j] * d_j + offsets[k]` over the loop dimensions d."""

    coeffs: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]

    @staticmethod
    def identity(rank: int, ndims: int | None = None) -> AffineMap:
        ndims = rank if ndims is None else ndims
        return AffineMap(tuple(tuple(int(j == k) for j in range(ndims)) for k in range(rank)), (0,) * rank)

    @staticmethod
    def broadcast(shape, domain) -> AffineMap:
        """Numpy/TOSA broadcasting of a same-rank tensor over `domain`: size-1 dims read index 0."""
        return AffineMap(tuple(tuple(int(j == k and shape[k] == domain[k]) for j in range(len(domain)))
                               for k in range(len(shape))), (0,) * len(shape))

    @staticmethod
    def rows(rows, ndims: int) -> AffineMap:
        """From rows of (dim -> coefficient dict, offset)."""
        return AffineMap(tuple(tuple(int(r.get(j, 0)) for j in range(ndims)) for r, _ in rows),
                         tuple(int(o) for _, o in rows))

    @property
    def ndims(self) -> int:
        return len(self.coeffs[0]) if self.coeffs else 0

    def is_identity(self) -> bool:
        return self == AffineMap.identity(len(self.coeffs), self.ndims)

    def compose(self, inner: AffineMap) -> AffineMap:
        """`self ∘ inner`: first `inner` (loops -> an intermediate index space), then `self`."""
        # Explicit shapes: a map of a rank-0 tensor has no rows, one over a rank-0 domain empty rows.
        a = np.array(self.coeffs, dtype=np.int64).reshape(len(self.coeffs), len(inner.coeffs))
        b = np.array(inner.coeffs, dtype=np.int64).reshape(len(inner.coeffs), inner.ndims)
        coeffs = a @ b
        offsets = a @ np.array(inner.offsets, dtype=np.int64) + np.array(self.offsets, dtype=np.int64)
        return AffineMap(tuple(tuple(int(c) for c in row) for row in coeffs), tuple(int(o) for o in offsets))

    def exprs(self) -> list[S.Expr]:
        return [S.affine(row, off) for row, off in zip(self.coeffs, self.offsets)]

    def __str__(self) -> str:
        def term(row, off):
            parts = [(f"d{j}" if c == 1 else f"{c}*d{j}") for j, c in enumerate(row) if c]
            if off or not parts:
                parts.append(str(off))
            return " + ".join(parts).replace("+ -", "- ")
        dims = ", ".join(f"d{j}" for j in range(self.ndims))
        return f"({dims}) -> ({', '.join(term(r, o) for r, o in zip(self.coeffs, self.offsets))})"


@dataclass(frozen=True)
class Access:
    """How a generic op reads one input: through `map` (None: only via `extract` in the body); where the
    map leaves the tensor the read gives `pad` (None: the map never leaves it)."""

    map: AffineMap | None
    pad: int | float | None = None

    def __str__(self) -> str:
        if self.map is None:
            return "extract"
        return str(self.map) + ("" if self.pad is None else f" pad {self.pad}")


class LoweringError(TosaicError, ValueError):
    """A TOSA op the compiled targets refuse at compile time (this lowering, or a target's code generation,
    has no exact kernel for it); the message names the op, its location and why."""


# ------------------------------------------------------------------------------------- construction


def generic(inputs, result_types, domain, iterators, accesses, bodies, inits=None, loc=None) -> Operation:
    """A `linalg.generic` op (not yet appended to a graph)."""
    domain = tuple(int(d) for d in domain)
    iterators = tuple(iterators)
    assert len(accesses) == len(inputs) and len(bodies) == len(result_types)
    return Operation("linalg.generic", inputs, {
        "domain": domain, "iterators": iterators, "accesses": tuple(accesses), "bodies": tuple(bodies),
        "inits": tuple(inits) if inits is not None else (None,) * len(bodies),
    }, result_types, loc)


def constant_values(v: Value):
    """The array of a value a `linalg.const` op makes, or None (a graph input or a computed value)."""
    return v.owner.attrs["values"] if v.owner is not None and v.owner.name == "linalg.const" else None


def parallel_shape(op: Operation) -> tuple[int, ...]:
    return tuple(d for d, it in zip(op.attrs["domain"], op.attrs["iterators"]) if it == PARALLEL)


def is_elementwise(op: Operation) -> bool:
    """A generic op with only parallel loops whose output has the domain's shape."""
    return op.name == "linalg.generic" and REDUCTION not in op.attrs["iterators"] and len(op.results) == 1 \
        and op.result.type.shape == op.attrs["domain"]


# --------------------------------------------------------------------------------- generalization


def _conv_like_generic(op: Operation, depthwise: bool) -> Operation:
    x, w, bias = op.operands
    n, oh, ow, oc = op.result.type.shape
    kh, kw = (w.type.shape[0:2] if depthwise else w.type.shape[1:3])
    ic = x.type.shape[3]
    sy, sx = op.attrs["stride"]
    dy, dx = op.attrs["dilation"]
    top, _, left, _ = op.attrs["pad"]
    acc = op.result.type.dtype
    if depthwise:
        mult = w.type.shape[3]
        # Loops (n, oh, ow, c, m, kh, kw); output channel c*M + m is loops 3 and 4 together.
        domain = (n, oh, ow, ic, mult, kh, kw)
        iterators = (PARALLEL,) * 5 + (REDUCTION,) * 2
        x_map = AffineMap.rows([({0: 1}, 0), ({1: sy, 5: dy}, -top), ({2: sx, 6: dx}, -left), ({3: 1}, 0)], 7)
        w_map = AffineMap.rows([({5: 1}, 0), ({6: 1}, 0), ({3: 1}, 0), ({4: 1}, 0)], 7)
        b_map = AffineMap.rows([({3: mult, 4: 1}, 0)], 7)
        result_type = TensorType((n, oh, ow, ic, mult), acc)
    else:
        domain = (n, oh, ow, oc, kh, kw, ic)
        iterators = (PARALLEL,) * 4 + (REDUCTION,) * 3
        x_map = AffineMap.rows([({0: 1}, 0), ({1: sy, 4: dy}, -top), ({2: sx, 5: dx}, -left), ({6: 1}, 0)], 7)
        w_map = AffineMap.rows([({3: 1}, 0), ({4: 1}, 0), ({5: 1}, 0), ({6: 1}, 0)], 7)
        b_map = AffineMap.rows([({3: 1}, 0)], 7)
        result_type = op.result.type
    if bias.type.shape[0] == 1:
        b_map = AffineMap.rows([({}, 0)], 7)  # one bias for every channel (TOSA: broadcast when BC == 1)
    wide = "i64" if acc == "i48" else "i32"
    product = S.binary("mul", S.binary("sub", S.cast(S.inp(0, x.type.dtype), wide), S.const(op.attrs["input_zp"], wide)),
                       S.binary("sub", S.cast(S.inp(1, w.type.dtype), wide), S.const(op.attrs["weight_zp"], wide)))
    body = S.cast(S.binary("add", S.out(0, wide), product), acc)
    init = S.cast(S.inp(2, bias.type.dtype), acc)
    return generic([x, w, bias], [result_type], domain, iterators,
                   [Access(x_map, op.attrs["input_zp"]), Access(w_map), Access(b_map)], [body], [init], op.loc)


def _matmul_generic(op: Operation) -> Operation:
    a, b = op.operands
    n, h, w = op.result.type.shape
    c = a.type.shape[2]
    acc = op.result.type.dtype
    wide = "i64" if acc == "i48" else "i32"
    maps = [AffineMap.rows([({0: 1}, 0), ({1: 1}, 0), ({3: 1}, 0)], 4),
            AffineMap.rows([({0: 1}, 0), ({3: 1}, 0), ({2: 1}, 0)], 4)]
    product = S.binary("mul", S.binary("sub", S.cast(S.inp(0, a.type.dtype), wide), S.const(op.attrs["a_zp"], wide)),
                       S.binary("sub", S.cast(S.inp(1, b.type.dtype), wide), S.const(op.attrs["b_zp"], wide)))
    body = S.cast(S.binary("add", S.out(0, wide), product), acc)
    return generic([a, b], [op.result.type], (n, h, w, c), (PARALLEL,) * 3 + (REDUCTION,),
                   [Access(m) for m in maps], [body], [S.const(0, acc)], op.loc)


def _pool_generic(op: Operation) -> Operation:
    (x,) = op.operands
    n, oh, ow, c = op.result.type.shape
    kh, kw = op.attrs["kernel"]
    sy, sx = op.attrs["stride"]
    top, _, left, _ = op.attrs["pad"]
    dtype = op.result.type.dtype
    x_map = AffineMap.rows([({0: 1}, 0), ({1: sy, 4: 1}, -top), ({2: sx, 5: 1}, -left), ({3: 1}, 0)], 6)
    value = S.binary("sub", S.cast(S.inp(0, x.type.dtype), dtype), S.const(op.attrs["input_zp"], dtype)) \
        if op.attrs["kind"] == "sum" else S.cast(S.inp(0, x.type.dtype), dtype)
    combine = "add" if op.attrs["kind"] == "sum" else "max"
    body = S.binary(combine, S.out(0, dtype), value, arg=op.attrs.get("nan_mode"))
    return generic([x], [op.result.type], (n, oh, ow, c, kh, kw), (PARALLEL,) * 4 + (REDUCTION,) * 2,
                   [Access(x_map, op.attrs["pad_value"])], [body], [S.const(op.attrs["init"], dtype)], op.loc)


def generalize(op: Operation) -> Operation:
    """The `linalg.generic` form of a named structured op (a generic op is returned as it is). A depthwise
    conv's generic form has the channel multiplier as its own output dim: [N, OH, OW, C, M]."""
    if op.name == "linalg.conv2d":
        return _conv_like_generic(op, depthwise=False)
    if op.name == "linalg.depthwise_conv2d":
        return _conv_like_generic(op, depthwise=True)
    if op.name == "linalg.matmul":
        return _matmul_generic(op)
    if op.name == "linalg.pool":
        return _pool_generic(op)
    return op


NAMED = ("linalg.conv2d", "linalg.depthwise_conv2d", "linalg.matmul", "linalg.pool")


def lowest(dtype: str):
    return -np.inf if S.is_float(dtype) else integer_range(dtype)[0]


# ------------------------------------------------------------------------------------------ printing


def _operand_names(graph: Graph):
    names = {}
    for i, v in enumerate(graph.inputs):
        names[v] = f"%arg{i}"
    count = 0
    for op in graph.ops:
        for r in op.results:
            names[r] = f"%{count}"
            count += 1
    return names


def print_structured(graph: Graph) -> str:
    """The structured program as text: one op per line, generic bodies as expressions."""
    names = _operand_names(graph)
    lines = [f"func @{graph.name}({', '.join(f'{names[v]}: {v.type}' for v in graph.inputs)}) {{"]
    for op in graph.ops:
        results = ", ".join(names[r] for r in op.results)
        lhs = f"{results} = " if results else ""
        ins = ", ".join(names[v] for v in op.operands)
        types = ", ".join(str(r.type) for r in op.results)
        if op.name == "linalg.generic":
            a = op.attrs
            its = ", ".join("p" if it == PARALLEL else "r" for it in a["iterators"])
            lines.append(f"  {lhs}linalg.generic domain={list(a['domain'])} iterators=[{its}] ins({ins}) -> {types}")
            for i, access in enumerate(a["accesses"]):
                lines.append(f"      %in{i}: {access}")
            for i, (body, init) in enumerate(zip(a["bodies"], a["inits"])):
                lines.append(f"      %out{i} = {body}" + ("" if init is None else f"  init {init}"))
        elif op.name == "linalg.const":
            lines.append(f"  {lhs}linalg.const {op.result.type}")
        else:
            attrs = " ".join(f"{k}={_attr_text(v)}" for k, v in op.attrs.items())
            lines.append(f"  {lhs}{op.name} {attrs} ins({ins}) -> {types}".replace("  ins", " ins"))
        if op.loc:
            lines[-1] += f"  // {op.loc}"
    lines.append(f"  return {', '.join(names[v] for v in graph.outputs)}")
    lines.append("}")
    return "\n".join(lines)


def _attr_text(value) -> str:
    if isinstance(value, np.ndarray):
        return f"<{value.dtype}{list(value.shape)}>"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
