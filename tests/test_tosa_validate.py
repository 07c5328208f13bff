"""Our TOSA text checked by Arm's tools (tosa-tools in .tosa-venv, see scripts/setup_tosa_tools.sh).

- every model that imports passes `tosa-opt --tosa-validate` (strict, pro_int + pro_fp with the doubleround,
  int16 and variable extensions), and so does every sample graph of tests/test_mlir.py;
- tosa-opt prints our pretty and generic text exactly as we do, and our parser reads tosa-opt's generic
  output back to the same graph;
- Arm's conformance generator's graphs (flatbuffers deserialized by tosa-opt into generic MLIR) parse, and
  our interpreter and (on the first few of each case) the compiled cpu target compute the reference model's
  bits on them, rank-0 tensors included.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tosaic
from model_zoo import graph_of
from tosa_tools import TOOLS, TOSA_OPT, TOSA_TOOLS_MARKS
from test_mlir import MODELS, SAMPLE_CASES, sample_graph
from tosaic.ir import Graph
from tosaic.tosa.interpreter import interpret
from tosaic.tosa.mlir import parse_mlir, print_graph

pytestmark = TOSA_TOOLS_MARKS

TARGET = "--tosa-attach-target=profiles=pro_int,pro_fp extensions=doubleround,int16,variable specification_version=1.0"
VALIDATE = "--tosa-validate=strict-op-spec-alignment"


def tosa_opt(source: Path, *flags: str, output: Path | None = None) -> str:
    """Run tosa-opt on `source`; returns what it printed (`-o` keeps tool warnings out of the MLIR)."""
    out = output or source.with_suffix(".out.mlir")
    result = subprocess.run([str(TOSA_OPT), str(source), *flags, "-o", str(out)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"tosa-opt {' '.join(flags)} rejected {source.name}:\n{result.stderr[-4000:]}"
    return out.read_text()


def check_with_tosa_opt(graph, tmp_path: Path) -> None:
    pretty = print_graph(graph)
    generic = print_graph(graph, generic=True)
    source = tmp_path / "pretty.mlir"
    source.write_text(print_graph(graph, locs=True))  # with locations: tosa-opt accepts our loc(...) too
    tosa_opt(source, TARGET, VALIDATE, output=tmp_path / "validated.mlir")
    assert tosa_opt(source).rstrip("\n") == pretty.rstrip("\n")
    # tosa-opt's generic form of our text reads back to our graph.
    their_generic = tosa_opt(source, "--mlir-print-op-generic", output=tmp_path / "their_generic.mlir")
    assert print_graph(parse_mlir(their_generic)) == pretty
    # Our generic form is tosa-opt's, and tosa-opt reads it back to our pretty form.
    (tmp_path / "generic.mlir").write_text(generic)
    assert tosa_opt(tmp_path / "generic.mlir", "--mlir-print-op-generic").rstrip("\n") == generic.rstrip("\n")
    assert tosa_opt(tmp_path / "generic.mlir").rstrip("\n") == pretty.rstrip("\n")


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_model_validates(path, tmp_path):
    check_with_tosa_opt(graph_of(path), tmp_path)


def test_sample_graphs_validate(tmp_path):
    """All sample graphs of test_mlir.py (every declared op) side by side in one function: one tosa-opt run
    per check instead of one per sample."""
    combined = Graph("main")
    for name, index in SAMPLE_CASES:
        graph, _ = sample_graph(name, index)
        for op in graph.ops:
            op.loc = f"sample {name} #{index}"
        combined.inputs += graph.inputs
        combined.input_names += [f"{name}#{index}:{n}" for n in graph.input_names]
        combined.ops += graph.ops
        combined.outputs += graph.outputs
        combined.output_names += [f"{name}#{index}:{n}" for n in graph.output_names]
    check_with_tosa_opt(combined, tmp_path)


# ------------------------------------------------------------------------------------- conformance

# (operator, generator arguments): small shapes, one profile, positive tests only.
CONFORMANCE = {
    "conv2d_i8": ["--filter", "^conv2d$", "--target-dtype", "int8", "--target-shape", "1,5,5,2",
                  "--max-conv-padding", "0", "--max-conv-stride", "1", "--max-conv-dilation", "1",
                  "--conv-kernel", "3,3"],
    "depthwise_conv2d_i16": ["--filter", "^depthwise_conv2d$", "--target-dtype", "int16", "--target-shape",
                             "1,4,4,2", "--max-conv-padding", "0", "--max-conv-stride", "1",
                             "--max-conv-dilation", "1", "--conv-kernel", "2,2"],
    "rescale_i32": ["--filter", "^rescale$", "--target-dtype", "int32", "--target-shape", "1,4,3"],
    "table_i16": ["--filter", "^table$", "--target-dtype", "int16", "--target-shape", "2,7"],
    "avg_pool2d_i8": ["--filter", "^avg_pool2d$", "--target-dtype", "int8", "--target-shape", "1,4,4,3",
                      "--max-pooling-kernel", "2", "--max-pooling-stride", "2", "--max-pooling-padding", "0"],
    "mul_i32": ["--filter", "^mul$", "--target-dtype", "int32", "--target-shape", "2,3,4"],
    "add_i32_rank0": ["--filter", "^add$", "--target-dtype", "int32", "--target-rank", "0"],
    "table_i8_rank0": ["--filter", "^table$", "--target-dtype", "int8", "--target-rank", "0"],
}
COMPILED_PER_CASE = 6     # tests of each case also run on the cpu target (each compiles its kernels)


@pytest.mark.parametrize("case", sorted(CONFORMANCE))
def test_conformance_graphs_parse_and_match_the_reference_model(case, tmp_path):
    """Arm's generator writes test.tosa + desc.json; tosa-opt deserializes it into generic MLIR, which we
    parse; the reference model's output is the bits our interpreter must produce on the same inputs."""
    generate = [str(TOOLS / "tosa_verif_build_tests"), "-o", str(tmp_path), "--profile", "tosa-pro-int",
                "--extension", "tosa-ext-int16", "tosa-ext-doubleround", "--tosa-version", "1.0.2",
                "--test-type", "positive", *CONFORMANCE[case]]
    result = subprocess.run(generate, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    tests = sorted(d.parent for d in tmp_path.rglob("desc.json"))
    assert tests, f"the generator wrote no tests for {case}"
    for test in tests[:24]:
        desc = json.loads((test / "desc.json").read_text())
        text = _deserialize(test / desc["tosa_file"], test / "test.mlir")
        graph = parse_mlir(text)
        assert print_graph(parse_mlir(print_graph(graph))) == print_graph(graph)
        assert not case.endswith("rank0") or graph.inputs[0].type.rank == 0, text
        inputs = [np.load(test / name) for name in desc["ifm_file"]]
        reference = subprocess.run([str(TOOLS / "tosa_reference_model"), "--test_desc", str(test / "desc.json")],
                                   capture_output=True, text=True, timeout=300, cwd=test)
        assert reference.returncode == 0, reference.stdout[-2000:] + reference.stderr[-2000:]
        expected = [np.load(test / name) for name in desc["ofm_file"]]
        runs = {"interp": interpret(graph, inputs)}
        if test in tests[:COMPILED_PER_CASE]:
            runs["cpu"] = tosaic.compile(graph, target="cpu", threads=1).run(inputs)
        for target, outputs in runs.items():
            for ours, theirs in zip(outputs, expected, strict=True):
                assert ours.shape == theirs.shape, (test.name, target)
                assert np.array_equal(ours.astype(np.int64), theirs.astype(np.int64)), \
                    f"{test.name} on {target}: {int((ours.astype(np.int64) != theirs.astype(np.int64)).sum())} differ"


def _deserialize(flatbuffer: Path, output: Path) -> str:
    result = subprocess.run([str(TOSA_OPT), "-", "--tosa-deserialize", f"--tosa-deserialize-filename={flatbuffer}",
                             "--mlir-print-op-generic", "-o", str(output)], input="module {}", capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return output.read_text()
