"""Scalar bodies to Numba source: tables from expression nodes to source text.

`BodyRenderer` walks a body (operands first) and emits one SSA statement per node, arithmetic from the
tables `FLOAT_OPS` and `INT_OPS`, whose entries a target may override, and requantization by the target's
strategy (kernels/requant.py). Integer values are
Python ints (int64 in Numba); a node narrower than i64 whose result can leave its type wraps through the
matching numpy integer constructor (truncation, like the interpreter's `narrow`). Every constant becomes a
runtime parameter (`p<k>`), so one kernel serves every layer that differs only in zero points,
multipliers, shifts or bounds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tosaic.ir import INTEGER_BITS, integer_range
from tosaic.kernels.requant import float64_applies, neon_applies
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
    a, b = np.int64(a), np.int64(b)  # loads stay int32, whose abs(-2^31) would wrap
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


@numba.njit(cache=True, nogil=True)
def _f2i(x, lo, hi):
    if x != x:
        return 0
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


class _Names(dict):
    """The source names of a body's rendered nodes; a constant, never stored, reads as a new parameter."""

    def __init__(self, renderer: "BodyRenderer"):
        super().__init__()
        self.renderer = renderer

    def __missing__(self, e: S.Expr) -> str:
        if e.op != "const":
            raise KeyError(e)
        return self.renderer.param(e.arg, e.dtype)


