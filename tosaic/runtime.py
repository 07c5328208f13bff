"""CompiledModel: the object users run. Checks inputs against the model's signature, runs the target.

`target="interp"` runs the TOSA reference interpreter. `target="cpu"` runs the compiled plan
(`tosaic.kernels.plan`): one arena allocated at compile time, each step a Numba kernel called on views of
it, so a run does no Python work per element and allocates only the arrays it returns. A named CPU
(`"cpu:aarch64:cortex-a76"`, see `tosaic.kernels.target`) gets a plan generated for that CPU: it runs
where that CPU's features are present, and is otherwise kept to be saved or exported for a board.

A stateful model (TOSA variables, from a TFLite model's resource variables) carries its variables from
one `run` to the next, as a LiteRT interpreter does across invocations; `reset()` restores their initial
values, which is what a newly created LiteRT interpreter starts from.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tosaic.errors import TosaicError
from tosaic.ir import Graph, ShapeType, TensorType
from tosaic.kernels.engine import InputSpec, KernelRunError, prepare_inputs
from tosaic.tosa.interpreter import TosaRuntimeError, initial_state, interpret


class SavedModelError(TosaicError, ValueError):
    """A compiled model's directory that is damaged (a file altered or missing) or not one tosaic reads."""


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


def _tensor_info_dict(t: TensorInfo) -> dict:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype.str,
            "scale": None if t.scale is None else list(t.scale),
            "zero_point": None if t.zero_point is None else list(t.zero_point)}


def _tensor_info_from(d: dict) -> TensorInfo:
    return TensorInfo(d["name"], tuple(d["shape"]), np.dtype(d["dtype"]),
                      None if d["scale"] is None else tuple(d["scale"]),
                      None if d["zero_point"] is None else tuple(d["zero_point"]))


def _tensor_info(graph: Graph, name: str, t: TensorType | ShapeType) -> TensorInfo:
    if isinstance(t, ShapeType):  # a graph returning a !tosa.shape (CONST_SHAPE) gives an int64 vector
        return TensorInfo(name, (t.rank,), np.dtype(np.int64))
    info = graph.io_info.get(name, {})
    dtype = np.dtype(info.get("dtype", t.numpy_dtype))
    scale = tuple(info["scale"]) if "scale" in info else None
    zero_point = tuple(info["zero_point"]) if "zero_point" in info else None
    return TensorInfo(name, t.shape, dtype, scale, zero_point)


@contextmanager
def _compile_progress():
    """A progress callback (kernels compiled or loaded, of all) drawing a bar on a terminal's stderr once a
    compile has taken a second; silent when stderr is not a terminal."""
    from tqdm import tqdm

    bar = None
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and sys.stderr.isatty() and time.perf_counter() - start > 1:
            bar = tqdm(total=total, initial=done - 1, desc="compiling kernels", unit="kernel", leave=False)
        if bar is not None:
            bar.update(1)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


