"""Deploy bundles: a compiled model as a directory a board runs with numpy and numba alone.

`export_bundle` writes the saved plan (plan.json, arrays.npz with the packed weights, kernels/ with the
generated kernel sources, which import nothing of tosaic; `digest`, the SHA-256 of each, checked before
anything runs), the runtime engine (`engine.py`, the very module
tosaic runs plans with), the command `run.py` (`bundle_run.py` here), and `manifest.json`: the model's
sha256, the tosaic version, the target with its features, and the inputs and outputs with their shapes,
dtypes and quantization.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

from tosaic.kernels import bundle_run, engine
from tosaic.kernels.engine import Plan

BUNDLE_FORMAT = 2   # 2: the plan carries a digest of its files, checked before a run


def tosaic_version() -> str:
    try:
        return metadata.version("tosaic")
    except metadata.PackageNotFoundError:
        return "unknown"


def export_bundle(plan: Plan, meta: dict, directory, source: dict | None = None) -> dict:
    """Write the bundle of `plan` into `directory` (created; files already there are replaced) and return
    its manifest. `meta` holds the inputs and outputs as the plan's `save` records them; `source` the model
    file's name and sha256, when the model came from a file."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / "manifest.json").is_file():
        raise FileExistsError(f"{directory} exists and is not a tosaic bundle; give an empty or new directory")
    plan.save(directory, meta)
    shutil.copyfile(engine.__file__, directory / "engine.py")
    shutil.copyfile(bundle_run.__file__, directory / "run.py")
    manifest = {
        "bundle_format": BUNDLE_FORMAT,
        "model": source or {},
        "tosaic_version": tosaic_version(),
        "target": plan.target,
        "inputs": meta["inputs"],
        "outputs": meta["outputs"],
        "dispatches": plan.dispatch_count,
        "kernels": plan.kernel_count,
        "arena_bytes": plan.arena_bytes,
        "weight_bytes": sum(int(c.nbytes) for c in plan.consts),
        "requires": ["numpy", "numba"],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