class BodyRenderer:
    """Renders scalar bodies into statements appended to `lines`.

    `read(i, e)` returns source for input i at its indexing map; `array(i)` the array name of input i (for
    `extract`); `index[d]` the source of loop dimension d; `outs[i]` the name of output i's running value.
    `params` collects (value, dtype) of constants, shared by every body of one kernel."""

    def __init__(self, read, array, index, outs=(), params=None, prefix="t", inputs=None, requant="float64",
                 overrides=None, int_load="{}"):
        self.read, self.array, self.index, self.outs = read, array, index, list(outs)
        # How an integer element loaded by a gather reads: CUDA's simulator widens it to int64 (kernels/cuda.py).
        self.int_load = int_load
        # The renderer tables, with a target's entries over them: {"float": {...}, "int": {...}}.
        self.float_ops = {**FLOAT_OPS, **(overrides or {}).get("float", {})}
        self.int_ops = {**INT_OPS, **(overrides or {}).get("int", {})}
        # The target's requantization strategy (kernels/requant.py): "float64" (x86), "neon" (aarch64: 32-bit
        # lanes), "int64" (the definition only).
        self.requant = requant
        self.params = [] if params is None else params
        self.lines: list[str] = []
        self.prefix = prefix
        self.count = 0
        self.ranges: dict = {}
        # `inputs`, when given, knows the kernel's inputs: `constant(i)` (the array of a constant input
        # or None) and `derived(i, array)` (source reading a new constant laid out like input i).
        self.inputs = inputs

    def param(self, value, dtype: str) -> str:
        self.params.append((value, dtype))
        return f"p{len(self.params) - 1}"

    def render(self, expr: S.Expr) -> str:
        # A constant becomes a new parameter at each use, not one per distinct value: kernels whose
        # constants differ only in which of them happen to be equal (a shift's rounding term equal to a zero
        # point) then have one source, and compile once (EfficientNet-B0's residual-add GEMMs: 5 sources
        # with the same structure).
        names = _Names(self)
        ranges = self.ranges = S.value_ranges(expr)
        requants = {}
        if self.inputs is not None:
            uses = _use_counts(expr)
            for e in S.nodes(expr):
                match = _match_requant(e, ranges, uses, self.inputs, self.requant)
                if match is not None:
                    requants[e] = match
        absorbed = {n for m in requants.values() for n in m.interior}
        scales = {}
        if self.inputs is not None and self.requant == "float64":
            for e in S.nodes(expr):
                match = None if e in absorbed else _match_float_scale(e, ranges, uses, self.inputs)
                if match is not None:
                    scales[e] = match
                    absorbed |= match.interior - {e}
        for e in S.nodes(expr):
            if e in absorbed or e.op == "const":
                continue
            if e in requants:
                emit = self._neon_requant if self.requant == "neon" else self._float_requant
                names[e] = emit(requants[e], names)
                continue
            if e in scales:
                names[e] = self._float_scale(scales[e], names)
                continue
            if e.op == "cast" and _keeps_values(e, ranges):
                # Loads stay narrow types in Numba, which is what lets LLVM keep vector lanes narrow.
                names[e] = names[e.src[0]]
                continue
            names[e] = self._node(e, [names[s] for s in e.src])
        return names[expr]

    def render_before_lookup(self, expr: S.Expr) -> tuple[str, str | None]:
        """`render(expr)`, or, where `expr` ends in an int8 TABLE gather (index x + 128 with x an int8),
        (x, the table's array name): the caller stores x and gathers in a loop of its own. LLVM does not
        vectorize gathers on x86 (its cost model calls them slow), and one gather keeps every vectorizable
        step before it scalar too: the SiLU epilogue of a 112x112x96 GEMM took 1.7 ms with the gather in
        its loop and 0.37 ms split."""
        ranges = S.value_ranges(expr)
        e = expr
        while e.op == "cast" and _keeps_values(e, ranges):
            e = e.src[0]
        if e.op != "extract" or expr.dtype != "i8" or len(e.src) != 1 or self.inputs is None:
            return self.render(expr), None
        i, _ = e.arg
        (index,) = e.src
        shape = self.inputs.shape(i)
        r = ranges.get(index)
        if self.inputs.constant(i) is None or len(shape) != 1 or r is None or r[0] < 0 or r[1] > 255 \
                or shape[0] < 256:
            return self.render(expr), None
        return self._emit(f"{self.render(index)} - 128"), self.array(i)

    def _float_requant(self, m: "Requant", names) -> str:
        """`clamp(apply_scale(v, mult, shift) + zp, lo, hi)` in float64 (see `_match_requant`): AVX2 has
        no 64-bit multiply or per-lane arithmetic shift, but it has four float64 lanes."""
        f = self._scaled(names[m.value], m.scale, m.round_term)
        f = self._emit(f"min(max({f}, {self.param(m.low - m.zp, 'f64')}), {self.param(m.high - m.zp, 'f64')})")
        # The clamped value fits int32 whenever the bounds do: converting to int32 is one AVX2 instruction
        # for four lanes, to int64 it is four scalar conversions. Above a lower bound of 0 (ReLU-like
        # clamps) truncation is the floor, and the rounding instruction goes.
        narrow = max(abs(m.low - m.zp), abs(m.high - m.zp)) < 1 << 31 and -(1 << 31) <= m.low <= m.high < 1 << 31
        floored = f if m.low - m.zp >= 0 else f"np.floor({f})"
        if narrow:
            # The result lies in [low, high], so the zero point is added in int32 lanes too.
            return self._emit(f"np.int32(np.int32({floored}) + {self.param(m.zp, 'i64')})")
        return self._emit(f"np.int64({floored}) + {self.param(m.zp, 'i64')}")

    def _neon_requant(self, m: "Requant", names) -> str:
        """`clamp(apply_scale(v, mult, shift) + zp, lo, hi)` in 32-bit lanes (`requant.neon_model`). LLVM
        selects NEON `sqdmulh` (floor(v*mult / 2^31)) for `min((sext(v) * sext(mult)) >> 31, INT32_MAX)`;
        sqrdmulh adds bit 30 of the product, which the wrapping 32-bit `mul` holds; the rounding shift by e
        is `(x >> e) + bit e-1 of x`, which cannot overflow. Every step stays in int32, four lanes a register."""
        v = self._emit(f"np.int32({names[m.value]})")
        mult = self._int32_constant(m.multipliers, m)
        e_values = m.shifts - 31
        high = self._emit(f"np.int32(min((np.int64({v}) * np.int64({mult})) >> 31, 2147483647))")
        if m.double_round or not e_values.any():
            low = self._emit(f"np.int32(np.int64({v}) * np.int64({mult}))")
            high = self._emit(f"np.int32({high} + (({low} >> 30) & 1))")
        if m.double_round and e_values.any():
            fix = self._int32_constant((e_values > 0).astype(np.int64), m)
            high = self._emit(f"np.int32({high} - (({high} >> 31) & {fix}))")
        e = self._int32_constant(e_values, m)
        below = self._int32_constant(np.maximum(e_values - 1, 0), m)
        some = self._int32_constant((e_values > 0).astype(np.int64), m)
        shifted = self._emit(f"np.int32(({high} >> {e}) + (({high} >> {below}) & {some}))")
        low, top = self.param(m.low - m.zp, "i64"), self.param(m.high - m.zp, "i64")
        clamped = self._emit(f"min(max({shifted}, np.int32({low})), np.int32({top}))")
        return self._emit(f"np.int32({clamped} + np.int32({self.param(m.zp, 'i64')}))")

    def _int32_constant(self, values: np.ndarray, m: "Requant") -> str:
        """Source of an int32 per-channel constant laid out like the requantization's multiplier or shift
        input, or of a scalar parameter."""
        if values.ndim == 0 or values.size == 1 and m.like is None:
            return f"np.int32({self.param(int(np.asarray(values).reshape(-1)[0]), 'i64')})"
        return self.inputs.derived(m.like, np.ascontiguousarray(values.astype(np.int32)))

    def _float_scale(self, m: "FloatScale", names) -> str:
        """`apply_scale(u << k, mult, shift)` as floor(u * mult * 2^(k - shift) + 1/2 +- 2^(30 - shift)) in
        float64 (see `_match_float_scale`)."""
        f = self._scaled(names[m.value], m.scale, m.round_term)
        return self._emit(f"np.{'int32' if m.narrow else 'int64'}(np.floor({f}))")

    def _scaled(self, v: str, scale, round_term) -> str:
        """`v * scale + 1/2 (+- round_term by the sign of v)` in float64; the floor is apply_scale's value.
        A constant is a per-channel read (source text) or a scalar, which becomes a runtime parameter."""
        def constant(source):
            return source if isinstance(source, str) else self.param(source, "f64")

        f = self._emit(f"np.float64({v}) * {constant(scale)} + 0.5")
        if round_term is None:
            return f
        term = constant(round_term)
        return self._emit(f"{f} + ({term} if {v} >= 0 else -{term})")

    def _emit(self, text: str) -> str:
        name = f"{self.prefix}{self.count}"
        self.count += 1
        self.lines.append(f"{name} = {text}")
        return name

    def _node(self, e: S.Expr, a: list[str]) -> str:
        op, dtype = e.op, e.dtype
        if op == "index":
            return self.index[e.arg]
        if op == "out":
            return self.outs[e.arg]
        if op == "in":
            return self._emit(self.read(e.arg, e))
        if op == "extract":
            i, pad = e.arg
            arr = self.array(i)
            load = self.int_load if dtype.startswith("i") and dtype != "i1" else "{}"
            if self._inside(i, e.src):
                # A TABLE's index (an int8 plus 128) cannot leave the table: an unchecked gather is what
                # lets LLVM vectorize the loop (3.4x on EfficientNet's SiLU).
                return self._emit(load.format(f"{arr}[{', '.join(a)}]"))
            inside = " and ".join(f"0 <= {x} < {arr}.shape[{k}]" for k, x in enumerate(a))
            return self._emit(load.format(f"{arr}[{', '.join(a)}] if {inside} else {self.param(pad, dtype)}"))
        if op == "cast":
            return self._emit(self._cast(a[0], e.src[0].dtype, dtype))
        if op == "select":
            return self._emit(f"{a[1]} if {a[0]} else {a[2]}")
        if op == "apply_scale":
            return self._emit(f"{'_apply_scale_dr' if e.arg else '_apply_scale'}({a[0]}, {a[1]}, {a[2]})")
        if S.is_float(dtype):
            text = self._float(op, a, e.arg)
        else:
            text = self._int(op, a, e)
        return self._emit(text)

    def _inside(self, i: int, indices) -> bool:
        """Whether the value ranges prove every index of an `extract` from input i within its array."""
        shape = None if self.inputs is None else self.inputs.shape(i)
        if shape is None or len(shape) != len(indices):
            return False
        return all(self.ranges.get(x) is not None and 0 <= self.ranges[x][0] and self.ranges[x][1] < n
                   for x, n in zip(indices, shape))

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

    def _float(self, op: str, a: list[str], nan_mode) -> str:
        render = self.float_ops.get(op)
        return render(a, nan_mode) if render else f"{a[0]} {_INFIX[op]} {a[1]}"

    def _int(self, op: str, a: list[str], e: S.Expr) -> str:
        if e.dtype == "i1" and op in ("not", "and", "or", "xor"):
            return f"not {a[0]}" if op == "not" else f"{a[0]} {_INFIX[op]} {a[1]}"
        render = self.int_ops.get(op)
        text = render(a, e) if render else f"{a[0]} {_INFIX[op]} {a[1]}"
        if op in _OVERFLOWING and e.dtype != "i64":
            return _WRAP[e.dtype].format(text)
        return text


