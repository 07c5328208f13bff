"""One legalization per TFLite builtin op, grouped by kind; importing this package registers them all."""

from tosaic.importers.tflite.ops import (  # noqa: F401
    activations,
    conv,
    data,
    elementwise,
    logic,
    math,
    matmul,
    pooling,
    quantize,
    reduce,
    reductions,
    resize,
    shape,
    softmax,
    transpose_conv,
    variables,
)
