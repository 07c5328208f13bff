"""Make test-side helpers (tflite_builder, litert_ref) importable from tests; fix hypothesis's examples in CI;
run CUDA kernels in Numba's simulator where no GPU driver is found.

In CI (CI set in the environment) hypothesis draws the same examples every run, so that a submission lands
or not on its own merits; on a developer's machine every run explores new examples.
"""

import ctypes.util
import os
import sys

from hypothesis import settings

# The CUDA tests run their kernels on a GPU where a driver is installed, else in Numba's CUDA simulator,
# which numba-cuda chooses when it is first imported.
if ctypes.util.find_library("cuda") is None:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
