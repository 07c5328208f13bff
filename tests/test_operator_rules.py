"""The operator rules (tosaic/importers/tflite/operator_rules.py) against LiteRT itself: the op versions its
default resolver registers, the input and output counts its kernels' Prepare accept, the options its parser
gives an op whose options table is absent or of another type (a zero-initialized struct), the dataflow its
arena needs, and the quantization parameters its InterpreterBuilder reads. Each case runs on both: both
refuse, or both run and agree bit for bit (tosaic refusing more is named where it does).
"""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from litert_ref import make_interpreter, run_reference
from tflite_builder import ModelBuilder

import tosaic
from tosaic.importers.tflite.operator_rules import OPERATOR_RULES
from tosaic.importers.tflite.reader import TFLiteFormatError
from tosaic.importers.tflite.verifier import verify_model


def default_resolver(model: bytes) -> Interpreter:
    return Interpreter(model_content=model,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def registered(opcode: str, version: int) -> bool:
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="x")
    y = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="y")
    b.op(opcode, [x], [y], version=version)
    try:
        default_resolver(b.build())   # op resolution happens here, before any kernel sees the node
    except ValueError as error:
        if "Didn't find op for builtin opcode" in str(error):
            return False
        raise
    return True


@pytest.mark.parametrize("opcode", sorted(OPERATOR_RULES))
def test_versions_are_those_litert_registers(opcode):
    low, high = OPERATOR_RULES[opcode].versions
    assert registered(opcode, low) and registered(opcode, high)
    assert not registered(opcode, low - 1) and not registered(opcode, high + 1)


def site(model: bytes, path: str):
    sites = []
    assert verify_model(model, sites) is None
    (found,) = [s for s in sites if s.path == path]
    return found


def patched(model: bytes, path: str, value: int, element: int | None = None) -> bytes:
    """`model` with the scalar field at `path` (or element `element` of the vector there) set to `value`."""
    s = site(model, path)
    pos = s.pos if element is None else s.pos + 4 + s.size * element   # element -1: the vector's length
    raw = bytearray(model)
    raw[pos:pos + s.size] = int(value % (1 << (8 * s.size))).to_bytes(s.size, "little")
    return bytes(raw)


def assert_both_refuse(model: bytes, message: str, error=TFLiteFormatError) -> None:
    with pytest.raises(error, match=message):
        tosaic.import_tflite(model)
    with pytest.raises((ValueError, RuntimeError)):
        interp = make_interpreter(model)
        interp.allocate_tensors()
        interp.invoke()


def assert_both_agree(model: bytes, inputs) -> list[np.ndarray]:
    ours = tosaic.compile(tosaic.import_tflite(model)).run(inputs)
    theirs = run_reference(model, inputs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return ours


def conv_model(bias: bool = True) -> bytes:
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    x = b.tensor([1, 6, 6, 4], np.int8, scale=0.05, zero_point=3, name="x")
    b.conv2d(x, rng.integers(-127, 128, (8, 3, 3, 4)), np.full(8, 0.01), rng.integers(-500, 500, 8) if bias else None,
             0.1, -2, stride=2)
    return b.build()


def add_model() -> bytes:
    b = ModelBuilder()
    x = b.tensor([1, 4, 4, 8], np.int8, scale=0.05, zero_point=3, name="x")
    y = b.tensor([1, 4, 4, 8], np.int8, scale=0.04, zero_point=-5, name="y")
    z = b.tensor([1, 4, 4, 8], np.int8, scale=0.08, zero_point=1, name="z")
    b.op("ADD", [x, y], [z], fused_activation_function="RELU")
    return b.build()


def int8_inputs(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, shape, dtype=np.int8) for shape in shapes]


def test_a_version_litert_does_not_register():
    model = patched(conv_model(), "model.operator_codes[0].version", 9)
    assert_both_refuse(model, r"CONV_2D \(version 9\).*register versions 1 to 8", tosaic.UnsupportedModelError)


