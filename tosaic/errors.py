"""The root of every error tosaic raises on purpose: one message for a person, naming the problem.

Each stage's error (TFLiteFormatError, UnsupportedModelError, LegalizationError, VerifyError, LoweringError,
TosaRuntimeError, MlirParseError, TargetError) derives from it and from the built-in class it
has always been (ValueError or RuntimeError), so `except tosaic.TosaicError` catches exactly tosaic's own
refusals, and anything else that escapes is a bug. (The runtime engine's MachineError stays apart: the engine
runs standalone in deploy bundles, without the rest of tosaic.)
"""


class TosaicError(Exception):
    """An input, model or machine tosaic refuses, with a message saying where and why."""
