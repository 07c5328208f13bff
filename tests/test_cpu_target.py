"""The cpu target end to end: every model in tests/data against LiteRT's stored BUILTIN_REF outputs and
against target="interp"; streaming models step by step against LiteRT; thread counts; save/load, and a
second process that loads a saved model from a warm kernel cache compiling nothing; input checking; and
unseen random networks (tests/network_generator.py) against LiteRT, bit for bit.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from litert_ref import random_inputs, run_reference
from network_generator import ALL_KINDS, build_network

import model_zoo
from exactness import assert_same
import tosaic
from test_models import io_arrays
from test_stateful import LiteRTStepper, input_stream
from tosaic.validate import random_inputs as compiled_model_inputs

REPO = Path(__file__).resolve().parents[1]
ZOO = [p.stem for p in model_zoo.SUPPORTED]


@functools.lru_cache(maxsize=None)
def cpu_model(name: str, threads: int = 2) -> tosaic.CompiledModel:
    return tosaic.compile(model_zoo.graph_of(model_zoo.DATA / f"{name}.tflite"), target="cpu", threads=threads)


@functools.lru_cache(maxsize=None)
def interp_model(name: str) -> tosaic.CompiledModel:
    return tosaic.compile(model_zoo.graph_of(model_zoo.DATA / f"{name}.tflite"))


# ------------------------------------------------------------------------------------- every model


@pytest.mark.parametrize("name", ZOO)
def test_cpu_matches_stored_reference_and_interp(name):
    inputs, refs = io_arrays(name)
    model = cpu_model(name)
    assert model.target == "cpu" and model.plan is not None
    ours = model.run(inputs)
    if refs:   # op_tile has none (LiteRT's reference resolver refuses its TILE version)
        assert_same(ours, refs, f"{name} vs stored LiteRT")
    interp = interp_model(name)
    interp.reset()
    assert_same(ours, interp.run(inputs), f"{name} vs interp")
    if not model.stateful:
        # A second run on other inputs: nothing left over in the arena changes the result.
        other = compiled_model_inputs(model, 99)
        assert_same(model.run(other), interp.run(other), f"{name} second run")
        assert_same(model.run(inputs), ours, f"{name} rerun")


def test_plan_and_memory_reports():
    model = cpu_model("arch_ds_cnn_kws_49x10")
    plan = model.plan
    assert plan.dispatch_count == sum(s.kind == "kernel" for s in plan.steps) > 0
    assert 0 < plan.kernel_count <= plan.dispatch_count
    memory = model.memory
    assert memory["arena_bytes"] == plan.arena_bytes and memory["activation_bytes"] == plan.activation_bytes
    assert memory["weight_bytes"] > 0
    rows = model.profile(compiled_model_inputs(model, 0), repeat=2)
    assert len(rows) == len(plan.steps) and all(r["seconds"] >= 0 for r in rows)
    assert rows == sorted(rows, key=lambda r: -r["seconds"])
    assert tosaic.compile(model_zoo.DATA / "op_add_same.tflite").plan is None


# ------------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("name", ["stream_kws_int8_state", "stream_kws_float_state"])
def test_streaming_models_step_with_litert_and_reset(name):
    model_bytes = (model_zoo.DATA / f"{name}.tflite").read_bytes()
    model = tosaic.compile(model_zoo.graph_of(model_zoo.DATA / f"{name}.tflite"), target="cpu")
    interp = tosaic.compile(model_zoo.graph_of(model_zoo.DATA / f"{name}.tflite"))
    assert model.stateful
    stream = input_stream(model, 6, seed=3)
    litert = LiteRTStepper(model_bytes)
    first = []
    for step, inputs in enumerate(stream):
        ours = model.run(inputs)
        assert_same(ours, litert(inputs), f"step {step} vs LiteRT")
        assert_same(ours, interp.run(inputs), f"step {step} vs interp")
        first.append(ours)
    # The state moved on: the same inputs now give other outputs than at step 0 (for the int8 ring buffer).
    model.reset()
    fresh = LiteRTStepper(model_bytes)
    for step, inputs in enumerate(stream):
        ours = model.run(inputs)
        assert_same(ours, first[step], f"after reset, step {step}")
        assert_same(ours, fresh(inputs), f"after reset, step {step} vs a new LiteRT interpreter")


def test_failed_run_keeps_state():
    model = tosaic.compile(model_zoo.DATA / "stream_kws_int8_state.tflite", target="cpu")
    stream = input_stream(model, 3, seed=8)
    model.run(stream[0])
    before = model.state
    with pytest.raises(ValueError):
        model.run([np.zeros((1, 2), np.int8)])
    after = model.state
    assert before.keys() == after.keys()
    assert all((before[k] is None and after[k] is None) or np.array_equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------------------- threads


@pytest.mark.parametrize("name", ["arch_mobilenet_v1_0.25_128", "arch_ds_cnn_kws_49x10", "op_softmax_4x32x32",
                                  "op_conv2d_big_56x56x64_k3", "var_16x8_op_fc_256x100_relu"])
def test_one_and_two_threads_give_the_same_bits(name):
    one, two = cpu_model(name, 1), cpu_model(name, 2)
    assert one.plan.sources.keys() == two.plan.sources.keys()
    for seed in range(2):
        inputs = compiled_model_inputs(one, seed)
        assert_same(one.run(inputs), two.run(inputs), f"{name} seed {seed}")


def test_bad_thread_counts():
    with pytest.raises(ValueError):
        tosaic.compile(model_zoo.DATA / "op_add_same.tflite", target="cpu", threads=0)
    with pytest.raises(ValueError):
        tosaic.compile(model_zoo.DATA / "op_add_same.tflite", target="cpu", threads=10_000)


# -------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_value_error():
    model = cpu_model("op_add_same")
    good = compiled_model_inputs(model, 0)
    info = model.inputs[0]
    with pytest.raises(ValueError, match="must be"):
        model.run([good[0].astype(np.int16)] + good[1:])
    with pytest.raises(ValueError, match="shape"):
        model.run([good[0].reshape(-1)] + good[1:])
    with pytest.raises(ValueError, match="shape"):
        model.run([np.zeros((2, *info.shape[1:]), info.dtype)] + good[1:])
    with pytest.raises(ValueError):
        model.run(good[:1])
    with pytest.raises(ValueError):
        model.run(good + good[:1])
    with pytest.raises(ValueError):
        model.run({"no such input": good[0]})
    # The model still runs after every refusal.
    assert_same(model.run(good), interp_model("op_add_same").run(good))


def test_float_input_model_refuses_int8():
    model = cpu_model("var_floatio_op_conv2d_s2_same_relu6")
    assert model.inputs[0].dtype == np.float32
    with pytest.raises(ValueError):
        model.run([np.zeros(model.inputs[0].shape, np.int8)])


# ------------------------------------------------------------------------------------- save / load


# Regression: a model from tosaic.load (graph None) once failed every run (CompiledModel._arrays read
# self.graph.inputs).
@pytest.mark.parametrize("name", ["arch_ds_cnn_kws_49x10", "op_softmax_1x10", "stream_kws_int8_state",
                                  "var_16x8_op_fc_256x100_relu", "op_split_4_axis1"])
def test_save_load_round_trip(name, tmp_path):
    model = cpu_model(name)
    model.reset()
    model.save(tmp_path / "m")
    loaded = tosaic.load(tmp_path / "m", threads=1)
    assert loaded.target == "cpu" and loaded.graph is None
    assert [(i.name, i.shape, i.dtype, i.scale, i.zero_point) for i in loaded.inputs] == \
        [(i.name, i.shape, i.dtype, i.scale, i.zero_point) for i in model.inputs]
    assert loaded.plan.dispatch_count == model.plan.dispatch_count
    assert loaded.memory == model.memory
    for seed in range(3):
        inputs = compiled_model_inputs(model, seed)
        assert_same(loaded.run(inputs), model.run(inputs), f"{name} seed {seed}")
    model.reset()


def test_save_needs_a_compiled_target_and_load_a_saved_model(tmp_path):
    with pytest.raises(ValueError):
        interp_model("op_add_same").save(tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        tosaic.load(tmp_path / "nothing here")


_SAVE = """
import sys, tosaic
tosaic.compile(sys.argv[1], target="cpu", threads=1).save(sys.argv[2])
"""

_LOAD = """
import json, sys
import numpy as np
import tosaic
from tosaic.kernels.engine import load_kernel
model = tosaic.load(sys.argv[1], threads=1)
stats = []
for step in model.plan.steps:
    if step.kind == "kernel":
        fn = load_kernel(step.key, model.plan.sources[step.key])
        stats.append({"key": step.key, "hits": sum(fn.stats.cache_hits.values()),
                      "misses": sum(fn.stats.cache_misses.values())})
