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
constants, and copies concat pieces and variables; a run is one call of it plus the output copies. The
threads are its own: one parallel launch per run, each thread taking the shares of each kernel's work
that no other has taken (`EntryPoint`). Kernels are compiled serial.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

# OpenMP workers spin only briefly (10,000 iterations, tens of microseconds) before sleeping. A run is one
# parallel region (the entry point's); between runs, spinning without bound (libgomp's default 300,000, or
# ACTIVE) held a core that another process wanted (measured when each kernel was its own region: 38 ms to
# 130-450 ms for MobileNetV2 with a busy core beside it). Set before Numba loads its OpenMP pool; a user's
# value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numpy as np  # noqa: E402

FORMAT_VERSION = 4

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

    # The entry point's parallel loop calls the threading layer, whose symbols LLVM can resolve only once
    # the layer is loaded; lowering such a loop loads it, loading the function from Numba's cache does not,
    # and the next finalization then aborted the process ("LLVM ERROR: Symbol not found": a compile worker
    # that loaded a kernel calling `numba.get_thread_id()` another process had just cached).
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


def compile_job(key: str, source: str, functions: list[tuple[str, list]], directory: Path | None) -> None:
    """Compile the functions of generated module `key`, each (name, argument type tuples) for every one of
    its signatures, into the cache (one job of `compile_concurrently`, in this process or a
    `compile_worker`)."""
    module = load_module(key, source, directory)
    for function, signatures in functions:
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


