"""The runtime engine: a compiled model's directory (plan.json, arrays.npz, kernels/), the check that this
machine can run it, the on-disk kernel cache, and the binding of kernels to one arena that runs it.

Standalone on purpose: it imports numpy, and numba and llvmlite once a plan is bound (so that importing it
costs nothing). tosaic's CompiledModel runs through it, and a deploy bundle (`tosaic export`) carries this
file as its whole runtime, so a board runs a model with exactly the code tosaic tested.

Kernel cache: a generated module is a file named by the hash of its source, written once, atomically, and
imported as a real file so that Numba's `cache=True` stores the machine code beside it (`@njit(cache=True)`
on source run with `exec` has no file to locate). A later process finds both and compiles nothing. The
cache heals: a module file that does not hold its source is rewritten, Numba cache files that fail to
load are dropped and the function compiled again, and a cache directory that cannot be used is replaced by
a private temporary one (`kernel_directory`).

Binding: every kernel is compiled (or loaded from Numba's cache) for its exact argument types. A generated
entry point per model (`entry_point`, cached like a kernel) then runs a whole step: it copies the inputs
into the arena, calls every kernel through its native address with views of the arena and the packed
constants, copies concat pieces and variables, and sets the thread count; a run is one call of it plus
the output copies. The per-step closures remain for `profile`, which times each dispatch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

# OpenMP workers spin only briefly (10,000 iterations, tens of microseconds) before sleeping. Sleeping at
# once (OMP_WAIT_POLICY=PASSIVE) costs a wake-up per parallel kernel: MobileNetV2 at 2 threads took 22.7 ms
# against 18.1 ms. Spinning without bound (libgomp's default 300,000, or ACTIVE) turns every parallel
# kernel into a scheduler quantum when another process holds a core (measured: 38 ms to 130-450 ms); with
# the short spin, a busy core costs no more than PASSIVE did (51 ms against 54 ms). Set before Numba loads
# its OpenMP pool; a user's value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numpy as np  # noqa: E402

FORMAT_VERSION = 3

# Features generated code may depend on. x86: AVX2 (the vpmaddwd micro-kernel), AVX-512 and the VNNI
# forms; aarch64: NEON (Advanced SIMD), the dot product (sdot) and int8 matrix multiply (smmla).
RELEVANT_FEATURES = {
    "x86_64": ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512vbmi", "avxvnni"),
    "aarch64": ("neon", "dotprod", "i8mm"),
}

# AArch64 Linux hwcaps (arch/arm64/include/uapi/asm/hwcap.h): AT_HWCAP bit 1 is ASIMD, bit 20 ASIMDDP;
# AT_HWCAP2 bit 13 is I8MM.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_HWCAP_BITS = {"neon": (_AT_HWCAP, 1), "dotprod": (_AT_HWCAP, 20), "i8mm": (_AT_HWCAP2, 13)}


def machine_arch() -> str:
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def _auxv() -> dict[int, int]:
    """The process's auxiliary vector (AT_* type -> value) from /proc/self/auxv; empty if unreadable."""
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return {}
    words = np.frombuffer(raw[: len(raw) // 16 * 16], dtype=np.uint64).reshape(-1, 2)
    return {int(kind): int(value) for kind, value in words}


def hwcap_features(auxv: dict[int, int]) -> frozenset[str]:
    """The aarch64 features an auxiliary vector's hwcaps announce."""
    return frozenset(f for f, (kind, bit) in _HWCAP_BITS.items() if auxv.get(kind, 0) >> bit & 1)


def machine_features() -> frozenset[str]:
    """The features of RELEVANT_FEATURES this CPU executes: on aarch64 from the kernel's hwcaps (what an
    emulator or a board really provides), elsewhere from LLVM's view of the host CPU."""
    arch = machine_arch()
    if arch == "aarch64":
        return hwcap_features(_auxv())
    from llvmlite import binding

    flags = binding.get_host_cpu_features().flatten().split(",")
    return frozenset(f[1:] for f in flags if f.startswith("+") and f[1:] in RELEVANT_FEATURES.get(arch, ()))


def missing(target: dict, arch: str | None = None, features=None) -> list[str]:
    """What a machine (default: this one) lacks to run code generated for `target` (a plan's target
    record): its architecture, or features the code may use. Empty when it can run it."""
    arch = arch or machine_arch()
    if arch != target["arch"]:
        return [f"the {target['arch']} architecture (this machine is {arch})"]
    features = machine_features() if features is None else features
    return sorted(set(target["features"]) - set(features))


# ----------------------------------------------------------------------------------------- the plan


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
    """What a compiled model executes, as plain data: arena size, input and output references, steps,
    kernel sources by key, packed constants, initial variable values, and the target (a dict: family,
    arch, cpu, features) the kernels were generated for."""

    arena_bytes: int
    activation_bytes: int
    inputs: list  # array references of the model inputs, in order
    outputs: list
    steps: list[Step]
    sources: dict[str, str]
    consts: list[np.ndarray]
    state: dict  # variable name -> initial value (or None)
    target: dict

    @property
    def dispatch_count(self) -> int:
        return sum(1 for s in self.steps if s.kind == "kernel")

    @property
    def kernel_count(self) -> int:
        return len(self.sources)

    def save(self, directory: Path, meta: dict) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"const_{i}": a for i, a in enumerate(self.consts)}
        state_names = sorted(k for k, v in self.state.items() if v is not None)
        arrays.update({f"state_{i}": self.state[k] for i, k in enumerate(state_names)})
        np.savez(directory / "arrays.npz", **arrays)
        (directory / "kernels").mkdir(exist_ok=True)
        for key, source in self.sources.items():
            (directory / "kernels" / f"{module_name(key)}.py").write_text(source)
        doc = {"format": FORMAT_VERSION, "meta": meta, "target": self.target, "arena_bytes": self.arena_bytes,
               "activation_bytes": self.activation_bytes, "inputs": self.inputs, "outputs": self.outputs,
               "steps": [asdict(s) for s in self.steps], "consts": len(self.consts),
               "state": {k: (state_names.index(k) if v is not None else None) for k, v in self.state.items()}}
        (directory / "plan.json").write_text(json.dumps(doc, indent=1, default=_json_default))
        files = ["plan.json", "arrays.npz"] + [f"kernels/{module_name(key)}.py" for key in sorted(self.sources)]
        (directory / DIGEST).write_text(json.dumps({name: _file_digest(directory / name) for name in files},
                                                   indent=1))

    @staticmethod
    def load(directory: Path) -> tuple[Plan, dict]:
        """The plan kept in `directory`; PlanError when a file is missing, altered (every file's hash is
        checked against `digest` first: a flipped byte of a weight or a kernel is caught), or of another format."""
        directory = Path(directory)
        try:
            digests = json.loads((directory / DIGEST).read_text())
            for name, digest in digests.items():
                if _file_digest(directory / name) != digest:
                    raise PlanError(f"{directory}: {name} does not match its digest (the file was altered)")
            doc = json.loads((directory / "plan.json").read_text())
            if doc.get("format") != FORMAT_VERSION:
                raise PlanError(f"{directory} holds a compiled model of format {doc.get('format')}, "
                                f"this runtime reads format {FORMAT_VERSION}")
            with np.load(directory / "arrays.npz") as npz:
                consts = [npz[f"const_{i}"] for i in range(doc["consts"])]
                state = {k: (None if i is None else npz[f"state_{i}"]) for k, i in doc["state"].items()}
            steps = [Step(**s) for s in doc["steps"]]
            kernels = {f"kernels/{module_name(s.key)}.py" for s in steps if s.kind == "kernel"}
            if not kernels <= set(digests) or not {"plan.json", "arrays.npz"} <= set(digests):
                raise PlanError(f"{directory}: its digest does not cover every file of the plan")
            sources = {s.key: (directory / "kernels" / f"{module_name(s.key)}.py").read_text()
                       for s in steps if s.kind == "kernel"}
            plan = Plan(doc["arena_bytes"], doc["activation_bytes"], doc["inputs"], doc["outputs"], steps,
                        sources, consts, state, doc["target"])
            return plan, doc["meta"]
        except PlanError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError) as error:
            raise PlanError(f"{directory} is not a readable compiled model: {type(error).__name__}: {error}") \
                from None