x = np.load(sys.argv[2])
try:
    out = model.run([x])[0].tolist()
except Exception as error:
    out = f"{type(error).__name__}: {error}"
print(json.dumps({"stats": stats, "out": out}))
"""


def _python(code: str, *args, env) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


def _save_then_load_in_another_process(tmp_path, monkeypatch):
    """Process 1 compiles and saves a model into a fresh kernel cache; process 2 loads it from that cache.
    Returns process 2's report (per-kernel Numba cache stats, the output) and the stored references."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TOSAIC_CACHE_DIR", str(cache))
    env = dict(os.environ)
    name = "op_conv2d_s2_valid_k1"       # two kernels: conv + generic
    _python(_SAVE, model_zoo.DATA / f"{name}.tflite", tmp_path / "saved", env=env)
    saved = {p.name for p in (tmp_path / "saved" / "kernels").glob("*.py")}
    assert saved and saved <= {p.name for p in (cache / "kernels").glob("*.py")}
    before = _snapshot(cache)
    assert any(k.endswith(".nbi") for k in before) and any(k.endswith(".nbc") for k in before)
    inputs, refs = io_arrays(name)
    np.save(tmp_path / "x.npy", inputs[0])
    report = json.loads(_python(_LOAD, tmp_path / "saved", tmp_path / "x.npy", env=env).strip().splitlines()[-1])
    assert report["stats"], "the loaded plan has no kernels"
    for s in report["stats"]:
        assert s["hits"] > 0 and s["misses"] == 0, s
    assert _snapshot(cache) == before, "loading the saved model wrote to the kernel cache"
    return report, refs


