"""The compiled plan: what a CompiledModel executes, as plain data that can be saved and loaded.

`build_plan` runs the compiler proper on a TOSA graph for a target description: lowering to structured
ops, elementwise fusion, dispatch formation, arena planning, and code generation of one kernel per dispatch
(packing weights into the layout each kernel reads). A plan holds no Python objects of the compiler: array
references are arena offsets or constant indices, kernels are named by the hash of their source, and the
target it was generated for is recorded as data, so `save`/`load` round-trip it without importing TFLite
or lowering again.
"""

from __future__ import annotations

import numpy as np

from tosaic.ir import Graph, Value
from tosaic.kernels import cuda
from tosaic.kernels.cpu import ArrayArg, kernel_for
from tosaic.kernels.engine import Plan, Step
from tosaic.kernels.target import CpuTarget, CudaTarget
from tosaic.lowering.bufferize import plan_arena
from tosaic.lowering.canonicalize import simplify_bodies
from tosaic.lowering.constant_fold import fold_constants
from tosaic.lowering.from_tosa import lower
from tosaic.lowering.fusion import Dispatch, form_dispatches, fuse_elementwise
from tosaic.lowering.structured import constant_values
from tosaic.lowering.tabulate import tabulate

def _typed(value) -> list:
    """A kernel parameter as [kind, value], kind the numpy type's char (JSON keeps no scalar types)."""
    return [np.asarray(value).dtype.char, value.item()]


class _Builder:
    def __init__(self, graph: Graph, offsets: dict[Value, int]):
        self.graph, self.offsets = graph, offsets
        self.consts: list[np.ndarray] = []
        self.const_index: dict[int, int] = {}

    def const(self, array: np.ndarray) -> list:
        key = id(array)
        if key not in self.const_index:
            self.const_index[key] = len(self.consts)
            self.consts.append(np.require(array, requirements="C"))  # keeps rank 0, unlike ascontiguousarray
        return ["const", self.const_index[key]]

    def ref(self, v: Value, shape=None) -> list:
        shape = list(v.type.shape if shape is None else shape)
        if v.owner is not None and v.owner.name == "linalg.const":
            values = v.owner.attrs["values"]
            return self.const(np.require(values, requirements="C").reshape(shape))
        return ["arena", self.offsets[v], shape, v.type.numpy_dtype.str]

    def array(self, arg: ArrayArg) -> list:
        if arg.array is not None:
            return self.const(arg.array)
        if arg.dtype is not None:
            values = constant_values(arg.value)
            if values is not None:
                return self.const(np.ascontiguousarray(values).view(arg.dtype).reshape(arg.shape))
            return ["arena", self.offsets[arg.value], list(arg.shape), np.dtype(arg.dtype).str]
        return self.ref(arg.value, arg.shape)


def _steps_in_order(graph: Graph, dispatches: list[Dispatch]) -> list:
    last_member = {id(d.epilogue or d.root): d for d in dispatches}
    members = {id(op) for d in dispatches for op in (d.root, d.epilogue) if op is not None}
    steps = []
    for op in graph.ops:
        if id(op) in last_member:
            steps.append(last_member[id(op)])
        elif id(op) not in members and op.name != "linalg.const":
            steps.append(op)
    return steps


def fused_program(structured: Graph) -> Graph:
    """The structured program after fusion: constants folded, elementwise chains inlined, int8 functions
    tabulated (which leaves their inputs single-use, so a second inlining takes them into their producers),
    bodies simplified."""
    return simplify_bodies(fuse_elementwise(tabulate(fuse_elementwise(fold_constants(structured)))))


def structured_stages(graph: Graph):
    """(structured program after fusion, dispatches, execution order) for a TOSA graph."""
    structured = fused_program(lower(graph))
    dispatches = form_dispatches(structured)
    return structured, dispatches, _steps_in_order(structured, dispatches)


def build_plan(graph: Graph, target: CpuTarget | CudaTarget, stages=None) -> Plan:
    """The plan of a TOSA graph for `target`; `stages` are its `structured_stages`, when the caller has them
    already."""
    structured, dispatches, order = stages or structured_stages(graph)
    # Kernels first: the scratch buffers they work in are planned in the arena with the activations.
    generate = cuda.kernel_for if isinstance(target, CudaTarget) else kernel_for
    specs = {i: generate(item, target) for i, item in enumerate(order) if isinstance(item, Dispatch)}
    scratch = {i: [a.value for a in spec.arrays if a.scratch] for i, spec in specs.items()}
    arena = plan_arena(structured, order, scratch)
    b = _Builder(structured, arena.offsets)
    steps, sources = [], {}
    for i, item in enumerate(order):
        if isinstance(item, Dispatch):
            spec = specs[i]
            sources[spec.key] = spec.source
            steps.append(Step("kernel", item.name, item.origins, [b.array(a) for a in spec.arrays], spec.key,
                              spec.template, [_typed(p) for p in spec.params], [int(n) for n in spec.dims],
                              dict(spec.launch) if spec.launch else {"phases": spec.phases, "split": spec.split}))
        elif item.name == "linalg.concat":
            steps.append(Step("concat", "concat", structured.origins.get(item, []),
                              [b.ref(item.result)] + [b.ref(v) for v in item.operands], attrs={"axis": item.attrs["axis"]}))
        elif item.name in ("linalg.variable_read", "linalg.variable_write"):
            refs = [b.ref(v) for v in (item.results or item.operands)]
            steps.append(Step(item.name.split(".")[1], item.attrs["name"], structured.origins.get(item, []), refs,
                              attrs={"name": item.attrs["name"]}))
    inputs = [b.ref(v) for v in structured.inputs]
    outputs = [b.ref(v) for v in structured.outputs]
    return Plan(arena.size, arena.activation_bytes, inputs, outputs, steps, sources, b.consts, structured.state,
                target.as_dict())
