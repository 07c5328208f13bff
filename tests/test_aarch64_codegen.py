"""The aarch64 kernels, cross-compiled with llvmlite (triple aarch64-unknown-linux-gnu) from Numba's
unoptimized IR, without emulation: a representative kernel of every template for every aarch64 CPU, and the
instructions its assembly must (and must not) hold.

On Cortex-A76 and A78AE (dotprod) the int8 GEMM and im2col task bodies, a dot product per output over K,
vectorize to `sdot`: LLVM's loop vectorizer turns the int8 x int8 -> int32 reduction into a partial
reduction, from source, without an intrinsic. On Cortex-A72 (no dotprod) no `sdot` may appear (it would be a
SIGILL on a Raspberry Pi 4); the same loop becomes widening multiplies (`smull`/`smull2`). Depthwise,
direct conv and generic loop nests vectorize on NEON registers (`v0.16b`, `.8h`, `.4s`). Running the
kernels bit-exact is scripts/arm_check.sh's job (emulation takes minutes).
"""

from __future__ import annotations

import functools
import re

import pytest

import model_zoo
import tosaic
from tosaic.kernels.cross import instruction_mix, step_assembly

CPUS = ("cortex-a72", "cortex-a76", "cortex-a78ae")
# A small model per template (every one of them compiles to that template for every aarch64 CPU here).
TEMPLATES = {"gemm": "op_fc_64x32", "im2col": "op_conv2d_s1_same_relu", "conv": "var_16x8_op_conv2d_s1_same_relu",
             "depthwise": "op_dwconv_m1_s1_same_relu6", "generic": "op_avgpool_3x3_s1_same",
             "generic_flat": "op_add_same"}
NEON_VECTOR = re.compile(r"\bv\d+\.(16b|8b|8h|4h|4s|2s|2d)\b")


@functools.lru_cache(maxsize=None)
def template_assembly(template: str, cpu: str) -> str:
    model = tosaic.compile(model_zoo.DATA / f"{TEMPLATES[template]}.tflite", target=f"cpu:aarch64:{cpu}")
    (step,) = [s for s in model.plan.steps if s.kind == "kernel" and s.template == template][:1]
    return step_assembly(model.plan, step)


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_compiles_to_neon(template, cpu):
    asm = template_assembly(template, cpu)
    assert NEON_VECTOR.search(asm), f"{template} on {cpu}: no NEON vector instruction"
    mix = instruction_mix(asm)
    if "dotprod" not in tosaic.kernels.target.parse_target(f"cpu:aarch64:{cpu}").features:
        assert mix["sdot"] == 0 and mix["udot"] == 0, f"{template} on {cpu} (no dotprod) uses sdot: SIGILL on the board"


@pytest.mark.parametrize("cpu", ["cortex-a76", "cortex-a78ae"])
@pytest.mark.parametrize("template", ["gemm", "im2col"])
def test_int8_dot_products_use_sdot_with_dotprod(template, cpu):
    assert instruction_mix(template_assembly(template, cpu))["sdot"] > 0


@pytest.mark.parametrize("template", ["gemm", "im2col"])
def test_int8_dot_products_widen_without_dotprod(template):
    mix = instruction_mix(template_assembly(template, "cortex-a72"))
    assert mix["smull"] + mix["smull2"] + mix["smlal"] + mix["smlal2"] + mix["sadalp"] > 0, mix.most_common(20)


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("template", ["gemm", "im2col", "depthwise"])
def test_requantization_runs_in_32_bit_lanes(template, cpu):
    """The epilogue's requantization is the `neon` strategy (kernels/requant.py): `sqdmulh` and 32-bit
    lanes, no float64 conversions."""
    mix = instruction_mix(template_assembly(template, cpu))
    assert mix["sqdmulh"] > 0, mix.most_common(30)
    assert mix["scvtf"] == 0 and mix["fcvtzs"] == 0, mix.most_common(30)
