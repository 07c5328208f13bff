"""Make the benchmark models benchmarks/models/arch_*.tflite from Keras applications with TensorFlow (not a
tosaic dependency): EfficientNet-B0 and MobileNetV3-Small at 224x224, random weights (Keras' initializers,
fixed seed), full-integer int8 quantization by the TFLite converter with a random representative dataset.

They are what the speed issue measures: EfficientNet-B0's SiLU (LOGISTIC and MUL on one conv output) and
squeeze-excite gates, MobileNetV3's hard-swish and hard-sigmoid gates. Random weights change no operator
or shape, only values; the classifier ends without its softmax (see `convert`). `NAME.io.npz` holds
`in_0` and LiteRT BUILTIN_REF's `ref_0`, as tests/data does.

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu ai-edge-litert==2.3.0
    /tmp/tfvenv/bin/python scripts/make_keras_models.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "models"
MODELS = {"arch_efficientnet_b0_224": "EfficientNetB0", "arch_mobilenet_v3_small_224": "MobileNetV3Small"}


def convert(name: str) -> bytes:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    # No final softmax: with random weights the logits' scale is so small that the int8 SOFTMAX's
    # multiplier falls below one, which LiteRT aborts on (and tosaic refuses).
    model = getattr(tf.keras.applications, MODELS[name])(weights=None, input_shape=(224, 224, 3),
                                                         classifier_activation=None)
    rng = np.random.default_rng(1)

    def representative():
        for _ in range(20):
            yield [rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def reference(flatbuffer: bytes, seed: int = 0) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=flatbuffer, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              num_threads=1)
    interpreter.allocate_tensors()
    (spec,) = interpreter.get_input_details()
    x = np.random.default_rng(seed).integers(-128, 128, spec["shape"], dtype=np.int8)
    interpreter.set_tensor(spec["index"], x)
    interpreter.invoke()
    (out,) = interpreter.get_output_details()
    return {"in_0": x, "ref_0": interpreter.get_tensor(out["index"])}


def main() -> None:
    if sys.argv[1:] == ["--references"]:
        for name in MODELS:
            np.savez(OUT / f"{name}.io.npz", **reference((OUT / f"{name}.tflite").read_bytes()))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        flatbuffer = convert(name)
        (OUT / f"{name}.tflite").write_bytes(flatbuffer)
        print(f"{name}: {len(flatbuffer) / 1e6:.2f} MB")
    # LiteRT in the process that imported TensorFlow aborts; the references come from a fresh one.
    subprocess.run([sys.executable, __file__, "--references"], check=True)


if __name__ == "__main__":
    main()
