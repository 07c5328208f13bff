"""Make the streaming test models tests/data/stream_*.tflite with TensorFlow (not a tosaic dependency).

A small keyword-spotting-style streaming network in a tf.Module: each call takes one frame, keeps the last
frames in a resource variable (tf.Variable: concatenate, slice, assign), convolves the window, and keeps a
leaky running average of the class logits in a second variable, whose softmax it returns (returning the
assigned average itself makes TF 2.21's variable quantization fail: "type of return operand 0 ... doesn't
match function result type"). Converted with resource variables enabled and full-integer quantization
(int8 input and output), in two variants:

- `stream_kws_float_state`: the converter's default, float32 variables (READ_VARIABLE -> QUANTIZE and
  DEQUANTIZE -> ASSIGN_VARIABLE around the int8 graph);
- `stream_kws_int8_state`: `_experimental_variable_quantization`, int8 variables.

Each model's initial values sit in an initialization subgraph that CALL_ONCE runs. `NAME.io.npz` holds
`in_0`/`ref_0` (the first invocation, as tests/test_models.py reads them) and `stream_in_0` [T, ...] with
`stream_ref_0` [T, ...]: T consecutive invocations of one LiteRT BUILTIN_REF interpreter (num_threads=1).

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu ai-edge-litert==2.3.0
    /tmp/tfvenv/bin/python scripts/make_streaming_models.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

OUT = Path(__file__).resolve().parents[1] / "tests" / "data"
FRAMES, FEATURES, CHANNELS, FILTERS, CLASSES, STEPS = 4, 10, 1, 8, 5, 40


class StreamingKWS(tf.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.frames = tf.Variable(tf.zeros([1, FRAMES - 1, FEATURES, CHANNELS]), trainable=False, name="frames")
        self.average = tf.Variable(tf.fill([1, CLASSES], 0.25), trainable=False, name="average")
        self.kernel = tf.constant(rng.normal(0, 0.3, (FRAMES, 3, CHANNELS, FILTERS)).astype(np.float32))
        self.bias = tf.constant(rng.normal(0, 0.1, FILTERS).astype(np.float32))
        self.dense = tf.constant(rng.normal(0, 0.3, ((FEATURES - 2) * FILTERS, CLASSES)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 1, FEATURES, CHANNELS], tf.float32)])
    def __call__(self, frame):
        window = tf.concat([self.frames, frame], axis=1)
        self.frames.assign(window[:, 1:])
        features = tf.nn.relu(tf.nn.conv2d(window, self.kernel, 1, "VALID") + self.bias)
        logits = tf.matmul(tf.reshape(features, [1, -1]), self.dense)
        average = 0.75 * self.average + 0.25 * logits
        self.average.assign(average)
        return tf.nn.softmax(average)


def convert(module: StreamingKWS, quantize_variables: bool) -> bytes:
    rng = np.random.default_rng(1)

    def representative():
        for _ in range(200):
            yield [rng.uniform(-1, 1, (1, 1, FEATURES, CHANNELS)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.experimental_enable_resource_variables = True
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if quantize_variables:
        converter._experimental_variable_quantization = True
    return converter.convert()


def record(name: str, model: bytes) -> None:
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              num_threads=1)
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()
    rng = np.random.default_rng(2)
    inputs = rng.integers(-128, 128, size=(STEPS,) + tuple(detail["shape"])).astype(np.int8)
    outputs = []
    for x in inputs:
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    (OUT / f"{name}.tflite").write_bytes(model)
    np.savez(OUT / f"{name}.io.npz", in_0=inputs[0], ref_0=outputs[0], stream_in_0=inputs,
             stream_ref_0=np.stack(outputs))
    print(f"{name}: {len(model)} bytes, {STEPS} steps recorded")


if __name__ == "__main__":
    tf.random.set_seed(0)
    record("stream_kws_float_state", convert(StreamingKWS(), quantize_variables=False))
    record("stream_kws_int8_state", convert(StreamingKWS(), quantize_variables=True))
