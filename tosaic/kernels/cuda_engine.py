"""Runs a CUDA plan through numba-cuda, and writes its kernels' PTX ahead of time.

`CudaExecutable` uploads the packed constants once and keeps one device arena for the activations; a run
copies the inputs in, launches every kernel in order on the default stream (a concat's copies are a
strided-copy kernel), and copies the outputs back. Variables stay on the device from one run to the next
(`DeviceValue`), copied to the host only when the model's state is asked for. Under Numba's CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`)
the same code runs on the CPU, a Python thread per CUDA thread: what the tests check without a GPU.

`emit_ptx` compiles each kernel of a plan for a compute capability without a GPU (numba-cuda's NVVM
through the `nvidia-cuda-nvrtc` wheel) and writes the PTX with a manifest; `ptxas` from the CUDA toolkit
then proves it assembles (`ptxas_report`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tosaic.kernels.engine import SCALAR_TYPES, Plan, Step, concat_copies, load_module, module_name, ref_layout

INSTALL_HINT = "pip install 'tosaic[cuda]'"

# A concat piece copied into its slot of the output: `count` blocks of `block` bytes, strided.
COPY_SOURCE = '''import numpy as np
from numba import cuda


@cuda.jit
def copy_blocks(target, source, count, block, target_stride, source_stride):
    f = cuda.grid(1)
    if f < count * block:
        i = f // block
        k = f - i * block
        target[i * target_stride + k] = source[i * source_stride + k]
'''
COPY_BLOCK = 256


def _cuda():
    """numba-cuda's `cuda` module, or None where numba-cuda is not installed."""
    try:
        import numba_cuda  # noqa: F401  (the package; `numba.cuda` alone may be numba's old built-in target)
        from numba import cuda
    except ImportError:
        return None
    return cuda


def simulated() -> bool:
    """Whether numba-cuda runs kernels in its CPU simulator (NUMBA_ENABLE_CUDASIM=1)."""
    from numba.cuda.core import config

    return bool(config.ENABLE_CUDASIM)


def present_cc() -> tuple[int, int] | None:
    """The compute capability of this machine's GPU; None without numba-cuda, a GPU, or under the simulator."""
    cuda = _cuda()
    if cuda is None or simulated() or not cuda.is_available():
        return None
    return tuple(cuda.get_current_device().compute_capability)


def missing() -> list[str]:
    """What this machine lacks to run CUDA kernels; empty under the simulator or with a GPU."""
    cuda = _cuda()
    if cuda is None:
        return [f"numba-cuda ({INSTALL_HINT})"]
    if simulated() or cuda.is_available():
        return []
    return ["a CUDA GPU (numba.cuda.is_available() is False; NUMBA_ENABLE_CUDASIM=1 runs Numba's simulator)"]


class DeviceValue:
    """A variable's value as a run left it, on the device: the next run reads it there; `copy()` brings it
    to the host (what `CompiledModel.state` shows)."""

    def __init__(self, array, shape: tuple):
        self.array, self.shape = array, shape

    def copy(self) -> np.ndarray:
        return self.array.copy_to_host().reshape(self.shape)


