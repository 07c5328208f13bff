"""Make test-side helpers (tflite_builder, litert_ref) importable from tests; fix hypothesis's examples in CI.

In CI (CI set in the environment) hypothesis draws the same examples every run, so that a submission lands
or not on its own merits; on a developer's machine every run explores new examples.
"""

import os
import sys

from hypothesis import settings

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