def test_second_process_loads_from_the_kernel_cache_compiling_nothing(tmp_path, monkeypatch):
    _save_then_load_in_another_process(tmp_path, monkeypatch)


def test_second_process_runs_the_loaded_model(tmp_path, monkeypatch):
    report, refs = _save_then_load_in_another_process(tmp_path, monkeypatch)
    assert not isinstance(report["out"], str), report["out"]
    out = np.array(report["out"], dtype=refs[0].dtype).reshape(refs[0].shape)
    assert np.array_equal(out, refs[0])


def test_kernels_missing_from_the_cache_compile_in_worker_processes(tmp_path, monkeypatch):
    """With an empty cache, this process and a worker process compile the kernels and the model's entry
    point between them (Numba compiles one at a time per process): each is compiled once, in one of them,
    into the cache; this process loads the worker's from the cache and counts each in the progress callback."""
    import numba

    from tosaic.kernels import engine
    from tosaic.kernels.plan import build_plan
    from tosaic.kernels.target import host

    monkeypatch.setenv("TOSAIC_CACHE_DIR", str(tmp_path / "cache"))
    name = "op_conv2d_s2_valid_k1"       # two kernels: conv + generic
    plan = build_plan(tosaic.load_graph(model_zoo.DATA / f"{name}.tflite"), host())
    keys = {s.key for s in plan.steps if s.kind == "kernel"}
    assert len(keys) == 2 and not keys & engine.compiled_kernels()
    for key in keys:   # a module another test of this process imported from another cache
        monkeypatch.delitem(sys.modules, engine.module_name(key), raising=False)
    seen = []
    executable = engine.Executable(plan, compile_workers=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]     # two kernels and the entry point
    assert keys <= engine.compiled_kernels()
    for key in keys:   # loaded from the cache, or compiled here once: not both
        stats = engine.load_kernel(key, plan.sources[key]).stats
        assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) == 1, stats
    inputs, refs = io_arrays(name)
    assert_same(executable.run([inputs[0].view(np.int8)], {}), [r.view(np.int8) for r in refs])
    assert numba.get_num_threads() == executable.threads


