"""Target descriptions: what the code generator may assume about the machine that runs the kernels.

A target is data (DESIGN.md invariant 4), parsed from the user's string and passed explicitly to code
generation; lowering never reads it. `"cpu"` is the machine at hand; `"cpu:<arch>:<cpu>"` names a known CPU
(`KNOWN_CPUS`), for which tosaic generates kernels without running them (to save or export a bundle that a
board runs). The description holds the architecture, the LLVM CPU name, the features the generated code
may use, and the schedule (task sizes) the templates read.

Only the features code generation consults (`engine.RELEVANT_FEATURES`) are kept: a plan records them and
runs only where all of them are present (`missing_features`, which asks the runtime engine what this CPU
executes). The host description comes from LLVM's view of this CPU, or from Numba's `NUMBA_CPU_NAME` /
`NUMBA_CPU_FEATURES` when those select another one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from tosaic.errors import TosaicError

KNOWN_CPUS = {
    "x86_64": {
        "x86-64": (),
        "x86-64-v3": ("avx2",),
        "znver3": ("avx2",),
        "znver4": ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512vbmi"),
        "znver5": ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512vbmi", "avxvnni"),
    },
    # Raspberry Pi 3/4 (A53/A72: no dot product), Pi 5 (A76), Jetson Orin (A78AE); none has i8mm.
    "aarch64": {
        "cortex-a53": ("neon",),
        "cortex-a72": ("neon",),
        "cortex-a76": ("neon", "dotprod"),
        "cortex-a78ae": ("neon", "dotprod"),
    },
}


class TargetError(TosaicError, ValueError):
    """A target string that names no known target, or a plan this machine cannot run."""


# Cores of the boards the named CPUs come in (Raspberry Pi 3/4/5: 4; Jetson AGX Orin: 12); named x86 CPUs
# are planned for up to 16 threads.
CORES = {"cortex-a53": 4, "cortex-a72": 4, "cortex-a76": 4, "cortex-a78ae": 12}


@dataclass(frozen=True)
class Schedule:
    """How the templates cut work into parallel tasks: rows of a GEMM task, 16-channel blocks per task, and
    the most threads a plan runs on (each has its own row of every scratch buffer in the arena)."""

    gemm_task_rows: int = 16
    gemm_task_blocks: int = 8
    threads: int = 4


# Requantization strategy per architecture (kernels/requant.py): float64 lanes on x86, 32-bit lanes on NEON.
REQUANT_STRATEGIES = {"x86_64": "float64", "aarch64": "neon"}


@dataclass(frozen=True)
class CpuTarget:
    arch: str
    cpu: str
    features: frozenset[str]
    schedule: Schedule = field(default_factory=Schedule)
    # The requantization strategy; None: the architecture's (REQUANT_STRATEGIES, else "int64").
    requant_strategy: str | None = None

    @property
    def requant(self) -> str:
        return self.requant_strategy or REQUANT_STRATEGIES.get(self.arch, "int64")

    @property
    def name(self) -> str:
        return f"cpu:{self.arch}:{self.cpu}"

    def as_dict(self) -> dict:
        return {"family": "cpu", "arch": self.arch, "cpu": self.cpu, "features": sorted(self.features),
                "requant": self.requant, "threads": self.schedule.threads}

    @staticmethod
    def from_dict(d: dict) -> CpuTarget:
        strategy = d.get("requant")
        return CpuTarget(d["arch"], d["cpu"], frozenset(d["features"]), Schedule(threads=d.get("threads", 1)),
                         requant_strategy=None if strategy == REQUANT_STRATEGIES.get(d["arch"]) else strategy)

    def __str__(self) -> str:
        return f"{self.name} [{', '.join(sorted(self.features)) or 'no SIMD features'}]"


# CUDA compute capabilities by SM name: Jetson Orin (sm_87) and Hopper H100/H200 (sm_90) are the ones tosaic
# is checked for; any sm_XY from 6.1 (the first with dp4a) is accepted.
CUDA_DEFAULT_SM = "sm_87"
CUDA_MIN_CC = (6, 1)


@dataclass(frozen=True)
class CudaTarget:
    """A CUDA GPU of compute capability `cc`: kernels are `@cuda.jit` functions, PTX for `sm`."""

    cc: tuple[int, int]
    arch: str = "cuda"

    @property
    def sm(self) -> str:
        return f"sm_{self.cc[0]}{self.cc[1]}"

    @property
    def requant(self) -> str:
        return "int64"

    @property
    def name(self) -> str:
        return f"cuda:{self.sm}"

    def as_dict(self) -> dict:
        return {"family": "cuda", "arch": "cuda", "cc": list(self.cc), "features": [], "requant": self.requant}

    @staticmethod
    def from_dict(d: dict) -> CudaTarget:
        return CudaTarget(tuple(d["cc"]))

    def __str__(self) -> str:
        return f"{self.name} [compute capability {self.cc[0]}.{self.cc[1]}]"


def parse_cuda(spec: str) -> CudaTarget:
    """"cuda" (the present GPU, else sm_87) or "cuda:sm_XY"."""
    if spec == "cuda":
        from tosaic.kernels import cuda_engine

        cc = cuda_engine.present_cc()
        return CudaTarget(cc if cc is not None else parse_cuda(f"cuda:{CUDA_DEFAULT_SM}").cc)
    sm = spec.split(":", 1)[1]
    digits = sm[3:] if sm.startswith("sm_") else ""
    if len(digits) < 2 or not digits.isdigit() or (int(digits[:-1]), int(digits[-1])) < CUDA_MIN_CC:
        raise TargetError(f"unknown CUDA target {spec!r}: give cuda:sm_XY with compute capability X.Y of at least "
                          f"{CUDA_MIN_CC[0]}.{CUDA_MIN_CC[1]} (cuda:sm_87 Jetson Orin, cuda:sm_90 H100/H200)")
    return CudaTarget((int(digits[:-1]), int(digits[-1])))


def target_from_dict(d: dict) -> CpuTarget | CudaTarget:
    """The target a plan records."""
    return CudaTarget.from_dict(d) if d.get("family") == "cuda" else CpuTarget.from_dict(d)


@functools.cache
def host() -> CpuTarget:
    """The machine at hand, as LLVM (through Numba) sees it, or as NUMBA_CPU_NAME / NUMBA_CPU_FEATURES set it."""
    import numba
    from llvmlite import binding

    from tosaic.kernels import engine

    arch = engine.machine_arch()
    name = numba.config.CPU_NAME or binding.get_host_cpu_name()
    if numba.config.CPU_FEATURES is None:
        features = engine.machine_features()
    else:
        features = {f[1:] for f in numba.config.CPU_FEATURES.split(",") if f.startswith("+")}
    return CpuTarget(arch, name, frozenset(f for f in features if f in engine.RELEVANT_FEATURES.get(arch, ())),
                     Schedule(threads=numba.config.NUMBA_NUM_THREADS))


def known_targets() -> list[str]:
    return (["cpu"] + [f"cpu:{arch}:{cpu}" for arch, cpus in KNOWN_CPUS.items() for cpu in cpus]
            + ["cuda", "cuda:sm_87", "cuda:sm_90"])


def parse_target(spec) -> CpuTarget:
    """The description named by `spec`: "cpu" (this machine) or "cpu:<arch>:<cpu>" (a known CPU)."""
    if isinstance(spec, (CpuTarget, CudaTarget)):
        return spec
    if spec == "cpu":
        return host()
    if str(spec) == "cuda" or str(spec).startswith("cuda:"):
        return parse_cuda(str(spec))
    parts = str(spec).split(":")
    if len(parts) == 3 and parts[0] == "cpu" and parts[2] in KNOWN_CPUS.get(parts[1], {}):
        arch, cpu = parts[1], parts[2]
        return CpuTarget(arch, cpu, frozenset(KNOWN_CPUS[arch][cpu]), Schedule(threads=CORES.get(cpu, 16)))
    raise TargetError(f"unknown target {spec!r}; known targets: interp, {', '.join(known_targets())}")


def missing_features(target: CpuTarget, machine: CpuTarget | None = None) -> list[str]:
    """What `machine` (default: this CPU, as the runtime engine reads it) lacks to run code generated for
    `target`: its architecture, or the features the code may use. Empty when it can run it."""
    from tosaic.kernels import engine

    if isinstance(target, CudaTarget):
        from tosaic.kernels import cuda_engine

        return cuda_engine.missing()
    if machine is None:
        return engine.missing(target.as_dict())
    return engine.missing(target.as_dict(), machine.arch, machine.features)
