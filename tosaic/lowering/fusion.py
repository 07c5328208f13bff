"""Fusion: inline elementwise producers into their consumers, then form dispatch regions.

Two rewrites, in the seed talk's order of dispatch region formation:

1. `fuse_elementwise`: a parallel generic op whose only user is another generic op, read through an affine
   map without padding, is inlined into that user: its body replaces the user's `in` leaf, its inputs join
   the user's with their maps composed through the user's map, its `index` leaves become the user's map
   rows. RESCALE/ADD/CLAMP/TABLE chains collapse into one body; SLICE, TRANSPOSE, REVERSE copies fold into
   the indexing maps of whoever reads them. A producer with arithmetic read through a broadcast stays apart,
   computed once rather than per element it is broadcast to.
2. `form_dispatches`: every compute op becomes a dispatch; a conv, depthwise conv, matmul, pool or
   reduction whose only user is an elementwise generic op reading it with the identity map takes that op
   as its epilogue, which the kernel runs on the accumulator in registers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tosaic.ir import Graph, Operation, Value
from tosaic.lowering import scalar as S
from tosaic.lowering.structured import NAMED, REDUCTION, Access, AffineMap, generic, is_elementwise


def _use_counts(graph: Graph) -> dict[Value, int]:
    counts: dict[Value, int] = {}
    for op in graph.ops:
        for v in op.operands:
            counts[v] = counts.get(v, 0) + 1
    for v in graph.outputs:
        counts[v] = counts.get(v, 0) + 1
    return counts


def _origins(graph: Graph, op: Operation) -> list[str]:
    return graph.origins.get(op, [op.loc or op.name])


def _inline(consumer: Operation, slot: int, producer: Operation) -> Operation:
    """`consumer` with every read of `producer`'s result (input `slot`) replaced by the producer's body."""
    c_inputs, c_accesses = list(consumer.operands), list(consumer.attrs["accesses"])
    read_map = c_accesses[slot].map
    inputs = [v for i, v in enumerate(c_inputs) if i != slot]
    accesses = [a for i, a in enumerate(c_accesses) if i != slot]
    renumber = {i: (i if i < slot else i - 1) for i in range(len(c_inputs)) if i != slot}
    first_new = len(inputs)
    for v, access in zip(producer.operands, producer.attrs["accesses"]):
        inputs.append(v)
        accesses.append(access if access.map is None else Access(access.map.compose(read_map), access.pad))
    rows = read_map.exprs()

    def rewrite_producer(e: S.Expr):
        if e.op == "in":
            return S.inp(first_new + e.arg, e.dtype)
        if e.op == "index":
            return rows[e.arg]
        if e.op == "extract":
            i, pad = e.arg
            return S.Expr("extract", e.dtype, tuple(S.substitute(s, rewrite_producer) for s in e.src),
                          (first_new + i, pad))
        return None

    (body,) = producer.attrs["bodies"]
    inlined = S.substitute(body, rewrite_producer)

    def rewrite_consumer(e: S.Expr):
        if e.op == "in":
            return inlined if e.arg == slot else S.inp(renumber[e.arg], e.dtype)
        if e.op == "extract":
            i, pad = e.arg
            return S.Expr("extract", e.dtype, tuple(S.substitute(s, rewrite_consumer) for s in e.src),
                          (renumber[i], pad))
        return None

    a = consumer.attrs
    bodies = [S.substitute(b, rewrite_consumer) for b in a["bodies"]]
    inits = [None if i is None else S.substitute(i, rewrite_consumer) for i in a["inits"]]
    fused = generic(inputs, [r.type for r in consumer.results], a["domain"], a["iterators"], accesses, bodies,
                    inits, consumer.loc)
    fused.results = consumer.results
    for r in fused.results:
        r.owner = fused
    return fused


def _takes_epilogue(op: Operation) -> bool:
    return op.name in NAMED or (op.name == "linalg.generic" and REDUCTION in op.attrs["iterators"]
                                and len(op.results) == 1)


def _accumulators(op: Operation) -> set[Value]:
    """The results of ops that take an epilogue (accumulators, kept in registers when fused) `op` reads."""
    return {v for v in op.operands if v.owner is not None and _takes_epilogue(v.owner)}


BROADCAST_REUSE = 8


def _inlinable(graph: Graph, counts, consumer: Operation, slot: int) -> Operation | None:
    v = consumer.operands[slot]
    producer = v.owner
    access = consumer.attrs["accesses"][slot]
    if producer is None or not is_elementwise(producer) or counts.get(v, 0) != 1 or v in graph.outputs:
        return None
    if access.map is None or access.pad is not None:
        return None
    # A producer read through a broadcast (squeeze-excite's per-channel gate over a 56x56 feature map) would
    # be recomputed for every element it is broadcast to: a requantization or TABLE reused BROADCAST_REUSE
    # times or more is computed once, in its own small kernel, and read back (EfficientNet-B0's 16 gates:
    # 3.3 ms inlined, 1.2 ms apart, on one Zen 5 core).
    if math.prod(consumer.attrs["domain"]) >= BROADCAST_REUSE * math.prod(producer.attrs["domain"]) \
            and S.costly_nodes(producer.attrs["bodies"][0]):
        return None
    # One kernel holds one accumulator: an op reading two (a residual ADD of two conv branches, as in a
    # ResNet projection shortcut) keeps the second branch's requantization apart, to be that conv's own
    # epilogue, so the int8 value is what is stored between the two kernels, not the int32 accumulator.
    if len(_accumulators(consumer) | _accumulators(producer)) > 1:
        return None
    return producer


def fuse_elementwise(graph: Graph) -> Graph:
    """Inline single-use elementwise generic producers into the generic ops that read them (in place).

    Consumers are visited last first, so a chain grows from its end: where the one-accumulator rule stops
    it, the value left in memory is the first op after the accumulator (a requantization to int8), not a
    wider intermediate made by inlining that chain's first steps into each other."""
    # Inlining moves the producer's reads into the consumer: every value keeps its count of readers.
    counts = _use_counts(graph)
    position = len(graph.ops) - 1
    while position >= 0:
        op, slot = graph.ops[position], 0
        while op.name == "linalg.generic" and slot < len(op.operands):
            producer = _inlinable(graph, counts, op, slot)
            if producer is None:
                slot += 1
                continue
            fused = _inline(op, slot, producer)
            graph.origins[fused] = _origins(graph, producer) + _origins(graph, op)
            graph.ops[position] = fused
            graph.ops.remove(producer)   # it stood before its consumer
            position -= 1
            op, slot = fused, 0
        position -= 1
    return graph


