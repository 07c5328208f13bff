"""The scalar body of a structured op: a small expression tree, and its exact numpy evaluation.

One node type, `Expr(op, dtype, src, arg)`, in tinygrad's manner. Every integer node's value is exact and
then brought into its dtype: i8..i48 wrap like two's complement hardware (the TOSA interpreter's `narrow`),
i64 never overflows in what the lowering builds, i1 is a boolean. Saturation is explicit (`min`/`max`).
Float nodes compute in float32 (the only float type the importer produces at model edges).

Leaves: `in` (input `arg` read at its indexing map), `out` (output `arg`'s running value, in reductions),
`index` (loop dimension `arg`), `const` (the number `arg`), `extract` (input `arg` read at the indices `src`,
`pad`-valued outside; for gathers, tables, resize and transpose-conv, whose reads are not affine).

Float `max` and `min` are TOSA's apply_max_s / apply_min_s (`tosaic.quant.float_ops`); their `arg` is the
NaN mode, None meaning PROPAGATE.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

from tosaic.ir import INTEGER_BITS, NUMPY_DTYPES
from tosaic.quant import float_ops

UNARY = {"neg", "not", "abs", "clz", "floor", "ceil", "cast"}
BINARY = {"add", "sub", "mul", "div", "floordiv", "mod", "shl", "ashr", "lshr", "and", "or", "xor",
          "min", "max", "eq", "gt", "ge"}
COMPARISONS = {"eq", "gt", "ge"}


@dataclass(frozen=True)
class Expr:
    """One node of a scalar body. `src` are operand nodes; `arg` is the node's own datum (see module doc)."""

    op: str
    dtype: str
    src: tuple = ()
    arg: object = None

    def __hash__(self) -> int:
        # Computed once per node: the generated hash recurses through every path of a body's DAG (fusion
        # spent 1.1 of EfficientNet-B0's 3.8 s compile hashing).
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.op, self.dtype, self.src, self.arg))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __reduce__(self):
        return Expr, (self.op, self.dtype, self.src, self.arg)   # string hashes differ between processes

    def __str__(self) -> str:
        return render_text(self)


def is_float(dtype: str) -> bool:
    return dtype.startswith("f")


class ExactFloat(float):
    """A float constant compared by its bits, so that -0.0 and 0.0 stay two constants (equal as floats, they
    would be merged into one node) and a NaN constant equals itself."""

    def __eq__(self, other) -> bool:
        return isinstance(other, float) and struct.pack("<d", self) == struct.pack("<d", other)

    def __ne__(self, other) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(struct.pack("<d", self))


def const(value, dtype: str) -> Expr:
    return Expr("const", dtype, (), ExactFloat(value) if is_float(dtype) else int(value))


def inp(i: int, dtype: str) -> Expr:
    return Expr("in", dtype, (), i)


def out(i: int, dtype: str) -> Expr:
    return Expr("out", dtype, (), i)


def index(d: int) -> Expr:
    return Expr("index", "i64", (), d)


def unary(op: str, x: Expr, dtype: str | None = None) -> Expr:
    return Expr(op, dtype or x.dtype, (x,))


def binary(op: str, a: Expr, b: Expr, dtype: str | None = None, arg=None) -> Expr:
    if op in COMPARISONS:
        dtype = "i1"
    return Expr(op, dtype or a.dtype, (a, b), arg)


def cast(x: Expr, dtype: str) -> Expr:
    return x if x.dtype == dtype else Expr("cast", dtype, (x,))


def select(c: Expr, a: Expr, b: Expr) -> Expr:
    return Expr("select", a.dtype, (c, a, b))


def clamp(x: Expr, low, high, nan_mode: str | None = None) -> Expr:
    return binary("min", binary("max", x, const(low, x.dtype), arg=nan_mode), const(high, x.dtype), arg=nan_mode)


def apply_scale(value: Expr, multiplier: Expr, shift: Expr, double_round: bool) -> Expr:
    """TOSA apply_scale_32 (double_round as given) or apply_scale_16 (double_round False); i64 result."""
    return Expr("apply_scale", "i64", (value, multiplier, shift), bool(double_round))


def extract(i: int, dtype: str, indices, pad=0) -> Expr:
    return Expr("extract", dtype, tuple(indices), (i, pad))


