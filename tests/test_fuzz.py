"""The fuzzing harness's fixed-seed sample (issue 13, item 2), as CI runs it: mutated models of tests/data
through tosaic and LiteRT BUILTIN_REF (in worker processes that may abort), mutated TOSA text through the
MLIR parser, damaged saved models through `tosaic.load`. No crash, no hang, no disagreement with LiteRT,
no acceptance of a model LiteRT refuses that the harness's EXPLAINED list does not name.
`python scripts/fuzz.py --cases 100000` is the long run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fuzz.py"
CASES, SEED = 2000, 13


def load_harness():
    spec = importlib.util.spec_from_file_location("tosaic_fuzz", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixed_seed_sample():
    harness = load_harness()
    report = harness.fuzz(CASES, SEED)
    print(harness.markdown(report))
    assert not report["failures"], "\n".join(f"case {f['case']} {f['model']} [{f['mutation']}] {f['outcome']}: "
                                             f"{f['detail']}" for f in report["failures"][:20])
    outcomes = {outcome for row in report["table"].values() for outcome in row}
    # The sample reaches every family and both verdicts: agreements, refusals, MLIR runs, refused damage.
    assert {"agree", "both refuse", "ran", "refused"} <= outcomes
    assert sum(sum(row.values()) for row in report["table"].values()) == CASES
