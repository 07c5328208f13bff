"""Run TFLite models on LiteRT's reference kernels (the bit-exact target of tosaic).

``OpResolverType.BUILTIN_REF`` with one thread: no XNNPACK, no optimized (ruy) kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

__all__ = [
    "make_interpreter",
    "run_reference",
    "reference_intermediates",
    "random_inputs",
    "input_details",
    "output_details",
]

ModelLike = Union[bytes, bytearray, str, Path]


def _model_bytes(model: ModelLike) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    return Path(model).read_bytes()


def make_interpreter(model: ModelLike, *, preserve_all_tensors: bool = False) -> Interpreter:
    """Reference-kernel interpreter (not yet allocated)."""
    return Interpreter(
        model_content=_model_bytes(model),
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        num_threads=1,
        experimental_preserve_all_tensors=preserve_all_tensors,
    )


def _invoke(interp: Interpreter, inputs: Sequence[np.ndarray]) -> None:
    details = interp.get_input_details()
    if len(inputs) != len(details):
        raise ValueError(f"model has {len(details)} inputs, got {len(inputs)}")
    arrays = []
    for d, x in zip(details, inputs):
        x = np.asarray(x)
        if x.dtype != d["dtype"]:
            raise TypeError(f"input {d['name']!r} wants {np.dtype(d['dtype'])}, got {x.dtype}")
        if tuple(d["shape"]) != x.shape:
            interp.resize_tensor_input(d["index"], list(x.shape), strict=False)
        arrays.append(np.array(x, copy=True))
    interp.allocate_tensors()
    for d, x in zip(details, arrays):
        interp.set_tensor(d["index"], x)
    interp.invoke()


def run_reference(model: ModelLike, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Outputs of the reference kernels, in subgraph output order."""
    interp = make_interpreter(model)
    _invoke(interp, inputs)
    return [np.array(interp.get_tensor(d["index"]), copy=True) for d in interp.get_output_details()]


def reference_intermediates(model: ModelLike, inputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
    """Every tensor's value after one reference run (``experimental_preserve_all_tensors``), by
    tensor index. Tensors without data (e.g. omitted optional inputs) are left out."""
    interp = make_interpreter(model, preserve_all_tensors=True)
    _invoke(interp, inputs)
    out: dict[int, np.ndarray] = {}
    for d in interp.get_tensor_details():
        try:
            value = interp.get_tensor(d["index"])
        except ValueError:
            continue
        if value is None:
            continue
        out[int(d["index"])] = np.array(value, copy=True)
    return out


def input_details(model: ModelLike) -> list[dict]:
    return make_interpreter(model).get_input_details()


def output_details(model: ModelLike) -> list[dict]:
    return make_interpreter(model).get_output_details()


def random_inputs(model: ModelLike, seed: int = 0, *, float_range: tuple[float, float] = (-1.0, 1.0),
                  int_range: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Seeded random inputs matching the model's input details: integer types over their full range
    (int32/int64 over [-1000, 1000]) unless ``int_range`` is given, floats uniform in
    ``float_range``, bools fair coins. Dynamic dimensions (-1) become 1."""
    rng = np.random.default_rng(seed)
    result = []
    for d in input_details(model):
        dtype = np.dtype(d["dtype"])
        sig = d.get("shape_signature")
        shape = tuple(int(s) if s >= 0 else 1 for s in (sig if sig is not None and len(sig) else d["shape"]))
        if dtype == np.bool_:
            x = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif dtype.kind in "iu":
            if int_range is not None:
                lo, hi = int_range
            elif dtype.itemsize <= 2:
                info = np.iinfo(dtype)
                lo, hi = int(info.min), int(info.max)
            else:
                lo, hi = -1000, 1000
            x = rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64).astype(dtype)
        elif dtype.kind == "f":
            x = rng.uniform(float_range[0], float_range[1], size=shape).astype(dtype)
        else:
            raise TypeError(f"no random inputs for {dtype}")
        result.append(x)
    return result