def affine(coeffs, offset: int) -> Expr:
    """The i64 expression `sum(c * d_j) + offset` over loop dimensions."""
    terms = [index(d) if c == 1 else binary("mul", index(d), const(c, "i64")) for d, c in enumerate(coeffs) if c]
    result = terms[0] if terms else const(offset, "i64")
    for term in terms[1:]:
        result = binary("add", result, term)
    if terms and offset:
        result = binary("add", result, const(offset, "i64"))
    return result


# ------------------------------------------------------------------------------------------ rewriting


def substitute(expr: Expr, fn) -> Expr:
    """Rebuild `expr` bottom-up; `fn(node)` returns a replacement for a leaf or None to keep it."""
    memo = {}

    def walk(e: Expr) -> Expr:
        if e in memo:
            return memo[e]
        replaced = fn(e)
        if replaced is None:
            replaced = Expr(e.op, e.dtype, tuple(walk(s) for s in e.src), e.arg) if e.src else e
        memo[e] = replaced
        return replaced

    return walk(expr)


def nodes(expr: Expr):
    """Every distinct node of `expr`, operands before users."""
    seen, order = set(), []

    def walk(e):
        if e in seen:
            return
        seen.add(e)
        for s in e.src:
            walk(s)
        order.append(e)

    walk(expr)
    return order


# ------------------------------------------------------------------------------------- evaluation


def wrap(values, dtype: str):
    """Bring exact int64 values into `dtype` as the TOSA interpreter stores them."""
    if dtype == "i1":
        return np.asarray(values).astype(bool)
    if is_float(dtype) or dtype == "i64":
        return values
    bits = INTEGER_BITS[dtype]
    half = 1 << (bits - 1)
    return ((np.asarray(values, dtype=np.int64) + half) & ((1 << bits) - 1)) - half


def _clz32(x):
    unsigned = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    count = np.full(unsigned.shape, 32, dtype=np.int64)
    for bit in range(32):
        count = np.where(unsigned >> bit != 0, 31 - bit, count)
    return count


def _cast(x, src: str, dst: str):
    if dst == "i1":
        return x != 0
    if is_float(dst):
        return np.asarray(x).astype(NUMPY_DTYPES[dst])
    if is_float(src):
        # TOSA CAST float to integer: round half to even, then saturate.
        return float_ops.round_to_int(x, -(1 << (INTEGER_BITS[dst] - 1)), (1 << (INTEGER_BITS[dst] - 1)) - 1)
    return wrap(np.asarray(x).astype(np.int64), dst)


def _apply_scale(v, m, s, double_round):
    rnd = np.left_shift(np.int64(1), s - 1)
    if double_round:
        rnd = rnd + np.where(s > 31, np.where(v >= 0, 1 << 30, -(1 << 30)), 0)
    return (v * m + rnd) >> s


def _float_binary(op, a, b, nan_mode):
    if op == "max":
        return float_ops.apply_max(a, b, nan_mode or float_ops.PROPAGATE)
    if op == "min":
        return float_ops.apply_min(a, b, nan_mode or float_ops.PROPAGATE)
    return {"add": np.add, "sub": np.subtract, "mul": np.multiply, "eq": np.equal, "gt": np.greater,
            "ge": np.greater_equal}[op](a, b)


def _int_binary(op, a, b, dtype):
    a = np.asarray(a).astype(np.int64) if np.asarray(a).dtype == bool and op not in ("and", "or", "xor") else a
    b = np.asarray(b).astype(np.int64) if np.asarray(b).dtype == bool and op not in ("and", "or", "xor") else b
    if op == "div":
        return np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)
    if op == "lshr":
        bits = INTEGER_BITS[dtype]
        return (a & ((1 << bits) - 1)) >> b
    return {"add": np.add, "sub": np.subtract, "mul": np.multiply, "floordiv": np.floor_divide, "mod": np.mod,
            "shl": np.left_shift, "ashr": np.right_shift, "and": np.bitwise_and, "or": np.bitwise_or,
            "xor": np.bitwise_xor, "min": np.minimum, "max": np.maximum, "eq": np.equal, "gt": np.greater,
            "ge": np.greater_equal}[op](a, b)


