"""Data movement legalizations (tosaic/importers/tflite/ops/data.py) against LiteRT BUILTIN_REF.

SPLIT, SPLIT_V, PACK, UNPACK, TILE, GATHER, DEPTH_TO_SPACE, SPACE_TO_DEPTH, EXPAND_DIMS, SLICE, SHAPE and
BROADCAST_TO. Every comparison is exact (np.array_equal, same dtype and shape). Property tests build single-op
models with tflite_builder and run them on LiteRT's reference kernels and on tosaic's TOSA interpreter.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import tflite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litert_ref import run_reference
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.importer import LegalizationError
from tosaic.ir import Graph
from tosaic.tosa.mlir import parse_mlir, print_graph

DATA = Path(__file__).parent / "data"
MODELS = sorted(p.stem for p in DATA.glob("*.tflite") if p.stem.startswith(
    ("op_split_", "op_pack_", "op_unpack_", "op_gather_")))

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "float32": np.float32, "bool": np.bool_}


def io_arrays(name):
    with np.load(DATA / f"{name}.io.npz") as io:
        inputs = [io[f"in_{i}"] for i in range(sum(k.startswith("in_") for k in io))]
        refs = [io[f"ref_{i}"] for i in range(sum(k.startswith("ref_") for k in io))]
    return inputs, refs


@pytest.mark.parametrize("name", MODELS)
def test_data_model_matches_stored_reference(name):
    inputs, refs = io_arrays(name)
    outputs = tosaic.compile(DATA / f"{name}.tflite").run(inputs)
    assert len(outputs) == len(refs) > 0
    for out, ref in zip(outputs, refs):
        assert out.dtype == ref.dtype and out.shape == ref.shape and np.array_equal(out, ref)


def test_data_models_present():
    assert MODELS == ["op_gather_axis0_table", "op_gather_axis1", "op_pack_axis1", "op_split_2",
                      "op_split_4_axis1", "op_unpack_axis1"]


def with_opcode_version(model: bytes, opcode: str, version: int) -> bytes:
    """The model with every operator code `opcode` rewritten to `version`, in place in the flatbuffer."""
    raw = bytearray(model)
    m = tflite.Model.GetRootAs(raw, 0)
    code = getattr(tflite.BuiltinOperator, opcode)
    for i in range(m.OperatorCodesLength()):
        c = m.OperatorCodes(i)
        if max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) == code:
            field = c._tab.Offset(8)  # OperatorCode.version (as tflite.OperatorCode.Version reads it)
            assert field, "the version field is absent (default 1)"
            raw[c._tab.Pos + field: c._tab.Pos + field + 4] = np.int32(version).tobytes()
            assert tflite.Model.GetRootAs(raw, 0).OperatorCodes(i).Version() == version
    return bytes(raw)


def test_op_tile_matches_reference_at_version_1():
    """op_tile has no ref_*: the converter wrote TILE version 3, which the reference resolver (versions 1-2)
    refuses to load. The kernel does not read the version, so the same model with version 1 runs there."""
    model = (DATA / "op_tile.tflite").read_bytes()
    with pytest.raises(Exception):
        run_reference(model, io_arrays("op_tile")[0])
    patched = with_opcode_version(model, "TILE", 1)
    inputs, _ = io_arrays("op_tile")
    (ref,) = run_reference(patched, inputs)
    (out,) = tosaic.compile(DATA / "op_tile.tflite").run(inputs)
    assert out.dtype == ref.dtype and np.array_equal(out, ref)
    with np.load(DATA / "op_tile.io.npz") as io:
        assert np.array_equal(ref, io["opt_0"])  # and it agrees with the optimized kernel's stored output


# ------------------------------------------------------------------------------------------ helpers


def random_array(rng, shape, dtype, low=None, high=None):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    low = info.min if low is None else low
    high = info.max if high is None else high
    return rng.integers(low, high, size=shape, endpoint=True, dtype=np.int64).astype(dtype)


def quant(dtype, scale=0.05, zero_point=-3):
    """Quantization for a test tensor: int8 any zero point, int16 zero point 0, others none."""
    if dtype == "int8":
        return dict(scale=scale, zero_point=zero_point)
    if dtype == "int16":
        return dict(scale=scale, zero_point=0)
    return {}


def compare(model: bytes, inputs):
    refs = run_reference(model, inputs)
    outs = tosaic.compile(tosaic.import_tflite(model)).run(inputs)
    assert len(refs) == len(outs)
    for out, ref in zip(outs, refs):
        assert out.dtype == ref.dtype and out.shape == ref.shape, (out.dtype, out.shape, ref.dtype, ref.shape)
        if out.dtype.kind == "f":  # bit patterns: -0.0 is not 0.0, and NaN equals itself
            out, ref = out.view(f"u{out.itemsize}"), ref.view(f"u{ref.itemsize}")
        assert np.array_equal(out, ref), f"{int((out != ref).sum())} of {ref.size} elements differ"


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4)
seeds = st.integers(0, 2**31 - 1)
move_dtypes = st.sampled_from(["int8", "int8", "int16", "int32", "float32"])
index_dtypes = st.sampled_from([np.int32, np.int64])


# ------------------------------------------------------------------------------------ SPLIT, SPLIT_V


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), shape=shapes, dtype=move_dtypes, seed=seeds)
def test_split(data, shape, dtype, seed):
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1), label="axis")
    num = data.draw(st.integers(1, 4), label="num_splits")
    shape[axis] = num * data.draw(st.integers(1, 3), label="chunk")
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    out_shape = list(shape)
    out_shape[axis] //= num
    outs = [b.tensor(out_shape, DTYPES[dtype], **quant(dtype)) for _ in range(num)]
    b.op("SPLIT", [b.const(np.array(axis, np.int32)), x], outs, num_splits=num)
    compare(b.build(), [random_array(np.random.default_rng(seed), shape, dtype)])


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), shape=shapes, dtype=move_dtypes, size_type=index_dtypes, seed=seeds)
def test_split_v(data, shape, dtype, size_type, seed):
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1), label="axis")
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=4), label="sizes")
    shape[axis] = sum(sizes)
    spec = list(sizes)
    if data.draw(st.booleans(), label="one -1"):
        spec[data.draw(st.integers(0, len(sizes) - 1), label="which")] = -1
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    outs = []
    for n in sizes:
        s = list(shape)
        s[axis] = n
        outs.append(b.tensor(s, DTYPES[dtype], **quant(dtype)))
    b.op("SPLIT_V", [x, b.const(np.array(spec, size_type)), b.const(np.array([axis], np.int32))], outs,
         num_splits=len(sizes))
    compare(b.build(), [random_array(np.random.default_rng(seed), shape, dtype)])


def test_uneven_split_is_refused():
    b = ModelBuilder()
    x = b.tensor([1, 5], np.int8, scale=0.1, zero_point=0)
    outs = [b.tensor([1, 2], np.int8, scale=0.1, zero_point=0) for _ in range(2)]
    b.op("SPLIT", [b.const(np.array(1, np.int32)), x], outs, num_splits=2)
    with pytest.raises(LegalizationError, match="not an even split"):
        tosaic.import_tflite(b.build())


# -------------------------------------------------------------------------------------- PACK, UNPACK


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), shape=st.lists(st.integers(1, 4), min_size=0, max_size=4), count=st.integers(1, 4),
       dtype=move_dtypes, seed=seeds)
def test_pack(data, shape, count, dtype, seed):
    rank = len(shape)
    axis = data.draw(st.integers(-rank - 1, rank), label="axis")
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    xs = [b.tensor(shape, DTYPES[dtype], **quant(dtype)) for _ in range(count)]
    a = axis + rank + 1 if axis < 0 else axis
    out = b.tensor(shape[:a] + [count] + shape[a:], DTYPES[dtype], **quant(dtype))
    b.op("PACK", xs, [out], values_count=count, axis=axis)
    compare(b.build(), [random_array(rng, shape, dtype) for _ in range(count)])


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), shape=shapes, dtype=st.sampled_from(["int8", "int16", "int32", "float32", "bool"]),
       seed=seeds)
def test_unpack(data, shape, dtype, seed):
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1), label="axis")
    num = shape[axis]
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    out_shape = [d for i, d in enumerate(shape) if i != axis % rank]
    outs = [b.tensor(out_shape, DTYPES[dtype], **quant(dtype)) for _ in range(num)]
    b.op("UNPACK", [x], outs, num=num, axis=axis)
    compare(b.build(), [random_array(np.random.default_rng(seed), shape, dtype)])


def test_pack_with_requantization_is_refused():
    b = ModelBuilder()
    xs = [b.tensor([2, 3], np.int8, scale=s, zero_point=0) for s in (0.1, 0.2)]
    out = b.tensor([2, 2, 3], np.int8, scale=0.1, zero_point=0)
    b.op("PACK", xs, [out], values_count=2, axis=0)
    with pytest.raises(LegalizationError, match="quantized differently"):
        tosaic.import_tflite(b.build())


# ----------------------------------------------------------------------------------------------- TILE


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), shape=shapes, dtype=st.sampled_from(["int8", "int16", "int32", "float32", "bool"]),
       multiples_type=index_dtypes, seed=seeds)
def test_tile(data, shape, dtype, multiples_type, seed):
    multiples = data.draw(st.lists(st.integers(1, 3), min_size=len(shape), max_size=len(shape)), label="mult")
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    out = b.tensor([d * m for d, m in zip(shape, multiples)], DTYPES[dtype], **quant(dtype))
    # Version 1: the reference resolver registers TILE 1-2 only (the converter writes int8 as 3).
    b.op("TILE", [x, b.const(np.array(multiples, multiples_type))], [out], version=1)
    compare(b.build(), [random_array(np.random.default_rng(seed), shape, dtype)])


# --------------------------------------------------------------------------------------------- GATHER


@settings(max_examples=120, **SETTINGS)
@given(data=st.data(), shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), dtype=move_dtypes,
       positions_type=st.sampled_from([np.int16, np.int32, np.int64]), constant=st.booleans(), seed=seeds)
def test_gather(data, shape, dtype, positions_type, constant, seed):
    rank = len(shape)
    axis = data.draw(st.integers(0, rank - 1), label="axis")
    batch_dims = data.draw(st.integers(0, axis), label="batch_dims")
    extra = data.draw(st.lists(st.integers(1, 3), min_size=0 if batch_dims else 0, max_size=2), label="extra")
    pos_shape = list(shape[:batch_dims]) + extra
    rng = np.random.default_rng(seed)
    positions = rng.integers(0, shape[axis], size=pos_shape).astype(positions_type)
    negative_axis = data.draw(st.booleans(), label="negative axis")
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    p = b.const(positions) if constant else b.tensor(pos_shape, positions_type)
    out = b.tensor(shape[:axis] + extra + shape[axis + 1:], DTYPES[dtype], **quant(dtype))
    b.op("GATHER", [x, p], [out], axis=axis - rank if negative_axis else axis, batch_dims=batch_dims)
    inputs = [random_array(rng, shape, dtype)] + ([] if constant else [positions])
    compare(b.build(), inputs)


def test_gather_embedding_lookup_with_constant_table():
    """The common embedding form: a constant table, positions computed by the model."""
    rng = np.random.default_rng(3)
    table = random_array(rng, [10, 6], "int8")
    b = ModelBuilder()
    t = b.tensor([10, 6], np.int8, scale=0.02, zero_point=4, data=table)
    p = b.tensor([2, 5], np.int32)
    out = b.tensor([2, 5, 6], np.int8, scale=0.02, zero_point=4)
    b.op("GATHER", [t, p], [out], axis=0)
    compare(b.build(), [rng.integers(0, 10, size=(2, 5)).astype(np.int32)])


def test_gather_out_of_range_positions():
    b = ModelBuilder()
    x = b.tensor([4, 3], np.int8, scale=0.1, zero_point=0)
    out = b.tensor([2, 3], np.int8, scale=0.1, zero_point=0)
    b.op("GATHER", [x, b.const(np.array([1, 4], np.int32))], [out], axis=0)
    with pytest.raises(LegalizationError, match="outside"):
        tosaic.import_tflite(b.build())
    # Computed positions: LiteRT fails the invoke, TOSA GATHER's REQUIRE fails at run time.
    b = ModelBuilder()
    x = b.tensor([4, 3], np.int8, scale=0.1, zero_point=0)
    p = b.tensor([2], np.int32)
    out = b.tensor([2, 3], np.int8, scale=0.1, zero_point=0)
    b.op("GATHER", [x, p], [out], axis=0)
    model = b.build()
    inputs = [np.zeros([4, 3], np.int8), np.array([0, 4], np.int32)]
    with pytest.raises(Exception):
        run_reference(model, inputs)
    with pytest.raises(Exception, match="gather index"):
        tosaic.compile(tosaic.import_tflite(model)).run(inputs)


# ---------------------------------------------------------------------- DEPTH_TO_SPACE, SPACE_TO_DEPTH


@settings(max_examples=40, **SETTINGS)
@given(n=st.integers(1, 2), h=st.integers(1, 3), w=st.integers(1, 3), c=st.integers(1, 3), block=st.integers(1, 3),
       dtype=st.sampled_from(["int8", "int8", "int32", "float32"]), to_space=st.booleans(), seed=seeds)
def test_depth_to_space_and_back(n, h, w, c, block, dtype, to_space, seed):
    deep, wide = [n, h, w, c * block * block], [n, h * block, w * block, c]
    shape, out_shape = (deep, wide) if to_space else (wide, deep)
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    out = b.tensor(out_shape, DTYPES[dtype], **quant(dtype))
    # The reference resolver registers DEPTH_TO_SPACE at version 1 only (the converter writes int8 as 2).
    b.op("DEPTH_TO_SPACE" if to_space else "SPACE_TO_DEPTH", [x], [out], block_size=block,
         version=1 if to_space else None)
    compare(b.build(), [random_array(np.random.default_rng(seed), shape, dtype)])


# ---------------------------------------------------------------------------------- EXPAND_DIMS, SLICE


@settings(max_examples=30, **SETTINGS)
@given(data=st.data(), shape=st.lists(st.integers(1, 4), min_size=0, max_size=4),
       dtype=st.sampled_from(["int8", "int16", "int32", "float32", "bool"]), axis_type=index_dtypes, seed=seeds)
def test_expand_dims(data, shape, dtype, axis_type, seed):
    rank = len(shape)
    axis = data.draw(st.integers(-rank - 1, rank), label="axis")
    a = axis + rank + 1 if axis < 0 else axis
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    out = b.tensor(shape[:a] + [1] + shape[a:], DTYPES[dtype], **quant(dtype))
    b.op("EXPAND_DIMS", [x, b.const(np.array([axis], axis_type))], [out])
    compare(b.build(), [random_array(np.random.default_rng(seed), shape, dtype)])


@settings(max_examples=50, **SETTINGS)
@given(data=st.data(), shape=st.lists(st.integers(1, 6), min_size=1, max_size=5),
       dtype=st.sampled_from(["int8", "int16", "int32", "float32", "bool"]), index_type=index_dtypes, seed=seeds)
def test_slice(data, shape, dtype, index_type, seed):
    begin = [data.draw(st.integers(0, d - 1), label="begin") for d in shape]
    size = [data.draw(st.sampled_from([-1, data.draw(st.integers(1, d - s), label="n")]), label="size")
            for d, s in zip(shape, begin)]
    out_shape = [d - s if n == -1 else n for d, s, n in zip(shape, begin, size)]
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    out = b.tensor(out_shape, DTYPES[dtype], **quant(dtype))
    b.op("SLICE", [x, b.const(np.array(begin, index_type)), b.const(np.array(size, index_type))], [out])
    compare(b.build(), [random_array(np.random.default_rng(seed), shape, dtype)])


def test_slice_with_negative_begin_is_refused():
    b = ModelBuilder()
    x = b.tensor([4], np.int8, scale=0.1, zero_point=0)
    out = b.tensor([2], np.int8, scale=0.1, zero_point=0)
    b.op("SLICE", [x, b.const(np.array([-1], np.int32)), b.const(np.array([2], np.int32))], [out])
    with pytest.raises(LegalizationError, match="outside"):
        tosaic.import_tflite(b.build())


# ------------------------------------------------------------------------------- SHAPE, BROADCAST_TO


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "float32", "bool"])
@pytest.mark.parametrize("out_type", ["INT32", "INT64"])
def test_shape_is_a_constant(dtype, out_type):
    b = ModelBuilder()
    x = b.tensor([2, 3, 5], np.dtype(dtype), **quant(dtype))
    out = b.tensor([3], np.int32 if out_type == "INT32" else np.int64)
    b.op("SHAPE", [x], [out], out_type=out_type)
    model = b.build()
    compare(model, [np.zeros([2, 3, 5], np.dtype(dtype))])
    assert [op.name for op in tosaic.import_tflite(model).ops] == ["tosa.const"]


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), target=st.lists(st.integers(1, 4), min_size=1, max_size=5),
       dtype=st.sampled_from(["int8", "int16", "int32", "float32", "bool"]), shape_type=index_dtypes, seed=seeds)
def test_broadcast_to(data, target, dtype, shape_type, seed):
    rank = data.draw(st.integers(0, len(target)), label="input rank")
    shape = [d if data.draw(st.booleans(), label="keep") else 1 for d in target[len(target) - rank:]]
    b = ModelBuilder()
    x = b.tensor(shape, DTYPES[dtype], **quant(dtype))
    out = b.tensor(target, DTYPES[dtype], **quant(dtype))
    b.op("BROADCAST_TO", [x, b.const(np.array(target, shape_type))], [out])
    compare(b.build(), [random_array(np.random.default_rng(seed), shape, dtype)])


def test_shape_feeds_broadcast_to():
    """SHAPE's output is constant data that a later op reads as its (constant) shape argument."""
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.tensor([2, 3, 4], np.int8, scale=0.1, zero_point=0)
    y = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0)
    dims = b.tensor([3], np.int32)
    out = b.tensor([2, 3, 4], np.int8, scale=0.1, zero_point=0)
    b.op("SHAPE", [x], [dims], out_type="INT32")
    b.op("BROADCAST_TO", [y, dims], [out])
    compare(b.build(), [random_array(rng, [2, 3, 4], "int8"), random_array(rng, [1, 4], "int8")])


