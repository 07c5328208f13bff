"""The legalization registry: one function per TFLite builtin op, with the tensor types it accepts.

A legalization reads like the LiteRT reference kernel it mirrors and emits TOSA through the context's
builder. `types` lists the type signatures it handles: the element type of the op's first input, written
`in->out` when the first output's element type differs (e.g. "int8", "int16", "float32->int8",
"int8->int32"), so that a whole model is checked for support before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Legalization:
    opcode: str
    fn: Callable
    types: frozenset[str]


LEGALIZATIONS: dict[str, Legalization] = {}


def legalize(opcode: str, types=("int8",)):
    """Register `fn(ctx, op)` as the legalization of TFLite builtin `opcode` for the given type signatures."""

    def register(fn):
        assert opcode not in LEGALIZATIONS, f"{opcode} legalized twice"
        LEGALIZATIONS[opcode] = Legalization(opcode, fn, frozenset(types))
        return fn

    return register


def type_signature(input_dtype: str, output_dtype: str) -> str:
    return input_dtype if input_dtype == output_dtype else f"{input_dtype}->{output_dtype}"
