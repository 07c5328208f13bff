"""Canonicalization of structured ops: simplify every generic body and init (`scalar.simplify`), so
kernels skip the zero-point subtractions of zero and the clamps that value ranges prove idle."""

from __future__ import annotations

from tosaic.ir import Graph
from tosaic.lowering import scalar as S


def simplify_bodies(graph: Graph) -> Graph:
    for op in graph.ops:
        if op.name == "linalg.generic":
            op.attrs["bodies"] = tuple(S.simplify(b) for b in op.attrs["bodies"])
            op.attrs["inits"] = tuple(None if i is None else S.simplify(i) for i in op.attrs["inits"])
    return graph