DIGEST = "digest"   # a compiled model's file holding the SHA-256 of each of its other files


class PlanError(ValueError):
    """A compiled model's directory that is damaged, incomplete or of another format."""


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a plan")


# ------------------------------------------------------------------------------------ kernel cache


def cache_dir() -> Path:
    """`$TOSAIC_CACHE_DIR/kernels`, by default `~/.cache/tosaic/kernels`."""
    root = os.environ.get("TOSAIC_CACHE_DIR") or Path.home() / ".cache" / "tosaic"
    return Path(root) / "kernels"


def module_name(key: str) -> str:
    return f"tosaic_kernel_{key}"


def load_kernel(key: str, source: str, directory: Path | None = None):
    """The `kernel` function of the generated module `key` with `source` (`load_module`)."""
    return load_module(key, source, directory).kernel


_private_directory: list[Path] = []   # where this process compiles when the cache cannot be used
_usable_directories: set[Path] = set()   # directories this process found it can write in


def kernel_directory(directory: Path | None = None) -> Path:
    """`directory` (default: the cache), created where missing; where it cannot be created or written, a
    temporary directory of this process's own, with one warning: an unusable cache costs a compile, never
    a failure."""
    directory = Path(directory) if directory is not None else cache_dir()
    if directory in _usable_directories:
        return directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
        _usable_directories.add(directory)
        return directory
    except OSError as e:
        if not _private_directory:
            import warnings

            _private_directory.append(Path(tempfile.mkdtemp(prefix="tosaic-kernels-")))
            warnings.warn(f"the kernel cache {directory} cannot be used ({e.strerror or e}); compiling into "
                          f"{_private_directory[0]} for this process", RuntimeWarning, stacklevel=3)
        return _private_directory[0]


