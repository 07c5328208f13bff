"""The flatbuffer verifier (tosaic/importers/tflite/verifier.py) against LiteRT's: every model of tests/data
passes both; each kind of structural damage is refused by both, tosaic's message naming where and which
rule; what LiteRT's generated Verify lets through (an options union type it does not know) passes both.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.reader import TFLiteFormatError
from tosaic.importers.tflite.verifier import MAX_DEPTH, NEWER_FIELDS, UNION_ENUMS, table_fields, verify_model

DATA = Path(__file__).parent / "data"


def litert_verifies(model: bytes) -> bool:
    try:
        Interpreter(model_content=model)
    except ValueError as error:
        if "not a valid Flatbuffer buffer" in str(error):
            return False
        raise
    return True


def relu_model() -> bytes:
    b = ModelBuilder()
    x = b.tensor([1, 4, 4, 3], np.int8, scale=0.05, zero_point=2, name="x")
    y = b.tensor([1, 4, 4, 3], np.int8, scale=0.05, zero_point=2, name="y")
    b.op("RELU", [x], [y])
    return b.build()


def assert_both_refuse(model: bytes, rule: str) -> None:
    problem = verify_model(model)
    assert problem is not None and rule in problem, problem
    assert not litert_verifies(model)
    with pytest.raises(TFLiteFormatError, match="is not a valid TFLite flatbuffer"):
        tosaic.import_tflite(model)


@pytest.mark.parametrize("path", sorted(DATA.glob("*.tflite")), ids=lambda p: p.stem)
def test_every_model_of_tests_data_verifies(path):
    assert verify_model(path.read_bytes()) is None


def test_the_schema_covers_every_table_litert_walks():
    """Every table reachable from Model, union members included, has its fields read off the accessors."""
    seen, todo = set(), ["Model"]
    while todo:
        table = todo.pop()
        if table in seen:
            continue
        seen.add(table)
        for field in table_fields(table):
            todo += [field.table] * bool(field.table) + [member for _, member in field.members]
    assert {"Model", "SubGraph", "Tensor", "Operator", "Buffer", "Conv2DOptions", "StablehloCaseOptions",
            "ExternalBuffer", "MultiAxisQuantization"} <= seen
    assert len(seen) > 150
    unions = [(table, field.name) for table in seen for field in table_fields(table) if field.kind == "union"]
    assert len(unions) == len(UNION_ENUMS) == 5   # each mapped to its enum (else table_fields raises)
    tensor = {f.name: (f.slot, f.kind, f.size) for f in table_fields("Tensor")}
    assert tensor["buffer"] == (8, "scalar", 4) and tensor["shape"] == (4, "vector", 4)
    assert tensor["external_buffer"] == (24, "scalar", 4) and "Tensor" in NEWER_FIELDS


def root_table(model: bytes) -> tuple[int, int]:
    root = struct.unpack_from("<I", model, 0)[0]
    return root, root - struct.unpack_from("<i", model, root)[0]


def test_root_offset_past_the_end():
    model = bytearray(relu_model())
    model[0:4] = struct.pack("<I", len(model) + 8)
    assert_both_refuse(bytes(model), "points past the buffer's end")


def test_misaligned_root_table():
    model = bytearray(relu_model())
    model[0:4] = struct.pack("<I", struct.unpack_from("<I", model, 0)[0] + 1)
    assert_both_refuse(bytes(model), "unaligned")


def test_odd_vtable_size():
    model = bytearray(relu_model())
    _, vtable = root_table(model)
    model[vtable:vtable + 2] = struct.pack("<H", struct.unpack_from("<H", model, vtable)[0] + 1)
    assert_both_refuse(bytes(model), "odd-sized")


def test_a_vector_running_past_the_end():
    model = relu_model()
    sites = []
    verify_model(model, sites)
    (shape,) = [s for s in sites if s.path == "model.subgraphs[0].tensors[0].shape"]
    raw = bytearray(model)
    raw[shape.pos:shape.pos + 4] = struct.pack("<I", len(model))
    assert_both_refuse(bytes(raw), "runs past the buffer's end")


def test_a_string_without_its_nul():
    model = relu_model()
    name = tflite.Model.GetRootAs(model, 0).Subgraphs(0).Tensors(0)
    field = name._tab.Pos + name._tab.Offset(10)
    start = field + struct.unpack_from("<I", model, field)[0]
    end = start + 4 + struct.unpack_from("<I", model, start)[0]
    raw = bytearray(model)
    raw[end] = ord("A")
    assert_both_refuse(bytes(raw), "has no NUL end")


def test_newer_model_fields_litert_reads():
    """Enlarge Model's vtable over the bytes after it: slot 20 (external_buffer_groups, a field of LiteRT's
    schema that the tflite package predates) then points at garbage, which both verifiers catch."""
    model = bytearray(DATA.joinpath("op_fc_3d_keepdims_8x48x24.tflite").read_bytes())
    _, vtable = root_table(model)
    model[vtable:vtable + 2] = struct.pack("<H", 2068)
    assert_both_refuse(bytes(model), "model.external_buffer_groups")


def test_tables_nested_too_deep(monkeypatch):
    """The nesting limit is flatbuffers' 64; lowering it to 2 shows the rule fires (no TFLite table nests 64
    deep, so LiteRT's side cannot be shown with a real model)."""
    from tosaic.importers.tflite import verifier

    assert MAX_DEPTH == 64
    monkeypatch.setattr(verifier, "MAX_DEPTH", 2)
    assert "tables nest deeper than 2" in verify_model(relu_model())


def test_an_options_type_the_schema_lacks_passes_both():
    """The generated Verify of a union returns true for a type it does not know; so does tosaic's."""
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int8, scale=0.05, zero_point=0, name="x")
    y = b.tensor([1, 4], np.int8, scale=0.05, zero_point=0, name="y")
    b.op("SOFTMAX", [x], [y], beta=1.0)
    model = b.build()
    sites = []
    verify_model(model, sites)
    (kind,) = [s for s in sites if s.path.endswith("operators[0].builtin_options_type")]
    raw = bytearray(model)
    raw[kind.pos] = 250
    assert verify_model(bytes(raw)) is None and litert_verifies(bytes(raw))
