"""Fusion (`fuse_elementwise`, `form_dispatches`) and bufferization (`plan_arena`) as pass tests: an input
program, the structure the passes must make of it, and the execution that must not change (the structured
interpreter and the cpu target against the TOSA interpreter, bit for bit).

The arena is checked by an independent checker working only from a plan's steps: which arena bytes each
step reads and writes, hence each value's live range, and no two values alive at once sharing a byte.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tflite_builder import ModelBuilder

import model_zoo
from exactness import assert_same
import tosaic
from litert_ref import run_reference
from tosaic.ir import Graph, TensorType
from tosaic.kernels.plan import build_plan, structured_stages
from tosaic.kernels.target import host
from tosaic.lowering.bufferize import plan_arena
from tosaic.lowering.fusion import Dispatch
from tosaic.lowering.interpreter import interpret_structured
from tosaic.lowering.structured import is_elementwise
from tosaic.tosa.builder import TosaBuilder
from tosaic.tosa.interpreter import initial_state, interpret


def random_inputs_for(graph: Graph, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for v in graph.inputs:
        dtype = v.type.numpy_dtype
        if dtype.kind == "f":
            arrays.append(rng.uniform(-4, 4, v.type.shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max, v.type.shape, endpoint=True).astype(dtype))
    return arrays


def check_execution(graph: Graph, seed: int = 0, cpu: bool = True) -> None:
    """The fused structured program and (when `cpu`) the cpu target equal the TOSA interpreter."""
    inputs = random_inputs_for(graph, seed)
    want = interpret(graph, [x.copy() for x in inputs], state=initial_state(graph))
    fused, _, _ = structured_stages(graph)
    assert_same(interpret_structured(fused, [x.copy() for x in inputs]), want, "fused structured")
    if cpu:
        assert_same(tosaic.compile(graph, target="cpu").run(inputs), want, "cpu")


def compute_dispatches(graph: Graph) -> list[Dispatch]:
    _, dispatches, _ = structured_stages(graph)
    return dispatches


def origin_ops(d: Dispatch) -> list[str]:
    """The TOSA op names a dispatch holds, from its origins ('tosa.rescale (loc)')."""
    return [o.split(" ")[0] for o in d.origins]


# ------------------------------------------------------------------------------- TOSA graph makers


def conv_rescale_clamp(per_channel: bool, low: int, high: int, in_zp: int, out_zp: int, seed: int = 0,
                       kernel=(3, 3), stride=(1, 1), pad=(1, 1, 1, 1), batch: int = 2) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("main")
    b = TosaBuilder(g)
    x = g.add_input(TensorType((batch, 7, 7, 3), "i8"), "x")
    oc = 4
    w = b.const(rng.integers(-127, 128, (oc, *kernel, 3)), "i8")
    bias = b.const(rng.integers(-3000, 3000, oc), "i32")
    acc = b.op("tosa.conv2d", [x, w, bias, b.scalar(in_zp, "i8"), b.scalar(0, "i8")],
               {"pad": pad, "stride": stride, "dilation": (1, 1), "acc_type": "i32"})
    multiplier = rng.integers(1 << 29, 1 << 31, oc) if per_channel else int(rng.integers(1 << 29, 1 << 31))
    shift = rng.integers(36, 41, oc) if per_channel else 38
    q = b.rescale(acc, multiplier, shift, 0, out_zp, "i8")
    g.set_outputs([b.clamp(q, low, high)], ["out"])
    return g


# ---------------------------------------------------------------------------------------- fusion


@settings(max_examples=6, deadline=None)
@given(per_channel=st.booleans(), low=st.integers(-128, 0), high=st.integers(1, 127), in_zp=st.integers(-128, 127),
       out_zp=st.integers(-20, 20), seed=st.integers(0, 2**31))
def test_conv_rescale_clamp_is_one_dispatch_with_an_epilogue(per_channel, low, high, in_zp, out_zp, seed):
    graph = conv_rescale_clamp(per_channel, low, high, in_zp, out_zp, seed)
    (d,) = compute_dispatches(graph)
    assert d.root.name == "linalg.conv2d"
    assert d.epilogue is not None and is_elementwise(d.epilogue)
    ops = origin_ops(d)
    assert ops[0] == "tosa.conv2d" and "tosa.rescale" in ops and "tosa.clamp" in ops, d.origins
    # The epilogue reads the accumulator (in registers) plus, per channel, the multipliers and shifts.
    assert d.epilogue.operands[d.slot] is d.root.result
    assert len(d.inputs) == 3 + (2 if per_channel else 0)
    check_execution(graph, seed)


def test_conv_rescale_clamp_plan_has_one_kernel():
    graph = conv_rescale_clamp(True, -128, 100, -5, 3)
    plan = build_plan(graph, host())
    assert plan.dispatch_count == 1 and [s.kind for s in plan.steps] == ["kernel"]
    origins = " ".join(plan.steps[0].origins)
    assert "tosa.conv2d" in origins and "tosa.rescale" in origins and "tosa.clamp" in origins


def _add_model(shape_a, shape_b, scales, zps, activation="NONE") -> bytes:
    b = ModelBuilder()
    x = b.tensor(shape_a, np.int8, scale=scales[0], zero_point=zps[0], name="a")
    y = b.tensor(shape_b, np.int8, scale=scales[1], zero_point=zps[1], name="b")
    out_shape = np.broadcast_shapes(tuple(shape_a), tuple(shape_b))
    z = b.tensor(list(out_shape), np.int8, scale=scales[2], zero_point=zps[2], name="sum")
    b.op("ADD", [x, y], [z], fused_activation_function=activation)
    return b.build()


@settings(max_examples=8, deadline=None)
@given(scales=st.tuples(*[st.floats(0.005, 0.2).map(lambda s: float(np.float32(s)))] * 3),
       zps=st.tuples(*[st.integers(-128, 127)] * 3), activation=st.sampled_from(["NONE", "RELU", "RELU6"]),
       bcast=st.booleans(), seed=st.integers(0, 2**31))
def test_int8_add_is_one_elementwise_generic(scales, zps, activation, bcast, seed):
    model = _add_model([1, 4, 5, 6], [1, 1, 5, 6] if bcast else [1, 4, 5, 6], scales, zps, activation)
    graph = tosaic.import_tflite(model)
    assert sum(op.name == "tosa.rescale" for op in graph.ops) >= 3 and any(op.name == "tosa.add" for op in graph.ops)
    fused, dispatches, order = structured_stages(graph)
    (d,) = dispatches
    assert d.epilogue is None and is_elementwise(d.root)
    assert [op.name for op in fused.ops if op.name != "linalg.const"] == ["linalg.generic"]
    ops = origin_ops(d)
    assert ops.count("tosa.rescale") >= 3 and "tosa.add" in ops
    # The generic op reads the two int8 inputs directly (a broadcast input through a non-identity map).
    assert set(d.root.operands[:2]) <= set(fused.inputs) or set(fused.inputs) <= set(d.root.operands)
    check_execution(graph, seed)
    inputs = random_inputs_for(graph, seed)
    assert_same(tosaic.compile(graph, target="cpu").run(inputs), run_reference(model, inputs), "vs LiteRT")


def _residual_model(seed: int, activation: str, batch: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.tensor([batch, 6, 6, 8], np.int8, scale=0.05, zero_point=-3, name="x")
    y = b.conv2d(x, rng.integers(-127, 128, (8, 3, 3, 8)), [0.004] * 8, rng.integers(-2000, 2000, 8), 0.09, 4,
                 padding="SAME", fused_activation_function=activation)
    out = b.tensor([batch, 6, 6, 8], np.int8, scale=0.11, zero_point=-7, name="out")
    b.op("ADD", [y, x], [out])
    return b.build()


@pytest.mark.parametrize("activation", ["NONE", "RELU"])
def test_residual_add_goes_into_the_convs_epilogue(activation):
    model = _residual_model(3, activation)
    graph = tosaic.import_tflite(model)
    (d,) = compute_dispatches(graph)
    assert d.root.name == "linalg.conv2d" and d.epilogue is not None
    ops = origin_ops(d)
    assert "tosa.add" in ops and ops.count("tosa.rescale") >= 3
    # The skip connection (the model input) is read by the epilogue, not by another dispatch.
    assert graph.inputs and len(d.inputs) >= 4
    check_execution(graph, 1)
    inputs = random_inputs_for(graph, 5)
    assert_same(tosaic.compile(graph, target="cpu").run(inputs), run_reference(model, inputs), "vs LiteRT")


# Batch 1 (every real model): an elementwise op over a size-1 dim reads through the broadcast map
# (0, d1, d2, d3), which must still count as the identity when the epilogue is chosen.
def test_conv_rescale_clamp_batch_one_is_one_dispatch():
    graph = conv_rescale_clamp(False, -50, 100, 3, -2, batch=1)
    check_execution(graph, 0)
    (d,) = compute_dispatches(graph)
    assert d.root.name == "linalg.conv2d" and d.epilogue is not None


def test_residual_add_batch_one_goes_into_the_convs_epilogue():
    graph = tosaic.import_tflite(_residual_model(3, "NONE", batch=1))
    check_execution(graph, 0)
    (d,) = compute_dispatches(graph)
    assert d.root.name == "linalg.conv2d" and d.epilogue is not None


def two_conv_branches_added(seed: int = 0, shortcut_stride: int = 2) -> Graph:
    """A ResNet stage's first block in TOSA: a 3x3 stride-2 conv and a 1x1 stride-2 projection shortcut
    of the same input, each requantized to int8, added as TFLite's int8 ADD (rescale both to i32, add,
    rescale), then ReLU."""
    rng = np.random.default_rng(seed)
    g = Graph("main")
    b = TosaBuilder(g)
    x = g.add_input(TensorType((1, 9, 9, 4), "i8"), "x")

    def conv(kernel, pad):
        w = b.const(rng.integers(-127, 128, (6, kernel, kernel, 4)), "i8")
        acc = b.op("tosa.conv2d", [x, w, b.const(rng.integers(-2000, 2000, 6), "i32"), b.scalar(-3, "i8"),
                                   b.scalar(0, "i8")],
                   {"pad": pad, "stride": (shortcut_stride,) * 2, "dilation": (1, 1), "acc_type": "i32"})
        return b.rescale(acc, rng.integers(1 << 29, 1 << 31, 6), rng.integers(36, 40, 6), 0, 5, "i8")

    main, shortcut = conv(3, (1, 1, 1, 1)), conv(1, (0, 0, 0, 0))
    total = b.op("tosa.add", [b.rescale(main, 1 << 30, 11, 5, 0, "i32"), b.rescale(shortcut, 1 << 30, 11, 5, 0, "i32")])
    g.set_outputs([b.clamp(b.rescale(total, 1518500250, 50, 0, -9, "i8"), -9, 127)], ["out"])
    return g


def test_two_accumulators_never_share_an_epilogue():
    """Regression (ResNet-18 on the cpu target: KeyError on a conv's i32 accumulator): an ADD of two conv
    branches once became the epilogue of both convs, so neither accumulator was ever stored. Now one conv
    keeps its requantization as its own epilogue and stores int8; the other takes the ADD."""
    graph = two_conv_branches_added()
    fused, dispatches, _ = structured_stages(graph)
    assert [d.root.name for d in dispatches] == ["linalg.conv2d", "linalg.conv2d"]
    first, second = dispatches
    assert first.epilogue is not None and first.outputs[0].type.dtype == "i8"
    assert "tosa.add" not in origin_ops(first) and "tosa.add" in origin_ops(second)
    assert first.outputs[0] in second.inputs
    check_execution(graph, 0)


def test_plan_refuses_a_value_no_step_writes():
    """The planner checks fusion's decisions: a dispatch reading a value that no step stores is an internal
    error with a message naming the step, not a KeyError deep in plan building."""
    graph = two_conv_branches_added()
    fused, dispatches, order = structured_stages(graph)
    first, second = dispatches
    broken = [d if d is not first else Dispatch(first.name, first.root, second.epilogue, second.slot, first.origins)
              for d in order]
    with pytest.raises(AssertionError, match=r"tosaic internal error: step \d+, dispatch_\d .* reads"):
        plan_arena(fused, broken)


def _copy_then_elementwise(kind: str) -> Graph:
    g = Graph("main")
    b = TosaBuilder(g)
    if kind == "transpose":
        x = g.add_input(TensorType((2, 3, 4, 5), "i8"), "x")
        moved = b.transpose(x, (0, 3, 1, 2))
    elif kind == "slice":
        x = g.add_input(TensorType((2, 6, 7, 3), "i8"), "x")
        moved = b.op("tosa.slice", [x, b.shape((1, 2, 3, 0)), b.shape((1, 3, 4, 3))])
    else:
        x = g.add_input(TensorType((3, 8, 4), "i8"), "x")
        moved = b.op("tosa.reverse", [x], {"axis": 1})
    y = b.rescale(moved, 1518500250, 33, -4, 9, "i8")
    g.set_outputs([b.clamp(y, -100, 90)], ["out"])
    return g


@pytest.mark.parametrize("kind", ["transpose", "slice", "reverse"])
def test_data_movement_folds_into_the_indexing_map(kind):
    graph = _copy_then_elementwise(kind)
    fused, dispatches, _ = structured_stages(graph)
    (d,) = dispatches
    assert d.epilogue is None and is_elementwise(d.root)
    assert d.root.operands[0] is fused.inputs[0]
    access = d.root.attrs["accesses"][0]
    assert access.map is not None and not access.map.is_identity()
    if kind == "transpose":   # output (n, c, h, w) reads x[n, h, w, c]
        assert access.map.coeffs == ((1, 0, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 1, 0, 0))
    elif kind == "slice":
        assert access.map.offsets == (1, 2, 3, 0)
    else:
        assert access.map.coeffs[1] == (0, -1, 0) and access.map.offsets[1] == 7
    assert "tosa." + kind in origin_ops(d)
    check_execution(graph, 2)


def test_value_with_two_users_is_not_inlined():
    """A rescale read by two ops stays its own dispatch (inlining would compute it twice)."""
    g = Graph("main")
    b = TosaBuilder(g)
    x = g.add_input(TensorType((4, 6), "i8"), "x")
    wide = b.rescale(x, 1 << 30, 30, 3, 0, "i32")
    g.set_outputs([b.op("tosa.add", [wide, wide]), b.op("tosa.maximum", [wide, wide])], ["s", "m"])
    dispatches = compute_dispatches(g)
    assert len(dispatches) == 3
    check_execution(g, 3)


def test_output_value_is_not_fused_away():
    """A value that is a model output is computed by its own dispatch even with one elementwise user."""
    g = Graph("main")
    b = TosaBuilder(g)
    x = g.add_input(TensorType((1, 5, 5, 2), "i8"), "x")
    pooled = b.op("tosa.max_pool2d", [x], {"kernel": (2, 2), "stride": (1, 1), "pad": (0, 0, 0, 0)})
    g.set_outputs([pooled, b.clamp(pooled, -10, 10)], ["pool", "clamped"])
    dispatches = compute_dispatches(g)
    assert len(dispatches) == 2 and dispatches[0].epilogue is None
    check_execution(g, 4)


def test_epilogue_with_i32_output_of_accumulator_shape():
    """Regression: plan_arena's in-place pass once looked up the live interval of the epilogue's accumulator
    operand (never materialized) and failed with a KeyError.
    conv2d -> rescale i8 -> rescale i32 (an ADD's input rescale, or PRELU's) is one dispatch whose epilogue
    writes i32 of the accumulator's shape; the i32 value then feeds an op that cannot fuse it."""
    g = Graph("main")
    b = TosaBuilder(g)
    x = g.add_input(TensorType((1, 4, 4, 3), "i8"), "x")
    w = b.const(np.arange(15).reshape(5, 1, 1, 3) - 7, "i8")
    bias = b.const(np.arange(5) * 10, "i32")
    acc = b.op("tosa.conv2d", [x, w, bias, b.scalar(0, "i8"), b.scalar(0, "i8")],
               {"pad": (0, 0, 0, 0), "stride": (1, 1), "dilation": (1, 1), "acc_type": "i32"})
    q = b.rescale(acc, 1 << 30, 33, 0, 0, "i8")
    wide = b.rescale(q, 1 << 30, 30, 0, 0, "i32")
    total = b.op("tosa.add", [wide, wide])
    g.set_outputs([b.rescale(total, 1 << 30, 31, 0, 0, "i8")], ["out"])
    check_execution(g, 0)


# ---------------------------------------------------------------------------------- arena checker


def _nbytes(ref) -> int:
    _, _, shape, dtype = ref
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


_OUTPUT_NAME = re.compile(r"^(out|o\d+|scratch_\w+)$")


def step_effects(plan, step) -> tuple[list, list]:
    """(refs the step reads, refs it writes), arena refs only. A kernel's outputs are its leading array
    parameters named `out` or `o<k>` in the generated source's signature; its scratch buffers
    (`scratch_<name>`) it writes too, and they are dead after it."""
    arrays = step.arrays
    if step.kind == "kernel":
        match = re.search(r"def kernel\(([^)]*)\)", plan.sources[step.key])
        names = [n.strip() for n in match.group(1).split(",")][:len(arrays)]
        assert len(names) == len(arrays), (step.name, names)
        writes = [a for n, a in zip(names, arrays) if _OUTPUT_NAME.match(n)]
        reads = [a for n, a in zip(names, arrays) if not _OUTPUT_NAME.match(n)]
        assert writes, f"{step.name}: no output in the kernel signature {names}"
    elif step.kind == "concat":
        writes, reads = arrays[:1], arrays[1:]
    elif step.kind == "variable_read":
        writes, reads = arrays, []
    elif step.kind == "variable_write":
        writes, reads = [], arrays
    else:
        raise AssertionError(f"unknown step kind {step.kind}")
    return [r for r in reads if r[0] == "arena"], [w for w in writes if w[0] == "arena"]


def arena_values(plan) -> list[dict]:
    """Every value the plan stores in the arena: a write (or a model input) of a byte interval, alive from
    that step to the last step reading the same interval before it is written again (model outputs to the
    end). Step -1 writes the inputs; step len(steps) reads the outputs."""
    events = [([], [r for r in plan.inputs if r[0] == "arena"])]
    events += [step_effects(plan, s) for s in plan.steps]
    events.append(([r for r in plan.outputs if r[0] == "arena"], []))
    values, current = [], {}   # (offset, nbytes) -> the value last written there
    for i, (reads, writes) in enumerate(events):
        step = i - 1
        for r in reads:
            key = (r[1], _nbytes(r))
            assert key in current, f"step {step} reads arena bytes {key} that no earlier step wrote"
            current[key]["last"] = step
        scratch = set()
        if 0 <= step < len(plan.steps) and plan.steps[step].kind == "kernel":
            match = re.search(r"def kernel\(([^)]*)\)", plan.sources[plan.steps[step].key])
            names = [n.strip() for n in match.group(1).split(",")]
            scratch = {id(a) for n, a in zip(names, plan.steps[step].arrays) if n.startswith("scratch_")}
        for w in writes:
            value = {"offset": w[1], "nbytes": _nbytes(w), "first": step, "last": step, "ref": w,
                     "scratch": id(w) in scratch}
            current[(w[1], value["nbytes"])] = value
            values.append(value)
    return values


def arena_conflicts(plan) -> list[str]:
    """Pairs of values alive at the same time that share bytes. A value may take the bytes of one that is
    read for the last time by the step that writes it (in place), nothing more."""
    values = arena_values(plan)
    problems = []
    for v in values:
        assert 0 <= v["offset"] and v["offset"] + v["nbytes"] <= plan.arena_bytes, v
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            bytes_overlap = a["offset"] < b["offset"] + b["nbytes"] and b["offset"] < a["offset"] + a["nbytes"]
            if not bytes_overlap:
                continue
            if a["first"] == b["first"]:
                problems.append(f"one step writes two overlapping values {a['ref']} and {b['ref']}")
            elif b["scratch"] and a["first"] <= b["first"] <= a["last"] or \
                    a["scratch"] and b["first"] <= a["first"] <= b["last"]:
                problems.append(f"a scratch buffer shares bytes with a value alive while its kernel runs: "
                                f"{a['ref']} and {b['ref']}")
            elif a["first"] < b["first"] < a["last"] or b["first"] < a["first"] < b["last"]:
                problems.append(f"{b['ref']} (written at step {b['first']}) overwrites {a['ref']} "
                                f"(alive steps {a['first']}..{a['last']})")
    return problems


def _kernel_templates_never_in_place(plan) -> list[str]:
    """A conv/depthwise/gemm kernel reads its input window while writing other pixels: its output must not
    share bytes with its input activation."""
    problems = []
    for s in plan.steps:
        if s.kind == "kernel" and s.template in ("conv", "depthwise", "gemm"):
            out, x = s.arrays[0], s.arrays[1]
            if out[0] == x[0] == "arena" and out[1] < x[1] + _nbytes(x) and x[1] < out[1] + _nbytes(out):
                problems.append(f"{s.name} ({s.template}) writes over its own input")
    return problems


ARENA_MODELS = [p.stem for p in model_zoo.SUPPORTED]


@pytest.mark.parametrize("name", ARENA_MODELS)
def test_arena_values_alive_together_never_share_bytes(name):
    plan = build_plan(model_zoo.graph_of(model_zoo.DATA / f"{name}.tflite"), host())
    assert plan.arena_bytes % 64 == 0
    assert plan.arena_bytes <= aligned_activation_bound(plan)
    assert not arena_conflicts(plan), "\n".join(arena_conflicts(plan))
    assert not _kernel_templates_never_in_place(plan)


def aligned_activation_bound(plan) -> int:
    """What the arena may take at most: every activation at its own 64-byte aligned place (values start
    at 64-byte boundaries, so a tiny model's arena can exceed the plain byte sum of its activations)."""
    aligned = sum(-(-v["nbytes"] // 64) * 64 for v in arena_values(plan))
    return max(aligned, -(-plan.activation_bytes // 64) * 64)


def largest_step_scratch(plan) -> int:
    """The most scratch bytes (64-byte aligned) one kernel works in: scratch lives during its step only."""
    return max([sum(-(-v["nbytes"] // 64) * 64 for v in arena_values(plan) if v["scratch"] and v["first"] == i)
                for i in range(len(plan.steps))] or [0])


def test_arena_is_no_bigger_than_the_activations():
    """...plus the scratch buffers of the one kernel that needs the most (each is dead after its step)."""
    big = 0
    for path in model_zoo.SUPPORTED:
        plan = build_plan(model_zoo.graph_of(path), host())
        assert plan.arena_bytes <= aligned_activation_bound(plan), path.stem
        if plan.activation_bytes >= 16384:
            big += 1
            assert plan.arena_bytes <= plan.activation_bytes + largest_step_scratch(plan), path.stem
    assert big >= 5


def test_arena_placement_is_the_same_on_every_compile():
    """Placement must not follow object hashes: the same model gets the same arena in every process.
    (Equal-sized values once swapped places between compiles, changing the arena's size.)"""
    path = model_zoo.DATA / "arch_ds_cnn_kws_49x10.tflite"
    layouts = set()
    for _ in range(4):
        plan = build_plan(model_zoo.graph_of(path), host())
        layouts.add((plan.arena_bytes, tuple(sorted((v["offset"], v["nbytes"]) for v in arena_values(plan)))))
    assert len(layouts) == 1


def _in_place_steps(plan) -> list[str]:
    """Kernel steps whose output takes exactly the bytes of one of their arena inputs."""
    found = []
    for s in plan.steps:
        if s.kind != "kernel" or s.arrays[0][0] != "arena":
            continue
        out = s.arrays[0]
        if any(a[0] == "arena" and a[1] == out[1] and _nbytes(a) == _nbytes(out) for a in s.arrays[1:]):
            found.append(s.name)
    return found


@pytest.mark.parametrize("name, in_place", [("op_softmax_1x10", True), ("stream_kws_int8_state", False),
                                            ("arch_mobilenet_v2_1.0_224", False)])
def test_in_place_only_where_it_saves_bytes(name, in_place):
    """Writing over a dying input is kept when it makes the arena smaller (the softmax: 64 bytes; the
    streaming spotter's 64 went when its kernels' scratch buffers joined the arena) and dropped otherwise,
    since a kernel writing over its own input loses vectorized loops."""
    plan = build_plan(model_zoo.graph_of(model_zoo.DATA / f"{name}.tflite"), host())
    assert bool(_in_place_steps(plan)) == in_place
    assert not arena_conflicts(plan)


def test_mobilenet_v2_arena_reuses_memory():
    model = tosaic.compile(model_zoo.DATA / "arch_mobilenet_v2_1.0_224.tflite", target="cpu")
    memory = model.memory
    assert memory["arena_bytes"] < memory["activation_bytes"]
    # Inverted residual blocks: the arena holds a few live tensors, not the 60-odd of the network.
    assert memory["arena_bytes"] * 3 < memory["activation_bytes"]
    assert memory["weight_bytes"] > 3_000_000
    assert not arena_conflicts(model.plan)


def test_checker_finds_an_overlap():
    """The checker itself: moving a live value onto another one's bytes is reported."""
    plan = build_plan(model_zoo.graph_of(model_zoo.DATA / "arch_ds_cnn_kws_49x10.tflite"), host())
    values = arena_values(plan)
    # Two values alive at once (a reader after the other's write) at different offsets.
    pair = next((a, b) for a in values for b in values
                if a["first"] < b["first"] < a["last"] and a["offset"] != b["offset"]
                and a["ref"][0] == b["ref"][0] == "arena")
    moved_from, moved_to = pair[1]["ref"][1], pair[0]["ref"][1]
    for s in plan.steps:
        s.arrays = [[r[0], moved_to if r[1] == moved_from else r[1], *r[2:]] if r[0] == "arena" else r
                    for r in s.arrays]
    plan.outputs = [[r[0], moved_to if r[1] == moved_from else r[1], *r[2:]] if r[0] == "arena" else r
                    for r in plan.outputs]
    try:
        problems = arena_conflicts(plan)
    except AssertionError as error:   # a read now finds other bytes than any write made
        problems = [str(error)]
    assert problems


def test_structured_stages_of_every_model_execute_exactly():
    """Fusion and body simplification keep every small model's meaning (structured interpreter)."""
    for path in model_zoo.SUPPORTED:
        if path.stem.startswith("arch_") or path.stem == "op_conv2d_big_56x56x64_k3":
            continue
        graph = model_zoo.graph_of(path)
        inputs = random_inputs_for(graph, 11)
        state = initial_state(graph)
        want = interpret(graph, [x.copy() for x in inputs], state=state)
        fused, _, _ = structured_stages(graph)
        assert_same(interpret_structured(fused, [x.copy() for x in inputs]), want, path.stem)


@pytest.mark.parametrize("kind,seed", [("int16", 0), ("transformer", 0), ("mixed", 0), ("int16", 1), ("mixed", 1), ("lstm", 1), ("mobilenet_v2", 0), ("unet", 0)])
def test_random_network_arena_is_sound(kind, seed):
    """Regression (int16 seed 0, transformer seed 0, mixed seed 0): plan_arena once put a conv/gemm output over
    its own input and over live values, and failed on an i32 epilogue of the accumulator's shape."""
    from network_generator import build_network
    plan = build_plan(tosaic.import_tflite(build_network(seed, kind).model), host())
    assert not arena_conflicts(plan) and not _kernel_templates_never_in_place(plan)