def compile_concurrently(jobs: list[tuple[str, str, list]], directory: Path | None, workers: int,
                         progress=None) -> None:
    """Compile generated functions (module key, source, [(function name, argument type tuples)]) missing from the
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
        for key, source, functions in jobs_left():
            try:
                compile_job(key, source, functions, directory)
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

# The generated entry point's module starts with intrinsics, each of which emits its LLVM IR from a literal
# spec string or a few integers: Numba lowers a Python statement into much IR (an EfficientNet-B0 entry
# written with array views, tuples and slice copies took 16 s to compile, 12 s of it lowering), one
# intrinsic call into little. `_call` calls a compiled kernel's native function (Numba's calling convention:
# return slot, exception slot, the arguments' data models) through its address in `kernels`, which the
# entry point receives at run time so that its machine code can be cached across processes; the kernel's
# arrays are views of the arena and constant buffers at constant offsets, with no reference count. `_copy`
# copies strided blocks of bytes. `_set_threads` calls the threading layer's `set_num_threads(int)` through
# its address: Numba's own `numba.set_num_threads` in compiled code holds a ctypes pointer, which makes a
# function uncachable, and from Python it costs 0.65 us a call. `_call` (split phases), `_begin` and
# `_finish` are the hand-over between threads (`EntryPoint`); `_mark`, `_call` and `_copy` stamp the clock
# for `Executable.profile`; `_invoke` calls the steps from the parallel loop.
ENTRY_PRELUDE = '''import ast
import platform

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_PARAM_TYPES = {"l": types.int64, "q": types.int64, "f": types.float32, "d": types.float64, "?": types.boolean}
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
# A waiting thread spins this many times on the counter, then also yields its core to the scheduler at
# each check: the thread it waits for may be queued behind it on the same core.
_SPINS = 4000
# The steps compute nothing themselves: LLVM's O1 (`engine.compile_function`) compiled MobileNetV2's in
# 1.8 s against 2.2 s at O3.
LLVM_OPT = 1


def _data(context, builder, array_type, value):
    return builder.bitcast(context.make_array(array_type)(context, builder, value).data, cgutils.voidptr_t)


def _slot(context, builder, sync_type, sync, index):
    """The address of element `index` of the int64 array `sync`."""
    return builder.gep(context.make_array(sync_type)(context, builder, sync).data, [index])


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


def _helper(module, name: str, fnty, build):
    """The module's function `name`, built once by `build(builder, function)` and kept out of line: the
    steps wait and take hundreds of times, and LLVM then optimizes one body, not each copy (inlined, they
    took EfficientNet-B0's steps 11 s to compile)."""
    if name in module.globals:
        return module.globals[name]
    function = ir.Function(module, fnty, name)
    function.linkage = "internal"
    function.attributes.add("noinline")
    build(ir.IRBuilder(function.append_basic_block("entry")), function)
    return function


def _build_take(builder, function):
    """take(slot): whether this thread takes `slot` (0 -> 1), read first so that a taken slot's cache line
    stays shared."""
    (slot,) = function.args
    attempt = function.append_basic_block("attempt")
    taken = function.append_basic_block("taken")
    free = builder.icmp_signed("==", builder.load_atomic(slot, "monotonic", 8), ir.Constant(_I64, 0))
    builder.cbranch(free, attempt, taken)
    builder.position_at_end(attempt)
    pair = builder.cmpxchg(slot, ir.Constant(_I64, 0), ir.Constant(_I64, 1), "acq_rel", "monotonic")
    builder.ret(builder.extract_value(pair, 1))
    builder.position_at_end(taken)
    builder.ret(ir.Constant(ir.IntType(1), 0))


def _pause(builder):
    """The spin-wait hint of this machine (x86 `pause`, AArch64 `yield`)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                    "llvm.x86.sse2.pause"), [])
    elif machine in ("aarch64", "arm64"):
        builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [_I32]),
                                                    "llvm.aarch64.hint"), [ir.Constant(_I32, 1)])


def _build_wait(builder, function):
    """wait(slot, target): spin until the int64 at `slot` reaches `target` (an acquire: the shares counted
    there are seen done)."""
    slot, target = function.args
    check = function.append_basic_block("check")
    spin = function.append_basic_block("spin")
    rest = function.append_basic_block("rest")
    done = function.append_basic_block("done")
    spins = builder.alloca(_I64)
    builder.store(ir.Constant(_I64, 0), spins)
    builder.branch(check)
    builder.position_at_end(check)
    reached = builder.icmp_signed(">=", builder.load_atomic(slot, "acquire", 8), target)
    builder.cbranch(reached, done, spin)
    builder.position_at_end(spin)
    _pause(builder)
    count = builder.add(builder.load(spins), ir.Constant(_I64, 1))
    builder.store(count, spins)
    builder.cbranch(builder.icmp_signed(">", count, ir.Constant(_I64, _SPINS)), rest, check)
    builder.position_at_end(rest)
    builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, []), "sched_yield"), [])
    builder.branch(check)
    builder.position_at_end(done)
    builder.ret_void()


def _build_clock(builder, function):
    """clock(): the monotonic clock in nanoseconds (clock_gettime(CLOCK_MONOTONIC, ...))."""
    timespec = ir.LiteralStructType([_I64, _I64])
    clock_gettime = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_I32, [_I32, timespec.as_pointer()]), "clock_gettime")
    value = builder.alloca(timespec)
    builder.call(clock_gettime, [ir.Constant(_I32, 1), value])
    zero = ir.Constant(_I32, 0)
    seconds = builder.load(builder.gep(value, [zero, zero]))
    nanoseconds = builder.load(builder.gep(value, [zero, ir.Constant(_I32, 1)]))
    builder.ret(builder.add(builder.mul(seconds, ir.Constant(_I64, 1_000_000_000)), nanoseconds))


def _build_fail(builder, function):
    """fail(sync, size, code): record the first failure's code in sync[0], then set every counter and flag
    of the units so high that each wait ends and no share is taken: the other threads run out of the steps
    instead of waiting for shares that will not be done."""
    sync, size, code = function.args
    builder.cmpxchg(sync, ir.Constant(_I64, 0), code, "acq_rel", "monotonic")
    with cgutils.for_range_slice(builder, ir.Constant(_I64, 1), size, ir.Constant(_I64, 1), _I64) as (index, _):
        builder.store_atomic(ir.Constant(_I64, 1 << 62), builder.gep(sync, [index]), "release", 8)
    builder.ret_void()


def _take_slot(builder, slot):
    return builder.call(_helper(builder.module, "tosaic_take", ir.FunctionType(ir.IntType(1), [slot.type]),
                                _build_take), [slot])


def _wait_slot(builder, slot, target):
    builder.call(_helper(builder.module, "tosaic_wait", ir.FunctionType(ir.VoidType(), [slot.type, _I64]),
                         _build_wait), [slot, target])


def _finish_slot(builder, slot):
    """Count a share done (a release: what it wrote is seen by whoever waits for the count)."""
    builder.atomic_rmw("add", slot, ir.Constant(_I64, 1), "release")


def _failed(context, builder, sync_type, sync):
    """Whether a kernel of this run failed (sync[0] holds its item's stamp index)."""
    word = builder.load_atomic(_slot(context, builder, sync_type, sync, ir.Constant(_I64, 0)), "monotonic", 8)
    return builder.icmp_signed("!=", word, ir.Constant(_I64, 0))


def _stamp(context, builder, stamps_type, stamps, when, index: int):
    """Where `when`: stamps[index] = the clock."""
    with builder.if_then(when):
        now = builder.call(_helper(builder.module, "tosaic_clock", ir.FunctionType(_I64, []), _build_clock), [])
        builder.store(now, _slot(context, builder, stamps_type, stamps, ir.Constant(_I64, index)))


def _wait_unit(context, builder, sync_type, sync, shares, unit):
    """Wait for the unit before `unit` = (previous counter or -1, whether it was split, counter)."""
    previous, split, _ = unit
    if previous >= 0:
        _wait_slot(builder, _slot(context, builder, sync_type, sync, ir.Constant(_I64, previous)),
                   shares if split else ir.Constant(_I64, 1))


@intrinsic(prefer_literal=True)
def _call(typingctx, kernels, arena, consts, spec, sync, share, shares, stamps, timing):
    """Run a kernel: spec (kernel index, arrays, parameters, loop bounds, phase, stamp index, unit). Without
    a unit, once as share 0 of 1 (a statement of a one-share unit the caller took), the clock then stamped
    where `timing`. With a unit (previous counter, whether split, counter): a split phase, a unit of its
    own: wait for the previous unit, then run each of the `shares` shares this thread takes, its own
    (`share`) first, each counted done at sync[counter] (the shares' flags follow it); where `timing`, wait
    for every share and stamp the clock. Nothing once a kernel of the run has failed; a kernel that fails
    (Numba raises only for an integer division by zero here) is recorded, not raised: an exception cannot
    leave a parallel region's other threads, and they would wait for its shares."""
    if not isinstance(spec, types.StringLiteral):
        return None
    index, arrays, params, dims, phase, stamp, unit = ast.literal_eval(spec.literal_value)
    array_types = [types.Array(numba.from_dtype(np.dtype(dtype)), len(shape), "C") for _, _, dtype, shape in arrays]
    param_type = types.BaseTuple.from_types([_PARAM_TYPES[kind] for kind, _ in params])
    dims_type = types.BaseTuple.from_types([types.int64] * len(dims))
    run_type = types.UniTuple(types.int64, 3)
    argtys = [*array_types, param_type, dims_type, run_type]

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
        own, count = llargs[5], llargs[6]
        array = context.make_array(sync)(context, builder, llargs[4])

        def run(share, shares):
            position = context.make_tuple(builder, run_type, [share, shares, ir.Constant(_I64, phase)])
            status, _ = context.call_conv.call_function(builder, callee, types.none, argtys, values + [position])
            with cgutils.if_unlikely(builder, status.is_error):
                fail = _helper(builder.module, "tosaic_fail", ir.FunctionType(ir.VoidType(), [array.data.type, _I64, _I64]),
                               _build_fail)
                builder.call(fail, [array.data, array.nitems, ir.Constant(_I64, stamp)])

        with builder.if_then(builder.not_(_failed(context, builder, sync, llargs[4]))):
            if unit is None:
                run(ir.Constant(_I64, 0), ir.Constant(_I64, 1))
                _stamp(context, builder, stamps, llargs[7], llargs[8], stamp)
            else:
                _wait_unit(context, builder, sync, llargs[4], count, unit)
                counter = unit[2]
                done = _slot(context, builder, sync, llargs[4], ir.Constant(_I64, counter))
                with cgutils.for_range(builder, count) as loop:
                    share = builder.add(own, loop.index)
                    share = builder.select(builder.icmp_signed(">=", share, count), builder.sub(share, count), share)
                    flag = _slot(context, builder, sync, llargs[4], builder.add(ir.Constant(_I64, counter + 1), share))
                    with builder.if_then(_take_slot(builder, flag)):
                        run(share, count)
                        _finish_slot(builder, done)
                with builder.if_then(llargs[8]):
                    _wait_slot(builder, done, count)
                _stamp(context, builder, stamps, llargs[7], llargs[8], stamp)
        return context.get_dummy_value()
    return types.none(kernels, arena, consts, spec, sync, share, shares, stamps, timing), codegen


@intrinsic(prefer_literal=True)
def _begin(typingctx, sync, spec, shares):
    """Whether this thread takes the one-share unit spec (previous counter or -1, whether it was split,
    counter), once the previous unit is done; its flag follows its counter."""
    if not isinstance(spec, types.StringLiteral):
        return None
    unit = ast.literal_eval(spec.literal_value)

    def codegen(context, builder, signature, llargs):
        _wait_unit(context, builder, sync, llargs[0], llargs[2], unit)
        return _take_slot(builder, _slot(context, builder, sync, llargs[0], ir.Constant(_I64, unit[2] + 1)))
    return types.boolean(sync, spec, shares), codegen


@intrinsic
def _finish(typingctx, sync, index):
    """Count a share done at sync[index]."""
    def codegen(context, builder, signature, llargs):
        _finish_slot(builder, _slot(context, builder, sync, llargs[0], llargs[1]))
        return context.get_dummy_value()
    return types.none(sync, index), codegen


@intrinsic(prefer_literal=True)
def _mark(typingctx, when, stamps, index):
    """Where `when`: stamps[index] = the clock (`index` a literal)."""
    if not isinstance(index, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, llargs):
        _stamp(context, builder, stamps, llargs[1], llargs[0], index.literal_value)
        return context.get_dummy_value()
    return types.none(when, stamps, index), codegen


@intrinsic
def _invoke(typingctx, address, arguments):
    """Call the compiled function at `address` (Numba's calling convention, returning nothing) with the
    tuple `arguments`: the entry's parallel loop calls the steps through their address, so that Numba does
    not compile them again into the loop's body."""
    argtys = list(arguments)

    def codegen(context, builder, signature, llargs):
        values = cgutils.unpack_tuple(builder, llargs[1], len(argtys))
        fnty = context.call_conv.get_function_type(types.none, argtys)
        callee = builder.inttoptr(llargs[0], fnty.as_pointer())
        status, _ = context.call_conv.call_function(builder, callee, types.none, argtys, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()
    return types.none(address, arguments), codegen


@intrinsic(prefer_literal=True)
def _copy(typingctx, target, source, spec, stamps, timing):
    """Copy `count` blocks of bytes: spec (target offset, source offset, block, count, target stride, source
    stride, stamp index); the clock then stamped where `timing`."""
    if not isinstance(spec, types.StringLiteral):
        return None
    target_offset, source_offset, block, count, target_stride, source_stride, stamp = \
        ast.literal_eval(spec.literal_value)

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
        _stamp(context, builder, stamps, llargs[3], llargs[4], stamp)
        return context.get_dummy_value()
    return types.none(target, source, spec, stamps, timing), codegen


@intrinsic
def _set_threads(typingctx, address, count):
    def codegen(context, builder, signature, llargs):
        fnty = ir.FunctionType(ir.VoidType(), [_I32])
        builder.call(builder.inttoptr(llargs[0], fnty.as_pointer()), [builder.trunc(llargs[1], _I32)])
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
    """A generated entry point `entry(steps, set_threads, threads, arena, consts, kernels, inputs, reads,
    writes, sync, stamps)` that runs every step of a plan in order on `threads` threads, with no Python
    between them: each thread runs the module's `steps(w, nw, arena, ...)`, whose native address is `steps`
    (Numba would otherwise compile them again into the parallel loop's body: 10 s for MobileNetV2).
    `consts` is `pack_constants`'s buffer; `kernels` the native addresses of the plan's kernel variants
    (`kernel_variant`), in the order of `kernels`; `set_threads` the address of the threading layer's
    `set_num_threads`; `inputs` C-contiguous arrays of the plan's input shapes and dtypes; `reads` the values
    of the variables named in `reads` (the variable reads that no write of the same run precedes); `writes`
    one array per variable write, named in `writes`, that the step copies into; `sync` int64 of
    `sync_size()` (zeroed by each run); `stamps` empty, or `len(units) + 1` int64 that `Executable.profile`
    reads.

    The steps run as `units`: a unit is one phase of a kernel whose work is split into one share per thread,
    or a run of steps done whole by one thread (copies, small kernels). Every thread walks the units in order:
    it waits until the previous unit's shares are all done, then takes what is left of this one, its own
    share first, and moves on. The calling thread is one of them, so a thread the machine has not started
    yet leaves its shares to the others, and a run is one parallel launch, not one per dispatch. `items` holds
    the step index of each item the units run in order (-1: an input copy), a split kernel's phase or a
    statement."""

    source: str
    kernels: list[tuple]
    reads: list[str]
    writes: list[str]
    items: list[int]
    units: int
    stride: int   # int64 words of `sync` per unit: its done counter, a flag per share, whole cache lines

    @property
    def key(self) -> str:
        return "entry_" + hashlib.sha256(self.source.encode()).hexdigest()[:20]

    def sync_size(self) -> int:
        return (self.units + 1) * self.stride


def entry_point(plan: Plan, const_offsets: list[int], view) -> EntryPoint:
    """The entry point of `plan` whose constants lie in `pack_constants`'s buffer at `const_offsets`.
    `view(ref)` gives a reference's array (to find the concat copies that can be skipped)."""
    kernel_index: dict[tuple, int] = {}
    reads: list[str] = []
    writes: list[str] = []
    written: dict[str, str] = {}
    stride = -(-(1 + plan.target.get("threads", 1)) // 8) * 8

    def place(ref: list) -> tuple[str, int, np.dtype, tuple]:
        """A reference's buffer (the entry point's argument), byte offset, dtype and shape."""
        dtype, shape = ref_layout(plan, ref)
        if ref[0] == "const":
            return "consts", const_offsets[ref[1]], dtype, shape
        return "arena", ref[1], dtype, shape

    # (step index, statement, split), in order; an item's stamp (`stamps` index) is its position + 1. A
    # split kernel's phase (its statement the phase's number) is a unit of its own; statements run whole by
    # one thread go together.
    items: list[tuple[int, str, bool]] = []

    def copy(target: str, source: str, *spec: int) -> str:
        return f'_copy({target}, {source}, "{(*(int(n) for n in spec), len(items) + 1)}", stamps, timing)'

    def call(step: Step, phase: int, stamp: int, unit: tuple | None) -> str:
        k = kernel_index.setdefault(kernel_variant(plan, step), len(kernel_index))
        arrays = []
        for ref in step.arrays:
            buffer, offset, dtype, shape = place(ref)
            arrays.append((("arena", "consts").index(buffer), offset, dtype.name, shape))
        spec = (k, tuple(arrays), tuple(_param(kind, value) for kind, value in step.params),
                tuple(int(n) for n in step.dims), phase, stamp, unit)
        return f'_call(kernels, arena, consts, "{spec}", sync, w, nw, stamps, {"first" if unit else "timing"})'

    for i, ref in enumerate(plan.inputs):
        items.append((-1, copy("arena", f"inputs[{i}]", ref[1], 0, view(ref).nbytes, 1, 0, 0), False))
    for index, step in enumerate(plan.steps):
        if step.kind == "kernel":
            split = step.attrs.get("split", False)
            for phase in range(step.attrs.get("phases", 1)):
                items.append((index, str(phase) if split else call(step, phase, len(items) + 1, None), split))
        elif step.kind == "concat":
            axis = step.attrs["axis"]
            _, out_offset, dtype, shape = place(step.arrays[0])
            inner = int(np.prod(shape[axis + 1:], dtype=np.int64)) * dtype.itemsize
            outer = int(np.prod(shape[:axis], dtype=np.int64))
            for start, size, ref in concat_copies(step, view):
                buffer, offset, _, _ = place(ref)
                items.append((index, copy("arena", buffer, out_offset + start * inner, offset, size * inner, outer,
                                          shape[axis] * inner, size * inner), False))
        elif step.kind == "variable_read":
            name = step.attrs["name"]
            if name not in written:
                reads.append(name)
            source = written.get(name, f"reads[{len(reads) - 1}]")
            items.append((index, copy("arena", source, step.arrays[0][1], 0, view(step.arrays[0]).nbytes, 1, 0, 0),
                          False))
        else:
            target = f"writes[{len(writes)}]"
            writes.append(step.attrs["name"])
            written[step.attrs["name"]] = target
            items.append((index, copy(target, "arena", 0, step.arrays[0][1], view(step.arrays[0]).nbytes, 1, 0, 0),
                          False))
    units: list[list[int]] = []   # item positions
    for position, (_, _, split) in enumerate(items):
        if units and not split and not items[units[-1][-1]][2]:
            units[-1].append(position)
        else:
            units.append([position])
    # Timing (`stamps` not empty): the clock after each item, read by the thread that ran it, or for a split
    # phase by thread 0 once every share is done; stamps[0] is the start.
    lines = ["    timing = stamps.size > 0", "    first = timing and w == 0", "    _mark(first, stamps, 0)"]
    previous = (-1, False)
    for u, unit in enumerate(units):
        base = (u + 1) * stride   # sync[0]: the failed item's stamp index, or 0
        steps = {items[p][0] for p in unit}
        names = sorted({plan.steps[i].name for i in steps if i >= 0} | ({"inputs"} if -1 in steps else set()))
        lines.append(f"    # unit {u}: {', '.join(names)}")
        index, statement, split = items[unit[0]]
        if split:
            lines.append("    " + call(plan.steps[index], int(statement), unit[0] + 1, (*previous, base)))
        else:
            lines.append(f'    if _begin(sync, "{(*previous, base)}", nw):')
            lines += [f"        {items[p][1]}" for p in unit]
            lines.append(f"        _finish(sync, {base})")
        previous = (base, split)
    body = "\n".join(lines)
    arguments = "arena, consts, kernels, inputs, reads, writes, sync, stamps"
    if any(split for _, _, split in items):
        decorator = ENTRY_DECORATOR.replace("@numba.njit(", "@numba.njit(parallel=True, ")
        run = f"""    if threads == 1:
        _invoke(steps_address, (0, 1, {arguments}))
    else:
        for w in numba.prange(threads):
            _invoke(steps_address, (w, threads, {arguments}))"""
    else:   # nothing to share: the calling thread runs every step
        decorator, run = ENTRY_DECORATOR, f"    _invoke(steps_address, (0, 1, {arguments}))"
    source = f'''{ENTRY_PRELUDE}

{ENTRY_DECORATOR}
def steps(w, nw, {arguments}):
{body}


{decorator}
def entry(steps_address, set_threads, threads, {arguments}):
    for i in range(sync.size):
        sync[i] = 0
    _set_threads(set_threads, threads)
{run}
'''
    return EntryPoint(source, list(kernel_index), reads, writes, [i for i, _, _ in items], len(units), stride)


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
        jobs = [(key, plan.sources[key], [("kernel", types)]) for key, types in signatures.items() if key not in compiled]
        if self.entry.key not in compiled:
            jobs.append((self.entry.key, self.entry.source, [("steps", [self._steps_signature()]),
                                                              ("entry", [self._entry_signature()])]))
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
        for step in plan.steps:
            if step.kind == "kernel":
                self._compile(step)
                advance(step.key)
        self._addresses = np.array([self._native[variant] for variant in self.entry.kernels], dtype=np.int64)
        self._set_threads = threading_layer_address("set_num_threads")
        self._sync = np.zeros(self.entry.sync_size(), dtype=np.int64)
        self._no_stamps = np.zeros(0, dtype=np.int64)
        module = load_module(self.entry.key, self.entry.source, kernel_dir)
        steps = compile_function(module, "steps", self._steps_signature())
        self._steps_address = native_address(steps.overloads[self._steps_signature()])
        entry = compile_function(module, "entry", self._entry_signature())
        self._run_entry = entry.overloads[self._entry_signature()].entry_point
        advance(self.entry.key)

    def _run_arguments(self, stamps: np.ndarray) -> tuple:
        """The arguments the steps take after their thread and thread count (`EntryPoint`), with the state's
        arrays and inputs as empty stand-ins: for typing."""
        inputs = tuple(np.empty_like(view) for view in self.inputs)
        reads = tuple(np.empty_like(self._variables[name]) for name in self.entry.reads)
        return self.arena, self.consts, stamps, inputs, reads, self._writes(), stamps, stamps

    def _steps_signature(self) -> tuple:
        import numba

        return tuple(numba.typeof(a) for a in (0, self.threads, *self._run_arguments(np.zeros(0, np.int64))))

    def _entry_signature(self) -> tuple:
        import numba

        return tuple(numba.typeof(a) for a in (0, 0, self.threads, *self._run_arguments(np.zeros(0, np.int64))))

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
        """A kernel step's arguments: its arrays (arena views, constants), parameters P, loop bounds D and its
        share and phase R (typed here: the entry point passes them)."""
        params = tuple(SCALAR_TYPES[kind](value) for kind, value in step.params)
        return (*[self._view(r) for r in step.arrays], params, tuple(np.int64(n) for n in step.dims),
                (np.int64(0), np.int64(1), np.int64(0)))

    def _compile(self, step: Step) -> None:
        """Compile (or load from the cache) a kernel step's variant and keep its native address."""
        import numba

        signature = tuple(numba.typeof(a) for a in self._arguments(step))
        fn = compile_function(load_module(step.key, self.plan.sources[step.key], self.kernel_dir), "kernel",
                              signature)
        self._native[kernel_variant(self.plan, step)] = native_address(fn.overloads[signature])

    def run(self, inputs: tuple[np.ndarray, ...], state: dict, stamps: np.ndarray | None = None) -> list[np.ndarray]:
        """`inputs` in the plan's input shapes and dtypes, C-contiguous (`prepare_inputs`); `state` holds each
        variable's value as a previous run wrote it or as the plan's initial state has it; `stamps`, where
        given, receives the clock at the start and after each of the entry point's items (`profile`)."""
        inputs = tuple(inputs)
        reads = tuple(map(state.get, self.entry.reads))
        for name, value in zip(self.entry.reads, reads):
            if value is None:
                raise RuntimeError(f"variable @{name} is read before it has a value (no initial value, no write)")
        writes = self._writes()
        self._run_entry(self._steps_address, self._set_threads, self.threads, self.arena, self.consts,
                        self._addresses, inputs, reads, writes, self._sync, self._no_stamps if stamps is None else stamps)
        if self._sync[0]:
            step = self.plan.steps[self.entry.items[self._sync[0] - 1]]
            # Generated kernels raise for nothing else (no bounds checks, no allocation).
            raise KernelRunError(f"{step.name} ({' + '.join(step.origins) or step.kind}) divided by zero on "
                                 f"this input (TOSA leaves a division by zero undefined)")
        state.update(zip(self.entry.writes, writes))
        return [out.copy() for out in self.outputs]

    def profile(self, inputs: list[np.ndarray], state: dict, repeat: int) -> list[dict]:
        """Median seconds of each step over `repeat` runs, slowest first: timed inside the run, on all its
        threads (`EntryPoint`), a split kernel from the end of what preceded it until its last share is done,
        a step run whole from its start to its end."""
        stamps = np.zeros((repeat, len(self.entry.items) + 1), dtype=np.int64)
        for row in stamps:
            self.run(inputs, dict(state), row)
        # Stamps come from several threads: a step's start is the latest stamp before its own.
        seconds = np.median(np.diff(np.maximum.accumulate(stamps, axis=1), axis=1), axis=0) * 1e-9
        per_step = np.zeros(len(self.plan.steps))
        for index, time in zip(self.entry.items, seconds):
            if index >= 0:
                per_step[index] += time
        rows = [{"dispatch": s.name, "template": s.template or s.kind, "ops": " + ".join(s.origins),
                 "seconds": float(t)} for s, t in zip(self.plan.steps, per_step)]
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


class KernelRunError(RuntimeError):
    """A kernel failed on this run's values (a division by zero): the run's outputs and state are not kept."""


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