def evaluate(expr: Expr, leaf):
    """Evaluate `expr` on numpy arrays. `leaf(node, values)` supplies `in`, `out`, `index` and `extract`
    values (for `extract`, `values` are the evaluated index operands). Integers are int64, i1 is bool."""
    values = {}
    for e in nodes(expr):
        args = [values[s] for s in e.src]
        if e.op in ("in", "out", "index", "extract"):
            v = leaf(e, args)
            if not is_float(e.dtype):
                v = np.asarray(v).astype(bool if e.dtype == "i1" else np.int64)
        elif e.op == "const":
            v = NUMPY_DTYPES[e.dtype].type(e.arg) if is_float(e.dtype) else np.int64(e.arg)
        elif e.op == "cast":
            v = _cast(args[0], e.src[0].dtype, e.dtype)
        elif e.op == "select":
            v = np.where(args[0], args[1], args[2])
        elif e.op == "apply_scale":
            v = _apply_scale(*(np.asarray(a, dtype=np.int64) for a in args), e.arg)
        elif e.op == "clz":
            v = _clz32(args[0])
        elif e.op in ("floor", "ceil"):
            v = (np.floor if e.op == "floor" else np.ceil)(args[0])
        elif e.op == "neg":
            v = -args[0]
        elif e.op == "abs":
            v = np.abs(args[0])
        elif e.op == "not":
            v = np.logical_not(args[0]) if e.dtype == "i1" else np.invert(np.asarray(args[0], dtype=np.int64))
        elif is_float(e.src[0].dtype):
            v = _float_binary(e.op, *args, e.arg)
        else:
            v = _int_binary(e.op, *args, e.src[0].dtype)
        if is_float(e.dtype):
            v = np.asarray(v).astype(NUMPY_DTYPES[e.dtype])
        values[e] = wrap(v, e.dtype)
    return values[expr]


# ---------------------------------------------------------------------------------------- printing

_INFIX = {"add": "+", "sub": "-", "mul": "*", "shl": "<<", "ashr": ">>", "and": "&", "or": "|", "xor": "^",
          "eq": "==", "gt": ">", "ge": ">=", "floordiv": "//", "mod": "%"}


def render_text(expr: Expr) -> str:
    """A readable one-line form, used by `tosaic inspect --stage linalg`."""
    def text(e: Expr) -> str:
        if e.op == "in":
            return f"%in{e.arg}"
        if e.op == "out":
            return f"%out{e.arg}"
        if e.op == "index":
            return f"d{e.arg}"
        if e.op == "const":
            return str(e.arg)
        if e.op == "extract":
            return f"%in{e.arg[0]}[{', '.join(text(s) for s in e.src)}]"
        if e.op in _INFIX:
            return f"({text(e.src[0])} {_INFIX[e.op]} {text(e.src[1])})"
        if e.op == "cast":
            return f"{e.dtype}({text(e.src[0])})"
        if e.op == "apply_scale":
            return f"apply_scale{'_dr' if e.arg else ''}({', '.join(text(s) for s in e.src)})"
        return f"{e.op}({', '.join(text(s) for s in e.src)}):{e.dtype}"

    return text(expr)


COSTLY = {"extract", "apply_scale", "mul", "floordiv", "mod", "clz"}


@functools.lru_cache(maxsize=4096)
def costly_nodes(expr: Expr) -> int:
    """How many nodes of `expr` cost more than an add or a compare: gathers, multiplies, divisions."""
    return sum(e.op in COSTLY for e in nodes(expr))


# ------------------------------------------------------------------------------------ value ranges


def dtype_range(dtype: str) -> tuple[int, int]:
    if dtype == "i1":
        return 0, 1
    bits = INTEGER_BITS[dtype]
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _fits(r, dtype):
    lo, hi = dtype_range(dtype)
    return r is not None and lo <= r[0] and r[1] <= hi


