"""Compiled plans kept by what determines them: the model file's bytes, the target and tosaic's own code.

A warm `tosaic.compile` of a file compiled before loads its plan (steps, packed weights, kernel sources)
from `$TOSAIC_CACHE_DIR/plans/<key>` instead of importing the TFLite file, lowering, fusing and generating
kernels again (EfficientNet-B0: 0.4 s of TFLite import and 0.5 s of planning, of a 1 s warm compile). The
key hashes every source file of the tosaic package, so a changed compiler never reads a plan an older one
made. An entry is written whole into a temporary directory, with a digest of its files, and renamed into
place; one that cannot be read or does not match its digest is removed and the plan made again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tosaic.kernels.engine import Plan, cache_dir


@functools.cache
def code_fingerprint() -> str:
    """A hash of every Python source of the tosaic package, with the numpy and tflite versions it ran on."""
    import tflite

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"numpy {np.__version__} tflite {getattr(tflite, '__version__', '?')}".encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def plan_key(model: bytes, suffix: str, target: dict) -> str:
    """The cache key of a model file's bytes (and its suffix, which selects the importer) for `target`."""
    digest = hashlib.sha256(code_fingerprint().encode())
    digest.update(suffix.encode() + b"\0" + json.dumps(target, sort_keys=True).encode() + b"\0")
    digest.update(model)
    return digest.hexdigest()


def _entry(key: str) -> Path:
    return cache_dir().parent / "plans" / key


def load_plan(key: str) -> tuple[Plan, dict] | None:
    """The plan and metadata stored under `key`, or None; an entry whose files do not match the digest
    stored with them (a flipped byte of a weight included), or that cannot be read, is removed."""
    entry = _entry(key)
    if not (entry / "plan.json").is_file():
        return None
    try:
        return Plan.load(entry)   # checks every file against the digest the plan was saved with
    except Exception:   # any damage (truncated, altered, foreign, half-deleted) means: make the plan again
        shutil.rmtree(entry, ignore_errors=True)
        return None


def store_plan(key: str, plan: Plan, meta: dict) -> None:
    """Keep `plan` under `key`; where the cache cannot be written the compile goes on without it."""
    entry = _entry(key)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".staging-"))
    except OSError:
        return
    try:
        plan.save(staging, meta)
        os.rename(staging, entry)
    except OSError:   # another process stored it first, or the disk is full: this one's copy goes
        shutil.rmtree(staging, ignore_errors=True)
