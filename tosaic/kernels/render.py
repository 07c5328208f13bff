"""Scalar bodies to Numba source: a table from expression nodes to source text.

`BodyRenderer` walks a body (operands first) and emits one SSA statement per node. Integer values are
Python ints (int64 in Numba); a node narrower than i64 whose result can leave its type wraps through the
matching numpy integer constructor (truncation, like the interpreter's `narrow`). Every constant becomes a
runtime parameter (`p<k>`), so one kernel serves every layer that differs only in zero points,
multipliers, shifts or bounds.
"""

from __future__ import annotations

from tosaic.ir import INTEGER_BITS, integer_range
from tosaic.lowering import scalar as S

# Numba helpers every generated module starts with (after `import numpy as np` and `numba`).
PRELUDE = '''
@numba.njit(cache=True, nogil=True)
def _wrap48(x):
    return ((x + (1 << 47)) & ((1 << 48) - 1)) - (1 << 47)


@numba.njit(cache=True, nogil=True)
def _apply_scale(v, m, s):
    return (v * m + (1 << (s - 1))) >> s


@numba.njit(cache=True, nogil=True)
def _apply_scale_dr(v, m, s):
    r = 1 << (s - 1)
    if s > 31:
        r += (1 << 30) if v >= 0 else -(1 << 30)
    return (v * m + r) >> s


@numba.njit(cache=True, nogil=True)
def _clz32(x):
    u = x & 0xFFFFFFFF
    n = 32
    while u != 0:
        u >>= 1
        n -= 1
    return n


@numba.njit(cache=True, nogil=True)
def _tdiv(a, b):
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


@numba.njit(cache=True, nogil=True)
def _f2i(x, lo, hi):
    r = np.rint(np.float64(x))
    return np.int64(min(max(r, lo), hi))
'''

_WRAP = {"i8": "np.int64(np.int8({}))", "i16": "np.int64(np.int16({}))", "i32": "np.int64(np.int32({}))",
         "i48": "_wrap48({})", "i64": "{}"}
_OVERFLOWING = {"add", "sub", "mul", "shl", "neg", "abs", "div", "lshr"}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "shl": "<<", "ashr": ">>", "and": "&", "or": "|", "xor": "^",
          "eq": "==", "gt": ">", "ge": ">=", "floordiv": "//", "mod": "%"}
NUMBA_TYPES = {"i1": "np.bool_", "i8": "np.int64", "i16": "np.int64", "i32": "np.int64", "i48": "np.int64",
               "i64": "np.int64", "f16": "np.float32", "f32": "np.float32"}


class BodyRenderer:
    """Renders scalar bodies into statements appended to `lines`.

    `read(i, e)` returns source for input i at its indexing map; `array(i)` the array name of input i (for
    `extract`); `index[d]` the source of loop dimension d; `outs[i]` the name of output i's running value.
    `params` collects (value, dtype) of constants, shared by every body of one kernel."""

    def __init__(self, read, array, index, outs=(), params=None, prefix="t"):
        self.read, self.array, self.index, self.outs = read, array, index, list(outs)
        self.params = [] if params is None else params
        self.lines: list[str] = []
        self.prefix = prefix
        self.count = 0

    def param(self, value, dtype: str) -> str:
        self.params.append((value, dtype))
        return f"p{len(self.params) - 1}"

    def render(self, expr: S.Expr) -> str:
        names = {}
        for e in S.nodes(expr):
            names[e] = self._node(e, [names[s] for s in e.src])
        return names[expr]

    def _emit(self, text: str) -> str:
        name = f"{self.prefix}{self.count}"
        self.count += 1
        self.lines.append(f"{name} = {text}")
        return name

    def _node(self, e: S.Expr, a: list[str]) -> str:
        op, dtype = e.op, e.dtype
        if op == "const":
            return self.param(e.arg, dtype)
        if op == "index":
            return self.index[e.arg]
        if op == "out":
            return self.outs[e.arg]
        if op == "in":
            return self._emit(self.read(e.arg, e))
        if op == "extract":
            i, pad = e.arg
            arr = self.array(i)
            inside = " and ".join(f"0 <= {x} < {arr}.shape[{k}]" for k, x in enumerate(a))
            return self._emit(f"{arr}[{', '.join(a)}] if {inside} else {self.param(pad, dtype)}")
        if op == "cast":
            return self._emit(self._cast(a[0], e.src[0].dtype, dtype))
        if op == "select":
            return self._emit(f"{a[1]} if {a[0]} else {a[2]}")
        if op == "apply_scale":
            return self._emit(f"{'_apply_scale_dr' if e.arg else '_apply_scale'}({a[0]}, {a[1]}, {a[2]})")
        if S.is_float(dtype):
            text = self._float(op, a)
        else:
            text = self._int(op, a, e)
        return self._emit(text)

    def _cast(self, x: str, src: str, dst: str) -> str:
        if dst == "i1":
            return f"{x} != 0"
        if S.is_float(dst):
            return f"np.float32({x})"
        if S.is_float(src):
            low, high = integer_range(dst)
            return f"_f2i({x}, {low}, {high})"
        if src == "i1":
            return f"np.int64({x})"
        if INTEGER_BITS.get(src, 64) <= INTEGER_BITS[dst] and src != "i1":
            return f"np.int64({x})"
        return _WRAP[dst].format(x)

    @staticmethod
    def _float(op: str, a: list[str]) -> str:
        if op in ("floor", "ceil"):
            return f"np.float32(np.{op}({a[0]}))"
        if op == "neg":
            return f"-{a[0]}"
        if op in ("min", "max"):
            return f"{op}({a[0]}, {a[1]})"
        return f"{a[0]} {_INFIX[op]} {a[1]}"

    @staticmethod
    def _int(op: str, a: list[str], e: S.Expr) -> str:
        dtype = e.dtype
        if op == "not":
            return f"not {a[0]}" if dtype == "i1" else f"~{a[0]}"
        if dtype == "i1" and op in ("and", "or", "xor"):
            return f"{a[0]} {_INFIX[op]} {a[1]}"
        if op in ("min", "max"):
            return f"{op}({a[0]}, {a[1]})"
        if op == "clz":
            return f"_clz32({a[0]})"
        if op == "neg":
            text = f"-{a[0]}"
        elif op == "abs":
            text = f"abs({a[0]})"
        elif op == "div":
            text = f"_tdiv({a[0]}, {a[1]})"
        elif op == "lshr":
            bits = INTEGER_BITS[e.src[0].dtype]
            text = f"({a[0]} & {(1 << bits) - 1}) >> {a[1]}"
        else:
            text = f"{a[0]} {_INFIX[op]} {a[1]}"
        if op in _OVERFLOWING and dtype != "i64":
            return _WRAP[dtype].format(text)
        return text


def map_source(coeffs, offset_param: str, index) -> str:
    """One row of an affine map as source: `c0*d0 + c1*d1 + offset`."""
    terms = [(index[j] if c == 1 else f"{c} * {index[j]}") for j, c in enumerate(coeffs) if c]
    terms.append(offset_param)
    return " + ".join(terms)
