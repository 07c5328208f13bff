"""The reader refuses what LiteRT refuses (issue 13, item 1, its first rules): a schema version other than
3, a tensor type code the schema does not define, quantization parameters whose zero points and scales
differ in number or whose per-channel scales do not match their dimension; each a TFLiteFormatError naming the tensor and the rule, and LiteRT's
InterpreterBuilder refuses the same bytes. Scales that are not finite and positive tosaic refuses where
LiteRT does not look (its kernels would divide by them).
"""

from __future__ import annotations

import numpy as np
import pytest
import tflite
import tflite_builder
from litert_ref import make_interpreter
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.reader import TFLiteFormatError


def relu_model(mutate=None) -> bytes:
    b = ModelBuilder()
    x = b.tensor([1, 4, 4, 3], np.int8, scale=0.05, zero_point=2, name="x")
    y = b.tensor([1, 4, 4, 3], np.int8, scale=0.05, zero_point=2, name="y")
    b.op("RELU", [x], [y])
    if mutate is not None:
        mutate(b.tensors[y])
    return b.build()


def assert_both_refuse(model: bytes, message: str) -> None:
    with pytest.raises(TFLiteFormatError, match=message):
        tosaic.import_tflite(model)
    with pytest.raises(Exception):
        make_interpreter(model).allocate_tensors()


def test_the_unmutated_model_is_read():
    tosaic.import_tflite(relu_model())
    make_interpreter(relu_model()).allocate_tensors()


def test_schema_version(monkeypatch):
    monkeypatch.setattr(tflite_builder, "_SCHEMA_VERSION", 2)
    assert_both_refuse(relu_model(), "schema version 2; LiteRT and tosaic read version 3")


def test_zero_points_and_scales_differ_in_number():
    def mutate(t):
        t.zero_point = np.array([2, 2, 2])
    assert_both_refuse(relu_model(mutate), "tensor 1 'y': 3 zero points for 1 scales")


@pytest.mark.parametrize("quant_dim", [1, 4])
def test_per_channel_scales_off_their_dimension(quant_dim):
    def mutate(t):
        t.scale, t.zero_point, t.quant_dim = np.full(3, 0.05, np.float32), np.full(3, 2), quant_dim
    assert_both_refuse(relu_model(mutate), f"tensor 1 'y': 3 scales along dimension {quant_dim}")


@pytest.mark.parametrize("scale", [0.0, -0.05, np.inf, np.nan])
def test_scales_finite_and_positive(scale):
    def mutate(t):
        t.scale = np.array([scale], np.float32)
    with pytest.raises(TFLiteFormatError, match="scales must be finite and positive"):
        tosaic.import_tflite(relu_model(mutate))


def test_tensor_type_code_outside_the_schema():
    model = bytearray(relu_model())
    # The builder writes int8 (code 9) for both tensors; the type field's byte is found by reading it back.
    t = tflite.Model.GetRootAs(bytes(model), 0).Subgraphs(0).Tensors(1)
    offset = t._tab.Offset(6)   # Tensor.type, field 1
    assert offset and model[t._tab.Pos + offset] == 9
    model[t._tab.Pos + offset] = 128
    assert_both_refuse(bytes(model), "tensor 1 has type code -128, which the TFLite schema does not define")
