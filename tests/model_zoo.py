"""The models in tests/data, imported once per test session, split into supported and refused ones."""

from functools import lru_cache
from pathlib import Path

import tosaic

DATA = Path(__file__).parent / "data"
ALL_MODELS = sorted(DATA.glob("*.tflite"))


@lru_cache(maxsize=None)
def import_result(path: Path):
    """(graph, None) when the model imports, (None, error) when tosaic refuses it up front."""
    try:
        return tosaic.import_tflite(path), None
    except tosaic.UnsupportedModelError as error:
        return None, error


SUPPORTED = [p for p in ALL_MODELS if import_result(p)[0] is not None]
REFUSED = [p for p in ALL_MODELS if import_result(p)[0] is None]


def graph_of(path: Path):
    return import_result(path)[0]