def test_conv_2d_needs_its_bias():
    """conv.cc's Prepare accepts two inputs, then requires the bias anyway: absent (-1) or left out."""
    assert_both_refuse(conv_model(bias=False), r"CONV_2D: input 2 is absent \(-1\); CONV_2D needs it")
    two_inputs = patched(conv_model(), "model.subgraphs[0].operators[0].inputs", 2, element=-1)
    assert_both_refuse(two_inputs, r"CONV_2D: 2 inputs; LiteRT's CONV_2D takes 3")


def test_an_absent_input_where_none_is_optional():
    model = patched(add_model(), "model.subgraphs[0].operators[0].inputs", -1, element=1)
    assert_both_refuse(model, r"ADD: input 1 is absent \(-1\)")


def test_an_absent_output():
    model = patched(add_model(), "model.subgraphs[0].operators[0].outputs", -1, element=0)
    with pytest.raises(TFLiteFormatError, match=r"operator 0 \(ADD\) refers to tensor -1"):
        tosaic.import_tflite(model)


def test_add_without_options_runs_as_litert_runs_it():
    """No options table: LiteRT's params are zeros (no fused activation), and so are tosaic's."""
    model = patched(add_model(), "model.subgraphs[0].operators[0].builtin_options_type", 0)
    outputs = assert_both_agree(model, int8_inputs((1, 4, 4, 8), (1, 4, 4, 8)))
    with_relu = tosaic.compile(tosaic.import_tflite(add_model())).run(int8_inputs((1, 4, 4, 8), (1, 4, 4, 8)))
    assert not np.array_equal(outputs[0], with_relu[0])   # the RELU of the options table is gone


def test_options_of_another_type_are_zeros():
    """ADD carrying a SubOptions table: LiteRT reads no AddOptions, so zeros again (not the table's RELU)."""
    model = patched(add_model(), "model.subgraphs[0].operators[0].builtin_options_type", 28)  # SubOptions
    assert_both_agree(model, int8_inputs((1, 4, 4, 8), (1, 4, 4, 8), seed=1))


def test_conv_2d_without_options_has_stride_0():
    model = patched(conv_model(), "model.subgraphs[0].operators[0].builtin_options_type", 0)
    assert_both_refuse(model, r"stride \[0, 0\] and dilation \[0, 0\] must be positive", tosaic.LegalizationError)


def test_fully_connected_output_shape_is_litert_s():
    """keep_num_dims cleared: LiteRT resizes the output to [batch, units]; a model declaring the 3-D shape
    runs there with another output shape, so tosaic refuses it."""
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.tensor([1, 3, 8], np.int8, scale=0.05, zero_point=0, name="x")
    w = b.tensor([4, 8], np.int8, scale=0.02, zero_point=0, data=rng.integers(-127, 128, (4, 8)), name="w")
    y = b.tensor([1, 3, 4], np.int8, scale=0.1, zero_point=0, name="y")
    b.op("FULLY_CONNECTED", [x, w, -1], [y], keep_num_dims=True)
    model = b.build()
    assert_both_agree(model, int8_inputs((1, 3, 8)))   # the optional bias -1 is accepted by both
    cleared = patched(model, "model.subgraphs[0].operators[0].builtin_options (FullyConnectedOptions).keep_num_dims", 0)
    (out,) = run_reference(cleared, int8_inputs((1, 3, 8)))
    assert out.shape == (3, 4)
    with pytest.raises(tosaic.LegalizationError, match=r"LiteRT computes output shape \[3, 4\]"):
        tosaic.import_tflite(cleared)


def test_arg_max_output_type_must_be_the_output_s():
    b = ModelBuilder()
    x = b.tensor([1, 10], np.int8, scale=0.05, zero_point=0, name="x")
    axis = b.tensor([1], np.int32, data=np.array([1]), name="axis")
    y = b.tensor([1], np.int32, name="y")
    b.op("ARG_MAX", [x, axis], [y], output_type="INT64")
    with pytest.raises(tosaic.LegalizationError, match="option output_type is int64, the output tensor"):
        tosaic.import_tflite(b.build())
    (out,) = run_reference(b.build(), int8_inputs((1, 10)))
    assert out.dtype == np.int64   # LiteRT retypes the output to the option