# ---------------------------------------------------------------------------------------- dispatches


@dataclass
class Dispatch:
    """One kernel launch: a compute `root` and optionally an elementwise `epilogue` that reads the root's
    result as its input `slot` (in registers, never stored). `origins` are the TOSA ops inside."""

    name: str
    root: Operation
    epilogue: Operation | None = None
    slot: int = 0
    origins: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[Value]:
        extra = [] if self.epilogue is None else [v for i, v in enumerate(self.epilogue.operands) if i != self.slot]
        return list(self.root.operands) + extra

    @property
    def outputs(self) -> list[Value]:
        return list((self.epilogue or self.root).results)


ROOTS = NAMED + ("linalg.generic",)


def form_dispatches(graph: Graph) -> list[Dispatch]:
    """Group the compute ops of `graph` (after `fuse_elementwise`) into dispatches, in program order."""
    counts = _use_counts(graph)
    users: dict[Value, list[Operation]] = graph.users()
    absorbed: set[int] = set()
    position = {id(op): i for i, op in enumerate(graph.ops)}
    dispatches = []
    for op in graph.ops:
        if op.name not in ROOTS or id(op) in absorbed:
            continue
        dispatch = Dispatch(f"dispatch_{len(dispatches)}", op, origins=list(_origins(graph, op)))
        if _takes_epilogue(op) and counts.get(op.result, 0) == 1 and op.result not in graph.outputs:
            (user,) = users[op.result]
            if id(user) not in absorbed and is_elementwise(user) and user.attrs["domain"] == op.result.type.shape:
                slots = [i for i, v in enumerate(user.operands) if v is op.result]
                access = user.attrs["accesses"][slots[0]]
                if len(slots) == 1 and access.pad is None and access.map == AffineMap.identity(len(user.attrs["domain"])):
                    dispatch.epilogue, dispatch.slot = user, slots[0]
                    dispatch.origins += _origins(graph, user)
                    absorbed.add(id(user))
        dispatches.append(dispatch)
    # A dispatch runs where its last op stood: an epilogue may read values made after its root.
    dispatches.sort(key=lambda d: position[id(d.epilogue or d.root)])
    for i, d in enumerate(dispatches):
        d.name = f"dispatch_{i}"
    return dispatches
