"""Bad input gets one clear message and a non-zero exit; the CLI's commands and exit codes."""

import json
from pathlib import Path

import numpy as np
import pytest

import tosaic
from tosaic.cli import main
from tflite_builder import ModelBuilder

DATA = Path(__file__).parent / "data"
CONV = DATA / "op_conv2d_s1_same_relu.tflite"


def unsupported_model() -> bytes:
    b = ModelBuilder()
    x = b.tensor([1, 4], np.float32, name="x")
    y = b.tensor([1, 4], np.float32, name="y")
    z = b.tensor([1, 4], np.float32, name="z")
    w = b.tensor([1, 4], np.float32, name="w")
    b.op("FLOOR", [x], [y])
    b.op("SIN", [y], [z])
    b.op("SIN", [z], [w])
    return b.build()


def test_not_a_flatbuffer(tmp_path):
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"this is not a model at all")
    with pytest.raises(tosaic.TFLiteFormatError, match="not a TFLite flatbuffer"):
        tosaic.import_tflite(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_model(tmp_path, keep):
    raw = CONV.read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(tosaic.TFLiteFormatError):
        tosaic.import_tflite(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such model file"):
        tosaic.import_tflite("does/not/exist.tflite")


def test_unsupported_ops_listed_together():
    with pytest.raises(tosaic.UnsupportedModelError) as info:
        tosaic.import_tflite(unsupported_model())
    message = str(info.value)
    assert "FLOOR (version 1) x1: inputs [float32]" in message
    assert "SIN (version 1) x2: inputs [float32]" in message


def test_wrong_input_shape_and_dtype():
    model = tosaic.compile(CONV)
    shape = model.inputs[0].shape
    with pytest.raises(ValueError, match="must have shape"):
        model.run([np.zeros((1,) + tuple(d + 1 for d in shape[1:]), np.int8)])
    with pytest.raises(ValueError, match="must be int8"):
        model.run([np.zeros(shape, np.float32)])
    with pytest.raises(ValueError, match="takes 1 inputs"):
        model.run([np.zeros(shape, np.int8)] * 2)
    with pytest.raises(ValueError, match="unknown input names"):
        model.run({"nope": np.zeros(shape, np.int8)})


def test_run_by_name_equals_run_by_position():
    model = tosaic.compile(CONV)
    io = np.load(DATA / "op_conv2d_s1_same_relu.io.npz")
    by_position = model.run([io["in_0"]])
    by_name = model.run({model.inputs[0].name: io["in_0"]})
    assert np.array_equal(by_position[0], by_name[0])
    assert np.array_equal(by_position[0], io["ref_0"])


def test_cli_errors_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    assert main(["validate", str(junk)]) == 2
    assert "not a TFLite flatbuffer" in capsys.readouterr().err
    unsupported = tmp_path / "unsupported.tflite"
    unsupported.write_bytes(unsupported_model())
    assert main(["run", str(unsupported)]) == 2
    assert "SIN (version 1) x2" in capsys.readouterr().err
    assert main(["run", "missing.tflite"]) == 2


def test_cli_run_and_validate(tmp_path, capsys):
    out = tmp_path / "out.npz"
    assert main(["run", str(CONV), "--inputs", str(DATA / "op_conv2d_s1_same_relu.io.npz"), "-o", str(out)]) == 0
    io = np.load(DATA / "op_conv2d_s1_same_relu.io.npz")
    assert np.array_equal(np.load(out)["out_0"], io["ref_0"])
    capsys.readouterr()
    assert main(["validate", str(CONV), "--json", "--per-layer"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact"] and report["first_divergence"] is None
    assert report["outputs"][0]["differing"] == 0


def test_cli_validate_reports_mismatch(monkeypatch, capsys):
    """Break RESCALE on purpose: validate must exit 1 and --per-layer must name the conv's output tensor."""
    from tosaic.tosa import interpreter

    exact_rescale = interpreter.IMPLEMENTATIONS["tosa.rescale"]

    def off_by_one(op, args):
        result = exact_rescale(op, args)
        return np.where(result < 100, result + 1, result).astype(result.dtype)

    monkeypatch.setitem(interpreter.IMPLEMENTATIONS, "tosa.rescale", off_by_one)
    assert main(["validate", str(CONV), "--json", "--per-layer"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["exact"] and report["outputs"][0]["differing"] > 0
    divergence = report["first_divergence"]
    graph = tosaic.import_tflite(CONV)
    assert divergence["tensor"] == graph.output_names[0]
    assert divergence["op"].startswith("tfl.conv_2d#0")


def test_cli_ops_lists_model_ops(capsys):
    assert main(["ops", str(DATA / "arch_mobilenet_v2_1.0_224.tflite")]) == 0
    out = capsys.readouterr().out
    assert "CONV_2D" in out and "35  int8" in out and "0 unsupported" in out


def test_cli_ops_flags_unsupported(tmp_path, capsys):
    path = tmp_path / "unsupported.tflite"
    path.write_bytes(unsupported_model())
    assert main(["ops", str(path)]) == 1
    out = capsys.readouterr().out
    assert "SIN" in out and "NO" in out and "3 ops, 3 unsupported" in out


def test_support_table_document_is_current(capsys):
    """docs/SUPPORTED_OPS.md is what `tosaic ops --all --markdown` prints (regenerate it when ops change)."""
    assert main(["ops", "--all", "--markdown"]) == 0
    document = Path(__file__).parent.parent / "docs" / "SUPPORTED_OPS.md"
    assert capsys.readouterr().out == document.read_text()


def test_cli_bench_reports_latency_profile_memory_and_isa(capsys):
    from tosaic.bench import kernel_isa
    from tosaic.kernels.target import host

    assert main(["bench", str(CONV), "--runs", "3", "--warmup", "1", "--compare-litert", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["isa"] == kernel_isa(host().as_dict()) and report["arch"] == host().arch
    assert report["tosaic_ms"] > 0 and report["litert_xnnpack_ms"] > 0
    assert report["ratio"] == pytest.approx(report["tosaic_ms"] / report["litert_xnnpack_ms"])
    assert report["arena_bytes"] > 0 and report["weight_bytes"] > 0 and report["dispatches"] >= 1
    assert report["profile"] and "tosa.conv2d" in report["profile"][0]["ops"]
    assert main(["bench", str(CONV), "--runs", "2", "--warmup", "0"]) == 0
    text = capsys.readouterr().out
    assert "kernels use" in text and "dispatch_0" in text


def test_cli_bench_refuses_what_it_cannot_time(capsys):
    assert main(["bench", str(CONV), "--target", "interp"]) == 2
    assert "compiled target" in capsys.readouterr().err
    assert main(["bench", str(CONV), "--target", "cpu:aarch64:cortex-a76"]) == 2
    assert "lacks" in capsys.readouterr().err
    assert main(["bench", str(CONV), "--runs", "0"]) == 2