def _min_max_float(op: str):
    """TOSA apply_max_s / apply_min_s (tosaic.quant.float_ops): a tie keeps the first operand for max and
    the second for min; a NaN gives NaN, or with IGNORE the other operand."""
    def render(a, nan_mode):
        x, y = a
        keep_x = f"{x} {'>=' if op == 'max' else '<'} {y}"
        if nan_mode == "IGNORE":
            return f"{y} if {x} != {x} else ({x} if ({keep_x} or {y} != {y}) else {y})"
        return f"{x} if ({keep_x} or {x} != {x}) else {y}"
    return render


# Renderers as tables, from a scalar op to source text from its operands' names `a` (and, for floats, the
# NaN mode; for integers, the node): a target overrides entries (BodyRenderer's `float_ops`, `int_ops`).
# An op not in a table is infix (`_INFIX`); integer results narrower than i64 wrap where they can overflow.
FLOAT_OPS = {
    "floor": lambda a, _: f"np.float32(np.floor({a[0]}))",
    "ceil": lambda a, _: f"np.float32(np.ceil({a[0]}))",
    "neg": lambda a, _: f"-{a[0]}",
    "abs": lambda a, _: f"abs({a[0]})",
    "min": _min_max_float("min"),
    "max": _min_max_float("max"),
}
INT_OPS = {
    "not": lambda a, e: f"~{a[0]}",
    "min": lambda a, e: f"min({a[0]}, {a[1]})",
    "max": lambda a, e: f"max({a[0]}, {a[1]})",
    "clz": lambda a, e: f"_clz32({a[0]})",
    "neg": lambda a, e: f"-np.int64({a[0]})",
    "abs": lambda a, e: f"abs(np.int64({a[0]}))",
    "div": lambda a, e: f"_tdiv({a[0]}, {a[1]})",
    "lshr": lambda a, e: f"({a[0]} & {(1 << INTEGER_BITS[e.src[0].dtype]) - 1}) >> {a[1]}",
}