def test_a_script_without_a_main_guard_compiles_in_worker_processes(tmp_path):
    """A three-line script with no `if __name__ == "__main__"` compiles into an empty cache and runs: the
    workers are commands, not `multiprocessing` children, which would run the script again on import."""
    name = "op_conv2d_s2_valid_k1"
    inputs, refs = io_arrays(name)
    np.save(tmp_path / "x.npy", inputs[0])
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np, tosaic
        model = tosaic.compile({str(model_zoo.DATA / f"{name}.tflite")!r}, target="cpu")
        np.save({str(tmp_path / "out.npy")!r}, model.run([np.load({str(tmp_path / "x.npy")!r})])[0])
        """))
    env = dict(os.environ, TOSAIC_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same([np.load(tmp_path / "out.npy")], refs[:1])


def test_a_kernel_that_fails_to_compile_in_a_worker_is_named(tmp_path):
    from tosaic.kernels import engine

    jobs = [("broken", "raise ValueError('no kernel here')\n", [("kernel", [()])])]
    with pytest.raises(RuntimeError, match=r"compiling kernel broken failed(.|\n)*no kernel here"):
        engine.compile_concurrently(jobs, tmp_path, workers=2)


def test_a_worker_loading_a_cached_kernel_goes_on_compiling(tmp_path, monkeypatch):
    """A compile worker that loads, from the cache, an entry point, whose parallel loop calls the threading
    layer (another process compiled it meanwhile), and then compiles something else answers both jobs: the
    threading layer that resolves the loop's symbols is loaded before any function (without it, LLVM aborted
    the worker)."""
    import numba

    from tosaic.kernels import engine
    from tosaic.kernels.compile_worker import receive, send
    from tosaic.kernels.plan import build_plan
    from tosaic.kernels.target import host

    monkeypatch.setenv("TOSAIC_CACHE_DIR", str(tmp_path / "cache"))
    plan = build_plan(tosaic.load_graph(model_zoo.DATA / "stream_kws_int8_state.tflite"), host())
    executable = engine.Executable(plan)   # compiles every kernel into the cache, in this process
    entry = executable.entry
    functions = [("steps", [executable._steps_signature()]), ("entry", [executable._entry_signature()])]
    other = "import numba\n\n\n@numba.njit(cache=True)\ndef kernel(x):\n    return x + 1\n"
    worker = subprocess.Popen([sys.executable, "-m", "tosaic.kernels.compile_worker", str(engine.cache_dir())],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        send(worker.stdin, (entry.key, entry.source, functions))
        assert receive(worker.stdout) == (entry.key, None)
        send(worker.stdin, ("plus_one", other, [("kernel", [(numba.int64,)])]))
        assert receive(worker.stdout) == ("plus_one", None), worker.stderr.read().decode()[-2000:]
    finally:
        worker.stdin.close()
        worker.wait()
        worker.stderr.close()
        worker.stdout.close()


# ------------------------------------------------------------------------------------- plan cache


def _compile_counting_imports(path, monkeypatch) -> tuple:
    """`tosaic.compile(path, "cpu")` and how many times it imported the model file."""
    imports = []
    real = tosaic.load_graph

    def load_graph(source):
        imports.append(source)
        return real(source)

    monkeypatch.setattr(tosaic, "load_graph", load_graph)
    return tosaic.compile(path, target="cpu"), len(imports)


def test_a_second_compile_of_a_file_reuses_its_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("TOSAIC_CACHE_DIR", str(tmp_path / "cache"))
    name = "op_conv2d_s2_valid_k1"
    inputs, refs = io_arrays(name)
    first, imported = _compile_counting_imports(model_zoo.DATA / f"{name}.tflite", monkeypatch)
    assert imported == 1
    again, imported = _compile_counting_imports(model_zoo.DATA / f"{name}.tflite", monkeypatch)
    assert imported == 0 and again.graph is None
    assert again.source == first.source and again.inputs == first.inputs and again.outputs == first.outputs
    assert_same(again.run(inputs), refs)


@pytest.mark.parametrize("damage", ["truncated plan.json", "garbage arrays.npz", "missing kernel source"])
def test_a_damaged_plan_is_made_again(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("TOSAIC_CACHE_DIR", str(tmp_path / "cache"))
    name = "op_conv2d_s2_valid_k1"
    inputs, refs = io_arrays(name)
    _compile_counting_imports(model_zoo.DATA / f"{name}.tflite", monkeypatch)
    (entry,) = (tmp_path / "cache" / "plans").iterdir()
    if damage == "truncated plan.json":
        text = (entry / "plan.json").read_text()
        (entry / "plan.json").write_text(text[:len(text) // 2])
    elif damage == "garbage arrays.npz":
        (entry / "arrays.npz").write_bytes(b"not an archive")
    else:
        next((entry / "kernels").iterdir()).unlink()
    model, imported = _compile_counting_imports(model_zoo.DATA / f"{name}.tflite", monkeypatch)
    assert imported == 1
    assert_same(model.run(inputs), refs)
    _, imported = _compile_counting_imports(model_zoo.DATA / f"{name}.tflite", monkeypatch)
    assert imported == 0   # stored again, whole


def test_a_model_file_rewritten_in_place_is_compiled_anew(tmp_path, monkeypatch):
    monkeypatch.setenv("TOSAIC_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.tflite"
    for name in ("op_conv2d_s2_valid_k1", "op_add_same"):
        path.write_bytes((model_zoo.DATA / f"{name}.tflite").read_bytes())
        inputs, refs = io_arrays(name)
        model, imported = _compile_counting_imports(path, monkeypatch)
        assert imported == 1
        assert_same(model.run(inputs), refs)


# ------------------------------------------------------------------------------------- entry point


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2,
                    reason="alternates a 1-thread and a 2-thread model; this machine gives Numba one thread")
def test_each_run_sets_its_thread_count_in_the_calling_thread():
    """The entry point sets the threading layer's count (thread-local) on every call: two models of different
    counts alternate, and a Python thread that never set a count runs with the model's."""
    import threading

    import numba

    one, two = cpu_model("arch_ds_cnn_kws_49x10", 1), cpu_model("arch_ds_cnn_kws_49x10", 2)
    inputs = compiled_model_inputs(one, 0)
    expected = one.run(inputs)
    for model, count in [(two, 2), (one, 1), (two, 2)]:
        assert_same(model.run(inputs), expected)
        assert numba.get_num_threads() == count
    seen = []

    def worker():
        seen.append((one.run(inputs), numba.get_num_threads()))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert_same(seen[0][0], expected)
    assert seen[0][1] == 1


