"""Constant folding: a generic op whose inputs are all constants becomes the constant it computes.

The importer leaves rescales of constant operands in the program (a MUL by a scalar constant reads it
through a RESCALE to int32): computed at run time, they also hide from `tabulate` that an op's other
inputs are constants. Each is evaluated once here by the structured interpreter (`run_generic`, the
definition the compiled kernels are checked against), up to FOLD_LIMIT elements per result.
"""

from __future__ import annotations

import numpy as np

from tosaic.ir import Graph, Operation
from tosaic.lowering.interpreter import run_generic
from tosaic.lowering.structured import constant_values

FOLD_LIMIT = 1 << 16


def fold_constants(graph: Graph) -> Graph:
    """Replace every generic op of constant inputs (and results of at most FOLD_LIMIT elements) by
    constants, in program order, so that chains of them fold (in place)."""
    for op in list(graph.ops):
        if op.name != "linalg.generic" or any(constant_values(v) is None for v in op.operands) \
                or any(r.type.size > FOLD_LIMIT for r in op.results):
            continue
        values = run_generic(op, [constant_values(v) for v in op.operands])
        consts = []
        for result, value in zip(op.results, values):
            const = Operation("linalg.const", [], {"values": np.ascontiguousarray(value)}, [result.type], op.loc)
            const.results = [result]
            result.owner, result.index = const, 0
            graph.origins[const] = graph.origins.get(op, [op.loc or op.name])
            consts.append(const)
        at = graph.ops.index(op)
        graph.ops[at:at + 1] = consts
    return graph