class Requant:
    """A matched requantization: `value` scaled by `multipliers` and `shifts` (constants shaped like their
    inputs; `like` is the input index they are laid out like, None for scalars) with `double_round`, plus
    `zp`, clamped to [low, high]; `scale` and `round_term` are the float64 strategy's sources (of
    mult * 2^-shift and of 2^(30-shift) where shift > 31, or None); `interior` are the nodes it replaces."""

    def __init__(self, value, multipliers, shifts, like, double_round, scale, round_term, zp, low, high,
                 interior):
        self.value, self.multipliers, self.shifts, self.like = value, multipliers, shifts, like
        self.double_round, self.scale, self.round_term = double_round, scale, round_term
        self.zp, self.low, self.high, self.interior = zp, low, high, interior


class FloatScale:
    """A matched `apply_scale(value << k, mult, shift)` outside a clamp: `scale` is the source of
    mult * 2^(k - shift), `round_term` as in Requant; `narrow` when the result fits int32; `interior` are
    the nodes it replaces (the apply_scale and an absorbed shift)."""

    def __init__(self, value, scale, round_term, narrow, interior):
        self.value, self.scale, self.round_term = value, scale, round_term
        self.narrow, self.interior = narrow, interior


class RowRequant(NamedTuple):
    """An epilogue that is one requantization of the accumulator to int8, per channel, as
    `x86_microkernels.requantize_rows_avx512` computes it: floor(clamp(acc * scale + (round_up if acc >= 0
    else round_down), low, high)) + zp, with low and high the clamp's bounds less the zero point;
    `saturating` where the clamp is the whole int8 range and every shift at least 32
    (`requantize_rows_saturating_avx512`)."""
    scale: np.ndarray
    round_up: np.ndarray
    round_down: np.ndarray
    low: float
    high: float
    zp: int
    saturating: bool