def test_a_kernel_source_called_with_two_dtypes_runs_each_variant():
    """One kernel source can serve steps whose arrays differ in dtype (here a 16x8 direct conv writing int32
    in one place and int16 in another); each variant is its own compiled function, and the entry point
    calls each step's own. Calling one variant's address for both gave 16 of 16 wrong outputs."""
    from tosaic.kernels import engine

    net = build_network(200, "mixed", int16=True)
    model = tosaic.compile(tosaic.import_tflite(net.model), target="cpu")
    keys = [variant[0] for variant in {engine.kernel_variant(model._plan, step) for step in model._plan.steps
                                       if step.kind == "kernel"}]
    assert len(keys) > len(set(keys))
    for k in range(2):
        x = random_inputs(net.model, seed=200 * 7919 + k)
        assert_same(model.run(x), run_reference(net.model, x), f"{net.summary()} input {k}")


def test_a_kernel_that_fails_is_recorded_and_stops_the_run(tmp_path):
    """`_call` records a kernel's failure (Numba's error status) in sync[0], as the failing item's stamp
    index, and runs no kernel after it: an exception cannot leave a parallel region's other threads."""
    import numba

    from tosaic.kernels import engine

    source = engine.ENTRY_PRELUDE + textwrap.dedent('''

        @numba.njit(cache=True)
        def kernel(a, P, D, R):
            if a[0] < 0:
                raise ValueError("a negative count")
            a[0] = P[0] + D[0]


        @numba.njit(cache=True)
        def entry(kernels, a, sync):
            _call(kernels, a, a, "(0, ((0, 0, 'int64', (2,)),), (('l', 7),), (2,), 0, 5, None)", sync, 0, 1, a, False)
            _call(kernels, a, a, "(0, ((0, 8, 'int64', (1,)),), (('l', 1),), (2,), 0, 6, None)", sync, 0, 1, a, False)
        ''')
    module = engine.load_module("test_entry_error", source, tmp_path)
    a, sync = np.zeros(2, np.int64), np.zeros(16, np.int64)
    kernel = module.kernel
    kernel.compile((numba.typeof(a), numba.typeof((np.int64(7),)), numba.typeof((np.int64(2),)),
                    numba.typeof((np.int64(0),) * 3)))   # both calls' views: 1-d int64 arrays
    kernels = np.array([engine.native_address(next(iter(kernel.overloads.values())))], np.int64)
    module.entry(kernels, a, sync)
    assert a.tolist() == [9, 3] and not sync.any()
    a[:] = [-1, 0]
    module.entry(kernels, a, sync)
    assert a.tolist() == [-1, 0]   # the second kernel did not run
    assert sync[0] == 5 and (sync[1:] == 1 << 62).all()


