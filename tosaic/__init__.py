"""tosaic: a TOSA-centred compiler for quantized TFLite models.

    graph = tosaic.import_tflite("model.tflite")     # TOSA graph; str(graph) is MLIR text
    model = tosaic.compile("model.tflite")            # CompiledModel, target "interp" by default
    model = tosaic.compile("model.tflite", target="cpu", threads=2)   # fused Numba kernels
    outputs = model.run([x])
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tosaic.errors import TosaicError
from tosaic.importers.tflite.importer import LegalizationError, UnsupportedModelError, import_tflite
from tosaic.importers.tflite.reader import TFLiteFormatError
from tosaic.ir import Graph
from tosaic.kernels.target import TargetError
from tosaic.lowering.structured import LoweringError
from tosaic.runtime import CompiledModel, SavedModelError, TensorInfo
from tosaic.tosa.mlir import MlirParseError, parse_mlir

__all__ = ["compile", "load", "import_tflite", "parse_mlir", "CompiledModel", "TensorInfo", "Graph",
           "TFLiteFormatError", "UnsupportedModelError", "LegalizationError", "MlirParseError", "LoweringError",
           "TargetError", "SavedModelError", "TosaicError"]


def load_graph(source) -> Graph:
    """A TOSA graph from a Graph, a .tflite file, or a .mlir file holding TOSA (pretty or generic form)."""
    if isinstance(source, Graph):
        return source
    path = Path(source)
    if path.suffix == ".mlir":
        if not path.is_file():
            raise FileNotFoundError(f"no such MLIR file: {path}")
        return parse_mlir(path.read_text())
    return import_tflite(path)


def compile(source, target: str = "interp", threads: int | None = None) -> CompiledModel:
    """Compile a .tflite/.mlir path or a TOSA Graph for `target`: "interp" (the TOSA reference interpreter),
    "cpu" (this machine) or a named CPU such as "cpu:aarch64:cortex-a76" (`tosaic.kernels.target`;
    compiled for saving or export when this machine cannot run it). `threads`: how many cores the cpu
    target's kernels use (default: all)."""
    if isinstance(source, Graph):
        return CompiledModel(source, target, threads)
    path = Path(source)
    data = path.read_bytes() if path.is_file() else None
    origin = None if data is None else {"name": path.name, "sha256": hashlib.sha256(data).hexdigest()}
    if data is None or target == "interp":
        return CompiledModel(load_graph(path), target, threads, source=origin)
    # A compiled target's plan is kept by the file's bytes, the target and tosaic's code (`plan_cache`).
    from tosaic.kernels import plan_cache
    from tosaic.kernels.target import parse_target

    key = plan_cache.plan_key(data, path.suffix, parse_target(target).as_dict())
    cached = plan_cache.load_plan(key)
    if cached is not None:
        plan, meta = cached
        return CompiledModel.from_plan(plan, meta, target, threads, source=origin)
    model = CompiledModel(load_graph(path), target, threads, source=origin)
    plan_cache.store_plan(key, model.plan, model._meta())
    return model


def load(directory, threads: int | None = None) -> CompiledModel:
    """A compiled model kept by `CompiledModel.save(directory)`, ready to run."""
    return CompiledModel.load(directory, threads)

