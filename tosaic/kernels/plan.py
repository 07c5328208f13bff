"""The compiled plan: what a CompiledModel executes, as plain data that can be saved and loaded.

`build_plan` runs the compiler proper on a TOSA graph for a target description: lowering to structured
ops, elementwise fusion, dispatch formation, arena planning, and code generation of one kernel per dispatch
(packing weights into the layout each kernel reads). A plan holds no Python objects of the compiler: array
references are arena offsets or constant indices, kernels are named by the hash of their source, and the
target it was generated for is recorded as data, so `save`/`load` round-trip it without importing TFLite
or lowering again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tosaic.ir import Graph, Value
from tosaic.kernels.cpu import ArrayArg, kernel_for
from tosaic.kernels.target import CpuTarget
from tosaic.lowering.bufferize import plan_arena
from tosaic.lowering.canonicalize import simplify_bodies
from tosaic.lowering.from_tosa import lower
from tosaic.lowering.fusion import Dispatch, form_dispatches, fuse_elementwise

FORMAT_VERSION = 2


@dataclass
class Step:
    """One step of a plan. `arrays` are ["arena", byte offset, shape, dtype] or ["const", index]."""

    kind: str  # kernel | concat | variable_read | variable_write
    name: str
    origins: list[str]
    arrays: list
    key: str = ""
    template: str = ""
    params: list = field(default_factory=list)
    dims: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)


@dataclass
class Plan:
    arena_bytes: int
    activation_bytes: int
    inputs: list  # array references of the model inputs, in order
    outputs: list
    steps: list[Step]
    sources: dict[str, str]
    consts: list[np.ndarray]
    state: dict  # variable name -> initial value (or None)
    target: dict  # CpuTarget.as_dict() of the target the kernels were generated for

    @property
    def dispatch_count(self) -> int:
        return sum(1 for s in self.steps if s.kind == "kernel")

    @property
    def kernel_count(self) -> int:
        return len(self.sources)

    def save(self, directory: Path, meta: dict) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"const_{i}": a for i, a in enumerate(self.consts)}
        state_names = sorted(k for k, v in self.state.items() if v is not None)
        arrays.update({f"state_{i}": self.state[k] for i, k in enumerate(state_names)})
        np.savez(directory / "arrays.npz", **arrays)
        (directory / "kernels").mkdir(exist_ok=True)
        for key, source in self.sources.items():
            (directory / "kernels" / f"{key}.py").write_text(source)
        doc = {"format": FORMAT_VERSION, "meta": meta, "target": self.target, "arena_bytes": self.arena_bytes,
               "activation_bytes": self.activation_bytes, "inputs": self.inputs, "outputs": self.outputs,
               "steps": [asdict(s) for s in self.steps], "consts": len(self.consts),
               "state": {k: (state_names.index(k) if v is not None else None) for k, v in self.state.items()}}
        (directory / "plan.json").write_text(json.dumps(doc, indent=1, default=_json_default))

    @staticmethod
    def load(directory: Path) -> tuple[Plan, dict]:
        doc = json.loads((directory / "plan.json").read_text())
        if doc.get("format") != FORMAT_VERSION:
            raise ValueError(f"{directory} holds a compiled model of format {doc.get('format')}, "
                             f"this tosaic reads format {FORMAT_VERSION}")
        with np.load(directory / "arrays.npz") as npz:
            consts = [npz[f"const_{i}"] for i in range(doc["consts"])]
            state = {k: (None if i is None else npz[f"state_{i}"]) for k, i in doc["state"].items()}
        steps = [Step(**s) for s in doc["steps"]]
        sources = {s.key: (directory / "kernels" / f"{s.key}.py").read_text() for s in steps if s.kind == "kernel"}
        plan = Plan(doc["arena_bytes"], doc["activation_bytes"], doc["inputs"], doc["outputs"], steps, sources,
                    consts, state, doc["target"])
        return plan, doc["meta"]


def _typed(value) -> list:
    """A kernel parameter as [kind, value], kind the numpy type's char (JSON keeps no scalar types)."""
    return [np.asarray(value).dtype.char, value.item()]


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a plan")


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


def structured_stages(graph: Graph):
    """(structured program after fusion, dispatches, execution order) for a TOSA graph."""
    structured = simplify_bodies(fuse_elementwise(lower(graph)))
    dispatches = form_dispatches(structured)
    return structured, dispatches, _steps_in_order(structured, dispatches)


def build_plan(graph: Graph, target: CpuTarget, stages=None) -> Plan:
    """The plan of a TOSA graph for `target`; `stages` are its `structured_stages`, when the caller has them
    already."""
    structured, dispatches, order = stages or structured_stages(graph)
    arena = plan_arena(structured, order)
    b = _Builder(structured, arena.offsets)
    steps, sources = [], {}
    for item in order:
        if isinstance(item, Dispatch):
            spec = kernel_for(item, target)
            sources[spec.key] = spec.source
            steps.append(Step("kernel", item.name, item.origins, [b.array(a) for a in spec.arrays], spec.key,
                              spec.template, [_typed(p) for p in spec.params], [int(n) for n in spec.dims]))
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