def _grid(threads: int, block: int) -> tuple[int, int]:
    return max(1, -(-threads // block)), block


class CudaExecutable:
    """A CUDA plan ready to run: kernels loaded from `kernel_dir` (default: the cache), constants on the
    device, one device arena."""

    threads = None

    def __init__(self, plan: Plan, kernel_dir: Path | None = None, progress=None):
        cuda = _cuda()
        self.plan, self.kernel_dir = plan, kernel_dir
        self.arena = cuda.to_device(np.zeros(max(plan.arena_bytes, 1), np.uint8))
        self.consts = [cuda.to_device(np.ascontiguousarray(c).reshape(c.shape or (1,))) for c in plan.consts]
        self._copy = load_module(f"cuda_copy_{_digest(COPY_SOURCE)}", COPY_SOURCE, kernel_dir).copy_blocks
        self.inputs = [self._view(r) for r in plan.inputs]
        self.outputs = [self._view(r) for r in plan.outputs]
        kernels = [s for s in plan.steps if s.kind == "kernel"]
        self.steps = []
        for step in plan.steps:
            self.steps.append(self._bind(step))
            if progress is not None and step.kind == "kernel":
                progress(kernels.index(step) + 1, len(kernels))

    def _view(self, ref: list, arena=None):
        if ref[0] == "const":
            return self.consts[ref[1]]
        _, offset, shape, dtype = ref
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        base = self.arena if arena is None else arena
        return base[offset:offset + nbytes].view(dtype).reshape(tuple(shape) or (1,))

    def _bind(self, step: Step):
        if step.kind == "kernel":
            kernel = load_module(step.key, self.plan.sources[step.key], self.kernel_dir).kernel
            args = ([self._view(r) for r in step.arrays], _params(step), tuple(np.int64(n) for n in step.dims))
            grid, block = tuple(step.attrs["grid"]), tuple(step.attrs["block"])
            # Configured at each launch: the simulator's kernel object keeps the last configuration given.
            return lambda state: kernel[grid, block](*args[0], args[1], args[2])
        if step.kind == "concat":
            return self._bind_concat(step)
        name = step.attrs["name"]
        (view,) = [self._view(r) for r in step.arrays]
        if step.kind == "variable_read":
            def read(state):
                value = state.get(name)
                if value is None:
                    raise RuntimeError(f"variable @{name} is read before it has a value (no initial value, no write)")
                if isinstance(value, DeviceValue):
                    view.copy_to_device(value.array)
                else:
                    view.copy_to_device(np.ascontiguousarray(value).reshape(view.shape))
            return read

        cuda = _cuda()
        shape = tuple(ref_layout(self.plan, step.arrays[0])[1])

        def write(state):
            value = cuda.device_array(view.shape, view.dtype)
            value.copy_to_device(view)
            state[name] = DeviceValue(value, shape)
        return write

    def _bind_concat(self, step: Step):
        """Each piece's bytes as blocks of the output's bytes: `count` blocks of `block` bytes."""
        out_dtype, out_shape = ref_layout(self.plan, step.arrays[0])
        axis = step.attrs["axis"]
        itemsize = np.dtype(out_dtype).itemsize
        outer = int(np.prod(out_shape[:axis], dtype=np.int64))
        inner = int(np.prod(out_shape[axis + 1:], dtype=np.int64)) * itemsize
        launches = []
        target = self._bytes(step.arrays[0])
        host_arena = np.zeros(max(self.plan.arena_bytes, 1), np.uint8)   # the geometry of the pieces only
        for start, size, ref in concat_copies(step, lambda r: self._view(r, host_arena)
                                              if r[0] == "arena" else self.plan.consts[r[1]]):
            block = size * inner
            args = (target[start * inner:], self._bytes(ref), np.int64(outer), np.int64(block),
                    np.int64(out_shape[axis] * inner), np.int64(block))
            launches.append((_grid(outer * block, COPY_BLOCK), args))

        def concat(state):
            for grid, args in launches:
                self._copy[grid](*args)
        return concat

    def _bytes(self, ref: list):
        """A reference's bytes on the device, flat."""
        if ref[0] == "const":
            return self.consts[ref[1]].reshape(-1).view(np.uint8)
        _, offset, shape, dtype = ref
        return self.arena[offset:offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize]

    def run(self, inputs: tuple[np.ndarray, ...], state: dict) -> list[np.ndarray]:
        """`inputs` in the plan's input shapes and dtypes, C-contiguous; `state` the variables' values."""
        for view, array in zip(self.inputs, inputs):
            view.copy_to_device(np.ascontiguousarray(array).reshape(view.shape))
        for step in self.steps:
            step(state)
        return [view.copy_to_host().reshape(ref_layout(self.plan, ref)[1])
                for view, ref in zip(self.outputs, self.plan.outputs)]


    def profile(self, inputs: list[np.ndarray], state: dict, repeat: int) -> list[dict]:
        """Median seconds of each step over `repeat` runs, the device synchronized after each; slowest first."""
        import time

        cuda = _cuda()
        times = [[] for _ in self.steps]
        for _ in range(repeat):
            for view, array in zip(self.inputs, inputs):
                view.copy_to_device(np.ascontiguousarray(array).reshape(view.shape))
            for i, step in enumerate(self.steps):
                start = time.perf_counter()
                step(state)
                cuda.synchronize()
                times[i].append(time.perf_counter() - start)
        rows = [{"dispatch": s.name, "template": s.template or s.kind, "ops": " + ".join(s.origins),
                 "seconds": float(np.median(t))} for s, t in zip(self.plan.steps, times)]
        return sorted(rows, key=lambda r: -r["seconds"])


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _params(step: Step) -> tuple:
    return tuple(SCALAR_TYPES[kind](value) for kind, value in step.params)


def kernel_signature(plan: Plan, step: Step) -> tuple:
    """The numba-cuda types a kernel step is launched with: C-contiguous arrays, the parameter tuple P and
    the loop bound tuple D."""
    from numba import from_dtype, types

    arrays = []
    for ref in step.arrays:
        dtype, shape = ref_layout(plan, ref)
        arrays.append(types.Array(from_dtype(np.dtype(dtype)), max(len(shape), 1), "C"))
    kinds = {"l": types.int64, "q": types.int64, "f": types.float32, "d": types.float64, "?": types.boolean}
    params = types.BaseTuple.from_types([kinds[kind] for kind, _ in step.params])
    dims = types.BaseTuple.from_types([types.int64] * len(step.dims))
    return (*arrays, params, dims)


def emit_ptx(plan: Plan, cc: tuple[int, int], directory: Path, kernel_dir: Path | None = None) -> dict:
    """Write the PTX of every kernel of `plan` for compute capability `cc` into `directory`, one file per
    kernel variant, and `manifest.json`: per dispatch its kernel, PTX file, grid, block, and where `ptxas`
    is on PATH, the registers and shared memory it assembles to (`assembled`: whether it was). Returns the
    manifest."""
    cuda = _cuda()
    if cuda is None:
        raise RuntimeError(f"PTX needs numba-cuda ({INSTALL_HINT})")
    if simulated():
        raise RuntimeError("numba-cuda runs its simulator (NUMBA_ENABLE_CUDASIM=1), which has no PTX compiler: "
                           "unset NUMBA_ENABLE_CUDASIM to emit PTX")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sm = f"sm_{cc[0]}{cc[1]}"
    files: dict = {}
    kernels = []
    for step in plan.steps:
        if step.kind != "kernel":
            continue
        signature = kernel_signature(plan, step)
        variant = (step.key, str(signature))
        if variant not in files:
            module = load_module(step.key, plan.sources[step.key], kernel_dir)
            ptx, _ = cuda.compile_ptx(module.kernel.py_func, signature, cc=cc)
            name = f"{module_name(step.key)}_{len(files)}.{sm}.ptx"
            (directory / name).write_text(ptx)
            files[variant] = name
        kernels.append({"dispatch": step.name, "ops": step.origins, "template": step.template, "kernel": step.key,
                        "ptx": files[variant], "grid": step.attrs["grid"], "block": step.attrs["block"]})
    assembled = shutil.which("ptxas") is not None
    if assembled:
        usage = {name: ptxas_report(directory / name, sm) for name in set(files.values())}
        for k in kernels:
            k.update(usage[k["ptx"]])
    manifest = {"target": f"cuda:{sm}", "compute_capability": list(cc), "assembled": assembled, "kernels": kernels}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


_PTXAS_USAGE = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def ptxas_report(ptx_file: Path, sm: str) -> dict:
    """Assemble `ptx_file` with the CUDA toolkit's `ptxas -arch=sm` (raises CalledProcessError with its
    message where it fails); the registers and shared memory it reports."""
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        raise FileNotFoundError("ptxas (the CUDA toolkit's PTX assembler) is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([ptxas, f"-arch={sm}", "-v", str(ptx_file), "-o", str(Path(tmp) / "out.cubin")],
                              capture_output=True, text=True, check=True)
    usage = _PTXAS_USAGE.search(done.stderr)
    return {"registers": int(usage.group(1)) if usage else None,
            "shared_memory_bytes": int(usage.group(2)) if usage and usage.group(2) else 0}
