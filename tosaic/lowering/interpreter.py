"""Interpreter for structured ops: runs a lowered program with numpy, so the lowering can be checked alone
against the TOSA interpreter. Named ops run through their generic form; a generic op's parallel loops are
numpy broadcasting, its reduction loops a Python loop over the reduction indices."""

from __future__ import annotations

import itertools

import numpy as np

from tosaic.ir import Graph, Operation
from tosaic.lowering import scalar as S
from tosaic.lowering.structured import PARALLEL, Access, generalize

IMPLEMENTATIONS = {}


def impl(name):
    def register(fn):
        IMPLEMENTATIONS[name] = fn
        return fn

    return register


def _read(array: np.ndarray, indices, pad):
    """`array[indices]` with broadcasting index arrays; `pad` where an index falls outside."""
    if pad is None:
        return array[tuple(np.asarray(i) for i in indices)]
    inside = np.ones((), dtype=bool)
    clipped = []
    for i, n in zip(indices, array.shape):
        i = np.asarray(i)
        inside = inside & (i >= 0) & (i < n)
        clipped.append(np.clip(i, 0, n - 1))
    return np.where(inside, array[tuple(clipped)], pad)


def _map_indices(access: Access, dims):
    return [sum((c * dims[j] for j, c in enumerate(row) if c), start=np.int64(off))
            for row, off in zip(access.map.coeffs, access.map.offsets)]


def run_generic(op: Operation, args):
    domain, iterators = op.attrs["domain"], op.attrs["iterators"]
    accesses, bodies, inits = op.attrs["accesses"], op.attrs["bodies"], op.attrs["inits"]
    rank = len(domain)
    grid_shape = tuple(n if it == PARALLEL else 1 for n, it in zip(domain, iterators))
    dims = [np.arange(n, dtype=np.int64).reshape([n if k == j else 1 for k in range(rank)])
            if iterators[j] == PARALLEL else np.int64(0) for j, n in enumerate(domain)]
    current: list = [None] * len(bodies)

    def leaf(e: S.Expr, values):
        if e.op == "index":
            return dims[e.arg]
        if e.op == "out":
            return current[e.arg]
        if e.op == "in":
            return _read(args[e.arg], _map_indices(accesses[e.arg], dims), accesses[e.arg].pad)
        i, pad = e.arg
        return _read(args[i], values, pad)

    reductions = [j for j, it in enumerate(iterators) if it != PARALLEL]
    if reductions:
        current = [np.broadcast_to(S.evaluate(init, leaf), grid_shape) for init in inits]
        for point in itertools.product(*(range(domain[j]) for j in reductions)):
            for j, v in zip(reductions, point):
                dims[j] = np.int64(v)
            current = [S.evaluate(body, leaf) for body in bodies]
    else:
        current = [S.evaluate(body, leaf) for body in bodies]
    return [np.broadcast_to(value, grid_shape).reshape(r.type.shape).astype(r.type.numpy_dtype)
            for value, r in zip(current, op.results)]


@impl("linalg.generic")
def _generic(op, args, state):
    return run_generic(op, args)


def _named(op, args, state):
    (result,) = run_generic(generalize(op), args)
    return [result.reshape(op.result.type.shape)]


for _name in ("linalg.conv2d", "linalg.depthwise_conv2d", "linalg.matmul", "linalg.pool"):
    impl(_name)(_named)


@impl("linalg.const")
def _const(op, args, state):
    return [op.attrs["values"]]


@impl("linalg.reshape")
def _reshape(op, args, state):
    return [args[0].reshape(op.result.type.shape)]


@impl("linalg.concat")
def _concat(op, args, state):
    return [np.concatenate(args, axis=op.attrs["axis"])]


@impl("linalg.variable_read")
def _variable_read(op, args, state):
    value = state.get(op.attrs["name"])
    if value is None:
        raise RuntimeError(f"variable @{op.attrs['name']} is read before it has a value")
    return [value.copy()]


@impl("linalg.variable_write")
def _variable_write(op, args, state):
    state[op.attrs["name"]] = np.array(args[0], copy=True)
    return []


def interpret_structured(graph: Graph, inputs, state: dict | None = None) -> list[np.ndarray]:
    """Run the structured program `graph` on `inputs`; `state` (variables by name) is updated in place."""
    state = {k: (None if v is None else v.copy()) for k, v in graph.state.items()} if state is None else state
    env = dict(zip(graph.inputs, inputs))
    for op in graph.ops:
        results = IMPLEMENTATIONS[op.name](op, [env[v] for v in op.operands], state)
        env.update(zip(op.results, results))
    return [env[v] for v in graph.outputs]