def row_requant(e, slot: int, inputs) -> RowRequant | None:
    """Whether the body of the epilogue op `e` (a generic op whose last loop dimension is the channel) is
    one float64-exact requantization (`_match_requant`) of its accumulator input `slot` to int8, with its
    multipliers and shifts scalars or read at the channel alone; `inputs` knows its constant inputs."""
    (body,) = e.attrs["bodies"]
    ranges = S.value_ranges(body)
    root = body
    while root.op == "cast" and _keeps_values(root, ranges):
        root = root.src[0]
    if body.dtype != "i8":
        return None
    return _accumulator_requant(e, slot, _match_requant(root, ranges, _use_counts(body), inputs, "float64"))


def split_requant(e, slot: int, inputs) -> tuple[RowRequant, S.Expr] | None:
    """Whether the body of the epilogue op `e` is f(y) for y an int8 requantization of the accumulator
    (as `row_requant` takes it) and f elementwise over y and whole-output inputs read at the output's own
    index, with scalar constants only: then (the requantization, f with y as the int8 input `slot`), so that
    y is stored by `requantize_rows_avx512` and f runs as a flat loop over the output (a residual ADD after a
    convolution; its per-row loop checked its arrays for overlap before each row of 24 channels)."""
    (body,) = e.attrs["bodies"]
    ranges, uses = S.value_ranges(body), _use_counts(body)
    for node in S.nodes(body):
        rq = _accumulator_requant(e, slot, _match_requant(node, ranges, uses, inputs, "float64"))
        if rq is None or node is body or not -128 <= rq.low + rq.zp <= rq.high + rq.zp <= 127:
            continue
        y = S.cast(S.inp(slot, "i8"), node.dtype)
        rest = S.substitute(body, lambda n, node=node, y=y: y if n == node else None)
        for leaf in S.nodes(rest):
            if leaf.op in ("extract", "index") or leaf.op == "in" and leaf.arg == slot and leaf.dtype != "i8":
                return None
            if leaf.op == "in" and leaf.arg != slot:
                access = e.attrs["accesses"][leaf.arg]
                constant = inputs.constant(leaf.arg)
                if (constant is None or np.size(constant) != 1) and (access.map is None or not access.map.is_identity()
                                                                     or access.pad is not None):
                    return None
        return rq, rest
    return None


def _accumulator_requant(e, slot: int, match) -> RowRequant | None:
    """`match` (a `_match_requant` result or None) as a RowRequant where it requantizes the i32 accumulator
    input `slot` with multipliers and shifts that are scalars or read at the channel alone."""
    leaf = None if match is None else _uncast(match.value)
    if leaf is None or leaf.op != "in" or leaf.arg != slot or leaf.dtype != "i32":
        return None
    channels = e.attrs["domain"][-1]
    m_values, s_values = (np.asarray(a, dtype=np.int64) for a in (match.multipliers, match.shifts))
    if m_values.size != 1:
        access = e.attrs["accesses"][match.like].map
        shape = e.operands[match.like].type.shape
        strides = [int(np.prod(shape[k + 1:], dtype=np.int64)) for k in range(len(shape))]
        flat = [sum(strides[k] * access.coeffs[k][j] for k in range(len(shape))) for j in range(access.ndims)]
        if m_values.size != channels or flat != [0] * (access.ndims - 1) + [1] or any(access.offsets):
            return None
    m_values, s_values = (np.broadcast_to(a.reshape(-1), (channels,)) for a in (m_values, s_values))
    shifts = s_values.astype(np.float64)
    round_term = np.where(s_values > 31, np.exp2(30.0 - shifts), 0.0) if match.double_round else np.zeros(channels)
    return RowRequant(m_values.astype(np.float64) * np.exp2(-shifts), 0.5 + round_term, 0.5 - round_term,
                      float(match.low - match.zp), float(match.high - match.zp), int(match.zp),
                      (match.low, match.high) == (-128, 127) and int(s_values.min()) >= 32)