# ------------------------------------------------------------------------------------ Arm's validator

from tosa_tools import TOSA_OPT, requires_tosa_tools
TARGET = "--tosa-attach-target=profiles=pro_int,pro_fp extensions=doubleround,int16 specification_version=1.0"


def combined_graph(models) -> Graph:
    """The graphs of several models side by side in one function (one tosa-opt run for all)."""
    combined = Graph("main")
    for k, model in enumerate(models):
        graph = tosaic.import_tflite(model)
        combined.inputs += graph.inputs
        combined.input_names += [f"m{k}:{n}" for n in graph.input_names]
        combined.ops += graph.ops
        combined.outputs += graph.outputs
        combined.output_names += [f"m{k}:{n}" for n in graph.output_names]
    return combined


def check_with_arm_validator(models, tmp_path) -> None:
    """tosa-opt --tosa-validate (strict, TOSA 1.0 PRO-INT + PRO-FP, EXT-DOUBLEROUND + EXT-INT16) accepts the
    models' graphs, and our parser reads tosa-opt's generic print of them back to the same text."""
    graph = combined_graph(models)
    source = tmp_path / "graphs.mlir"
    source.write_text(print_graph(graph))
    for flags in ([TARGET, "--tosa-validate=strict-op-spec-alignment"], ["--mlir-print-op-generic"]):
        out = tmp_path / "out.mlir"
        result = subprocess.run([str(TOSA_OPT), str(source), *flags, "-o", str(out)], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
    assert print_graph(parse_mlir(out.read_text())) == print_graph(graph)


def representative_models():
    models = []
    for dtype in ("int8", "int16", "int32", "float32", "bool"):
        b = ModelBuilder()
        x = b.tensor([2, 3], DTYPES[dtype], **quant(dtype))
        out = b.tensor([4, 3], DTYPES[dtype], **quant(dtype))
        b.op("TILE", [x, b.const(np.array([2, 1], np.int32))], [out], version=1)
        models.append(b.build())
    for positions_type in (np.int16, np.int32):
        b = ModelBuilder()
        x = b.tensor([2, 5, 3], np.int16, scale=0.1, zero_point=0)
        p = b.tensor([2, 4], positions_type)
        out = b.tensor([2, 2, 4, 3], np.int16, scale=0.1, zero_point=0)
        b.op("GATHER", [x, p], [out], axis=1)
        models.append(b.build())
    b = ModelBuilder()
    x = b.tensor([1, 2, 2, 8], np.int8, scale=0.1, zero_point=0)
    out = b.tensor([1, 4, 4, 2], np.int8, scale=0.1, zero_point=0)
    b.op("DEPTH_TO_SPACE", [x], [out], block_size=2, version=1)
    models.append(b.build())
    b = ModelBuilder()
    x = b.tensor([3, 4], np.bool_)
    outs = [b.tensor([4], np.bool_) for _ in range(3)]
    b.op("UNPACK", [x], outs, num=3, axis=0)
    models.append(b.build())
    return models


@requires_tosa_tools
def test_representative_graphs_pass_arm_validator(tmp_path):
    check_with_arm_validator(representative_models(), tmp_path)
