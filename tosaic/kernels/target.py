"""Target descriptions: what the code generator may assume about the machine that runs the kernels.

A target is data (DESIGN.md invariant 4): kernels/cpu.py reads it to choose templates and intrinsics,
lowering never does. The host description comes from LLVM's view of this CPU, or from Numba's
`NUMBA_CPU_NAME` / `NUMBA_CPU_FEATURES` when those select another CPU (cross compilation, emulation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuTarget:
    name: str
    features: frozenset[str]

    @property
    def x86_avx2(self) -> bool:
        """Whether the AVX2 integer micro-kernels (vpmaddwd) may be used."""
        return "avx2" in self.features


@functools.cache
def host() -> CpuTarget:
    import numba
    from llvmlite import binding

    name = numba.config.CPU_NAME or binding.get_host_cpu_name()
    if numba.config.CPU_FEATURES is not None:
        flags = numba.config.CPU_FEATURES.split(",")
    else:
        flags = binding.get_host_cpu_features().flatten().split(",")
    return CpuTarget(name, frozenset(f[1:] for f in flags if f.startswith("+")))
