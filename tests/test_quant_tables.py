"""tosaic.quant's ports of LiteRT's int8 reference kernels (TABLE contents, SOFTMAX) against LiteRT
itself (``OpResolverType.BUILTIN_REF``): every one of the 256 int8 inputs must match exactly, on
the single-op models in tests/data and on generated models with other scales and zero points."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tosaic.quant as Q

DATA = Path(__file__).parent / "data"
ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


def reference_interpreter(model) -> Interpreter:
    kwargs = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": model}
    interp = Interpreter(**kwargs, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         num_threads=1)
    interp.allocate_tensors()
    return interp


def run_all_int8(interp: Interpreter, inputs: np.ndarray = ALL_INT8) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``inputs`` tiled over the input tensor (several runs if it has fewer elements);
    return ``(inputs fed, outputs)`` flattened and aligned."""
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    shape = tuple(d_in["shape"])
    size = int(np.prod(shape))
    runs = max(1, math.ceil(inputs.size / size))
    fed, got = [], []
    for r in range(runs):
        x = np.resize(np.roll(inputs, -r * size), shape).astype(np.int8)
        interp.set_tensor(d_in["index"], x)
        interp.invoke()
        fed.append(x.ravel())
        got.append(interp.get_tensor(d_out["index"]).ravel().copy())
    return np.concatenate(fed), np.concatenate(got)


def quant_params(interp: Interpreter) -> tuple[tuple[float, int], tuple[float, int]]:
    (s_in, z_in) = interp.get_input_details()[0]["quantization"]
    (s_out, z_out) = interp.get_output_details()[0]["quantization"]
    return (np.float32(s_in), int(z_in)), (np.float32(s_out), int(z_out))


def builtin_options(model_path: Path, table_cls):
    buf = model_path.read_bytes()
    op = tflite.Model.GetRootAs(buf, 0).Subgraphs(0).Operators(0)
    table = op.BuiltinOptions()
    opts = table_cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


# --------------------------------------------------------------------------- the tests/data models


def _leaky_relu(path):
    alpha = builtin_options(path, tflite.LeakyReluOptions).Alpha()
    return partial(Q.leaky_relu_int8, alpha=alpha)


def _gelu(path):
    approximate = bool(builtin_options(path, tflite.GeluOptions).Approximate())
    return partial(Q.gelu_int8, approximate=approximate)


DATA_MODELS = {
    "op_logistic": lambda path: Q.logistic_int8,
    "op_tanh": lambda path: Q.tanh_int8,
    "op_hard_swish": lambda path: Q.hard_swish_int8,
    "op_leaky_relu_0.2": _leaky_relu,
    "op_relu6": lambda path: Q.relu6_int8,
    "op_gelu_tanh": _gelu,
    "op_rsqrt": lambda path: Q.rsqrt_int8,
}


@pytest.mark.parametrize("name", sorted(DATA_MODELS))
def test_port_matches_litert_on_all_256_inputs(name):
    path = DATA / f"{name}.tflite"
    interp = reference_interpreter(path)
    (s_in, z_in), (s_out, z_out) = quant_params(interp)
    kernel = DATA_MODELS[name](path)
    port = partial(kernel, in_scale=s_in, in_zp=z_in, out_scale=s_out, out_zp=z_out)
    fed, got = run_all_int8(interp)
    assert set(fed.tolist()) == set(range(-128, 128))
    np.testing.assert_array_equal(port(fed), got)
    table = Q.int8_table(port)
    assert table.dtype == np.int8 and table.shape == (256,)
    np.testing.assert_array_equal(table[fed.astype(np.int64) + 128], got)
    assert type(port(int(fed[0]))) is int


def test_port_matches_recorded_reference_outputs():
    for name in DATA_MODELS:
        path = DATA / f"{name}.tflite"
        io = np.load(DATA / f"{name}.io.npz")
        (s_in, z_in), (s_out, z_out) = quant_params(reference_interpreter(path))
        port = DATA_MODELS[name](path)
        got = port(io["in_0"], in_scale=s_in, in_zp=z_in, out_scale=s_out, out_zp=z_out)
        np.testing.assert_array_equal(got, io["ref_0"], err_msg=name)


def test_int8_table_layout():
    table = Q.int8_table(lambda x: np.clip(x + 1, -128, 127))
    assert table[0] == -127 and table[128] == 1 and table[255] == 127
    with pytest.raises(ValueError):
        Q.int8_table(lambda x: x * 2)
    with pytest.raises(ValueError):
        Q.int8_table(lambda x: x[:10])


