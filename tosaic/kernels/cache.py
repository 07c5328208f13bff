"""The on-disk kernel cache: generated modules are files named by the hash of their source.

A module is written once, atomically, and never rewritten, then imported as a real file so that Numba's
`cache=True` can store the machine code beside it (`@njit(cache=True)` on source run with `exec` has no
file to locate). A later process finds both the source and the compiled code and compiles nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """`$TOSAIC_CACHE_DIR/kernels`, by default `~/.cache/tosaic/kernels`."""
    root = os.environ.get("TOSAIC_CACHE_DIR") or Path.home() / ".cache" / "tosaic"
    return Path(root) / "kernels"


def module_name(key: str) -> str:
    return f"tosaic_kernel_{key}"


def load_kernel(key: str, source: str):
    """The `kernel` function of the generated module `key` with `source`, written to the cache if absent."""
    name = module_name(key)
    module = sys.modules.get(name)
    if module is None:
        directory = cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.py"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(source)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module.kernel