def _holds(path: Path, source: str) -> bool:
    try:
        return path.read_text() == source
    except (OSError, ValueError):   # missing, unreadable, or not text
        return False


def load_module(key: str, source: str, directory: Path | None = None):
    """The generated module `key` with `source`, written to `directory` (default: the cache) where the file
    is missing or holds anything else (a damaged cache entry is rewritten, never trusted)."""
    name = module_name(key)
    module = sys.modules.get(name)
    if module is None:
        directory = kernel_directory(directory)
        path = directory / f"{name}.py"
        if not _holds(path, source):
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(source)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module


def compile_function(module, name: str, signature: tuple):
    """Compile `module.name` (a Numba dispatcher) for `signature` at the LLVM optimization level the module
    asks for in `LLVM_OPT` (Numba's `NUMBA_OPT`, default 3), and return the dispatcher. Numba reads the level
    from its configuration for each compilation's passes; the code generator keeps the process's level."""
    import numba
    from numba.core import config

    # Kernels call `numba.get_thread_id()`, whose symbol LLVM can resolve only once the threading layer is
    # loaded; lowering such a call loads it, loading the kernel from Numba's cache does not, and the next
    # finalization then aborted the process ("LLVM ERROR: Symbol not found: get_thread_id": a compile worker
    # that loaded a kernel another process had just cached).
    numba.get_num_threads()
    dispatcher = getattr(module, name)
    level = config.OPT
    config.OPT = config._OptLevel(getattr(module, "LLVM_OPT", level))
    try:
        try:
            dispatcher.compile(signature)
        except Exception:
            # A damaged entry of Numba's cache (a truncated index or machine code file) fails its load:
            # drop the module's cache files and compile afresh; a second failure is a real one.
            if not _drop_numba_cache(module):
                raise
            dispatcher.compile(signature)
    finally:
        config.OPT = level
    return dispatcher


def _drop_numba_cache(module) -> bool:
    """Remove Numba's cache files (index and machine code) of a generated module; whether there were any."""
    cache = Path(module.__file__).parent / "__pycache__"
    files = [f for f in cache.glob(f"{module.__name__}.*") if f.suffix in (".nbi", ".nbc")]
    for f in files:
        f.unlink(missing_ok=True)
    return bool(files)


def compile_job(key: str, source: str, function: str, signatures: list, directory: Path | None) -> None:
    """Compile the function `function` of generated module `key` for each of `signatures` into the cache
    (one job of `compile_concurrently`, in this process or a `compile_worker`)."""
    module = load_module(key, source, directory)
    for signature in signatures:
        compile_function(module, function, signature)


def compiled_kernels(directory: Path | None = None) -> set[str]:
    """The keys of the kernels whose machine code Numba's cache in `directory` holds (for some signature):
    one listing of the directory (a shared cache holds thousands of files)."""
    directory = kernel_directory(directory)
    try:
        names = os.listdir(directory / "__pycache__")
    except OSError:
        return set()
    prefix = module_name("")
    return {name[len(prefix):].split(".", 1)[0] for name in names if name.startswith(prefix) and name.endswith(".nbi")}


def compile_concurrently(jobs: list[tuple[str, str, str, list]], directory: Path | None, workers: int,
                         progress=None) -> None:
    """Compile generated functions (module key, source, function name, argument type tuples) missing from the
    cache in `workers` processes, the slowest-looking (longest source) first: this one and `workers` - 1
    `compile_worker` commands; the caller then loads the others' from the cache. Numba compiles under a
    global lock, one function at a time per process: processes are what runs compilations side by side; each
    compiles a module's every signature, since the cache's index of a function is one file. This process
    takes a share because a worker costs a second or more before its first kernel (importing Numba and
    tosaic, Numba's first compilation), and the functions it compiles need no loading from the cache.
    `progress(key)` is called as each finishes."""
    import queue
    import subprocess
    import threading

    from tosaic.kernels.compile_worker import receive, send

    directory = kernel_directory(directory)
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for job in sorted(jobs, key=lambda job: -len(job[1])):
        pending.put(job)
    # The workers import this package from where this process has it, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "tosaic.kernels.compile_worker", str(directory)]
    processes = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                 for _ in range(workers - 1)]
    failures: list[str] = []
    lock = threading.Lock()

    def finished(key: str, failure: str | None) -> None:
        with lock:
            if failure is not None:
                failures.append(failure)
            elif progress is not None:
                progress(key)

    def jobs_left():
        while not failures:
            try:
                yield pending.get_nowait()
            except queue.Empty:
                return

    def drive(process) -> None:
        for job in jobs_left():
            try:
                send(process.stdin, job)
                reply = receive(process.stdout)
            except OSError:
                reply = None
            if reply is None:
                finished(job[0], f"the process compiling kernel {job[0]} ended (exit status {process.wait()})")
                return
            finished(job[0], None if reply[1] is None else f"compiling kernel {job[0]} failed:\n{reply[1]}")

    threads = [threading.Thread(target=drive, args=(p,), daemon=True) for p in processes]
    try:
        for thread in threads:
            thread.start()
        for key, source, function, signatures in jobs_left():
            try:
                compile_job(key, source, function, signatures, directory)
                finished(key, None)
            except Exception:
                finished(key, f"compiling kernel {key} failed:\n{traceback.format_exc()}")
        for thread in threads:
            thread.join()
    finally:
        for process in processes:
            process.stdin.close()
            if failures or any(thread.is_alive() for thread in threads):
                process.kill()
            process.wait()
            process.stdout.close()
    if failures:
        raise RuntimeError(failures[0])


