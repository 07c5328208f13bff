"""The TOSA 1.0 dialect: op declarations, builder, reference interpreter and MLIR text form."""

from tosaic.ir import set_graph_formatter
from tosaic.tosa.mlir import print_graph

set_graph_formatter(print_graph)
