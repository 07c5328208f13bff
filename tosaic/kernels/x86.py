"""x86 code generation data: which GEMM micro-kernel a target gets (`MICROKERNELS`, best first), the weight
and bias packing it reads, and the source text of the micro-kernels (`x86_microkernels.py`), which every
generated kernel using them embeds."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from tosaic.kernels import x86_microkernels
from tosaic.kernels.x86_microkernels import BLOCK_N, ISAS

MICROKERNEL_SOURCE = inspect.getsource(x86_microkernels)
# The micro-kernels by name: a generated module whose body calls one embeds MICROKERNEL_SOURCE.
MICROKERNEL_NAMES = tuple(name for name in vars(x86_microkernels)
                          if name.startswith(("gemm_avx", "table_lookup_", "depthwise_", "requantize_rows_",
                                              "offset_rows_", "patch_rows_")))
TABLE_LOOKUP = {"avx512vbmi": "table_lookup_avx512vbmi"}   # the 64-value TABLE gather, by target feature
# What the `*_avx512*` row micro-kernels need (16 int32 lanes, byte masks for the last block).
AVX512_FEATURES = frozenset({"avx512f", "avx512bw", "avx512vl"})


@dataclass(frozen=True)
class MicroKernel:
    """One ISA's GEMM micro-kernels: the target features they need, the row blocks they come in (largest
    first, ending in 1), the dtype activations are stored in and the offset added to them (vpdpbusd
    multiplies unsigned bytes: int8 activations are stored plus 128, as the bits of a uint8 in an int8
    buffer)."""

    isa: str
    features: frozenset[str]
    row_blocks: tuple[int, ...]
    activation_dtype: str
    activation_offset: int

    @property
    def group(self) -> int:
        """K elements one 32-bit lane multiplies: activations and weights are padded to a multiple."""
        return ISAS[self.isa][2]

    @property
    def weight_dtype(self):
        return np.int16 if ISAS[self.isa][1].width == 16 else np.int8

    def pad(self, k: int) -> int:
        return -(-k // self.group) * self.group

    def pad_source(self, k: str) -> str:
        """`pad` as source over the runtime value `k`: shapes stay out of the kernel's source (its cache key)."""
        return f"({k} + {self.group - 1}) // {self.group} * {self.group}"

    def pack_weights(self, weights: np.ndarray) -> np.ndarray:
        """[N, K] int8 weights as the micro-kernel reads them: [ceil(N/16), K/group, 16, group], zero
        padded."""
        n, k = weights.shape
        n_pad, k_pad = -(-n // BLOCK_N) * BLOCK_N, self.pad(k)
        padded = np.zeros((n_pad, k_pad), dtype=self.weight_dtype)
        padded[:n, :k] = weights
        g = self.group
        return np.ascontiguousarray(padded.reshape(n_pad // BLOCK_N, BLOCK_N, k_pad // g, g).transpose(0, 2, 1, 3))

    def calls(self, a: str, row: str, rows: str, lda: str, out: str, out_offset: str, ldo: str) -> list[str]:
        """Source running the micro-kernels over rows 0 .. `rows`-1 (loop variable `row`) of the
        C-contiguous activation array `a` against the 16-channel block `nb` of the packed weights `wp`
        starting at `w0`: blocks of the largest row count first, into the C-contiguous int32 row buffer
        `out` at `out_offset` (row stride `ldo`). Offsets count elements of the arrays as flattened."""
        call = (f"({a}, {row} * {lda}, {lda}, wp, w0, {lda} // {self.group}, {out}, {out_offset}, {ldo}, bias, "
                f"nb * {BLOCK_N})")
        start = f"{row}_start"
        lines = [f"{start} = 0"]
        for size in self.row_blocks:
            name = f"gemm_{self.isa}_{size}x{BLOCK_N}"
            if size == 1:
                lines += [f"for {row} in range({start}, {rows}):", f"    {name}{call}"]
            else:
                lines += [f"for {row} in range({start}, {rows} - {size - 1}, {size}):", f"    {name}{call}",
                          f"{start} = {rows} - ({rows} - {start}) % {size}"]
        return lines


MICROKERNELS = (
    MicroKernel("avx512vnni", frozenset({"avx512f", "avx512bw", "avx512vnni"}), (8, 1), "np.int8", 128),
    MicroKernel("avxvnni", frozenset({"avx2", "avxvnni"}), (4, 1), "np.int8", 128),
    MicroKernel("avx2", frozenset({"avx2"}), (4, 1), "np.int16", 0),
)


def microkernel_for(arch: str, features) -> MicroKernel | None:
    """The best GEMM micro-kernel code for `features` may use, or None (not x86, or no AVX2)."""
    if arch != "x86_64":
        return None
    return next((mk for mk in MICROKERNELS if mk.features <= features), None)


def pack_bias(bias: np.ndarray) -> np.ndarray:
    """A per-channel int32 bias zero padded to whole 16-channel blocks, as the micro-kernel reads it."""
    padded = np.zeros(-(-bias.size // BLOCK_N) * BLOCK_N, dtype=np.int32)
    padded[:bias.size] = bias
    return padded