# ------------------------------------------------------------------------------- random networks

NETWORKS = [("mobilenet_v2", 0, False), ("mobilenet_v1", 3, False), ("kws", 1, False), ("mixed", 1, False),
            ("transformer", 0, False), ("unet", 0, False), ("lstm", 1, False), ("mobilenet_v3", 0, False),
            ("int16", 0, False), ("int16", 1, False), ("float_edges", 0, False), ("float_edges", 1, False),
            ("resnet", 4, False), ("resnet", 0, True), ("mobilenet_v2", 0, True), ("mixed", 2, True),
            ("transformer", 1, True), ("mobilenet_v3", 1, True)]


# Each network's first compile costs 10-40 s of Numba time on a cold kernel cache: the default run keeps
# the keyword spotter, a transformer, a 16x8 network, a float-edge one, a basic-block ResNet with
# projection shortcuts and a 16x8 bottleneck one, and a 16x8 MobileNetV2; `-m slow` runs the rest.
SLOW_NETWORKS = {("mobilenet_v1", 3, False), ("mixed", 1, False), ("unet", 0, False), ("lstm", 1, False),
                 ("float_edges", 1, False),
                 ("mobilenet_v3", 0, False), ("int16", 0, False), ("mobilenet_v2", 0, False), ("mixed", 2, True),
                 ("transformer", 1, True), ("mobilenet_v3", 1, True)}
NETWORKS = [pytest.param(*p, marks=pytest.mark.slow) if p in SLOW_NETWORKS else p for p in NETWORKS]


