"""Binds a plan to memory and runs it: one arena, kernels loaded from the cache, arguments prebuilt.

At bind time every kernel is compiled (or loaded from Numba's cache) for its exact argument types, and
each step's argument tuple is built once from views of the arena and the packed constants. A run copies
the inputs in, calls the steps in order, and copies the outputs out.
"""

from __future__ import annotations

import os
import time

# OpenMP workers spin only briefly (10,000 iterations, tens of microseconds) before sleeping. Sleeping at
# once (OMP_WAIT_POLICY=PASSIVE) costs a wake-up per parallel kernel: MobileNetV2 at 2 threads took 22.7 ms
# against 18.1 ms. Spinning without bound (libgomp's default 300,000, or ACTIVE) turns every parallel
# kernel into a scheduler quantum when another process holds a core (measured: 38 ms to 130-450 ms); with
# the short spin, a busy core costs no more than PASSIVE did (51 ms against 54 ms). Set before Numba loads
# its OpenMP pool; a user's value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from tosaic.kernels.cache import load_kernel  # noqa: E402
from tosaic.kernels.plan import Plan, Step  # noqa: E402

_SCALAR_TYPES = {"l": np.int64, "q": np.int64, "f": np.float32, "d": np.float64, "?": np.bool_}


class CpuExecutable:
    """A plan bound to an arena. `run(inputs, state)` returns the outputs and updates `state`."""

    def __init__(self, plan: Plan, threads: int | None = None):
        self.plan = plan
        limit = numba.config.NUMBA_NUM_THREADS
        self.threads = limit if threads is None else int(threads)
        if not 1 <= self.threads <= limit:
            raise ValueError(f"threads must be between 1 and {limit} (this machine's cores), got {threads}")
        raw = np.zeros(plan.arena_bytes + 64, dtype=np.uint8)
        start = (-raw.ctypes.data) % 64
        self.arena = raw[start:start + plan.arena_bytes]
        self.inputs = [self._view(r) for r in plan.inputs]
        self.outputs = [self._view(r) for r in plan.outputs]
        numba.set_num_threads(self.threads)
        self.steps = [self._bind(step) for step in plan.steps]

    def _view(self, ref: list) -> np.ndarray:
        if ref[0] == "const":
            return self.plan.consts[ref[1]]
        _, offset, shape, dtype = ref
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self.arena[offset:offset + nbytes].view(dtype).reshape(shape)

    def _bind(self, step: Step):
        arrays = [self._view(r) for r in step.arrays]
        if step.kind == "kernel":
            fn = load_kernel(step.key, self.plan.sources[step.key])
            params = tuple(_SCALAR_TYPES[kind](value) for kind, value in step.params)
            args = (*arrays, params, tuple(np.int64(n) for n in step.dims))
            fn.compile(tuple(numba.typeof(a) for a in args))
            return lambda state: fn(*args)
        if step.kind == "concat":
            return self._bind_concat(step, arrays)
        name = step.attrs["name"]
        (view,) = arrays
        if step.kind == "variable_read":
            def read(state):
                value = state.get(name)
                if value is None:
                    raise RuntimeError(f"variable @{name} is read before it has a value (no initial value, no write)")
                np.copyto(view, value)
            return read

        def write(state):
            state[name] = view.copy()
        return write

    def _bind_concat(self, step: Step, arrays):
        out, pieces = arrays[0], arrays[1:]
        axis = step.attrs["axis"]
        copies, start = [], 0
        for ref, piece in zip(step.arrays[1:], pieces):
            size = piece.shape[axis]
            target = out[(slice(None),) * axis + (slice(start, start + size),)]
            start += size
            # A piece its producer already wrote into the concat's bytes needs no copy.
            if ref[0] == "arena" and np.shares_memory(target, piece) and target.ctypes.data == piece.ctypes.data:
                continue
            copies.append((target, piece))

        def concat(state):
            for target, piece in copies:
                np.copyto(target, piece)
        return concat

    def run(self, inputs: list[np.ndarray], state: dict) -> list[np.ndarray]:
        numba.set_num_threads(self.threads)
        for view, array in zip(self.inputs, inputs):
            np.copyto(view, array.reshape(view.shape))
        for step in self.steps:
            step(state)
        return [np.array(out, copy=True) for out in self.outputs]

    def profile(self, inputs: list[np.ndarray], state: dict, repeat: int) -> list[dict]:
        numba.set_num_threads(self.threads)
        times = [[] for _ in self.steps]
        for _ in range(repeat):
            for view, array in zip(self.inputs, inputs):
                np.copyto(view, array.reshape(view.shape))
            for i, step in enumerate(self.steps):
                t = time.perf_counter()
                step(state)
                times[i].append(time.perf_counter() - t)
        rows = [{"dispatch": s.name, "template": s.template or s.kind, "ops": " + ".join(s.origins),
                 "seconds": float(np.median(t))} for s, t in zip(self.plan.steps, times)]
        return sorted(rows, key=lambda r: -r["seconds"])