# --------------------------------------------------- generated models: other scales and zero points


def single_op_model(opname: str, in_q, out_q, **options) -> bytes:
    from tflite_builder import ModelBuilder  # tests/ helper, on sys.path via conftest

    b = ModelBuilder()
    x = b.tensor([256], np.int8, scale=in_q[0], zero_point=in_q[1])
    y = b.tensor([256], np.int8, scale=out_q[0], zero_point=out_q[1])
    b.op(opname, [x], [y], **options)
    return b.build()


def random_quant(rng) -> tuple[float, int]:
    return float(np.exp(rng.uniform(math.log(2e-3), math.log(1.0)))), int(rng.integers(-128, 128))


SWEEP = {
    "LOGISTIC": (Q.logistic_int8, {}),
    "TANH": (Q.tanh_int8, {}),
    "HARD_SWISH": (Q.hard_swish_int8, {}),
    "RELU": (Q.relu_int8, {}),
    "RELU6": (Q.relu6_int8, {}),
    "RELU_N1_TO_1": (Q.relu_n1_to_1_int8, {}),
    "RELU_0_TO_1": (Q.relu_0_to_1_int8, {}),
    "GELU": (partial(Q.gelu_int8, approximate=True), {"approximate": True}),
    "GELU_ERF": (partial(Q.gelu_int8, approximate=False), {"approximate": False}),
    "RSQRT": (Q.rsqrt_int8, {}),
}


@pytest.mark.parametrize("op", sorted(SWEEP))
def test_port_matches_litert_over_scales(op):
    kernel, options = SWEEP[op]
    opname = op.split("_ERF")[0]
    rng = np.random.default_rng(zlib.crc32(op.encode()))
    failures_agree = 0
    for _ in range(25):
        in_q, out_q = random_quant(rng), random_quant(rng)
        if op == "LOGISTIC":
            out_q = (1.0 / 256, out_q[1])
        inputs = ALL_INT8
        if op == "RSQRT":  # LiteRT refuses inputs below the zero point
            inputs = ALL_INT8[ALL_INT8 >= in_q[1]]
        port = partial(kernel, in_scale=in_q[0], in_zp=in_q[1], out_scale=out_q[0], out_zp=out_q[1])
        try:
            interp = reference_interpreter(single_op_model(opname, in_q, out_q, **options))
        except (RuntimeError, ValueError):
            # LiteRT rejected the parameters at prepare time (HARD_SWISH with an output
            # multiplier above 1): the port must refuse them too.
            with pytest.raises(ValueError):
                port(inputs)
            failures_agree += 1
            continue
        fed, got = run_all_int8(interp, inputs)
        np.testing.assert_array_equal(port(fed), got, err_msg=f"{op} in={in_q} out={out_q}")
    assert failures_agree < 25


@pytest.mark.parametrize("alpha", [0.2, 0.01, 0.5, 1.0, 1.7, -0.3, 0.0])
def test_leaky_relu_matches_litert_over_scales(alpha):
    rng = np.random.default_rng(int(alpha * 1000) % 2**32)
    for _ in range(10):
        in_q, out_q = random_quant(rng), random_quant(rng)
        interp = reference_interpreter(single_op_model("LEAKY_RELU", in_q, out_q, alpha=alpha))
        fed, got = run_all_int8(interp)
        port = Q.leaky_relu_int8(fed, np.float32(alpha), in_q[0], in_q[1], out_q[0], out_q[1])
        np.testing.assert_array_equal(port, got, err_msg=f"alpha={alpha} in={in_q} out={out_q}")


def test_logistic_requires_output_scale_one_over_256():
    with pytest.raises(ValueError, match="1/256"):
        Q.logistic_int8(ALL_INT8, 0.05, 0, 0.01, -128)


# ----------------------------------------------------------------------------------------- SOFTMAX


def softmax_params_of(path_or_bytes, interp: Interpreter) -> Q.SoftmaxInt8Params:
    buf = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    table = tflite.Model.GetRootAs(buf, 0).Subgraphs(0).Operators(0).BuiltinOptions()
    opts = tflite.SoftmaxOptions()
    opts.Init(table.Bytes, table.Pos)
    (s_in, _), (s_out, z_out) = quant_params(interp)
    assert (float(s_out), z_out) == (1.0 / 256, -128)
    return Q.softmax_int8_params(opts.Beta(), s_in)