# ------------------------------------------------------------------------------------ entry point

# The generated entry point's module starts with three intrinsics, each of which emits its LLVM IR from a
# literal spec string: Numba lowers a Python statement into much IR (an EfficientNet-B0 entry written with
# array views, tuples and slice copies took 16 s to compile, 12 s of it lowering), one intrinsic call into
# little. `_call` calls a compiled kernel's native function (Numba's calling convention: return slot,
# exception slot, the arguments' data models) through its address in `kernels`, which the entry point
# receives at run time so that its machine code can be cached across processes; the kernel's arrays are
# views of the arena and constant buffers at constant offsets, with no reference count. `_copy` copies
# strided blocks of bytes. `_set_threads` calls the threading layer's `set_num_threads(int)` through its
# address: Numba's own `numba.set_num_threads` in compiled code holds a ctypes pointer, which makes a
# function uncachable, and from Python it costs 0.65 us a call.
ENTRY_PRELUDE = '''import ast

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_PARAM_TYPES = {"l": types.int64, "q": types.int64, "f": types.float32, "d": types.float64, "?": types.boolean}


def _data(context, builder, array_type, value):
    return builder.bitcast(context.make_array(array_type)(context, builder, value).data, cgutils.voidptr_t)


def _view(context, builder, base, offset, array_type, shape, itemsize):
    """A C-contiguous array at a byte offset of `base`, as Numba's array data model lays it out: meminfo and
    parent null, then the item count, item size, data pointer, shape and strides."""
    strides = [itemsize]
    for n in reversed(shape[1:]):
        strides.insert(0, strides[0] * n)
    struct = context.get_value_type(array_type)
    intp = context.get_value_type(types.intp)
    nitems = 1
    for n in shape:
        nitems *= n
    fields = [ir.Constant(struct.elements[0], None), ir.Constant(struct.elements[1], None), ir.Constant(intp, nitems),
              ir.Constant(intp, itemsize), ir.Constant(struct.elements[4], None),
              ir.Constant(struct.elements[5], list(shape)), ir.Constant(struct.elements[6], strides)]
    data = builder.bitcast(builder.gep(base, [ir.Constant(intp, offset)]), struct.elements[4])
    return builder.insert_value(ir.Constant(struct, fields), data, 4)


@intrinsic(prefer_literal=True)
def _call(typingctx, kernels, arena, consts, spec):
    if not isinstance(spec, types.StringLiteral):
        return None
    index, arrays, params, dims = ast.literal_eval(spec.literal_value)
    array_types = [types.Array(numba.from_dtype(np.dtype(dtype)), len(shape), "C") for _, _, dtype, shape in arrays]
    param_type = types.BaseTuple.from_types([_PARAM_TYPES[kind] for kind, _ in params])
    dims_type = types.BaseTuple.from_types([types.int64] * len(dims))
    argtys = [*array_types, param_type, dims_type]

    def codegen(context, builder, signature, llargs):
        table = context.make_array(kernels)(context, builder, llargs[0]).data
        address = builder.load(builder.gep(table, [context.get_constant(types.intp, index)]))
        bases = [_data(context, builder, buffer_type, value)
                 for buffer_type, value in ((arena, llargs[1]), (consts, llargs[2]))]
        values = [_view(context, builder, bases[buffer], offset, array_type, shape, np.dtype(dtype).itemsize)
                  for (buffer, offset, dtype, shape), array_type in zip(arrays, array_types)]
        values.append(context.make_tuple(builder, param_type, [
            context.get_constant(_PARAM_TYPES[kind], float.fromhex(value) if kind in "fd" else value)
            for kind, value in params]))
        values.append(context.make_tuple(builder, dims_type, [context.get_constant(types.int64, n) for n in dims]))
        fnty = context.call_conv.get_function_type(types.none, argtys)
        callee = builder.inttoptr(address, fnty.as_pointer())
        status, _ = context.call_conv.call_function(builder, callee, types.none, argtys, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()
    return types.none(kernels, arena, consts, spec), codegen


@intrinsic(prefer_literal=True)
def _copy(typingctx, target, source, spec):
    if not isinstance(spec, types.StringLiteral):
        return None
    target_offset, source_offset, block, count, target_stride, source_stride = ast.literal_eval(spec.literal_value)

    def codegen(context, builder, signature, llargs):
        intp = context.get_value_type(types.intp)
        to = _data(context, builder, target, llargs[0])
        start = _data(context, builder, source, llargs[1])
        with cgutils.for_range(builder, ir.Constant(intp, count)) as loop:
            i = loop.index
            cgutils.raw_memcpy(
                builder, builder.gep(to, [builder.add(ir.Constant(intp, target_offset),
                                                      builder.mul(i, ir.Constant(intp, target_stride)))]),
                builder.gep(start, [builder.add(ir.Constant(intp, source_offset),
                                                builder.mul(i, ir.Constant(intp, source_stride)))]),
                ir.Constant(intp, block), 1)
        return context.get_dummy_value()
    return types.none(target, source, spec), codegen


@intrinsic
def _set_threads(typingctx, address, count):
    def codegen(context, builder, signature, llargs):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32)])
        builder.call(builder.inttoptr(llargs[0], fnty.as_pointer()), [builder.trunc(llargs[1], ir.IntType(32))])
        return context.get_dummy_value()
    return types.none(address, count), codegen
'''

