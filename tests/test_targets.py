"""Targets as data: parsing the target string, choosing kernels from the description (never from the
machine at hand), recording the target in the plan, and refusing to run a plan on a machine that lacks its
architecture or features, with the missing ones named."""

from __future__ import annotations

import json

import numpy as np
import pytest

import model_zoo
import tosaic
from tosaic.cli import main
from tosaic.kernels.target import KNOWN_CPUS, CpuTarget, TargetError, host, missing_features, parse_target

MODEL = model_zoo.DATA / "op_conv2d_s1_same_relu.tflite"


def test_cpu_is_this_machine():
    assert parse_target("cpu") == host()
    assert host().arch in KNOWN_CPUS


@pytest.mark.parametrize("spec,arch,features", [
    ("cpu:aarch64:cortex-a72", "aarch64", {"neon"}),
    ("cpu:aarch64:cortex-a76", "aarch64", {"neon", "dotprod"}),
    ("cpu:aarch64:cortex-a78ae", "aarch64", {"neon", "dotprod"}),
    ("cpu:x86_64:znver5", "x86_64", {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512vbmi",
                                     "avxvnni"}),
])
def test_named_cpus(spec, arch, features):
    target = parse_target(spec)
    assert (target.arch, target.features, target.name) == (arch, frozenset(features), spec)
    assert CpuTarget.from_dict(target.as_dict()) == target


@pytest.mark.parametrize("spec", ["cpu:aarch64:cortex-a99", "gpu", "cpu:arm:cortex-a76", "cpu:x86_64"])
def test_unknown_targets_list_the_known_ones(spec):
    with pytest.raises(TargetError, match="known targets: interp, cpu, cpu:x86_64:x86-64.*cpu:aarch64:cortex-a76"):
        parse_target(spec)
    with pytest.raises(TargetError, match="unknown target"):
        tosaic.compile(MODEL, target=spec)


def test_cli_reports_an_unknown_target(capsys):
    assert main(["compile", str(MODEL), "-o", "/nonexistent", "--target", "cpu:aarch64:cortex-a99"]) == 2
    assert "unknown target 'cpu:aarch64:cortex-a99'" in capsys.readouterr().err


def test_missing_features_against_a_described_machine():
    zen3 = CpuTarget("x86_64", "znver3", frozenset({"avx2"}))
    assert missing_features(parse_target("cpu:x86_64:znver5"), zen3) == \
        ["avx512bw", "avx512f", "avx512vbmi", "avx512vl", "avx512vnni", "avxvnni"]
    assert missing_features(parse_target("cpu:x86_64:x86-64-v3"), zen3) == []
    assert missing_features(parse_target("cpu:aarch64:cortex-a76"), zen3) == \
        ["the aarch64 architecture (this machine is x86_64)"]
    a72 = parse_target("cpu:aarch64:cortex-a72")
    assert missing_features(parse_target("cpu:aarch64:cortex-a76"), a72) == ["dotprod"]


def _templates(model) -> set[str]:
    return {s.template for s in model.plan.steps if s.kind == "kernel"}


def test_kernels_follow_the_target_not_the_machine():
    big = model_zoo.DATA / "arch_ds_cnn_kws_49x10.tflite"
    avx2 = tosaic.compile(big, target="cpu:x86_64:x86-64-v3")
    arm = tosaic.compile(big, target="cpu:aarch64:cortex-a76")
    assert "gemm_avx2" in _templates(avx2)
    assert not any("avx2" in t for t in _templates(arm))
    assert not any("x86" in source for source in arm.plan.sources.values())
    assert arm.plan.target == parse_target("cpu:aarch64:cortex-a76").as_dict()


def test_a_plan_for_another_machine_is_saved_but_not_run(tmp_path):
    model = tosaic.compile(MODEL, target="cpu:aarch64:cortex-a76")
    x = np.zeros(model.inputs[0].shape, model.inputs[0].dtype)
    if host().arch == "aarch64" and "dotprod" in host().features:
        pytest.skip("this machine runs cortex-a76 code")
    with pytest.raises(TargetError, match="compiled for cpu:aarch64:cortex-a76.*lacks the aarch64 architecture"):
        model.run([x])
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "plan.json").read_text())
    assert doc["target"] == {"family": "cpu", "arch": "aarch64", "cpu": "cortex-a76", "features": ["dotprod", "neon"],
                             "requant": "neon", "threads": 4}
    with pytest.raises(TargetError, match="lacks the aarch64 architecture"):
        tosaic.load(tmp_path / "m")


def test_saved_plan_records_the_host_target(tmp_path):
    tosaic.compile(MODEL, target="cpu").save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "plan.json").read_text())
    assert CpuTarget.from_dict(doc["target"]) == host()
    assert tosaic.load(tmp_path / "m").plan.target == host().as_dict()
