"""x86 code generation data: the weight and bias packing the AVX2 GEMM micro-kernels read, and the source
text of those micro-kernels (`x86_microkernels.py`), which every generated kernel using them embeds."""

from __future__ import annotations

import inspect

import numpy as np

from tosaic.kernels import x86_microkernels
from tosaic.kernels.x86_microkernels import BLOCK_N

MICROKERNEL_SOURCE = inspect.getsource(x86_microkernels)


def pack_weights(weights: np.ndarray) -> np.ndarray:
    """[N, K] int8 weights as the micro-kernel reads them: [ceil(N/16), ceil(K/2), 16, 2] int16, zero
    padded."""
    n, k = weights.shape
    n_pad, k_pad = -(-n // BLOCK_N) * BLOCK_N, k + k % 2
    padded = np.zeros((n_pad, k_pad), dtype=np.int16)
    padded[:n, :k] = weights
    return np.ascontiguousarray(padded.reshape(n_pad // BLOCK_N, BLOCK_N, k_pad // 2, 2).transpose(0, 2, 1, 3))


def pack_bias(bias: np.ndarray) -> np.ndarray:
    """A per-channel int32 bias zero padded to whole 16-channel blocks, as the micro-kernel reads it."""
    padded = np.zeros(-(-bias.size // BLOCK_N) * BLOCK_N, dtype=np.int32)
    padded[:bias.size] = bias
    return padded