ENTRY_DECORATOR = "@numba.njit(cache=True, nogil=True, boundscheck=False)"


def pack_constants(consts: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """The constants in one 64-byte aligned byte buffer, each at a 64-byte aligned offset: the entry point
    views them there, from one argument. Returns the buffer and each constant's offset."""
    offsets, size = [], 0
    for array in consts:
        offsets.append(size)
        size += -(-array.nbytes // 64) * 64
    raw = np.zeros(size + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    buffer = raw[start:start + size]
    for array, offset in zip(consts, offsets):
        buffer[offset:offset + array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return buffer, offsets


def _param(kind: str, value) -> tuple:
    """A kernel parameter in a `_call` spec: floats as hex text (exact, and NaN and infinities survive
    `ast.literal_eval`)."""
    if kind in "fd":
        value = np.float32(value) if kind == "f" else np.float64(value)
        return kind, float(value).hex()
    return kind, bool(value) if kind == "?" else int(value)


def concat_copies(step: Step, view) -> list[tuple[int, int, list]]:
    """The copies a concat step makes: (start, size, piece reference) along its axis; a piece its producer
    already wrote into the concat's bytes needs none. `view(ref)` gives a reference's array."""
    out = view(step.arrays[0])
    axis = step.attrs["axis"]
    copies, start = [], 0
    for ref in step.arrays[1:]:
        piece = view(ref)
        size = piece.shape[axis]
        target = out[(slice(None),) * axis + (slice(start, start + size),)]
        if not (ref[0] == "arena" and np.shares_memory(target, piece) and target.ctypes.data == piece.ctypes.data):
            copies.append((start, size, ref))
        start += size
    return copies


def ref_layout(plan: Plan, ref: list) -> tuple[np.dtype, tuple]:
    """The dtype and shape of an array reference of `plan` (a constant or an arena slice)."""
    if ref[0] == "const":
        c = plan.consts[ref[1]]
        return c.dtype, c.shape
    return np.dtype(ref[3]), tuple(ref[2])


def kernel_variant(plan: Plan, step: Step) -> tuple:
    """A kernel step's key with the types it is called with (each array's dtype and rank, its parameters'
    kinds, its loop bound count): one source serves steps of different dtypes (a 16x8 conv writing int16 or
    int32), and each such variant is a compiled function of its own, at its own address."""
    arrays = tuple((dtype.str, len(shape)) for dtype, shape in (ref_layout(plan, ref) for ref in step.arrays))
    return step.key, arrays, tuple(kind for kind, _ in step.params), len(step.dims)


@dataclass
class EntryPoint:
    """A generated entry point `entry(arena, consts, kernels, set_threads, threads, inputs, reads, writes)`
    that sets the thread count (`set_threads`: the address of the threading layer's `set_num_threads`),
    copies the inputs into the arena and runs every step of a plan in order, with no Python between them.
    `consts` is `pack_constants`'s buffer; `kernels` the native addresses of the plan's kernel variants
    (`kernel_variant`), in the order of `kernels`; `inputs` C-contiguous arrays of the plan's input shapes and dtypes;
    `reads` the values of the variables named in `reads` (the variable reads that no write of the same run
    precedes); `writes` one array per variable write, named in `writes`, that the step copies into."""

    source: str
    kernels: list[tuple]
    reads: list[str]
    writes: list[str]

    @property
    def key(self) -> str:
        return "entry_" + hashlib.sha256(self.source.encode()).hexdigest()[:20]


def entry_point(plan: Plan, const_offsets: list[int], view) -> EntryPoint:
    """The entry point of `plan` whose constants lie in `pack_constants`'s buffer at `const_offsets`.
    `view(ref)` gives a reference's array (to find the concat copies that can be skipped)."""
    kernel_index: dict[tuple, int] = {}
    reads: list[str] = []
    writes: list[str] = []
    written: dict[str, str] = {}

    def place(ref: list) -> tuple[str, int, np.dtype, tuple]:
        """A reference's buffer (the entry point's argument), byte offset, dtype and shape."""
        dtype, shape = ref_layout(plan, ref)
        if ref[0] == "const":
            return "consts", const_offsets[ref[1]], dtype, shape
        return "arena", ref[1], dtype, shape

    def copy(target: str, source: str, *spec: int) -> str:
        return f'    _copy({target}, {source}, "{tuple(int(n) for n in spec)}")'

    lines = ["    _set_threads(set_threads, threads)"]
    for i, ref in enumerate(plan.inputs):
        lines.append(copy("arena", f"inputs[{i}]", ref[1], 0, view(ref).nbytes, 1, 0, 0))
    for step in plan.steps:
        lines.append(f"    # {step.name}: {step.kind}")
        if step.kind == "kernel":
            k = kernel_index.setdefault(kernel_variant(plan, step), len(kernel_index))
            arrays = []
            for ref in step.arrays:
                buffer, offset, dtype, shape = place(ref)
                arrays.append((("arena", "consts").index(buffer), offset, dtype.name, shape))
            spec = (k, tuple(arrays), tuple(_param(kind, value) for kind, value in step.params),
                    tuple(int(n) for n in step.dims))
            lines.append(f'    _call(kernels, arena, consts, "{spec}")')
        elif step.kind == "concat":
            axis = step.attrs["axis"]
            _, out_offset, dtype, shape = place(step.arrays[0])
            inner = int(np.prod(shape[axis + 1:], dtype=np.int64)) * dtype.itemsize
            outer = int(np.prod(shape[:axis], dtype=np.int64))
            for start, size, ref in concat_copies(step, view):
                buffer, offset, _, _ = place(ref)
                lines.append(copy("arena", buffer, out_offset + start * inner, offset, size * inner, outer,
                                  shape[axis] * inner, size * inner))
        elif step.kind == "variable_read":
            name = step.attrs["name"]
            if name not in written:
                reads.append(name)
            source = written.get(name, f"reads[{len(reads) - 1}]")
            lines.append(copy("arena", source, step.arrays[0][1], 0, view(step.arrays[0]).nbytes, 1, 0, 0))
        else:
            target = f"writes[{len(writes)}]"
            writes.append(step.attrs["name"])
            written[step.attrs["name"]] = target
            lines.append(copy(target, "arena", 0, step.arrays[0][1], view(step.arrays[0]).nbytes, 1, 0, 0))
    body = "\n".join(lines)
    signature = "arena, consts, kernels, set_threads, threads, inputs, reads, writes"
    source = f"{ENTRY_PRELUDE}\n\n{ENTRY_DECORATOR}\ndef entry({signature}):\n{body}\n"
    return EntryPoint(source, list(kernel_index), reads, writes)


# ------------------------------------------------------------------------------------- execution

def threading_layer_address(name: str) -> int:
    """The address of a function of Numba's threading layer (loaded by the Executable's first
    `numba.set_num_threads`): its ctypes binding in `numba.np.ufunc.parallel`, for numba as pinned."""
    import ctypes

    from numba.np.ufunc import parallel

    return ctypes.cast(getattr(parallel, "_" + name), ctypes.c_void_p).value


def native_address(overload) -> int:
    """The address of a compiled overload's native function (Numba's calling convention), which the entry
    point's `_call` calls."""
    return overload.library.get_pointer_to_function(overload.fndesc.llvm_func_name)


SCALAR_TYPES = {"l": np.int64, "q": np.int64, "f": np.float32, "d": np.float64, "?": np.bool_}


class Executable:
    """A plan bound to an arena. `run(inputs, state)` returns the outputs and updates `state`: one call of
    the plan's generated entry point (`entry_point`), which runs every step. Kernels come from `kernel_dir`
    (default: the cache). The plan's constants move into one aligned buffer (same values, stored once)."""

    def __init__(self, plan: Plan, threads: int | None = None, kernel_dir: Path | None = None,
                 compile_workers: int = 1, progress=None):
        """`compile_workers` processes compile the kernels the cache lacks (`compile_concurrently`) when
        there are several; `progress(done, total)` hears of each kernel (and the entry point) compiled or
        loaded."""
        import numba

        self.plan = plan
        # Each thread works in its own row of the scratch buffers, planned for the target's thread count.
        limit = min(numba.config.NUMBA_NUM_THREADS, plan.target.get("threads", 1))
        self.threads = limit if threads is None else int(threads)
        if not 1 <= self.threads <= limit:
            raise ValueError(f"threads must be between 1 and {limit} (this machine's cores and the plan's "
                             f"{plan.target.get('threads', 1)} planned threads), got {threads}")
        self.kernel_dir = kernel_dir
        raw = np.zeros(plan.arena_bytes + 64, dtype=np.uint8)
        start = (-raw.ctypes.data) % 64
        self.arena = raw[start:start + plan.arena_bytes]
        self.consts, offsets = pack_constants(plan.consts)
        plan.consts[:] = [self.consts[o:o + c.nbytes].view(c.dtype).reshape(c.shape)
                          for o, c in zip(offsets, plan.consts)]
        self.inputs = [self._view(r) for r in plan.inputs]
        self.outputs = [self._view(r) for r in plan.outputs]
        self.entry = entry_point(plan, offsets, self._view)
        self._variables = {step.attrs["name"]: self._view(step.arrays[0]) for step in plan.steps
                           if step.kind in ("variable_read", "variable_write")}
        # Initial values as the entry point takes them (as its writes leave them): C-contiguous, the
        # variable's dtype and shape.
        for name, value in plan.state.items():
            if value is not None and name in self._variables:
                view = self._variables[name]
                plan.state[name] = np.ascontiguousarray(value, dtype=view.dtype).reshape(view.shape)
        self._write_layouts = [(self._variables[n].shape, self._variables[n].dtype) for n in self.entry.writes]
        numba.set_num_threads(self.threads)
        signatures: dict[str, list] = {}   # kernel key -> the argument types of each of its variants
        variants = {kernel_variant(plan, step): step for step in plan.steps if step.kind == "kernel"}
        for (key, *_), step in variants.items():
            signatures.setdefault(key, []).append(tuple(numba.typeof(a) for a in self._arguments(step)))
        compiled = compiled_kernels(kernel_dir)
        jobs = [(key, plan.sources[key], "kernel", types) for key, types in signatures.items() if key not in compiled]
        if self.entry.key not in compiled:
            jobs.append((self.entry.key, self.entry.source, "entry", [self._entry_signature()]))
        total = len(signatures) + 1
        counted: set[str] = set()

        def advance(key: str) -> None:   # each kernel and the entry point once, compiled or loaded
            if key in counted:
                return
            counted.add(key)
            if progress is not None:
                progress(len(counted), total)

        if compile_workers > 1 and len(jobs) > 1:
            compile_concurrently(jobs, kernel_dir, min(compile_workers, len(jobs)), advance)
        self._native: dict[tuple, int] = {}   # kernel variant -> address of its native function
        self.steps = []
        for step in plan.steps:
            self.steps.append(self._bind(step))
            if step.kind == "kernel":
                advance(step.key)
        self._addresses = np.array([self._native[variant] for variant in self.entry.kernels], dtype=np.int64)
        self._set_threads = threading_layer_address("set_num_threads")
        signature = self._entry_signature()
        entry = compile_function(load_module(self.entry.key, self.entry.source, kernel_dir), "entry", signature)
        self._run_entry = entry.overloads[signature].entry_point
        advance(self.entry.key)

    def _entry_signature(self) -> tuple:
        import numba

        inputs = tuple(np.empty_like(view) for view in self.inputs)
        reads = tuple(np.empty_like(self._variables[name]) for name in self.entry.reads)
        return tuple(numba.typeof(a) for a in (self.arena, self.consts, np.zeros(1, np.int64), 0, self.threads,
                                                inputs, reads, self._writes()))

    def _writes(self) -> tuple:
        """Fresh arrays for the variables a run writes: the state keeps them, and a failed run none."""
        return tuple([np.empty(shape, dtype) for shape, dtype in self._write_layouts])

    def _view(self, ref: list) -> np.ndarray:
        if ref[0] == "const":
            return self.plan.consts[ref[1]]
        _, offset, shape, dtype = ref
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self.arena[offset:offset + nbytes].view(dtype).reshape(shape)

    def _arguments(self, step: Step) -> tuple:
        """A kernel step's arguments: its arrays (arena views, constants), parameters P and loop bounds D."""
        params = tuple(SCALAR_TYPES[kind](value) for kind, value in step.params)
        return (*[self._view(r) for r in step.arrays], params, tuple(np.int64(n) for n in step.dims))

    def _bind(self, step: Step):
        import numba

        arrays = [self._view(r) for r in step.arrays]
        if step.kind == "kernel":
            args = self._arguments(step)
            signature = tuple(numba.typeof(a) for a in args)
            fn = compile_function(load_module(step.key, self.plan.sources[step.key], self.kernel_dir), "kernel",
                                  signature)
            # The compiled entry point, not the dispatcher: the arguments' types are fixed, and resolving
            # them on every call cost microseconds per dispatch.
            overload = fn.overloads[signature]
            self._native[kernel_variant(self.plan, step)] = native_address(overload)
            entry = overload.entry_point
            return lambda state: entry(*args)
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
        out, axis = arrays[0], step.attrs["axis"]
        copies = [(out[(slice(None),) * axis + (slice(start, start + size),)], self._view(ref))
                  for start, size, ref in concat_copies(step, self._view)]

        def concat(state):
            for target, piece in copies:
                np.copyto(target, piece)
        return concat

    def run(self, inputs: tuple[np.ndarray, ...], state: dict) -> list[np.ndarray]:
        """`inputs` in the plan's input shapes and dtypes, C-contiguous (`prepare_inputs`); `state` holds each
        variable's value as a previous run wrote it or as the plan's initial state has it."""
        inputs = tuple(inputs)
        reads = tuple(map(state.get, self.entry.reads))
        for name, value in zip(self.entry.reads, reads):
            if value is None:
                raise RuntimeError(f"variable @{name} is read before it has a value (no initial value, no write)")
        writes = self._writes()
        self._run_entry(self.arena, self.consts, self._addresses, self._set_threads, self.threads, inputs, reads,
                        writes)
        state.update(zip(self.entry.writes, writes))
        return [out.copy() for out in self.outputs]

    def profile(self, inputs: list[np.ndarray], state: dict, repeat: int) -> list[dict]:
        """Median seconds of each step over `repeat` runs, slowest first."""
        import numba

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


# ------------------------------------------------------------------------------------------ inputs


class InputSpec(NamedTuple):
    """What `prepare_inputs` checks an input against, and the dtype it is stored in (uint8 travels as int8
    bits)."""
    name: str
    shape: tuple
    dtype: np.dtype
    stored: np.dtype


def prepare_inputs(inputs, specs: list[InputSpec]) -> tuple[np.ndarray, ...]:
    """Inputs given as a list in input order, one array, or a dict by input name, checked against `specs`
    and viewed in their stored dtypes, C-contiguous (copied where they are not). Raises ValueError naming
    the input and what is wrong."""
    if isinstance(inputs, dict):
        names = [spec.name for spec in specs]
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise ValueError(f"unknown input names {unknown}; the model's inputs are {names}")
        absent = [n for n in names if n not in inputs]
        if absent:
            raise ValueError(f"missing inputs {absent}")
        inputs = [inputs[n] for n in names]
    elif isinstance(inputs, np.ndarray):
        inputs = [inputs]
    inputs = list(inputs)
    if len(inputs) != len(specs):
        raise ValueError(f"the model takes {len(specs)} inputs, got {len(inputs)}")
    arrays = []
    for spec, array in zip(specs, inputs):
        array = np.asarray(array)
        if array.dtype != spec.dtype:
            raise ValueError(f"input '{spec.name}' must be {spec.dtype}, got {array.dtype}")
        if array.shape != spec.shape:
            raise ValueError(f"input '{spec.name}' must have shape {list(spec.shape)}, got {list(array.shape)}")
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        arrays.append(array if spec.stored == spec.dtype else array.view(spec.stored))
    return tuple(arrays)


# ----------------------------------------------------------------------------------- saved models


class MachineError(RuntimeError):
    """This machine cannot run a compiled model: it lacks the model's architecture or CPU features."""


class SavedModel:
    """A compiled model's directory (`CompiledModel.save` or `tosaic export`) ready to run: the machine is
    checked first (never a SIGILL), kernels come from the directory's `kernels/` (compiled there on the first
    run, loaded from Numba's cache after), and variables carry from one run to the next."""

    def __init__(self, directory, threads: int | None = None):
        directory = Path(directory)
        self.plan, self.meta = Plan.load(directory)
        target = self.plan.target
        lacking = missing(target)
        if lacking:
            raise MachineError(f"{directory} was compiled for {target['cpu']} ({target['arch']}, "
                               f"{', '.join(target['features']) or 'no SIMD features'}); this machine lacks "
                               f"{', '.join(lacking)}")
        self.executable = Executable(self.plan, threads, kernel_dir=directory / "kernels")
        self.inputs, self.outputs = self.meta["inputs"], self.meta["outputs"]
        self._specs = [InputSpec(i["name"], tuple(i["shape"]), np.dtype(i["dtype"]), np.dtype(ref[3]))
                       for i, ref in zip(self.inputs, self.plan.inputs)]
        self._output_dtypes = [np.dtype(o["dtype"]) for o in self.outputs]
        self.reset()

    def reset(self) -> None:
        """Every variable back to its initial value."""
        self.state = {k: None if v is None else v.copy() for k, v in self.plan.state.items()}

    def run(self, inputs) -> list[np.ndarray]:
        """Run once on a list of arrays in input order, one array, or a dict by input name."""
        arrays = prepare_inputs(inputs, self._specs)
        state = dict(self.state)
        outputs = self.executable.run(arrays, state)
        self.state = state
        return [out if dtype == out.dtype else out.view(dtype) for out, dtype in zip(outputs, self._output_dtypes)]

    def profile(self, inputs, repeat: int) -> list[dict]:
        return self.executable.profile(prepare_inputs(inputs, self._specs), dict(self.state), repeat)
