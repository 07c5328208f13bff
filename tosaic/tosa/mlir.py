"""MLIR text form of TOSA graphs (being written)."""


class MlirParseError(ValueError):
    pass


def print_graph(graph, generic=False, elide_constants=False):
    raise NotImplementedError("MLIR printer in progress")


def parse_mlir(text):
    raise NotImplementedError("MLIR parser in progress")