def check_network_on_cpu(kind: str, seed: int, int16: bool, inputs: int = 2) -> None:
    net = build_network(seed, kind, int16=int16)
    model = tosaic.compile(tosaic.import_tflite(net.model), target="cpu")
    for k in range(inputs):
        x = random_inputs(net.model, seed=seed * 7919 + k)
        assert_same(model.run(x), run_reference(net.model, x), f"{net.summary()} input {k}")


@pytest.mark.parametrize("kind,seed,int16", NETWORKS)
def test_random_network_on_cpu_matches_litert(kind, seed, int16):
    check_network_on_cpu(kind, seed, int16)


@pytest.mark.slow
@pytest.mark.parametrize("int16", [False, True], ids=["int8", "16x8"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_random_networks_sweep_on_cpu(kind, int16):
    """Many networks of every kind, int8 and 16x8, on the cpu target against LiteRT."""
    if kind == "int16" and not int16:
        pytest.skip("the int16 kind is 16x8 already")
    for seed in range(200, 208):
        check_network_on_cpu(kind, seed, int16)


@pytest.mark.slow
@pytest.mark.parametrize("kind,int16", [("resnet18", False), ("mobilenet_v2_224", True), ("resnet18", True),
                                        ("mobilenet_v2_224", False)])
def test_published_architectures_at_224_on_cpu(kind, int16):
    """ResNet-18 (int8) and MobileNetV2 (16x8) at full size, as the networks that once crashed the cpu
    target were, and their other variants."""
    check_network_on_cpu(kind, 0, int16, inputs=1)


@pytest.mark.slow
def test_random_mixed_network_seed0_compiles_for_cpu():
    """Regression: bufferize once failed (KeyError) on conv -> rescale -> PRELU's input rescale, an epilogue
    writing i32 of the accumulator's shape."""
    net = build_network(0, "mixed")
    model = tosaic.compile(tosaic.import_tflite(net.model), target="cpu")
    inputs = random_inputs(net.model, seed=0)
    assert_same(model.run(inputs), run_reference(net.model, inputs), net.summary())


# ------------------------------------------------------------------------------- runtime weights


def _model_with_filter_input(opname: str) -> bytes:
    """A TFLite CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED whose filter is a model input, not a buffer."""
    from tflite_builder import ModelBuilder

    b = ModelBuilder()
    per_channel = np.array([0.02, 0.03, 0.01, 0.04], np.float32)
    zeros = np.zeros(4, np.int64)
    if opname == "FULLY_CONNECTED":
        x = b.tensor([3, 12], np.int8, scale=0.05, zero_point=-3, name="x")
        w = b.tensor([4, 12], np.int8, scale=per_channel[:1], zero_point=zeros[:1], name="w")
        y = b.tensor([3, 4], np.int8, scale=0.1, zero_point=2, name="y")
        bias_scale = np.full(4, 0.05 * 0.02, np.float32)
    else:
        x = b.tensor([1, 6, 6, 4 if opname == "DEPTHWISE_CONV_2D" else 3], np.int8, scale=0.05, zero_point=-3, name="x")
        shape, dim = ([1, 3, 3, 4], 3) if opname == "DEPTHWISE_CONV_2D" else ([4, 3, 3, 3], 0)
        w = b.tensor(shape, np.int8, scale=per_channel, zero_point=zeros, quant_dim=dim, name="w")
        y = b.tensor([1, 6, 6, 4], np.int8, scale=0.1, zero_point=2, name="y")
        bias_scale = (0.05 * per_channel).astype(np.float32)
    bias = b.tensor([4], np.int32, scale=bias_scale, zero_point=zeros, data=np.array([10, -20, 30, 5], np.int32),
                    name="bias")
    options = {"fused_activation_function": "RELU"}
    if opname != "FULLY_CONNECTED":
        options.update(padding="SAME", stride_h=1, stride_w=1)
    if opname == "DEPTHWISE_CONV_2D":
        options["depth_multiplier"] = 1
    b.op(opname, [x, w, bias], [y], **options)
    return b.inputs([x, w]).outputs([y]).build()


@pytest.mark.parametrize("opname", ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"])
def test_filter_given_at_run_time_matches_litert(opname):
    """Regression: a conv whose weights are not a constant once failed to compile (AttributeError in
    kernel_for); it now runs the generic loop nest over the weights as they come."""
    model = _model_with_filter_input(opname)
    compiled = tosaic.compile(tosaic.import_tflite(model), target="cpu")
    for seed in range(2):
        inputs = random_inputs(model, seed=seed)
        assert_same(compiled.run(inputs), run_reference(model, inputs), f"{opname} seed {seed}")


def test_16x8_classifier_split_into_two_convs_matches_litert():
    """Regression (a 16x8 MobileNetV2 on the cpu target: KeyError on `tensor<1x1x1x1000xi32>`): a deep 16x8
    FULLY_CONNECTED whose accumulator can leave int32 is imported as two i8 x i8 convs of the input's high
    and low bytes, combined elementwise; fusion once gave that combination to both convs as their epilogue,
    so neither accumulator was stored."""
    from network_generator import _Net

    net = _Net(np.random.default_rng(5), "16x8 classifier, 1280 deep", int16=True)
    x = net.input([1, 1280], float(np.float32(0.05)), 0)
    net.b.outputs([net.fc(x, 24, logit_std=2.0, uniform=True, name="logits")])
    model = net.b.build()
    graph = tosaic.import_tflite(model)
    assert sum(op.name == "tosa.conv2d" for op in graph.ops) == 2, "the importer no longer splits this layer"
    compiled = tosaic.compile(graph, target="cpu")
    for seed in range(2):
        inputs = random_inputs(model, seed=seed)
        want = run_reference(model, inputs)
        assert len(np.unique(want[0])) > 12, want    # not saturated
        assert_same(compiled.run(inputs), want, f"seed {seed}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("row", [3, 200])   # in the first share, in the second
def test_a_division_by_zero_fails_the_run_on_every_thread(threads, row):
    """INTDIV by a zero in the input's values: the run raises an error naming the dispatch (as the
    interpreter refuses the same input) on whichever thread's share meets it, the dispatches after it do not
    wait for shares that will never be done (no hang), and the next run, with good values, is exact. Before
    the entry point had its own threads, the error was lost in the second thread (a wrong answer) and a
    SystemError in the first."""
    from tosaic.tosa.interpreter import TosaRuntimeError
    from tosaic.tosa.mlir import parse_mlir

    if threads > (os.cpu_count() or 1):
        pytest.skip("two threads need two cores: a compiled model runs on at most this machine's cores "
                    "(the one-thread case runs here)")
    text = """module {
      func.func @main(%a: tensor<256x256xi32>, %b: tensor<256x256xi32>) -> tensor<256x1xi32> {
        %0 = tosa.intdiv %a, %b : (tensor<256x256xi32>, tensor<256x256xi32>) -> tensor<256x256xi32>
        %1 = tosa.reduce_sum %0 {axis = 1 : i32} : (tensor<256x256xi32>) -> tensor<256x1xi32>
        %2 = tosa.intdiv %1, %1 : (tensor<256x1xi32>, tensor<256x1xi32>) -> tensor<256x1xi32>
        return %2 : tensor<256x1xi32>
      }
    }
    """
    graph = parse_mlir(text)
    model = tosaic.compile(graph, target="cpu", threads=threads)
    assert any(s.attrs.get("split") for s in model.plan.steps if s.kind == "kernel")
    a, b = np.full((256, 256), 7, np.int32), np.ones((256, 256), np.int32)
    b[row, 5] = 0
    for engine_model in (tosaic.compile(graph), model):
        with pytest.raises(TosaRuntimeError, match="divided by zero|intdiv by zero"):
            engine_model.run([a, b])
    with pytest.raises(TosaRuntimeError, match=r"dispatch_0 \(tosa.intdiv"):
        model.run([a, b])
    b[row, 5] = 1
    assert_same(model.run([a, b]), tosaic.compile(graph).run([a, b]))
