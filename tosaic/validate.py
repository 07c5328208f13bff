"""Compare tosaic with LiteRT's reference kernels on the same inputs, per output and per layer.

LiteRT (`ai-edge-litert`) is the reference we validate against; it is needed only here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tosaic.runtime import CompiledModel


@dataclass
class OutputComparison:
    name: str
    elements: int
    differing: int
    max_difference: float

    @property
    def exact(self) -> bool:
        return self.differing == 0


@dataclass
class ValidationReport:
    model: str
    target: str
    outputs: list[OutputComparison]
    first_divergence: dict | None = None
    layers_compared: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return all(o.exact for o in self.outputs)

    def as_dict(self) -> dict:
        return {
            "model": self.model, "target": self.target, "exact": self.exact,
            "outputs": [{"name": o.name, "elements": o.elements, "differing": o.differing,
                         "max_difference": o.max_difference} for o in self.outputs],
            "first_divergence": self.first_divergence, "layers_compared": self.layers_compared,
        }


def reference_interpreter(model_path: str | Path, preserve_all_tensors: bool = False):
    """LiteRT's interpreter with the reference kernels (BUILTIN_REF), one thread."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise RuntimeError("validation needs LiteRT: pip install 'tosaic[test]' (ai-edge-litert)") from None
    interpreter = Interpreter(model_path=str(model_path), num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=preserve_all_tensors)
    interpreter.allocate_tensors()
    return interpreter


def run_reference(interpreter, inputs: list[np.ndarray]) -> list[np.ndarray]:
    for detail, array in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def random_inputs(model: CompiledModel, seed: int = 0) -> list[np.ndarray]:
    """Seeded inputs covering each input type's full range (floats in [-1, 1])."""
    rng = np.random.default_rng(seed)
    arrays = []
    for info in model.inputs:
        if info.dtype.kind in "iu":
            limits = np.iinfo(info.dtype)
            arrays.append(rng.integers(limits.min, limits.max, size=info.shape, endpoint=True, dtype=info.dtype))
        elif info.dtype.kind == "b":
            arrays.append(rng.integers(0, 2, size=info.shape).astype(bool))
        else:
            arrays.append(rng.uniform(-1, 1, size=info.shape).astype(info.dtype))
    return arrays


def compare(name: str, ours: np.ndarray, reference: np.ndarray) -> OutputComparison:
    if ours.shape != reference.shape:
        return OutputComparison(name, int(reference.size), int(reference.size), float("inf"))
    differing = ours != reference
    if ours.dtype.kind in "iub":
        delta = np.abs(ours.astype(np.int64) - reference.astype(np.int64))
    else:
        delta = np.abs(ours.astype(np.float64) - reference.astype(np.float64))
    return OutputComparison(name, int(reference.size), int(differing.sum()), float(delta.max(initial=0)))


def first_divergence(model: CompiledModel, model_path: str | Path, inputs: list[np.ndarray]) -> tuple[dict | None, int]:
    """The first TFLite tensor, in execution order, whose tosaic value differs from LiteRT's."""
    interpreter = reference_interpreter(model_path, preserve_all_tensors=True)
    run_reference(interpreter, inputs)
    by_name = {d["name"]: d for d in interpreter.get_tensor_details()}
    model.reset()  # a fresh LiteRT interpreter: a stateful model starts from its initial state too
    ours = model.run_all(inputs)
    order = [value for op in model.graph.ops for value in op.results if value in model.graph.source_names]
    compared = 0
    for value in order:
        name = model.graph.source_names[value]
        detail = by_name.get(name)
        if detail is None or name not in ours:
            continue
        reference = interpreter.get_tensor(detail["index"])
        mine = np.asarray(ours[name]).view(reference.dtype) if reference.dtype.itemsize == ours[name].dtype.itemsize \
            else ours[name]
        compared += 1
        result = compare(name, mine, reference)
        if not result.exact:
            return {"tensor": name, "op": value.owner.loc, "elements": result.elements,
                    "differing": result.differing, "max_difference": result.max_difference}, compared
    return None, compared


def validate(model_path: str | Path, inputs: list[np.ndarray] | None = None, target: str = "interp",
             per_layer: bool = False, seed: int = 0, threads: int | None = None) -> ValidationReport:
    """Run tosaic and LiteRT BUILTIN_REF on the same inputs and compare every output element."""
    import tosaic

    model = tosaic.compile(model_path, target=target, threads=threads)
    if inputs is None:
        inputs = random_inputs(model, seed)
    ours = model.run(inputs)
    reference = run_reference(reference_interpreter(model_path), inputs)
    outputs = [compare(info.name, o, r) for info, o, r in zip(model.outputs, ours, reference)]
    report = ValidationReport(str(model_path), target, outputs)
    if per_layer:
        # Compiled dispatches fuse layers; the interpreter has every tensor to name the first that differs.
        layers = model if target == "interp" else tosaic.compile(model_path)
        report.first_divergence, report.layers_compared = first_divergence(layers, model_path, inputs)
    return report