def test_pad_reads_constant_values_when_given():
    b = ModelBuilder()
    x = b.tensor([1, 2, 2, 3], np.int8, scale=0.05, zero_point=0, name="x")
    paddings = b.tensor([4, 2], np.int32, data=np.array([[0, 0], [1, 1], [1, 0], [0, 0]]), name="paddings")
    value = b.tensor([], np.int8, scale=0.05, zero_point=0, data=np.array(77, np.int8), name="value")
    y = b.tensor([1, 4, 3, 3], np.int8, scale=0.05, zero_point=0, name="y")
    b.op("PAD", [x, paddings, value], [y])
    (out,) = assert_both_agree(b.build(), int8_inputs((1, 2, 2, 3)))
    assert out[0, 0, 0, 0] == 77


def test_an_operand_nothing_writes():
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="x")
    ghost = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="ghost")
    y = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="y")
    b.op("ADD", [x, ghost], [y])
    b.inputs([x]).outputs([y])
    assert_both_refuse(b.build(), "reads tensor 1 'ghost'.*which no graph input, constant or earlier operator")


def test_an_operator_writing_its_own_input():
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="x")
    y = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="y")
    b.op("ADD", [x, y], [y])
    b.inputs([x, y]).outputs([y])
    assert_both_refuse(b.build(), "writes tensor 1 'y'.*which is its own input")


def test_scales_without_zero_points():
    model = add_model()
    s = site(model, "model.subgraphs[0].tensors[0].quantization.zero_point")
    # Point the zero-point field's vtable entry nowhere: find the vtable slot holding this field's offset.
    raw = bytearray(model)
    from tflite import Model
    q = Model.GetRootAs(model, 0).Subgraphs(0).Tensors(0).Quantization()
    vtable = q._tab.Pos - int.from_bytes(model[q._tab.Pos:q._tab.Pos + 4], "little", signed=True)
    assert q._tab.Pos + q._tab.Offset(10) + int.from_bytes(model[q._tab.Pos + q._tab.Offset(10):][:4], "little") \
        == s.pos
    raw[vtable + 10:vtable + 12] = b"\0\0"
    assert_both_refuse(bytes(raw), "has quantization scales but no zero points")


def test_a_zero_point_outside_the_type_is_refused():
    """LiteRT keeps an int64 zero point as int32 and only some kernels check it; tosaic refuses it always."""
    model = patched(add_model(), "model.subgraphs[0].tensors[0].quantization.zero_point", 300, element=0)
    with pytest.raises(TFLiteFormatError, match=r"zero point 300 lies outside int8 \[-128, 127\]"):
        tosaic.import_tflite(model)


def test_split_outputs_take_the_input_type():
    """LiteRT's SPLIT retypes its outputs to the input's type: a uint8 output of an int8 input comes out
    int8 there (both travel as i8 in TOSA, so only the rule tells them apart)."""
    b = ModelBuilder()
    axis = b.tensor([], np.int32, data=np.array(3, np.int32), name="axis")
    x = b.tensor([1, 2, 2, 4], np.int8, scale=0.1, zero_point=0, name="x")
    y0 = b.tensor([1, 2, 2, 2], np.int8, scale=0.1, zero_point=0, name="y0")
    y1 = b.tensor([1, 2, 2, 2], np.uint8, scale=0.1, zero_point=0, name="y1")
    b.op("SPLIT", [axis, x], [y0, y1], num_splits=2)
    model = b.build()
    outputs = run_reference(model, int8_inputs((1, 2, 2, 4)))
    assert [o.dtype for o in outputs] == [np.int8, np.int8]
    with pytest.raises(TFLiteFormatError, match="SPLIT: .* must share one type"):
        tosaic.import_tflite(model)


def test_a_graph_input_holding_constant_data():
    """LiteRT computes with such an input's data whatever the caller sets; tosaic refuses the model."""
    b = ModelBuilder()
    x = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, data=np.arange(4, dtype=np.int8).reshape(1, 4),
                 name="x")
    y = b.tensor([1, 4], np.int8, scale=0.1, zero_point=0, name="y")
    b.op("RELU", [x], [y])
    b.inputs([x]).outputs([y])
    model = b.build()
    with pytest.raises(TFLiteFormatError, match="input 'x' .* holds constant data"):
        tosaic.import_tflite(model)