def _use_counts(expr: S.Expr) -> dict:
    uses: dict = {}
    for e in S.nodes(expr):
        for s in e.src:
            uses[s] = uses.get(s, 0) + 1
    return uses


def _operand_values(e: S.Expr, inputs):
    """The constant values of a scalar-body leaf, shaped like its input (a const is a 0-d array); else
    None."""
    if e.op == "const":
        return np.asarray(e.arg, dtype=np.int64)
    if e.op == "in":
        values = inputs.constant(e.arg)
        return None if values is None else np.asarray(values, dtype=np.int64)
    return None


def _uncast(e: S.Expr) -> S.Expr:
    """A leaf under widening integer casts (which change no value)."""
    while e.op == "cast" and not S.is_float(e.dtype) and not S.is_float(e.src[0].dtype) \
            and INTEGER_BITS.get(e.src[0].dtype, 64) <= INTEGER_BITS[e.dtype] and e.src[0].dtype != "i1":
        e = e.src[0]
    return e


def _match_requant(e: S.Expr, ranges, uses, inputs, strategy: str) -> Requant | None:
    """Whether `e` is `min(max(apply_scale(v, m, s) [+ zp], lo), hi)` with constant m, s, zp, lo, hi that
    the target's strategy computes exactly (`requant.float64_applies`, `requant.neon_applies`)."""
    if strategy == "int64":
        return None
    if e.op != "min" or e.src[1].op != "const" or e.src[0].op != "max" or e.src[0].src[1].op != "const":
        return None
    top_max = e.src[0]
    inner = top_max.src[0]
    interior = [top_max]
    zp = 0
    if inner.op == "add" and inner.src[1].op == "const":
        zp = inner.src[1].arg
        interior.append(inner)
        inner = inner.src[0]
    if inner.op != "apply_scale":
        return None
    interior.append(inner)
    value = inner.src[0]
    constants = _scale_constants(inner, inputs)
    r = ranges.get(value)
    low, high = top_max.src[1].arg, e.src[1].arg
    if constants is None or r is None or any(uses.get(n, 0) > 1 for n in interior):
        return None
    m_values, s_values = constants
    if strategy == "neon":
        e_values = s_values - 31
        mixed = not inner.arg and e_values.any() and not e_values.all()
        if not neon_applies(r[0], r[1], m_values, s_values) or mixed \
                or not -(1 << 31) <= min(low, zp) <= max(high, zp) < 1 << 31:
            return None
    elif not float64_applies(max(abs(r[0]), abs(r[1])), int(s_values.min()), int(s_values.max()), zp, low, high):
        return None
    scale, round_term = _scale_sources(inner, *constants, 0, inputs) if strategy == "float64" else (None, None)
    mult, shift = _uncast(inner.src[1]), _uncast(inner.src[2])
    like = mult.arg if mult.op == "in" else (shift.arg if shift.op == "in" else None)
    return Requant(value, m_values, s_values, like, bool(inner.arg), scale, round_term, zp, low, high,
                   set(interior))


