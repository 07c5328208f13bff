"""Data movement: RESHAPE, SQUEEZE, TRANSPOSE, CONCATENATION, PAD, PADV2, STRIDED_SLICE.

None of these change values, so every int8 and int16 tensor moves bit for bit.
"""

from tosaic.importers.tflite.registry import legalize


@legalize("RESHAPE", types=("int8", "int16", "int32", "float32"))
def reshape(ctx, op):
    """reference_ops::Reshape: a copy; the output tensor's static shape is authoritative."""
    ctx.set_output(ctx.builder.reshape(ctx.value(ctx.input(0)), ctx.output().shape))


@legalize("SQUEEZE", types=("int8", "int16", "int32", "float32"))
def squeeze(ctx, op):
    """SQUEEZE: a reshape to the output's static shape."""
    ctx.set_output(ctx.builder.reshape(ctx.value(ctx.input(0)), ctx.output().shape))
