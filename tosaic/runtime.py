"""CompiledModel: the object users run. Checks inputs against the model's signature, runs the target.

`target="interp"` runs the TOSA reference interpreter; compiled targets plug in here with the same API.

A stateful model (TOSA variables, from a TFLite model's resource variables) carries its variables from
one `run` to the next, as a LiteRT interpreter does across invocations; `reset()` restores their initial
values, which is what a newly created LiteRT interpreter starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tosaic.ir import Graph, TensorType
from tosaic.tosa.interpreter import initial_state, interpret

TARGETS = ("interp",)


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the user sees it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: tuple[float, ...] | None = None
    zero_point: tuple[int, ...] | None = None

    def __str__(self) -> str:
        quant = f" scale={self.scale[0]:.6g} zero_point={self.zero_point[0]}" if self.scale else ""
        return f"{self.name}: {self.dtype}{list(self.shape)}{quant}"


def _tensor_info(graph: Graph, name: str, t: TensorType) -> TensorInfo:
    info = graph.io_info.get(name, {})
    dtype = np.dtype(info.get("dtype", t.numpy_dtype))
    scale = tuple(info["scale"]) if "scale" in info else None
    zero_point = tuple(info["zero_point"]) if "zero_point" in info else None
    return TensorInfo(name, t.shape, dtype, scale, zero_point)


class CompiledModel:
    """A TOSA graph bound to a target. `run(inputs)` returns the outputs as numpy arrays."""

    def __init__(self, graph: Graph, target: str = "interp"):
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; available targets: {', '.join(TARGETS)}")
        self.graph = graph
        self.target = target
        self.inputs = [_tensor_info(graph, n, v.type) for n, v in zip(graph.input_names, graph.inputs)]
        self.outputs = [_tensor_info(graph, n, v.type) for n, v in zip(graph.output_names, graph.outputs)]
        self._initial_state = initial_state(graph)
        self._state: dict = {}
        self.reset()

    @property
    def stateful(self) -> bool:
        """Whether the model keeps variables from one run to the next."""
        return bool(self._initial_state)

    @property
    def state(self) -> dict[str, np.ndarray | None]:
        """A copy of the variables' current values by name (None: not yet written, no initial value)."""
        return {name: None if value is None else value.copy() for name, value in self._state.items()}

    def reset(self) -> None:
        """Restore every variable to its initial value, as a newly created interpreter has them."""
        self._state = {name: None if value is None else value.copy() for name, value in self._initial_state.items()}

    def _invoke(self, arrays, keep_all: bool = False):
        # Run on a copy of the state and keep it only when the run succeeds: a failed run changes nothing.
        state = dict(self._state)
        result = interpret(self.graph, arrays, keep_all=keep_all, state=state)
        self._state = state
        return result

    def _arrays(self, inputs) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - {i.name for i in self.inputs})
            if unknown:
                raise ValueError(f"unknown input names {unknown}; the model's inputs are "
                                 f"{[i.name for i in self.inputs]}")
            missing = [i.name for i in self.inputs if i.name not in inputs]
            if missing:
                raise ValueError(f"missing inputs {missing}")
            inputs = [inputs[i.name] for i in self.inputs]
        elif isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} inputs, got {len(inputs)}")
        arrays = []
        for info, value, array in zip(self.inputs, self.graph.inputs, inputs):
            array = np.asarray(array)
            if array.dtype != info.dtype:
                raise ValueError(f"input '{info.name}' must be {info.dtype}, got {array.dtype}")
            if array.shape != info.shape:
                raise ValueError(f"input '{info.name}' must have shape {list(info.shape)}, got {list(array.shape)}")
            arrays.append(np.array(array, copy=True).view(value.type.numpy_dtype))
        return arrays

    def run(self, inputs) -> list[np.ndarray]:
        """Run on a list of arrays in input order, one array, or a dict by input name."""
        outputs = self._invoke(self._arrays(inputs))
        # np.ascontiguousarray would turn a rank-0 result into shape (1,); copying keeps the rank.
        return [np.array(out, copy=True).view(info.dtype) for out, info in zip(outputs, self.outputs)]

    def run_all(self, inputs) -> dict[str, np.ndarray]:
        """Run and return every value that is a tensor of the source model, by that tensor's name. Like
        `run`, this is one invocation: a stateful model's variables move on."""
        _, env = self._invoke(self._arrays(inputs), keep_all=True)
        return {name: env[value] for value, name in self.graph.source_names.items() if value in env}
