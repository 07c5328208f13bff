"""Where Arm's tosa-tools live for the tests (their own venv, made by scripts/setup_tosa_tools.sh)."""

from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / ".tosa-venv" / "bin"
TOSA_OPT = TOOLS / "tosa-opt"

# Tests that need Arm's tools are marked `tosa_tools` and skipped on a machine where the setup script never ran.
TOSA_TOOLS_MARKS = [pytest.mark.tosa_tools,
                    pytest.mark.skipif(not TOSA_OPT.exists(), reason=f"{TOSA_OPT} is absent (scripts/setup_tosa_tools.sh)")]


def requires_tosa_tools(test):
    for mark in TOSA_TOOLS_MARKS:
        test = mark(test)
    return test
