"""The CUDA target (kernels/cuda.py, kernels/cuda_engine.py), proven three ways:

- kernels run: under Numba's CUDA simulator where no GPU driver is found (conftest.py sets
  NUMBA_ENABLE_CUDASIM=1 then), natively on a GPU otherwise; every op model of tests/data and the DS-CNN
  keyword spotter bit for bit against LiteRT BUILTIN_REF's outputs, the dp4a convolution template over
  hypothesis-drawn shapes and zero points against the TOSA interpreter and LiteRT, a streaming model
  stepped beside LiteRT;
- PTX: every dispatch of MobileNetV2, a 16x8 network and a transformer-style network compiles to PTX for
  sm_87 and sm_90 and `ptxas` assembles it; conv and fully connected kernels use `dp4a`.

Simulator shapes stay small: it runs a Python thread per CUDA thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from litert_ref import random_inputs, run_reference
from network_generator import build_network
from test_cpu_kernels import conv_layers, fc_models, requantized_conv, zp8
from test_models import DATA, io_arrays
from test_lowering_structured import exact_size, random_array
from test_stateful import assert_streams_match, ring_conv_model

import tosaic
from tosaic.ir import Graph, TensorType
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.interpreter import interpret

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install 'tosaic[cuda]')")

from tosaic.kernels import cuda_engine  # noqa: E402  (after the skip: it imports numba-cuda)
from tosaic.kernels.plan import build_plan  # noqa: E402
from tosaic.kernels.target import CudaTarget, TargetError, parse_target  # noqa: E402

RUNS = not cuda_engine.missing()
DP4A_TEMPLATES = ("cuda_conv_dp4a", "cuda_gemm_dp4a", "cuda_matmul_dp4a", "cuda_matmul_tiled_dp4a")
needs_kernels = pytest.mark.skipif(not RUNS, reason="no CUDA GPU and the simulator is off")
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas (CUDA toolkit) is not on PATH")

# op_tile has no reference outputs (test_models.py); the 56x56x64 conv would take minutes in the simulator.
OP_MODELS = sorted(p.stem for p in DATA.glob("*.tflite")
                   if not p.stem.startswith("arch_") and p.stem not in ("op_tile", "op_conv2d_big_56x56x64_k3"))


def test_targets_parse():
    assert parse_target("cuda:sm_87") == CudaTarget((8, 7))
    assert parse_target("cuda:sm_90").name == "cuda:sm_90"
    assert parse_target("cuda").arch == "cuda"
    for bad in ("cuda:sm_50", "cuda:sm_x", "cuda:87"):
        with pytest.raises(TargetError, match="cuda:sm_XY"):
            parse_target(bad)


@needs_kernels
# The DS-CNN keyword spotter takes a minute in the simulator: slow suite (every kernel kind it uses is in the
# op models).
@pytest.mark.parametrize("name", OP_MODELS + [pytest.param("arch_ds_cnn_kws_49x10", marks=pytest.mark.slow)])
def test_bit_exact_with_reference(name):
    inputs, refs = io_arrays(name)
    model = tosaic.compile(str(DATA / f"{name}.tflite"), target="cuda:sm_87")
    outs = model.run(inputs)
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        assert out.dtype == ref.dtype and out.shape == ref.shape
        assert np.array_equal(out, ref), f"{int((out != ref).sum())}/{out.size} elements differ"


@needs_kernels
@settings(max_examples=8, deadline=None)
@given(case=conv_layers(depthwise=False), channels=st.sampled_from([3, 4, 5, 8, 12]))
def test_dp4a_conv_against_interpreter(case, channels):
    """Tiled where the output has a tile of pixels (stride, dilation and padding in the patch gather;
    channels not in whole words packed from bytes), else one thread per output."""
    seed = case.pop("seed")
    case["int16"], case["w_zp"] = False, 0
    case["x_shape"] = case["x_shape"][:3] + (channels,)
    case["w_shape"] = case["w_shape"][:3] + (channels,)
    graph, inputs = requantized_conv(np.random.default_rng(seed), depthwise=False, **case)
    want = interpret(graph, [x.copy() for x in inputs])
    model = tosaic.compile(graph, target="cuda:sm_87")
    (template,) = [s.template for s in model.plan.steps if s.kind == "kernel"]
    pixels = int(np.prod(graph.outputs[0].type.shape[:3]))
    assert template == ("cuda_gemm_dp4a" if pixels >= 32 else "cuda_conv_dp4a" if channels % 4 == 0 else
                        "cuda_generic")
    (got,) = model.run(inputs)
    assert np.array_equal(got, np.asarray(want[0]))


def assert_cuda_equals_interpreter(graph, inputs, templates: list[str]) -> None:
    """The cuda target runs `graph` with the kernel `templates` and equals the TOSA interpreter."""
    want = interpret(graph, [x.copy() for x in inputs])
    model = tosaic.compile(graph, target="cuda:sm_87")
    assert [s.template for s in model.plan.steps if s.kind == "kernel"] == templates
    for got, ref in zip(model.run(inputs), want):
        assert np.array_equal(got, np.asarray(ref))


@needs_kernels
@pytest.mark.parametrize("channels, pad, zp", [(3, (1, 1, 1, 1), -128), (5, (0, 2, 1, 0), 17), (1, (1, 0, 0, 1), 90)])
def test_tiled_conv_of_channels_not_in_words(channels, pad, zp):
    """An RGB-like stem: patch words packed from bytes, padded taps as zero points."""
    attrs = {"pad": pad, "stride": (2, 2), "dilation": (1, 1)}
    h, w = exact_size(6, 3, 2, 1, pad[0] + pad[1]), exact_size(7, 3, 2, 1, pad[2] + pad[3])
    graph, inputs = requantized_conv(np.random.default_rng(channels), (1, h, w, channels), (6, 3, 3, channels),
                                     attrs, False, False, zp, 0, True, -3, True)
    assert_cuda_equals_interpreter(graph, inputs, ["cuda_gemm_dp4a"])


@needs_kernels
@settings(max_examples=6, deadline=None)
@given(rows=st.integers(32, 90), k=st.sampled_from([4, 8, 36, 68]), n=st.integers(1, 70), in_zp=zp8,
       out_zp=zp8, per_channel=st.booleans(), seed=st.integers(0, 2**31))
def test_tiled_dp4a_gemm_against_interpreter(rows, k, n, in_zp, out_zp, per_channel, seed):
    """1x1 convolutions over at least a tile of pixels: tile edges in rows, channels and K words."""
    attrs = {"pad": (0, 0, 0, 0), "stride": (1, 1), "dilation": (1, 1)}
    graph, inputs = requantized_conv(np.random.default_rng(seed), (1, 1, rows, k), (n, 1, 1, k), attrs, False,
                                     False, in_zp, 0, per_channel, out_zp, True)
    assert_cuda_equals_interpreter(graph, inputs, ["cuda_gemm_dp4a"])


@needs_kernels
@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 2), size=st.sampled_from([(1, 7), (5, 3), (32, 32), (40, 33)]), depth=st.integers(1, 21),
       a_zp=st.sampled_from([0, -128, 5]), b_zp=st.sampled_from([0, 127, -3]), seed=st.integers(0, 2**31))
@example(n=1, size=(40, 33), depth=12, a_zp=5, b_zp=-3, seed=1)
@example(n=2, size=(32, 32), depth=8, a_zp=0, b_zp=127, seed=2)
@example(n=1, size=(5, 3), depth=7, a_zp=-128, b_zp=127, seed=3)
def test_dp4a_matmul_against_interpreter(n, size, depth, a_zp, b_zp, seed):
    """A matmul of two int8 activations with zero points (each zero or not), raw and rescaled: one thread
    per output, or tiled where the output holds a tile and the depth whole words."""
    h, w = size
    rng = np.random.default_rng(seed)
    g = Graph("main")
    b = TosaBuilder(g)
    a = g.add_input(TensorType((n, h, depth), "i8"), "a")
    bb = g.add_input(TensorType((n, depth, w), "i8"), "b")
    acc = b.op("tosa.matmul", [a, bb, b.scalar(a_zp, "i8"), b.scalar(b_zp, "i8")])
    g.set_outputs([b.rescale(acc, int(rng.integers(1 << 30, 1 << 31)), 38, 0, 0, "i8"), acc], ["q", "acc"])
    inputs = [random_array(rng, a.type), random_array(rng, bb.type)]
    want = interpret(g, [x.copy() for x in inputs])
    model = tosaic.compile(g, target="cuda:sm_87")
    want_template = "cuda_matmul_tiled_dp4a" if h * w >= 1024 and depth % 4 == 0 else "cuda_matmul_dp4a"
    assert want_template in [s.template for s in model.plan.steps if s.kind == "kernel"]
    for got, ref in zip(model.run(inputs), want):
        assert np.array_equal(got, np.asarray(ref))


@needs_kernels
@settings(max_examples=6, deadline=None)
@given(model=fc_models(), seed=st.integers(0, 2**31))
def test_fully_connected_against_litert(model, seed):
    inputs = random_inputs(model, seed=seed)
    ours = tosaic.compile(tosaic.import_tflite(model), target="cuda:sm_87").run(inputs)
    for o, r in zip(ours, run_reference(model, inputs)):
        assert o.dtype == r.dtype and np.array_equal(o, r)


@needs_kernels
def test_streaming_model_steps_beside_litert():
    model_bytes = ring_conv_model(frames=3, width=4, channels=4, out_channels=4, kernel_w=3, in_q=(0.05, 3),
                                  w_scales=[0.01] * 4, out_q=(0.08, -5), seed=1)
    compiled = tosaic.compile(tosaic.import_tflite(model_bytes), target="cuda:sm_87")
    assert_streams_match(model_bytes, steps=6, compiled=compiled)
    (value,) = compiled.state.values()   # kept on the device between steps, brought to the host when asked
    assert isinstance(value, np.ndarray) and value.shape == (1, 2, 4, 4)


def _ptx_networks(directory):
    """MobileNetV2, a 16x8 network and a transformer-style network as .tflite files in `directory`."""
    yield "mobilenet_v2", DATA / "arch_mobilenet_v2_1.0_224.tflite"
    for name, network in (("int16", build_network(2, "mobilenet_v2", int16=True)),
                          ("transformer", build_network(1, "transformer"))):
        path = directory / f"{name}.tflite"
        path.write_bytes(network.model)
        yield name, path


@needs_ptxas
# sm_90 in the slow suite: the same kernels, half a minute of ptxas.
@pytest.mark.parametrize("sm", ["sm_87", pytest.param("sm_90", marks=pytest.mark.slow)])
def test_ptx_of_every_dispatch_assembles(sm, tmp_path):
    """Through the CLI in a process of its own: PTX comes from numba-cuda's compiler, not its simulator."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    for name, path in _ptx_networks(tmp_path):
        out = tmp_path / f"ptx_{name}"
        done = subprocess.run([sys.executable, "-m", "tosaic.cli", "compile", str(path), "--target", f"cuda:{sm}",
                               "--emit-ptx", str(out)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        plan = build_plan(tosaic.load_graph(str(path)), parse_target(f"cuda:{sm}"))
        assert manifest["assembled"] and len(manifest["kernels"]) == plan.dispatch_count
        assert all(k["registers"] > 0 for k in manifest["kernels"]), name
        dp4a = [k for k in manifest["kernels"] if k["template"] in DP4A_TEMPLATES]
        if name != "int16":
            assert dp4a, f"{name}: no dispatch took a dp4a template"
            for k in manifest["kernels"]:   # every int8 conv and matmul
                if any(op.startswith(("tosa.conv2d", "tosa.matmul")) for op in k["ops"]):
                    assert k["template"] in DP4A_TEMPLATES, k
        for k in dp4a:
            assert "dp4a.s32.s32" in (out / k["ptx"]).read_text()
            assert (k["shared_memory_bytes"] > 0) == ("gemm" in k["template"] or "tiled" in k["template"]), k


@needs_kernels
def test_save_load_profile_and_no_bundle(tmp_path):
    name = "op_conv2d_s2_same_relu6"
    inputs, refs = io_arrays(name)
    model = tosaic.compile(str(DATA / f"{name}.tflite"), target="cuda:sm_90")
    model.save(tmp_path / "saved")
    loaded = tosaic.load(tmp_path / "saved")
    assert loaded.plan.target["cc"] == [9, 0]
    assert np.array_equal(loaded.run(inputs)[0], refs[0])
    assert [row["template"] for row in loaded.profile(inputs, repeat=1)] == ["cuda_gemm_dp4a"]
    with pytest.raises(ValueError, match="deploy bundles are for CPU targets"):
        model.export(tmp_path / "bundle")