def value_ranges(expr: Expr) -> dict:
    """Inclusive [low, high] of every integer node of `expr` (None for floats), by interval arithmetic;
    a node whose exact interval leaves its dtype gets the dtype's range (it wraps)."""
    ranges: dict = {}
    for e in nodes(expr):
        if is_float(e.dtype):
            ranges[e] = None
            continue
        a = [ranges[s] for s in e.src]
        full = dtype_range(e.dtype)
        r = None
        if e.op == "const":
            r = (e.arg, e.arg)
        elif e.op == "cast" and not is_float(e.src[0].dtype) and e.dtype != "i1":
            r = a[0] if _fits(a[0], e.dtype) else None
        elif e.op in ("add", "sub", "mul") and all(x is not None for x in a):
            (l0, h0), (l1, h1) = a
            if e.op == "add":
                r = (l0 + l1, h0 + h1)
            elif e.op == "sub":
                r = (l0 - h1, h0 - l1)
            else:
                products = [l0 * l1, l0 * h1, h0 * l1, h0 * h1]
                r = (min(products), max(products))
        elif e.op in ("min", "max") and all(x is not None for x in a):
            fn = min if e.op == "min" else max
            r = (fn(a[0][0], a[1][0]), fn(a[0][1], a[1][1]))
        elif e.op == "select" and a[1] is not None and a[2] is not None:
            r = (min(a[1][0], a[2][0]), max(a[1][1], a[2][1]))
        elif e.op == "apply_scale" and a[0] is not None and a[1] is not None and a[2] is not None \
                and a[2][0] == a[2][1] and a[1][0] >= 0:
            s = a[2][0]
            corner = [v * m for v in a[0] for m in a[1]]
            r = ((min(corner) >> s) - 1, (max(corner) >> s) + 1)
        elif e.op == "shl" and a[0] is not None and a[1] is not None and a[1][0] == a[1][1] and 0 <= a[1][0] < 63:
            r = (a[0][0] << a[1][0], a[0][1] << a[1][0])
        elif e.op == "ashr" and a[0] is not None and a[1] is not None and a[1][0] == a[1][1] and a[1][0] >= 0:
            r = (a[0][0] >> a[1][0], a[0][1] >> a[1][0])
        elif e.op == "and" and a[1] is not None and a[1][0] == a[1][1] and a[1][0] >= 0 and e.dtype != "i1":
            r = (0, a[1][0])
        ranges[e] = r if _fits(r, e.dtype) else full
    return ranges


def simplify(expr: Expr) -> Expr:
    """Drop arithmetic that cannot change a value: `x + 0`, `x - 0`, and clamps `max(x, c)` / `min(x, c)`
    that the range of x already satisfies."""
    for _ in range(8):
        ranges = value_ranges(expr)

        def rule(e: Expr):
            if is_float(e.dtype):
                return None   # x + 0.0 is not x for floats (-0.0 + 0.0 is 0.0)
            if e.op in ("add", "sub") and e.src[1].op == "const" and e.src[1].arg == 0 and e.src[0].dtype == e.dtype:
                return e.src[0]
            if e.op == "add" and e.src[0].op == "const" and e.src[0].arg == 0 and e.src[1].dtype == e.dtype:
                return e.src[1]
            if e.op == "apply_scale" and e.src[1].op == "const" and e.src[2].op == "const":
                # (v * 2^k + round) >> s with k >= s is v << (k - s): the round term (below 2^s, and
                # not negative: double rounding moves it by 2^30 only when s > 31) shifts out.
                m, s = e.src[1].arg, e.src[2].arg
                if m > 0 and m & (m - 1) == 0 and m.bit_length() - 1 >= s:
                    return binary("shl", e.src[0], const(m.bit_length() - 1 - s, "i64"), "i64")
                if m > 0 and m & (m - 1) == 0 and s >= 1:
                    return _power_of_two_scale(e.src[0], m.bit_length() - 1, s, e.arg and s > 31)
            if e.op in ("max", "min") and e.src[1].op == "const" and not is_float(e.dtype):
                r = ranges.get(e.src[0])
                if r is not None and (r[0] >= e.src[1].arg if e.op == "max" else r[1] <= e.src[1].arg):
                    return e.src[0]
            return None

        simpler = _rewrite_once(expr, rule)
        if simpler == expr:
            return expr
        expr = simpler
    return expr


def _power_of_two_scale(v: Expr, k: int, s: int, double_round: bool) -> Expr | None:
    """apply_scale(v, 2^k, s) for k < s as `(v + round / 2^k) >> (s - k)`: the round term 2^(s-1) (+-2^30
    with double rounding) is a multiple of 2^k when k <= 30, so dividing it out of the sum changes no
    floor. (TFLite's ADD rescales by 2^30 with shifts near 50; this keeps them off 64-bit multiplies.)"""
    if double_round and k > 30:
        return None
    v = cast(v, "i64")
    half = 1 << (s - 1 - k)
    if double_round:
        nudge = 1 << (30 - k)
        round_term = select(binary("ge", v, const(0, "i64")), const(half + nudge, "i64"), const(half - nudge, "i64"))
    else:
        round_term = const(half, "i64")
    return binary("ashr", binary("add", v, round_term), const(s - k, "i64"))


def _rewrite_once(expr: Expr, rule) -> Expr:
    memo = {}

    def walk(e):
        if e in memo:
            return memo[e]
        rebuilt = Expr(e.op, e.dtype, tuple(walk(s) for s in e.src), e.arg) if e.src else e
        replaced = rule(e) if rebuilt == e else rule(rebuilt)
        memo[e] = rebuilt if replaced is None else replaced
        return memo[e]

    return walk(expr)
