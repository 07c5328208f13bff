"""Tabulation: an elementwise op whose only varying input is one int8 value becomes a 256-entry TABLE.

After `fusion.fuse_elementwise`, a SiLU (`x * sigmoid(x)`: TABLE and MUL both reading the requantized x)
or a hard-swish (`x * relu6(x + 3) / 6`) is one generic op reading the same int8 tensor through two input
slots, so it cannot fuse into the conv that makes x and costs a chain of rescales per element. Its body is
a function of x alone: evaluated once for all 256 values of x (by `scalar.evaluate`, the definition the
interpreter runs), it is one gather, and x then has a single reader, which `fuse_elementwise` inlines into
the conv's epilogue. Bodies with fewer than two costly nodes (a lone rescale, a lone TABLE) stay as they are:
a lookup would not be cheaper.
"""

from __future__ import annotations

import numpy as np

from tosaic.ir import Graph, Operation, TensorType
from tosaic.lowering import scalar as S
from tosaic.lowering.interpreter import _read
from tosaic.lowering.structured import PARALLEL, Access, constant_values, generic, is_elementwise

_TABLE_DTYPES = {"i8", "i16", "i32"}


class _NotTabulable(Exception):
    """A body reads a per-element constant or gathers from a runtime tensor: no table of x alone."""


def _constant(op: Operation, i: int):
    return constant_values(op.operands[i])


def _table_of(op: Operation) -> np.ndarray | None:
    """The body of `op` evaluated for every int8 value of its one varying input, or None where `op` is not
    such an op (or not worth a table)."""
    if not is_elementwise(op) or len(op.attrs["bodies"]) != 1 or op.result.type.dtype not in _TABLE_DTYPES:
        return None
    (body,) = op.attrs["bodies"]
    nodes = list(S.nodes(body))
    if S.costly_nodes(body) < 2 or any(e.op in ("index", "out") for e in nodes):
        return None
    varying = {(op.operands[e.arg], op.attrs["accesses"][e.arg]) for e in nodes
               if e.op == "in" and _constant(op, e.arg) is None}
    if len(varying) != 1:
        return None
    ((x, _),) = varying
    if x.type.dtype != "i8":
        return None
    values = np.arange(-128, 128, dtype=np.int64)

    def leaf(e: S.Expr, args):
        if e.op == "in":
            const = _constant(op, e.arg)
            if const is None:
                return values
            if const.size != 1:
                raise _NotTabulable
            return np.int64(np.asarray(const).reshape(-1)[0]) if not S.is_float(e.dtype) else const.reshape(-1)[0]
        i, pad = e.arg
        const = _constant(op, i)
        if const is None:
            raise _NotTabulable
        return _read(const, args, pad)

    try:
        table = S.evaluate(body, leaf)
    except _NotTabulable:
        return None
    return np.broadcast_to(table, values.shape).astype(op.result.type.numpy_dtype)


def tabulate(graph: Graph) -> Graph:
    """Replace every tabulable elementwise op (see the module docstring) by a TABLE lookup (in place)."""
    for op in list(graph.ops):
        if op.name != "linalg.generic":
            continue
        table = _table_of(op)
        if table is None:
            continue
        x_slot = next(i for i in range(len(op.operands)) if _constant(op, i) is None)
        const = Operation("linalg.const", [], {"values": np.ascontiguousarray(table)},
                          [TensorType(table.shape, op.result.type.dtype)], op.loc)
        index = S.binary("add", S.cast(S.inp(0, "i8"), "i64"), S.const(128, "i64"))
        rank = len(op.attrs["domain"])
        lookup = generic([op.operands[x_slot], const.result], [op.result.type], op.attrs["domain"], (PARALLEL,) * rank,
                         [op.attrs["accesses"][x_slot], Access(None)], [S.extract(1, op.result.type.dtype, [index])],
                         loc=op.loc)
        lookup.results = op.results
        for r in lookup.results:
            r.owner = lookup
        graph.origins[lookup] = graph.origins.get(op, [op.loc or op.name])
        at = graph.ops.index(op)
        graph.ops[at:at + 1] = [const, lookup]
    return graph