class CompiledModel:
    """A TOSA graph bound to a target. `run(inputs)` returns the outputs as numpy arrays."""

    def __init__(self, graph: Graph | None, target: str = "interp", threads: int | None = None, plan=None,
                 io: tuple | None = None, source: dict | None = None):
        self.graph = graph
        self.target = target
        self.source = source  # {"name", "sha256"} of the model file compiled, when it came from a file
        if io is not None:
            self.inputs, self.outputs = io
        else:
            self.inputs = [_tensor_info(graph, n, v.type) for n, v in zip(graph.input_names, graph.inputs)]
            self.outputs = [_tensor_info(graph, n, v.type) for n, v in zip(graph.output_names, graph.outputs)]
        # The dtype each input is stored in: uint8 travels as int8 bits.
        stored = ([v.type.numpy_dtype for v in graph.inputs] if graph is not None
                  else [np.dtype(ref[3]) for ref in plan.inputs])
        self._specs = [InputSpec(i.name, tuple(i.shape), i.dtype, s) for i, s in zip(self.inputs, stored)]
        self._output_dtypes = [info.dtype for info in self.outputs]
        self._executable = self._plan = None
        self._cannot_run: str | None = None
        if target != "interp":
            from tosaic.kernels.plan import build_plan
            from tosaic.kernels.target import CudaTarget, missing_features, parse_target, target_from_dict

            description = parse_target(target)
            self._plan = plan if plan is not None else build_plan(graph, description)
            planned = target_from_dict(self._plan.target)
            missing = missing_features(planned)
            if missing:
                self._cannot_run = (f"this model was compiled for {planned}; this machine lacks "
                                    f"{', '.join(missing)}: save or export it for a machine that has them")
            elif isinstance(planned, CudaTarget):
                from tosaic.kernels.cuda_engine import CudaExecutable

                with _compile_progress() as progress:
                    self._executable = CudaExecutable(self._plan, progress=progress)
            else:
                from tosaic.kernels.engine import Executable

                with _compile_progress() as progress:
                    self._executable = Executable(self._plan, threads, compile_workers=os.cpu_count() or 1,
                                                  progress=progress)
            self._initial_state = self._plan.state
        else:
            self._initial_state = initial_state(graph)
        self._state: dict = {}
        self.reset()

    @property
    def memory(self) -> dict | None:
        """Arena peak bytes beside the sum of every activation tensor's bytes (compiled targets)."""
        plan = self._plan
        if plan is None:
            return None
        return {"arena_bytes": plan.arena_bytes, "activation_bytes": plan.activation_bytes,
                "weight_bytes": sum(int(c.nbytes) for c in plan.consts)}

    @property
    def threads(self) -> int | None:
        """Threads the kernels run on (compiled targets this machine runs)."""
        return None if self._executable is None else self._executable.threads

    @property
    def plan(self):
        """The compiled plan (compiled targets): steps, kernels, arena, the target it was generated for."""
        return self._plan

    def save(self, directory) -> None:
        """Keep the compiled model (plan, packed weights, kernel sources) in `directory`; `tosaic.load`
        brings it back without TFLite, lowering or kernel generation."""
        if self._plan is None:
            raise ValueError("only a compiled target can be saved; compile with target='cpu'")
        self._plan.save(Path(directory), self._meta())

    def _meta(self) -> dict:
        return {"target": self.target, "source": self.source, "inputs": [_tensor_info_dict(t) for t in self.inputs],
                "outputs": [_tensor_info_dict(t) for t in self.outputs]}

    def export(self, directory) -> dict:
        """Write a deploy bundle: this model's plan, packed weights and kernel sources with the runtime engine,
        `run.py` and `manifest.json`, which a board runs with numpy and numba alone (`python run.py
        IN.npz -o OUT.npz`, `--steps`, `--bench`). Returns the manifest."""
        from tosaic.kernels.bundle import export_bundle

        if self._plan is None or self._plan.target.get("family") == "cuda":
            raise ValueError("deploy bundles are for CPU targets; compile with target='cpu' or 'cpu:ARCH:CPU' "
                             "(a CUDA model is kept by save(), its kernels by `tosaic compile --emit-ptx`)")
        return export_bundle(self._plan, self._meta(), directory, self.source)

    @classmethod
    def from_plan(cls, plan, meta: dict, target: str, threads: int | None = None,
                  source: dict | None = None) -> CompiledModel:
        """The model of a plan kept with its metadata (`save`, `plan_cache`), without its TOSA graph."""
        io = ([_tensor_info_from(t) for t in meta["inputs"]], [_tensor_info_from(t) for t in meta["outputs"]])
        return cls(None, target, threads, plan=plan, io=io, source=source)

    @classmethod
    def load(cls, directory, threads: int | None = None) -> CompiledModel:
        from tosaic.kernels.engine import Plan, PlanError

        directory = Path(directory)
        if not (directory / "plan.json").is_file():
            raise FileNotFoundError(f"no compiled model in {directory} (plan.json is missing)")
        try:
            plan, meta = Plan.load(directory)
            model = cls.from_plan(plan, meta, meta["target"], threads, meta.get("source"))
        except PlanError as error:
            raise SavedModelError(str(error)) from None
        except (KeyError, TypeError, ValueError) as error:  # a plan whose digest matches but whose content is foreign
            raise SavedModelError(f"{directory}: its plan does not describe a model: {type(error).__name__}: "
                                  f"{error}") from None
        if model._cannot_run:
            from tosaic.kernels.target import TargetError

            raise TargetError(f"{directory}: {model._cannot_run}")
        return model

    def profile(self, inputs, repeat: int = 10) -> list[dict]:
        """Median seconds of each dispatch over `repeat` runs, slowest first (target "cpu")."""
        if self._plan is None:
            raise ValueError("profiling needs a compiled target; compile with target='cpu'")
        self._check_runnable()
        arrays = self._arrays(inputs)
        state = dict(self._state)
        return self._executable.profile(arrays, state, repeat)

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

    def _check_runnable(self) -> None:
        if self._cannot_run:
            from tosaic.kernels.target import TargetError

            raise TargetError(self._cannot_run)

    def _invoke(self, arrays, keep_all: bool = False):
        # Run on a copy of the state and keep it only when the run succeeds: a failed run changes nothing.
        self._check_runnable()
        state = dict(self._state)
        if self._executable is not None:
            try:
                result = self._executable.run(arrays, state)
            except KernelRunError as error:
                raise TosaRuntimeError(str(error)) from None
        else:
            result = interpret(self.graph, arrays, keep_all=keep_all, state=state)
        self._state = state
        return result

    def _arrays(self, inputs) -> tuple[np.ndarray, ...]:
        return prepare_inputs(inputs, self._specs)

    def run(self, inputs) -> list[np.ndarray]:
        """Run on a list of arrays in input order, one array, or a dict by input name."""
        outputs = self._invoke(self._arrays(inputs))
        if self._executable is None:
            # The interpreter's results may share memory with its values; np.ascontiguousarray would turn a
            # rank-0 result into shape (1,): copying keeps the rank. Compiled runs return fresh arrays.
            outputs = [np.array(out, copy=True) for out in outputs]
        return [out if dtype == out.dtype else out.view(dtype) for out, dtype in zip(outputs, self._output_dtypes)]

    def run_all(self, inputs) -> dict[str, np.ndarray]:
        """Run and return every value that is a tensor of the source model, by that tensor's name. Like
        `run`, this is one invocation: a stateful model's variables move on. Interpreter only: compiled
        kernels fuse layers, so their intermediate tensors never exist."""
        if self._plan is not None:
            raise ValueError("per-layer values exist only with target='interp' (compiled dispatches fuse layers)")
        _, env = self._invoke(self._arrays(inputs), keep_all=True)
        return {name: env[value] for value, name in self.graph.source_names.items() if value in env}