def _match_float_scale(e: S.Expr, ranges, uses, inputs) -> FloatScale | None:
    """Whether `e` is `apply_scale(u [<< k], m, s)` with constant m, s that float64 computes exactly
    without a clamp after it: the result is floor((u*m + 2^(s-1-k) +- 2^(30-k)) / 2^(s-k)) (the round term
    divides by 2^k for k <= s-1, and k <= 30 where double rounding adds 2^30), and in units of
    2^(k-s) every term and partial sum is an integer below 2^53, so each float64 operation is exact.
    (TFLite's ADD scales its inputs this way: 8-bit values shifted left by 20.)"""
    if e.op != "apply_scale":
        return None
    inner, k, interior = e.src[0], 0, {e}
    chain = [inner]  # integer casts that keep every value of their operand, down to that operand
    while chain[-1].op == "cast" and _keeps_values(chain[-1], ranges):
        chain.append(chain[-1].src[0])
    shl = chain[-1]
    if shl.op == "shl" and shl.src[1].op == "const" and all(uses.get(n, 0) == 1 for n in chain):
        # The shift and the widening casts above it are absorbed.
        k, inner = shl.src[1].arg, shl.src[0]
        interior |= set(chain)
        if ranges.get(inner) is None or ranges.get(shl) != (ranges[inner][0] << k, ranges[inner][1] << k):
            return None  # the shift may wrap in its type
    constants = _scale_constants(e, inputs)
    r = ranges.get(inner)
    if constants is None or r is None:
        return None
    m_values, s_values = constants
    s_min, s_max = int(s_values.min()), int(s_values.max())
    double = bool(e.arg) and s_max > 31
    if k > s_min - 1 or (double and k > 30):
        return None
    bound = max(abs(r[0]), abs(r[1])) * int(m_values.max()) + (1 << (s_max - 1 - k)) + (1 << (30 - k) if double else 0)
    if bound >= 1 << 53:
        return None
    scale, round_term = _scale_sources(e, m_values, s_values, k, inputs)
    out = ranges.get(e)
    narrow = out is not None and -(1 << 31) <= out[0] and out[1] < 1 << 31
    return FloatScale(inner, scale, round_term, narrow, interior)


def _scale_constants(apply: S.Expr, inputs):
    """The constant multipliers and shifts of `apply` (an apply_scale), shaped like their inputs, when
    both are constants laid out alike and within the spec's ranges; else None."""
    mult, shift = _uncast(apply.src[1]), _uncast(apply.src[2])
    m_values, s_values = _operand_values(mult, inputs), _operand_values(shift, inputs)
    if m_values is None or s_values is None:
        return None
    if mult.op == "in" and shift.op == "in" and not inputs.same_layout(mult.arg, shift.arg):
        return None
    if m_values.min() < 0 or m_values.max() >= 1 << 31 or s_values.min() < 2 or s_values.max() > 62:
        return None
    return m_values, s_values


def _scale_sources(apply: S.Expr, m_values, s_values, k: int, inputs):
    """Sources (or scalars) of mult * 2^(k - shift) and of the double-rounding term 2^(30 - shift) where
    shift > 31 (None when no shift needs it)."""
    mult, shift = _uncast(apply.src[1]), _uncast(apply.src[2])
    shifts = s_values.astype(np.float64)
    scale = _constant_source(m_values.astype(np.float64) * np.exp2(k - shifts), mult, shift, inputs)
    rt = np.where(s_values > 31, np.exp2(30.0 - shifts), 0.0) if apply.arg else None
    round_term = None if rt is None or not rt.any() else _constant_source(rt, mult, shift, inputs)
    return scale, round_term


def _keeps_values(cast: S.Expr, ranges) -> bool:
    """Whether an integer cast changes no value: its operand's range fits the cast's type."""
    source = cast.src[0]
    if S.is_float(cast.dtype) or S.is_float(source.dtype) or "i1" in (cast.dtype, source.dtype):
        return False
    r, (low, high) = ranges.get(source), S.dtype_range(cast.dtype)
    return r is not None and low <= r[0] and r[1] <= high


def _constant_source(values: np.ndarray, mult: S.Expr, shift: S.Expr, inputs) -> str | float:
    """Source reading per-channel `values`, or the scalar itself (which becomes a runtime parameter)."""
    if values.ndim == 0:
        return float(values)
    # Laid out like whichever of multiplier and shift is an input (both alike when both are).
    like = mult if mult.op == "in" else shift
    return inputs.derived(like.arg, np.ascontiguousarray(values))


def map_source(coeffs, offset_param: str, index) -> str:
    """One row of an affine map as source: `c0*d0 + c1*d1 + offset`."""
    terms = [(index[j] if c == 1 else f"{c} * {index[j]}") for j, c in enumerate(coeffs) if c]
    terms.append(offset_param)
    return " + ".join(terms)
