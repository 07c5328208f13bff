"""The x86 kernels' vector width, from their assembly (llvmlite, from Numba's unoptimized IR, as
`tosaic inspect --stage asm` shows it): every template vectorizes on 512-bit registers for an AVX-512 CPU
(Zen 4/5) and on 256-bit ones, never 512-bit, for an AVX2 CPU (Zen 3). Compiling for a CPU runs nothing on
it, so these run on any x86 host; running the kernels is the cpu tests' job on the host's own ISA.
"""

from __future__ import annotations

import functools
import re

import pytest

import model_zoo
import tosaic
from tosaic.kernels.cross import step_assembly

# A small model per template.
TEMPLATES = {"gemm_avx512vnni": "op_fc_64x32", "gemm_avx2": "op_fc_64x32", "im2col": "op_conv2d_s1_same_relu",
             "conv": "var_16x8_op_conv2d_s1_same_relu", "depthwise": "op_dwconv_m1_s1_same_relu6",
             "generic": "op_avgpool_3x3_s1_same", "generic_flat": "op_add_same"}
AVX512 = set(TEMPLATES) - {"gemm_avx2"}
AVX2 = set(TEMPLATES) - {"gemm_avx512vnni"}


@functools.lru_cache(maxsize=None)
def registers(template: str, cpu: str) -> dict[str, int]:
    model = tosaic.compile(model_zoo.DATA / f"{TEMPLATES[template]}.tflite", target=f"cpu:x86_64:{cpu}")
    (step,) = [s for s in model.plan.steps if s.kind == "kernel" and s.template == template][:1]
    asm = step_assembly(model.plan, step)
    return {width: len(re.findall(rf"%{width}\d+", asm)) for width in ("xmm", "ymm", "zmm")}


@pytest.mark.parametrize("template", sorted(AVX512))
def test_templates_vectorize_on_512_bit_registers_with_avx512(template):
    assert registers(template, "znver5")["zmm"] > 0, registers(template, "znver5")


@pytest.mark.parametrize("template", sorted(AVX2))
def test_templates_vectorize_on_256_bit_registers_with_avx2(template):
    found = registers(template, "znver3")
    assert found["ymm"] > 0 and found["zmm"] == 0, found
