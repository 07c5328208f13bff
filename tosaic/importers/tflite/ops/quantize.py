"""QUANTIZE: for now the int8 -> int8 requantization; the float and 16-bit directions come later."""

from __future__ import annotations

from tosaic.importers.tflite.fixed_point import int8_range, per_tensor, requantize
from tosaic.importers.tflite.registry import legalize


@legalize("QUANTIZE", types=("int8",))
def quantize(ctx, op):
    """kernels/quantize.cc, int8 -> int8: reference_ops::Requantize,

        out = clamp_int8(zp_o + MultiplyByQuantizedMultiplier(q - zp_in, m, e))

    with (m, e) = QuantizeMultiplier(double(s_in) / double(s_o)) (a double division here, unlike most kernels).
    Requantize's shortcut for equal scales only applies to int8 <-> uint8.
    """
    x_tensor, out = ctx.input(0), ctx.output()
    if (x_tensor.dtype, out.dtype) != ("int8", "int8"):
        raise ctx.error(f"QUANTIZE from {x_tensor.dtype} to {out.dtype} is not supported yet")
    (s_in, zp_in), (so, zpo) = per_tensor(ctx, x_tensor), per_tensor(ctx, out)
    ctx.set_output(requantize(ctx, ctx.value(x_tensor), s_in / so, int8_range(zp_in), zp_in, zpo, "i8",
                              "QUANTIZE multiplier"))