@pytest.mark.parametrize("name", ["op_softmax_1x10", "op_softmax_4x32x32"])
def test_softmax_matches_litert(name):
    path = DATA / f"{name}.tflite"
    interp = reference_interpreter(path)
    params = softmax_params_of(path, interp)
    io = np.load(DATA / f"{name}.io.npz")
    np.testing.assert_array_equal(Q.softmax_int8(io["in_0"], params), io["ref_0"])
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    rng = np.random.default_rng(3)
    for trial in range(20):
        # Full-range rows, and narrow rows where many exps are significant.
        x = rng.integers(-128, 128, size=d_in["shape"]) >> (trial % 5)
        x = x.astype(np.int8)
        interp.set_tensor(d_in["index"], x)
        interp.invoke()
        np.testing.assert_array_equal(Q.softmax_int8(x, params), interp.get_tensor(d_out["index"]))


def test_softmax_matches_litert_over_scales_and_beta():
    from tflite_builder import ModelBuilder

    rng = np.random.default_rng(11)
    for trial in range(25):
        depth = int(rng.choice([1, 2, 10, 100, 300, 1000]))
        s_in, z_in = random_quant(rng)
        s_in *= float(rng.choice([1.0, 10.0]))
        beta = float(rng.choice([1.0, 0.5, 2.0, 0.01]))
        b = ModelBuilder()
        x = b.tensor([3, depth], np.int8, scale=s_in, zero_point=z_in)
        y = b.tensor([3, depth], np.int8, scale=1.0 / 256, zero_point=-128)
        b.op("SOFTMAX", [x], [y], beta=beta)
        model = b.build()
        interp = reference_interpreter(model)
        params = softmax_params_of(model, interp)
        data = (rng.integers(-128, 128, size=(3, depth)) >> (trial % 4)).astype(np.int8)
        try:
            port = Q.softmax_int8(data, params)
        except ValueError:
            # The sum of exps reaches 2^8: LiteRT's TFLITE_CHECK(exponent <= 31) would abort the
            # process, so it cannot be run here; the port refuses instead.
            continue
        d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
        interp.set_tensor(d_in["index"], data)
        interp.invoke()
        np.testing.assert_array_equal(port, interp.get_tensor(d_out["index"]),
                                      err_msg=f"depth={depth} scale={s_in} beta={beta}")


def test_softmax_axis():
    params = Q.softmax_int8_params(1.0, 0.05)
    x = np.random.default_rng(0).integers(-128, 128, size=(4, 6)).astype(np.int8)
    np.testing.assert_array_equal(Q.softmax_int8(x, params, axis=0), Q.softmax_int8(x.T, params).T)


def _softmax_model(depth: int) -> bytes:
    from tflite_builder import ModelBuilder

    b = ModelBuilder()
    x = b.tensor([1, depth], np.int8, scale=0.1, zero_point=0)
    y = b.tensor([1, depth], np.int8, scale=1.0 / 256, zero_point=-128)
    b.op("SOFTMAX", [x], [y], beta=1.0)
    return b.build()


def test_softmax_refuses_where_litert_aborts(tmp_path):
    # Equal inputs: each exp is 1.0, the Q12.19 sum is depth * 2^19. With 2^9 terms the output
    # exponent reaches 32 and the reference kernel's TFLITE_CHECK aborts the process.
    params = Q.softmax_int8_params(1.0, 0.1)
    ok = _softmax_model(511)
    interp = reference_interpreter(ok)
    x = np.zeros((1, 511), np.int8)
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(d_in["index"], x)
    interp.invoke()
    np.testing.assert_array_equal(Q.softmax_int8(x, params), interp.get_tensor(d_out["index"]))

    with pytest.raises(ValueError, match="TFLITE_CHECK"):
        Q.softmax_int8(np.zeros((1, 512), np.int8), params)
    model = tmp_path / "softmax_512.tflite"
    model.write_bytes(_softmax_model(512))
    script = (
        "import numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter, OpResolverType\n"
        f"i = Interpreter(model_path={str(model)!r}, "
        "experimental_op_resolver_type=OpResolverType.BUILTIN_REF)\n"
        "i.allocate_tensors()\n"
        "i.set_tensor(i.get_input_details()[0]['index'], np.zeros((1, 512), np.int8))\n"
        "i.invoke()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGABRT, proc.stderr[-500:]
