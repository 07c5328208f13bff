"""The fuzzing harness's fixed-seed sample (issue 13, item 2), as CI runs it: mutated models of tests/data
through tosaic and LiteRT BUILTIN_REF (in worker processes that may abort), mutated TOSA text through the
MLIR parser, damaged saved models through `tosaic.load`. No crash, no hang, no disagreement with LiteRT,
no acceptance of a model LiteRT refuses that the harness's EXPLAINED list does not name.
`python scripts/fuzz.py --cases 100000` is the long run.
"""

from __future__ import annotations

import importlib
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
CASES, SEED = 2000, 13   # about 30 s alone on 2 cores


def test_fixed_seed_sample(monkeypatch):
    # Imported by name from scripts/: the harness's worker processes (spawned) import it the same way.
    monkeypatch.syspath_prepend(str(SCRIPTS))
    harness = importlib.import_module("fuzz")
    report = harness.fuzz(CASES, SEED)
    print(harness.markdown(report))
    assert not report["failures"], "\n".join(f"case {f['case']} {f['model']} [{f['mutation']}] {f['outcome']}: "
                                             f"{f['detail']}" for f in report["failures"][:20])
    outcomes = {outcome for row in report["table"].values() for outcome in row}
    # The sample reaches every family and both verdicts: agreements, refusals, MLIR runs, refused damage.
    assert {"agree", "both refuse", "ran", "refused"} <= outcomes
    assert sum(sum(row.values()) for row in report["table"].values()) == CASES
