"""MLIR text form of TOSA graphs: a printer and a parser for TOSA 1.0 as LLVM's `tosa-opt` writes it.

The printer writes one function (`@main`, the graph's name) inside a `module`, in either of MLIR's two op
forms:

- pretty: each TOSA op as `%3 = tosa.conv2d %arg0, %0, ... {acc_type = i32, ...} : (...) -> ...`, exactly as
  tosa-opt's own printer writes it (attributes sorted by name, default-valued attributes left out,
  `tosa.const` in generic form because it has no custom syntax; the variable ops in their custom syntax:
  `tosa.variable @v = dense<...> : tensor<...>` at module level, before the function,
  `%0 = tosa.variable_read @v : tensor<...>`, `tosa.variable_write @v, %0 : tensor<...>`);
- generic: `%3 = "tosa.conv2d"(%arg0, ...) <{...}> : (...) -> ...` and a generic `func.func`, exactly as
  `tosa-opt --mlir-print-op-generic` writes it. Parsers of other LLVM versions accept this form even when
  an op's custom syntax has changed.

Constants follow MLIR's DenseElementsAttr printing: a splat prints one element, more than 100 elements
print as little-endian hex bytes (`dense<"0x...">`, i48 in 6 bytes, i1 and i4 in one byte each), floats
print as APFloat does (`1.000000e-01` when 6 digits round-trip, else 9 digits for f32 or the bit
pattern). Values are numbered %arg0.. and %0.. in program order, so the text is deterministic. With
`locs=True` each op carries its `loc` string as `loc("...")`, which tosa-opt accepts. Graph input and
output names travel as `{tosa.tensor_name = "..."}` argument and result attributes, the attribute
tosa-opt's serializer reads with `--retain-graph-input-output-names`; an input named `argN` (output
`outputN`) at position N prints none.

The parser reads both forms (including tosa-opt's output, `loc(...)` annotations, `#loc` aliases and
`dense_resource` blobs), rebuilds the graph op by op and checks every op with the declarations in
`tosaic.tosa.ops`: a result type the text states but the rules do not infer is an error, reported as
`line:column`.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from tosaic.errors import TosaicError
from tosaic.ir import NUMPY_DTYPES, Graph, Operation, ShapeType, TensorType, Value
from tosaic.tosa.ops import (
    ENUM_VALUES,
    MAX_ELEMENTS,
    MAX_RANK,
    OPS,
    VerifyError,
    infer_result_types,
    variable_type,
)


class MlirParseError(TosaicError, ValueError):
    """MLIR text that is not TOSA this compiler reads: a syntax error, an unknown op, or an op that breaks
    the TOSA rules. `line` and `column` are 1-based."""

    def __init__(self, message: str, line: int = 0, column: int = 0):
        super().__init__(f"{line}:{column}: {message}" if line else message)
        self.message = message
        self.line = line
        self.column = column


# MLIR prints a DenseElementsAttr with more elements than this as a hex string
# (OpPrintingFlags: the default of --mlir-print-elementsattrs-with-hex-if-larger).
HEX_THRESHOLD = 100
# With elide_constants, constants with more elements than this print as `dense_resource<__elided__>`.
ELIDE_THRESHOLD = 16

# Bytes per element in MLIR's raw (hex) storage of dense elements: i1 and i4 take a byte, i48 six.
_STORAGE_BYTES = {"i1": 1, "i4": 1, "i8": 1, "i16": 2, "i32": 4, "i48": 6, "i64": 8, "index": 8, "f16": 2,
                  "f32": 4}
_INTEGER_BITS = {"i1": 1, "i4": 4, "i8": 8, "i16": 16, "i32": 32, "i48": 48, "i64": 64, "index": 64}
_FLOATS = {"f16": (np.float16, np.uint16), "f32": (np.float32, np.uint32)}
# Significant digits of APFloat::toString's default precision: 2 + precision * 59 / 196.
_APFLOAT_DIGITS = {"f16": 2 + 11 * 59 // 196, "f32": 2 + 24 * 59 // 196}

_BARE_ID = re.compile(r"[A-Za-z_][\w$.]*\Z")


# =========================================================================================== printing


def print_graph(graph: Graph, generic: bool = False, elide_constants: bool = False, locs: bool = False) -> str:
    """`graph` as MLIR text: a module holding `func.func @main`. `generic` selects MLIR's generic op form;
    `elide_constants` prints constants of more than 16 elements as `dense_resource<__elided__>` (such text
    does not parse back); `locs` appends each op's `loc` string as `loc("...")`."""
    return _Printer(graph, generic, elide_constants, locs).module()


class _Printer:
    def __init__(self, graph: Graph, generic: bool, elide_constants: bool, locs: bool):
        self.graph = graph
        self.generic = generic
        self.elide = elide_constants
        self.locs = locs
        self.names: dict[Value, str] = {}

    def module(self) -> str:
        graph = self.graph
        for index, value in enumerate(graph.inputs):
            self.names[value] = f"%arg{index}"
        body = []
        counter = 0
        # Variables are module-level symbols (tosa-opt requires a SymbolTable parent): printed before the function.
        variables = [self.op(op, []) for op in graph.ops if op.name == "tosa.variable"]
        for op in graph.ops:
            if op.name == "tosa.variable":
                continue
            missing = [v for v in op.operands if v not in self.names]
            if missing:
                raise ValueError(f"{op.name} ({op.loc}) reads a value that no earlier op defines: {missing[0]}")
            line = self.op(op, [f"%{counter + i}" for i in range(len(op.results))])
            for result in op.results:
                self.names[result] = f"%{counter}"
                counter += 1
            body.append(line)
        missing = [v for v in graph.outputs if v not in self.names]
        if missing:
            raise ValueError(f"graph output {missing[0]} is not defined in the graph")
        outputs = ", ".join(self.names[v] for v in graph.outputs)
        output_types = ", ".join(str(v.type) for v in graph.outputs)
        arg_attrs = [_name_attr(name, f"arg{i}") for i, name in enumerate(_names(graph.input_names, graph.inputs))]
        res_attrs = [_name_attr(name, f"output{i}")
                     for i, name in enumerate(_names(graph.output_names, graph.outputs))]
        symbol = _symbol(graph.name)
        if self.generic:
            args = ", ".join(f"%arg{i}: {v.type}" for i, v in enumerate(graph.inputs))
            props = []
            if any(arg_attrs):
                props.append(f"arg_attrs = [{', '.join('{' + a + '}' for a in arg_attrs)}]")
            function_type = _function_type([v.type for v in graph.inputs], [v.type for v in graph.outputs])
            props.append(f"function_type = {function_type}")
            if any(res_attrs):
                props.append(f"res_attrs = [{', '.join('{' + a + '}' for a in res_attrs)}]")
            props.append(f"sym_name = {_string(graph.name)}")
            lines = ['"builtin.module"() ({'] + [f"  {line}" for line in variables]
            lines.append(f'  "func.func"() <{{{", ".join(props)}}}> ({{')
            if graph.inputs:
                lines.append(f"  ^bb0({args}):")
            lines += [f"    {line}" for line in body]
            lines.append(f'    "func.return"({outputs}) : ({output_types}) -> ()')
            lines += ["  }) : () -> ()", "}) : () -> ()"]
        else:
            args = ", ".join(f"%arg{i}: {v.type}" + (f" {{{a}}}" if a else "")
                             for i, (v, a) in enumerate(zip(graph.inputs, arg_attrs)))
            results = [f"{v.type}" + (f" {{{a}}}" if a else "") for v, a in zip(graph.outputs, res_attrs)]
            if not results:
                signature = ""
            elif len(results) == 1 and not res_attrs[0]:
                signature = f" -> {results[0]}"
            else:
                signature = f" -> ({', '.join(results)})"
            lines = ["module {"] + [f"  {line}" for line in variables]
            lines.append(f"  func.func @{symbol}({args}){signature} {{")
            lines += [f"    {line}" for line in body]
            lines.append(f"    return {outputs} : {output_types}" if graph.outputs else "    return")
            lines += ["  }", "}"]
        return "\n".join(lines) + "\n"

    def op(self, op: Operation, results: list[str]) -> str:
        opdef = OPS.get(op.name)
        if opdef is None:
            raise ValueError(f"cannot print unknown op {op.name}")
        attrs = []
        for key in sorted(opdef.attrs):
            kind = opdef.attrs[key]
            if key in op.attrs:
                value = op.attrs[key]
            elif self.generic and key in opdef.defaults and kind in ENUM_VALUES:
                value = opdef.defaults[key]  # a DefaultValuedAttr: the generic form always shows it
            elif key in opdef.defaults:
                continue
            else:
                raise ValueError(f"{op.name} ({op.loc}) lacks attribute {key}")
            if not self.generic and key in opdef.defaults and not isinstance(value, np.ndarray) \
                    and value == opdef.defaults[key]:
                continue
            attrs.append(f"{key} = {self.attribute(op, kind, value)}")
        operands = ", ".join(self.names[v] for v in op.operands)
        signature = _function_type([v.type for v in op.operands], [r.type for r in op.results])
        lhs = f"{', '.join(results)} = " if results else ""
        if not self.generic and op.name in _VARIABLE_OPS:
            text = self.variable_op(op, results)
        elif self.generic or op.name == "tosa.const":
            props = f" <{{{', '.join(attrs)}}}>" if attrs else ""
            text = f'{lhs}"{op.name}"({operands}){props} : {signature}'
        else:
            # The custom form: operands, attribute dict, functional type. An op without operands keeps
            # the empty operand slot, hence tosa-opt's two spaces in `tosa.const_shape  {values = ...}`.
            attr_dict = f" {{{', '.join(attrs)}}}" if attrs else ""
            text = f"{lhs}{op.name} {operands}{attr_dict} : {signature}"
        if self.locs and op.loc is not None:
            text += f" loc({_string(op.loc)})"
        return text

    def variable_op(self, op: Operation, results: list[str]) -> str:
        """The custom syntax of VARIABLE, VARIABLE_READ and VARIABLE_WRITE, as tosa-opt prints them."""
        if op.name == "tosa.variable":
            head = f"tosa.variable @{_symbol(op.attrs['sym_name'])}"
            initial = op.attrs.get("initial_value")
            if initial is None:
                return f"{head} : {variable_type(op.attrs)}"
            return f"{head} = {self.attribute(op, 'dense', initial)}"
        symbol = f"@{_symbol(op.attrs['name'])}"
        if op.name == "tosa.variable_read":
            return f"{results[0]} = tosa.variable_read {symbol} : {op.result.type}"
        value = op.operands[0]
        return f"tosa.variable_write {symbol}, {self.names[value]} : {value.type}"

    def attribute(self, op: Operation, kind: str, value) -> str:
        if kind in ("int32", "int64"):
            return f"{int(value)} : i{kind[3:]}"
        if kind == "bool":
            return "true" if value else "false"
        if kind in ("array_i64", "array_i32"):
            values = ", ".join(str(int(v)) for v in value)
            return f"array<{kind[6:]}: {values}>" if values else f"array<{kind[6:]}>"
        if kind == "type":
            return str(value)
        if kind == "element":
            dtype = op.operands[0].type.dtype
            return f"{_scalar_text(value, dtype)} : {dtype}"
        if kind == "dense":
            # The one result-less op with a dense attribute is VARIABLE: its initial value has its type.
            t = op.results[0].type if op.results else variable_type(op.attrs)
            if self.elide and t.size > ELIDE_THRESHOLD:
                return f"dense_resource<__elided__> : {t}"
            return f"{_dense_text(np.asarray(value), t.dtype)} : {t}"
        if kind == "shape":
            values = np.asarray(value, dtype=np.int64).reshape(-1)
            return f"{_dense_text(values, 'index')} : tensor<{values.size}xindex>"
        if kind in ENUM_VALUES:
            return f"#tosa.{kind}<{value}>" if self.generic else str(value)
        if kind == "symbol":
            return _string(value)
        raise ValueError(f"unknown attribute kind {kind}")


_VARIABLE_OPS = ("tosa.variable", "tosa.variable_read", "tosa.variable_write")


def _names(names, values) -> list:
    names = list(names)
    return names + [None] * (len(values) - len(names))


def _name_attr(name, default: str) -> str:
    return "" if name is None or name == default else f"tosa.tensor_name = {_string(name)}"


def _function_type(inputs, outputs) -> str:
    ins = ", ".join(str(t) for t in inputs)
    outs = ", ".join(str(t) for t in outputs)
    return f"({ins}) -> {outs}" if len(outputs) == 1 else f"({ins}) -> ({outs})"


def _symbol(name: str) -> str:
    return name if _BARE_ID.match(name) else _string(name)


def _string(text: str) -> str:
    """A string literal escaped as llvm::printEscapedString does: `\\\\`, and `\\XX` for `"` and non-printables."""
    out = []
    for byte in text.encode("utf-8"):
        if byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte < 0x7F and byte != 0x22:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:02X}")
    return '"' + "".join(out) + '"'


def _dense_text(flat_or_array: np.ndarray, dtype: str) -> str:
    """`dense<...>` (without its type) for the values of an array whose element type is `dtype`."""
    array = np.asarray(flat_or_array)
    flat = array.reshape(-1)
    if flat.size == 0:
        return "dense<>"
    raw = _raw_bytes(flat, dtype)
    width = _STORAGE_BYTES[dtype]
    if raw[:width] * flat.size == raw:
        return f"dense<{_scalar_text(flat[0], dtype)}>"
    if flat.size > HEX_THRESHOLD:
        return f'dense<"0x{raw.hex().upper()}">'
    items = [_scalar_text(v, dtype) for v in flat]
    return f"dense<{_nested(items, array.shape)}>"


def _nested(items: list[str], shape) -> str:
    if len(shape) <= 1:
        return "[" + ", ".join(items) + "]"
    step = len(items) // shape[0] if shape[0] else 0
    return "[" + ", ".join(_nested(items[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])) + "]"


def _raw_bytes(flat: np.ndarray, dtype: str) -> bytes:
    if dtype == "i1":
        return flat.astype(np.uint8).tobytes()
    if dtype == "i4":
        return (flat.astype(np.int64) & 0xF).astype(np.uint8).tobytes()
    if dtype == "i48":
        return flat.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :6].tobytes()
    if dtype in _FLOATS:
        return flat.astype(_FLOATS[dtype][0]).astype("<" + np.dtype(_FLOATS[dtype][0]).str[1:]).tobytes()
    return flat.astype(f"<i{_STORAGE_BYTES[dtype]}").tobytes()


def _scalar_text(value, dtype: str) -> str:
    if dtype == "i1":
        return "true" if value else "false"
    if dtype in _FLOATS:
        return _float_text(value, dtype)
    return str(int(value))


def _float_text(value, dtype: str) -> str:
    """A float as MLIR's printFloatValue writes it: `%.6e`-like when that reads back to the same bits,
    else APFloat's default (9 significant digits for f32) when that has a '.', else the bit pattern."""
    ftype, itype = _FLOATS[dtype]
    v = ftype(value)
    if np.isfinite(v):
        text = _apfloat_string(v, dtype, 6, 0, False)
        if _reads_back(text, v, dtype):
            return text
        text = _apfloat_string(v, dtype, 0, 3, True)
        if "." in text:
            return text
    return f"0x{int(np.array(v).view(itype)):X}"


def _apfloat_string(v, dtype: str, precision: int, max_padding: int, truncate_zero: bool) -> str:
    """llvm::APFloat::toString(precision, max_padding, truncate_zero) for a finite value, step by step:
    the exact value N * 10^exp is first cut to about `precision` digits by truncation (AdjustToPrecision
    on the APInt), then rounded half up on the first dropped digit (AdjustToPrecision on the digits)."""
    x = float(v)
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    precision = precision or _APFLOAT_DIGITS[dtype]
    if x == 0:
        if max_padding:
            return sign + "0"
        return sign + ("0.0E+0" if truncate_zero else "0.0" + "0" * (precision - 1) + "e+00")
    numerator, denominator = abs(x).as_integer_ratio()
    if denominator == 1:
        n, exp = numerator, 0
    else:
        n, exp = numerator * 5 ** (denominator.bit_length() - 1), -(denominator.bit_length() - 1)
    required = (precision * 196 + 58) // 59
    if n.bit_length() > required:
        removable = (n.bit_length() - required) * 59 // 196
        if removable:
            exp += removable
            n //= 10 ** removable
    digits = str(n)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    if len(digits) > precision:  # round half up on the first dropped digit
        exp += len(digits) - precision
        digits = str(int(digits[:precision]) + (digits[precision] >= "5"))
        stripped = digits.rstrip("0")
        exp += len(digits) - len(stripped)
        digits = stripped
    n = len(digits)
    if not max_padding:
        scientific = True
    elif exp >= 0:
        scientific = exp > max_padding or n + exp > precision
    else:
        msd = exp + n - 1
        scientific = msd < 0 and -msd > max_padding
    if scientific:
        e = exp + n - 1
        mantissa = digits[0] + "." + ("0" if n == 1 and truncate_zero else digits[1:])
        if not truncate_zero and precision > n - 1:
            mantissa += "0" * (precision - n + 1)
        e_digits = str(abs(e))
        if not truncate_zero and len(e_digits) < 2:
            e_digits = "0" + e_digits
        return f"{sign}{mantissa}{'E' if truncate_zero else 'e'}{'+' if e >= 0 else '-'}{e_digits}"
    if exp >= 0:
        return sign + digits + "0" * exp
    whole = exp + n
    if whole > 0:
        return f"{sign}{digits[:whole]}.{digits[whole:]}"
    return f"{sign}0.{'0' * -whole}{digits}"


def _nearest_float(text: str, dtype: str):
    """The `dtype` float nearest to the decimal `text`, ties to even, as APFloat reads it (no double
    rounding through float64)."""
    ftype, itype = _FLOATS[dtype]
    exact = Decimal(text)
    largest = np.finfo(ftype).max
    below = np.nextafter(largest, ftype(0))
    if abs(exact) >= Decimal(float(largest)) + (Decimal(float(largest)) - Decimal(float(below))) / 2:
        return ftype(math.copysign(math.inf, exact))
    with np.errstate(over="ignore"):
        guess = ftype(float(exact))
        candidates = (np.nextafter(guess, ftype(-np.inf)), guess, np.nextafter(guess, ftype(np.inf)))
    best = None
    for candidate in candidates:
        if np.isfinite(candidate):
            odd = int(np.array(candidate).view(itype)) & 1
            key = (abs(Decimal(float(candidate)) - exact), odd)
            if best is None or key < best[0]:
                best = (key, candidate)
    return best[1]


def _reads_back(text: str, v, dtype: str) -> bool:
    back = _nearest_float(text, dtype)
    itype = _FLOATS[dtype][1]
    return int(np.array(back).view(itype)) == int(np.array(v).view(itype))


# ============================================================================================ lexing


_TOKEN = re.compile(r"""
    (?P<ws>(?:[ \t\r\n]+|//[^\n]*)+)
  | (?P<tensor>tensor<[^<>()\[\]{}"]*>)
  | (?P<string>"[^"\\\n]*(?:\\(?:[nt"\\]|[0-9a-fA-F]{2})[^"\\\n]*)*")
  | (?P<float>[0-9]+\.[0-9]*(?:[eE][+-]?[0-9]+)?)
  | (?P<int>0x[0-9a-fA-F]+|[0-9]+)
  | (?P<value>%[A-Za-z0-9_$.\-]+(?:\#[0-9]+)?)
  | (?P<block>\^[A-Za-z0-9_$.\-]+)
  | (?P<symbol>@(?:[A-Za-z_][\w$.\-]*|"[^"\\\n]*(?:\\(?:[nt"\\]|[0-9a-fA-F]{2})[^"\\\n]*)*"))
  | (?P<hash>\#[A-Za-z_][\w$.\-]*)
  | (?P<bang>![A-Za-z_][\w$.\-]*)
  | (?P<ident>[A-Za-z_][\w$.]*)
  | (?P<punct>->|\{-\#|\#-\}|[(){}\[\]<>,:=+\-*?])
  | (?P<bad>.)
""", re.X | re.S)


class _Token(NamedTuple):
    kind: str
    text: str
    pos: int


def _tokenize(text: str, error) -> list[_Token]:
    tokens = []
    append = tokens.append
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "bad":
            if m.group() == '"':
                raise error("unterminated string, or a bad escape in it (MLIR knows \\n \\t \\\" \\\\ \\XX)",
                            m.start())
            raise error(f"unexpected character {m.group()!r}", m.start())
        append(_Token(kind, m.group(), m.start()))
    tokens.append(_Token("eof", "", len(text)))
    return tokens


def _int(literal: str) -> int:
    """An MLIR integer literal: decimal (leading zeros allowed) or 0x hex."""
    return int(literal[2:], 16) if literal.startswith("0x") else int(literal)


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unescape(literal: str) -> str:
    """The value of an MLIR string literal (with its quotes): `\\n \\t \\" \\\\` and `\\XX` hex bytes."""
    body = literal[1:-1]
    if "\\" not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
        elif body[i + 1] in _ESCAPES:
            out += _ESCAPES[body[i + 1]].encode()
            i += 2
        else:
            out.append(int(body[i + 1:i + 3], 16))
            i += 3
    return out.decode("utf-8", errors="replace")


# ============================================================================ parsed forms (syntax)


@dataclass(frozen=True)
class _RawTensor:
    """A `tensor<...>` type as written; its element type may be one TensorType does not hold (index)."""

    shape: tuple
    dtype: str

    def __str__(self):
        return f"tensor<{''.join(f'{d}x' for d in self.shape)}{self.dtype}>"


@dataclass(frozen=True)
class _FunctionType:
    inputs: tuple
    results: tuple


@dataclass(frozen=True)
class _Ident:
    """A bare identifier used as an attribute value: an enum case (`DOUBLE_ROUND`) or a builtin type."""

    name: str


@dataclass(frozen=True)
class _IntAttr:
    value: int
    type: object


@dataclass(frozen=True)
class _FloatAttr:
    text: str  # the literal as written (decimal or 0x bit pattern), converted once the type is known
    type: object


@dataclass(frozen=True)
class _DenseArray:
    dtype: str
    values: tuple


@dataclass
class _Dense:
    array: np.ndarray | None
    type: object
    resource: str | None = None  # dense_resource<handle>: filled from the file's resource section


@dataclass(frozen=True)
class _EnumAttr:
    kind: str
    value: str


@dataclass(frozen=True)
class _Opaque:
    """An attribute this parser keeps as text: dialect attributes it does not model, alias references."""

    text: str


@dataclass
class _Located:
    value: object
    token: _Token


@dataclass
class _Block:
    args: list  # (name, type, attrs dict, token)
    ops: list


@dataclass
class _ParsedOp:
    name: str
    token: _Token
    results: list = field(default_factory=list)  # (name, token)
    operands: list = field(default_factory=list)  # (name, token)
    attrs: dict = field(default_factory=dict)  # name -> _Located
    operand_types: list | None = None
    result_types: list | None = None
    regions: list = field(default_factory=list)  # list of lists of _Block
    loc: object = None
    extra: dict = field(default_factory=dict)  # pretty func.func: arg_attrs and res_attrs of its header


# ============================================================================================ parser


def parse_mlir(text: str) -> Graph:
    """The TOSA graph held by MLIR text (pretty or generic form): the function `@main`, else the only or
    first public function. Raises MlirParseError with line:column on syntax and verification errors."""
    parser = _Parser(text)
    top = parser.file()
    return _GraphBuilder(parser).build(top)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.tokens = _tokenize(text, self._error_at)
        self.i = 0
        self.aliases: dict[str, _Located] = {}
        self.resources: dict[str, str] = {}

    # ----------------------------------------------------------------------------- positions, errors

    def position(self, pos: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, pos)
        return line, pos - self.line_starts[line - 1] + 1

    def _error_at(self, message: str, pos: int) -> MlirParseError:
        return MlirParseError(message, *self.position(pos))

    def error(self, message: str, token: _Token | None = None) -> MlirParseError:
        token = token or self.peek()
        return self._error_at(message, token.pos)

    # ------------------------------------------------------------------------------------ tokens

    def peek(self, ahead: int = 0) -> _Token:
        index = self.i + ahead
        return self.tokens[index] if index < len(self.tokens) else self.tokens[-1]

    def next(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "eof":
            self.i += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token.text == text and token.kind in ("punct", "ident")

    def accept(self, text: str) -> _Token | None:
        return self.next() if self.at(text) else None

    def expect(self, text: str, what: str | None = None) -> _Token:
        if not self.at(text):
            found = self.peek()
            shown = "end of input" if found.kind == "eof" else f"'{found.text[:40]}'"
            raise self.error(f"expected '{text}'{' ' + what if what else ''}, found {shown}")
        return self.next()

    def expect_kind(self, kind: str, what: str) -> _Token:
        token = self.peek()
        if token.kind != kind:
            shown = "end of input" if token.kind == "eof" else f"'{token.text[:40]}'"
            raise self.error(f"expected {what}, found {shown}")
        return self.next()

    # -------------------------------------------------------------------------------------- file

    def file(self) -> list[_ParsedOp]:
        ops = []
        while self.peek().kind != "eof":
            token = self.peek()
            if token.kind in ("hash", "bang") and self.peek(1).text == "=":
                self.next()
                self.next()
                value = self.type() if token.kind == "bang" else self.attribute_or_loc()
                self.aliases[token.text] = _Located(value, token)
            elif self.at("{-#"):
                self.resource_section()
            else:
                ops.append(self.operation())
        return ops

    def attribute_or_loc(self):
        if self.at("loc"):
            return self.loc()
        return self.attribute()

    def resource_section(self) -> None:
        # {-# dialect_resources: { builtin: { name: "0x..." } }, external_resources: {...} #-}
        self.expect("{-#")
        while not self.at("#-}"):
            self.expect_kind("ident", "a resource section name")
            self.expect(":")
            self.expect("{")
            while not self.at("}"):
                dialect = self.expect_kind("ident", "a dialect name")
                self.expect(":")
                self.expect("{")
                while not self.at("}"):
                    key = self.next()
                    self.expect(":")
                    blob = self.expect_kind("string", "a resource blob")
                    if dialect.text == "builtin":
                        self.resources[key.text] = _unescape(blob.text)
                    if not self.accept(","):
                        break
                self.expect("}")
                if not self.accept(","):
                    break
            self.expect("}")
            if not self.accept(","):
                break
        self.expect("#-}")

    # -------------------------------------------------------------------------------- operations

    def operation(self) -> _ParsedOp:
        first = self.peek()
        results = []
        if first.kind == "value":
            while True:
                name = self.expect_kind("value", "a result name")
                count = 1
                if self.accept(":"):
                    count = _int(self.expect_kind("int", "a result count").text)
                results += [(name.text if count == 1 else f"{name.text}#{k}", name) for k in range(count)]
                if not self.accept(","):
                    break
            self.expect("=", "after the result names")
        token = self.peek()
        if token.kind == "string":
            op = self.generic_op()
        elif token.kind == "ident":
            op = self.custom_op()
        else:
            raise self.error(f"expected an operation, found '{token.text[:40]}'")
        op.results = results
        if self.at("loc"):
            op.loc = self.loc()
        return op

    def generic_op(self) -> _ParsedOp:
        token = self.next()
        op = _ParsedOp(_unescape(token.text), token)
        self.expect("(", "before the operands")
        op.operands = self.value_list(")")
        self.expect(")")
        if self.at("["):
            raise self.error("successor blocks are not supported")
        if self.at("<") and self.peek(1).text == "{":
            self.next()
            op.attrs.update(self.attr_dict())
            self.expect(">", "after the properties")
        if self.at("(") and self.peek(1).text == "{":
            self.next()
            while True:
                op.regions.append(self.region())
                if not self.accept(","):
                    break
            self.expect(")")
        if self.at("{"):
            op.attrs.update(self.attr_dict())
        self.expect(":", "before the op's type")
        signature = self.type()
        if not isinstance(signature, _FunctionType):
            raise self.error("expected a function type '(...) -> ...' for a generic op", token)
        op.operand_types, op.result_types = list(signature.inputs), list(signature.results)
        return op

    def custom_op(self) -> _ParsedOp:
        token = self.next()
        name = token.text
        if name in ("module", "builtin.module"):
            op = _ParsedOp("builtin.module", token)
            if self.peek().kind == "symbol":
                self.next()
            if self.accept("attributes"):
                op.attrs.update(self.attr_dict())
            op.regions.append(self.region())
            return op
        if name == "func.func":
            return self.func_op(token)
        if name in _VARIABLE_OPS:
            return self.variable_op(token)
        if name in ("return", "func.return"):
            op = _ParsedOp("func.return", token)
            if self.peek().kind == "value":
                op.operands = self.value_list(":")
                self.expect(":", "before the returned types")
                op.operand_types = self.type_list()
            else:
                op.operand_types = []
            return op
        if name not in OPS:
            raise self.error(f"unknown op '{name}' (not a TOSA 1.0 op this compiler declares)", token)
        # TOSA's custom form: operands, optional attribute dict, `:` and a function type.
        op = _ParsedOp(name, token)
        if self.peek().kind == "value":
            op.operands = self.value_list("{")
        if self.at("{"):
            op.attrs.update(self.attr_dict())
        self.expect(":", f"before the type of {name}")
        signature = self.type()
        if isinstance(signature, _FunctionType):
            op.operand_types, op.result_types = list(signature.inputs), list(signature.results)
        else:  # `: type` alone names the result type (ops whose operands share it)
            op.result_types = [signature]
        return op

    def variable_op(self, token: _Token) -> _ParsedOp:
        """`tosa.variable @v [= dense<...>] : type`, `tosa.variable_read @v : type`,
        `tosa.variable_write @v, %value : type`, read into the attributes of their generic form."""
        op = _ParsedOp(token.text, token)
        symbol = self.expect_kind("symbol", "the variable's @name")
        name = _Located(_symbol_name(symbol.text), symbol)
        if token.text == "tosa.variable":
            op.attrs["sym_name"] = name
            type_token = self.peek()
            if self.accept("="):
                type_token = self.peek()
                initial = self.attribute()
                if not isinstance(initial, _Dense):
                    raise self.error("expected dense<...> : tensor<...> as the variable's initial value", type_token)
                op.attrs["initial_value"] = _Located(initial, type_token)
                t = initial.type
            else:
                self.expect(":", "before the variable's type")
                type_token = self.peek()
                t = self.type()
            if not isinstance(t, _RawTensor):
                raise self.error("a variable's type must be a ranked tensor type", type_token)
            shape = np.array(t.shape, dtype=np.int64)
            op.attrs["var_shape"] = _Located(_Dense(shape, _RawTensor((len(t.shape),), "index")), type_token)
            op.attrs["type"] = _Located(t.dtype, type_token)
            op.operand_types, op.result_types = [], []
            if self.at("{"):
                op.attrs.update(self.attr_dict())
            return op
        op.attrs["name"] = name
        if token.text == "tosa.variable_write":
            self.expect(",", "after the variable's name")
            value = self.expect_kind("value", "the value to write (%name)")
            op.operands = [(value.text, value)]
        if self.at("{"):
            op.attrs.update(self.attr_dict())
        self.expect(":", f"before the type of {token.text}")
        t = self.type()
        if token.text == "tosa.variable_write":
            op.operand_types, op.result_types = [t], []
        else:
            op.operand_types, op.result_types = [], [t]
        return op

    def func_op(self, token: _Token) -> _ParsedOp:
        op = _ParsedOp("func.func", token)
        if self.peek().kind == "ident" and self.peek().text in ("private", "public", "nested"):
            op.attrs["sym_visibility"] = _Located(self.next().text, token)
        symbol = self.expect_kind("symbol", "the function's @name")
        op.attrs["sym_name"] = _Located(_symbol_name(symbol.text), symbol)
        self.expect("(", "before the function arguments")
        args = []
        while not self.at(")"):
            name = self.expect_kind("value", "an argument name")
            self.expect(":")
            arg_type = self.type()
            attrs = self.attr_dict() if self.at("{") else {}
            if self.at("loc"):
                self.loc()
            args.append((name.text, arg_type, attrs, name))
            if not self.accept(","):
                break
        self.expect(")")
        result_types, result_attrs = [], []
        if self.accept("->"):
            if self.accept("("):
                while not self.at(")"):
                    result_types.append(self.type())
                    result_attrs.append(self.attr_dict() if self.at("{") else {})
                    if not self.accept(","):
                        break
                self.expect(")")
            else:
                result_types.append(self.type())
                result_attrs.append({})
        if self.accept("attributes"):
            op.attrs.update(self.attr_dict())
        if self.at("{"):  # a declaration (external function) has no body
            op.regions.append(self.region(entry_args=args))
        op.attrs["function_type"] = _Located(_FunctionType(tuple(a[1] for a in args), tuple(result_types)), token)
        op.extra["arg_attrs"] = [a[2] for a in args]
        op.extra["res_attrs"] = result_attrs
        return op

    def region(self, entry_args=None) -> list[_Block]:
        self.expect("{", "to open a region")
        blocks = []
        current = _Block(list(entry_args or []), [])
        while not self.at("}"):
            if self.peek().kind == "eof":
                raise self.error("unterminated region: expected '}'")
            if self.peek().kind != "block":
                current.ops.append(self.operation())
                continue
            self.next()
            if current.ops or current.args or blocks:
                blocks.append(current)
                current = _Block([], [])
            if self.accept("("):
                while not self.at(")"):
                    name = self.expect_kind("value", "a block argument")
                    self.expect(":")
                    arg_type = self.type()
                    if self.at("loc"):
                        self.loc()
                    current.args.append((name.text, arg_type, {}, name))
                    if not self.accept(","):
                        break
                self.expect(")")
            self.expect(":", "after the block label")
        self.expect("}")
        blocks.append(current)
        return blocks

    def value_list(self, stop: str) -> list:
        values = []
        if self.at(stop):
            return values
        while True:
            token = self.expect_kind("value", "an SSA value (%name)")
            values.append((token.text, token))
            if not self.accept(","):
                return values

    # -------------------------------------------------------------------------------------- types

    def type_list(self) -> list:
        types = [self.type()]
        while self.accept(","):
            types.append(self.type())
        return types

    def type(self):
        token = self.peek()
        if token.kind == "tensor":
            self.next()
            body = token.text[len("tensor<"):-1]
            m = re.fullmatch(r"((?:[0-9]+x)*)([a-z][a-z0-9]*)", body)
            if m is None:
                if re.match(r"(?:[0-9]+x)*[?*]", body):
                    raise self.error(f"dynamic or unranked tensor type {token.text} is not supported", token)
                raise self.error(f"unsupported tensor type {token.text}", token)
            shape = tuple(int(d) for d in m.group(1).split("x")[:-1])
            if math.prod(shape) >= MAX_ELEMENTS:
                raise self.error(f"{token.text} has 2^31 elements or more, beyond TOSA level 8K", token)
            dtype = m.group(2)
            if dtype not in NUMPY_DTYPES and dtype != "index":
                hint = " (TOSA graphs here are signless: run tosa-opt --tosa-convert-integer-type-to-signless)" \
                    if dtype.startswith(("ui", "si")) else ""
                raise self.error(f"unsupported element type {dtype} in {token.text}{hint}", token)
            return _RawTensor(shape, dtype)
        if token.kind == "bang":
            self.next()
            if token.text in self.aliases:
                return self.aliases[token.text].value
            if token.text == "!tosa.shape":
                self.expect("<")
                rank_token = self.expect_kind("int", "the shape's rank")
                rank = _int(rank_token.text)
                if not 0 <= rank <= 2 * MAX_RANK:   # PAD's padding holds two values per axis
                    raise self.error(f"!tosa.shape<{rank}>: a shape holds 0 to {2 * MAX_RANK} values (TOSA level "
                                     f"8K)", rank_token)
                self.expect(">")
                return ShapeType(rank)
            raise self.error(f"unsupported type {token.text}", token)
        if token.text == "(" and token.kind == "punct":
            self.next()
            inputs = [] if self.at(")") else self.type_list()
            self.expect(")")
            if not self.accept("->"):
                if len(inputs) == 1:
                    return inputs[0]
                raise self.error("expected '->' in a function type")
            if self.accept("("):
                results = [] if self.at(")") else self.type_list()
                self.expect(")")
            else:
                results = [self.type()]
            return _FunctionType(tuple(inputs), tuple(results))
        if token.kind == "ident":
            if re.fullmatch(r"[su]?i[0-9]+|bf16|f(16|32|64)|index|none", token.text):
                self.next()
                return token.text
            if token.text == "tensor":
                raise self.error("unsupported tensor type (quantized, dynamic or encoded tensors are not TOSA "
                                 "graphs this compiler reads)", token)
        shown = "end of input" if token.kind == "eof" else f"'{token.text[:40]}'"
        raise self.error(f"expected a type, found {shown}", token)

    # --------------------------------------------------------------------------------- attributes

    def attr_dict(self) -> dict:
        self.expect("{")
        attrs = {}
        while not self.at("}"):
            key = self.peek()
            if key.kind not in ("ident", "string"):
                raise self.error(f"expected an attribute name, found '{key.text[:40]}'")
            self.next()
            name = _unescape(key.text) if key.kind == "string" else key.text
            if self.accept("="):
                value_token = self.peek()
                attrs[name] = _Located(self.attribute(), value_token)
            else:
                attrs[name] = _Located(True, key)  # a unit attribute
            if not self.accept(","):
                break
        self.expect("}", "to close the attribute dictionary")
        return attrs

    def attribute(self):
        token = self.peek()
        kind, text = token.kind, token.text
        if kind == "punct" and text in ("-", "+") or kind in ("int", "float"):
            return self.number_attr()
        if kind == "string":
            self.next()
            value = _unescape(text)
            if self.at(":"):  # a typed string attribute
                self.next()
                self.type()
            return value
        if kind == "ident":
            if text in ("true", "false"):
                self.next()
                return text == "true"
            if text == "unit":
                self.next()
                return True
            if text == "array" and self.peek(1).text == "<":
                return self.dense_array()
            if text in ("dense", "dense_resource") and self.peek(1).text == "<":
                return self.dense()
            if text == "loc" and self.peek(1).text == "(":
                return self.loc()
            if text == "tensor" or re.fullmatch(r"[su]?i[0-9]+|bf16|f(16|32|64)|index|none", text):
                return self.type()
            self.next()
            return _Ident(text)
        if kind == "tensor" or kind == "bang" or text == "(":
            return self.type()
        if text == "[":
            self.next()
            items = []
            while not self.at("]"):
                items.append(self.attribute())
                if not self.accept(","):
                    break
            self.expect("]")
            return items
        if text == "{":
            return {k: v.value for k, v in self.attr_dict().items()}
        if kind == "hash":
            self.next()
            m = re.fullmatch(r"#tosa\.(rounding_mode|nan_mode|resize_mode)", text)
            if m and self.at("<"):
                self.next()
                value = self.expect_kind("ident", "an enum case")
                self.expect(">")
                return _EnumAttr(m.group(1), value.text)
            if self.at("<"):
                start = self.peek().pos
                self.skip_balanced("<", ">")
                return _Opaque(text + self.text[start:self.tokens[self.i - 1].pos + 1])
            return _Opaque(text)
        shown = "end of input" if kind == "eof" else f"'{text[:40]}'"
        raise self.error(f"expected an attribute value, found {shown}")

    def skip_balanced(self, open_text: str, close_text: str) -> None:
        self.expect(open_text)
        depth = 1
        while depth:
            token = self.next()
            if token.kind == "eof":
                raise self.error(f"unbalanced '{open_text}'")
            if token.kind == "punct":
                depth += (token.text == open_text) - (token.text == close_text)

    def number_attr(self):
        negative = False
        if self.at("-") or self.at("+"):
            negative = self.next().text == "-"
        token = self.next()
        if token.kind not in ("int", "float"):
            raise self.error("expected a number", token)
        number_type = None
        if self.at(":"):
            self.next()
            number_type = self.type()
        if token.kind == "float" or isinstance(number_type, str) and number_type.startswith(("f", "bf")):
            return _FloatAttr(("-" if negative else "") + token.text, number_type)
        value = _int(token.text)
        return _IntAttr(-value if negative else value, number_type)

    def dense_array(self) -> _DenseArray:
        self.expect("array")
        self.expect("<")
        dtype = self.type()
        values = []
        if self.accept(":"):
            while True:
                negative = bool(self.accept("-"))
                token = self.peek()
                if token.kind == "ident" and token.text in ("true", "false"):
                    self.next()
                    values.append(token.text == "true")
                else:
                    token = self.expect_kind("int", "an integer")
                    values.append(-_int(token.text) if negative else _int(token.text))
                if not self.accept(","):
                    break
        self.expect(">", "to close array<...>")
        return _DenseArray(dtype, tuple(values))

    def dense(self) -> _Dense:
        keyword = self.next()
        self.expect("<")
        if keyword.text == "dense_resource":
            handle = self.next()
            self.expect(">")
            self.expect(":", "before the type of dense_resource<...>")
            t = self.type()
            return _Dense(None, t, resource=handle.text)
        start = self.peek()
        if self.at(">"):
            literal = None
        elif start.kind == "string":
            self.next()
            raw = _unescape(start.text)
            try:
                literal = bytes.fromhex(raw[2:]) if raw.startswith("0x") else None
            except ValueError:
                literal = None
            if literal is None:
                raise self.error("expected a hex string \"0x...\" in dense<...>", start)
        else:
            literal = self.dense_literal()
        self.expect(">", "to close dense<...>")
        self.expect(":", "before the type of dense<...>")
        type_token = self.peek()
        t = self.type()
        if not isinstance(t, _RawTensor):
            raise self.error("dense<...> needs a ranked tensor type", type_token)
        try:
            array = _dense_array(literal, t)
        except ValueError as e:
            raise self.error(f"bad dense<...> for {t}: {e}", start) from None
        return _Dense(array, t)

    def dense_literal(self):
        """A scalar or nested list of element literals, as Python lists of token texts."""
        if self.accept("["):
            items = []
            while not self.at("]"):
                items.append(self.dense_literal())
                if not self.accept(","):
                    break
            self.expect("]")
            return items
        negative = bool(self.accept("-"))
        token = self.next()
        if token.kind in ("int", "float"):
            return ("-" if negative else "") + token.text
        if token.kind == "ident" and token.text in ("true", "false") and not negative:
            return token.text
        raise self.error(f"expected an element literal, found '{token.text[:40]}'", token)

    def loc(self):
        self.expect("loc")
        self.expect("(")
        token = self.peek()
        if token.kind == "hash" and self.peek(1).text == ")":
            self.next()
            self.next()
            return _Opaque(token.text)
        start = token.pos
        if token.kind == "string" and self.peek(1).text == ")":
            self.next()
            self.next()
            return _unescape(token.text)
        depth = 1
        while True:
            t = self.next()
            if t.kind == "eof":
                raise self.error("unterminated loc(...)")
            if t.kind == "punct" and t.text in "([{<":
                depth += 1
            elif t.kind == "punct" and t.text in ")]}>":
                depth -= 1
                if depth == 0:
                    break
        raw = self.text[start:t.pos]
        m = re.fullmatch(r'"((?:[^"\\]|\\.)*)"\s*\((.*)\)', raw, re.S)
        if m:  # a NameLoc with a child location: keep the name
            return _unescape(f'"{m.group(1)}"')
        m = re.fullmatch(r'"((?:[^"\\]|\\.)*)"\s*:\s*([0-9]+)\s*:\s*([0-9]+)', raw)
        if m:  # a FileLineColLoc
            return _unescape('"' + m.group(1) + '"') + f":{m.group(2)}:{m.group(3)}"
        return raw


def _describe(value) -> str:
    """An attribute value as the text it was parsed from, roughly, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _IntAttr):
        return f"{value.value}" + (f" : {value.type}" if value.type else "")
    if isinstance(value, _FloatAttr):
        return value.text + (f" : {value.type}" if value.type else "")
    if isinstance(value, _DenseArray):
        return f"array<{value.dtype}: ...>"
    if isinstance(value, _Dense):
        return f"dense<...> : {value.type}"
    if isinstance(value, _Ident):
        return value.name
    if isinstance(value, _EnumAttr):
        return f"#tosa.{value.kind}<{value.value}>"
    if isinstance(value, _Opaque):
        return value.text
    if isinstance(value, str):
        return _string(value)
    return str(value)


def _symbol_name(text: str) -> str:
    body = text[1:]
    return _unescape(body) if body.startswith('"') else body


# ---------------------------------------------------------------------------------- dense elements


def _dense_array(literal, t: _RawTensor) -> np.ndarray:
    """The numpy array (storage dtype) of `dense<literal> : t`: a hex string, nested lists, or a splat."""
    shape, dtype = t.shape, t.dtype
    size = int(np.prod(shape, dtype=np.int64))
    storage = np.dtype(np.int64) if dtype == "index" else NUMPY_DTYPES[dtype]
    if literal is None:
        if size:
            raise ValueError("dense<> is empty but the type has elements")
        return np.zeros(shape, storage)
    if isinstance(literal, bytes):
        return _from_raw(literal, dtype, size).reshape(shape)
    if not isinstance(literal, list):
        return np.full(shape, _element(literal, dtype), storage)
    flat = []
    _flatten(literal, shape, flat)
    values = [_element(item, dtype) for item in flat]
    if dtype in _FLOATS:
        return np.array(values, dtype=storage).reshape(shape)
    return np.array(values, dtype=np.int64 if dtype != "i1" else np.bool_).astype(storage).reshape(shape)


def _flatten(items, shape, out: list) -> None:
    if not shape:
        if isinstance(items, list):
            raise ValueError("too many nested lists")
        out.append(items)
        return
    if not isinstance(items, list) or len(items) != shape[0]:
        found = len(items) if isinstance(items, list) else "a scalar"
        raise ValueError(f"expected {shape[0]} elements along a dimension, found {found}")
    for item in items:
        _flatten(item, shape[1:], out)


def _element(text: str, dtype: str):
    if dtype == "i1":
        if text in ("true", "false"):
            return text == "true"
        if text in ("0", "1"):
            return text == "1"
        raise ValueError(f"{text} is not an i1 value")
    if dtype in _FLOATS:
        if text in ("true", "false"):
            raise ValueError(f"{text} is not a float")
        body = text.lstrip("-")
        if body.startswith("0x"):
            ftype, itype = _FLOATS[dtype]
            bits = int(body, 16)
            value = np.array(bits, dtype=itype).view(ftype)[()]
            return -value if text.startswith("-") else value
        return _nearest_float(text, dtype)
    if text in ("true", "false") or "." in text:
        raise ValueError(f"{text} is not an integer")
    value = -_int(text[1:]) if text.startswith("-") else _int(text)
    bits = _INTEGER_BITS[dtype]
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise ValueError(f"{text} does not fit in {dtype}")
    if value >= 1 << (bits - 1):  # signless: the unsigned spelling of a negative value
        value -= 1 << bits
    return value


def _from_raw(raw: bytes, dtype: str, size: int) -> np.ndarray:
    width = _STORAGE_BYTES[dtype]
    if len(raw) == width and size != 1:  # a splat stored once
        raw = raw * size
    if len(raw) != width * size:
        raise ValueError(f"hex data holds {len(raw)} bytes, the type needs {width * size}")
    data = np.frombuffer(raw, dtype=np.uint8)
    if dtype == "i1":
        return data != 0
    if dtype == "i4":
        return (((data.astype(np.int16) & 0xF) ^ 8) - 8).astype(np.int8)
    if dtype == "i48":
        wide = np.zeros((size, 8), dtype=np.uint8)
        wide[:, :6] = data.reshape(size, 6)
        wide[:, 6:] = np.where(data.reshape(size, 6)[:, 5:6] & 0x80, 0xFF, 0)
        return wide.view("<i8").reshape(size).astype(np.int64)
    if dtype in _FLOATS:
        ftype = _FLOATS[dtype][0]
        return data.view("<" + np.dtype(ftype).str[1:]).astype(ftype)
    storage = np.int64 if dtype == "index" else NUMPY_DTYPES[dtype]
    return data.view(f"<i{width}").astype(storage)


# ===================================================================================== graph building


class _GraphBuilder:
    def __init__(self, parser: _Parser):
        self.parser = parser

    def error(self, message: str, token: _Token) -> MlirParseError:
        return self.parser.error(message, token)

    def build(self, top: list[_ParsedOp]) -> Graph:
        ops = top
        modules = [op for op in top if op.name == "builtin.module"]
        if modules:
            if len(top) != 1:
                other = next(op for op in top if op.name != "builtin.module") if len(modules) == 1 else modules[1]
                raise self.error(f"expected a single module, found also {other.name}", other.token)
            ops = self._single_block(modules[0]).ops
        variables = [op for op in ops if op.name == "tosa.variable"]
        ops = [op for op in ops if op.name != "tosa.variable"]
        for op in ops:
            if op.name not in ("func.func",):
                raise self.error(f"only func.func and tosa.variable are supported at module level, found {op.name}",
                                 op.token)
        if not ops:
            raise self.error("the text holds no func.func", modules[0].token if modules else self.parser.tokens[-1])
        funcs = {self._attr(op, "sym_name"): op for op in ops}
        func = funcs.get("main")
        if func is None:
            public = [op for op in ops if self._attr(op, "sym_visibility") in (None, "public")]
            func = (public or ops)[0]
        return self.function(func, variables)

    def _attr(self, op: _ParsedOp, name: str):
        located = op.attrs.get(name)
        return None if located is None else located.value

    def _single_block(self, op: _ParsedOp) -> _Block:
        if len(op.regions) != 1 or len(op.regions[0]) != 1:
            raise self.error(f"{op.name} must have one region with one block", op.token)
        return op.regions[0][0]

    def function(self, func: _ParsedOp, variables=()) -> Graph:
        block = self._single_block(func)
        function_type = self._attr(func, "function_type")
        if not isinstance(function_type, _FunctionType):
            raise self.error("func.func lacks a function_type", func.token)
        if len(block.args) != len(function_type.inputs):
            raise self.error(f"the function type has {len(function_type.inputs)} inputs but the body "
                             f"{len(block.args)} arguments", func.token)
        arg_attrs = func.extra.get("arg_attrs") or self._attr(func, "arg_attrs") or [{}] * len(block.args)
        res_attrs = func.extra.get("res_attrs") or self._attr(func, "res_attrs") or \
            [{}] * len(function_type.results)
        arg_attrs = self.attribute_dicts(func, arg_attrs, len(block.args), "arg_attrs")
        res_attrs = self.attribute_dicts(func, res_attrs, len(function_type.results), "res_attrs")
        input_names = [a.get("tosa.tensor_name", f"arg{i}") for i, a in enumerate(arg_attrs)]
        output_names = [a.get("tosa.tensor_name", f"output{i}") for i, a in enumerate(res_attrs)]
        entry = self._attr(func, "tf.entry_function")
        if isinstance(entry, dict):
            if isinstance(entry.get("inputs"), str) and entry["inputs"]:
                names = entry["inputs"].split(",")
                if len(names) == len(input_names):
                    input_names = names
            if isinstance(entry.get("outputs"), str) and entry["outputs"]:
                names = entry["outputs"].split(",")
                if len(names) == len(output_names):
                    output_names = names

        graph = Graph(self._attr(func, "sym_name") or "main")
        env: dict[str, Value] = {}
        for (name, arg_type, _, token), declared, input_name in zip(block.args, function_type.inputs, input_names):
            t = self.tensor_type(arg_type, token)
            if self.tensor_type(declared, token) != t:
                raise self.error(f"argument {name} has type {t}, the function type says {declared}", token)
            if name in env:
                raise self.error(f"redefinition of {name}", token)
            env[name] = graph.add_input(t, str(input_name))
        # The module's variables become the graph's first ops, declared before the body uses them.
        self.variables: dict[str, TensorType] = {}
        for op in variables:
            self.operation(graph, env, op)

        body = block.ops
        if not body or body[-1].name != "func.return":
            where = body[-1].token if body else func.token
            raise self.error("the function body must end with func.return", where)
        for op in body[:-1]:
            if op.name == "func.return":
                raise self.error("func.return must be the last op of the function", op.token)
            if op.name == "tosa.variable":
                raise self.error("tosa.variable belongs at module level (a symbol needs a SymbolTable parent)",
                                 op.token)
            self.operation(graph, env, op)
        ret = body[-1]
        outputs = [self.lookup(env, name, token) for name, token in ret.operands]
        if ret.operand_types is not None and len(ret.operand_types) != len(outputs):
            raise self.error(f"return lists {len(outputs)} values but {len(ret.operand_types)} types", ret.token)
        for value, declared, (name, token) in zip(outputs, ret.operand_types or [], ret.operands):
            if self.any_type(declared, token) != value.type:
                raise self.error(f"{name} has type {value.type}, return says {declared}", token)
        declared_results = [self.any_type(t, func.token) for t in function_type.results]
        if [v.type for v in outputs] != declared_results:
            raise self.error(f"return types {[str(v.type) for v in outputs]} differ from the function's result "
                             f"types {[str(t) for t in declared_results]}", ret.token)
        graph.set_outputs(outputs, [str(n) for n in output_names])
        return graph

    def attribute_dicts(self, func: _ParsedOp, dicts, count: int, what: str) -> list[dict]:
        if not isinstance(dicts, list) or len(dicts) > count or not all(isinstance(d, dict) for d in dicts):
            raise self.error(f"func.func {what} must be a list of at most {count} dictionaries", func.token)
        plain = [{k: (v.value if isinstance(v, _Located) else v) for k, v in d.items()} for d in dicts]
        return plain + [{}] * (count - len(plain))

    def lookup(self, env, name: str, token: _Token) -> Value:
        value = env.get(name)
        if value is None:
            raise self.error(f"use of undefined value {name}", token)
        return value

    def tensor_type(self, t, token: _Token) -> TensorType:
        if isinstance(t, _RawTensor) and t.dtype in NUMPY_DTYPES:
            return TensorType(t.shape, t.dtype)
        raise self.error(f"expected a tensor type with a TOSA element type, found {t}", token)

    def any_type(self, t, token: _Token):
        if isinstance(t, ShapeType):
            return t
        return self.tensor_type(t, token)

    def resolve_loc(self, loc):
        for _ in range(8):
            if isinstance(loc, _Opaque) and loc.text in self.parser.aliases:
                loc = self.parser.aliases[loc.text].value
            else:
                break
        if isinstance(loc, _Opaque):
            return None if loc.text.startswith("#") else loc.text
        if loc == "unknown":
            return None
        return loc

    def operation(self, graph: Graph, env: dict, op: _ParsedOp) -> None:
        opdef = OPS.get(op.name)
        if opdef is None:
            raise self.error(f"unknown op '{op.name}' (not a TOSA 1.0 op this compiler declares)", op.token)
        for result_name, result_token in op.results:
            if result_name in env:
                raise self.error(f"redefinition of {result_name}", result_token)
        if op.regions:
            raise self.error(f"{op.name} takes no regions", op.token)
        operands = [self.lookup(env, name, token) for name, token in op.operands]
        if op.operand_types is not None:
            if len(op.operand_types) != len(operands):
                raise self.error(f"{op.name} lists {len(operands)} operands but {len(op.operand_types)} "
                                 f"operand types", op.token)
            for i, (value, declared, (name, token)) in enumerate(zip(operands, op.operand_types, op.operands)):
                if self.any_type(declared, token) != value.type:
                    raise self.error(f"{op.name} operand #{i} ({name}) has type {value.type}, the op's type "
                                     f"says {declared}", token)
        if op.result_types is None or len(op.result_types) != len(op.results):
            raise self.error(f"{op.name}: the text names {len(op.results)} results and "
                             f"{len(op.result_types or [])} result types", op.token)
        declared_types = [self.any_type(t, op.token) for t in op.result_types]
        declared = declared_types[0] if declared_types else None
        attrs = {}
        for key, located in op.attrs.items():
            kind = opdef.attrs.get(key)
            if kind is None:
                raise self.error(f"{op.name} has no attribute '{key}' (it takes "
                                 f"{', '.join(sorted(opdef.attrs)) or 'none'})", located.token)
            attrs[key] = self.convert(op, key, kind, located, operands, declared)
        dtype = declared.dtype if isinstance(declared, TensorType) and \
            (opdef.free_result_dtype or op.name == "tosa.const") else None
        if opdef.stated_result_type:
            dtype = declared
        try:
            inferred_types = infer_result_types(op.name, operands, attrs, dtype)
        except VerifyError as e:
            raise self.error(f"invalid {op.name}: {e}", op.token) from None
        except (KeyError, IndexError, TypeError) as e:
            raise self.error(f"invalid {op.name}: {type(e).__name__} {e}", op.token) from None
        if list(inferred_types) != declared_types:
            shown = ", ".join(str(t) for t in declared_types) or "no result"
            raise self.error(f"{op.name} result type: the text says {shown}, the TOSA rules give "
                             f"{', '.join(str(t) for t in inferred_types) or 'no result'}", op.token)
        loc = self.resolve_loc(op.loc) if op.loc is not None else None
        new = graph.append(Operation(op.name, operands, attrs, list(inferred_types), loc))
        for (result_name, _), value in zip(op.results, new.results):
            env[result_name] = value
        self.check_variable(new, op.token)

    def check_variable(self, op: Operation, token: _Token) -> None:
        """EXT-VARIABLE's graph rules: a variable is declared once, before it is read or written at its type."""
        if op.name == "tosa.variable":
            name = op.attrs["sym_name"]
            if name in self.variables:
                raise self.error(f"variable @{name} is declared twice", token)
            self.variables[name] = variable_type(op.attrs)
        elif op.name in ("tosa.variable_read", "tosa.variable_write"):
            name = op.attrs["name"]
            if name not in self.variables:
                raise self.error(f"{op.name} of @{name}, which the module does not declare", token)
            t = op.results[0].type if op.results else op.operands[0].type
            if t != self.variables[name]:
                raise self.error(f"{op.name} of @{name} as {t}; it is declared {self.variables[name]}", token)

    def convert(self, op: _ParsedOp, key: str, kind: str, located: _Located, operands, declared):
        value, token = located.value, located.token

        def bad(expected: str):
            return self.error(f"{op.name} attribute {key} must be {expected}, found {_describe(value)}", token)

        if kind in ("int32", "int64"):
            if not isinstance(value, _IntAttr) or value.type not in (None, f"i{kind[3:]}"):
                raise bad(f"an integer (n : i{kind[3:]})")
            return value.value
        if kind == "bool":
            if not isinstance(value, bool):
                raise bad("true or false")
            return value
        if kind in ("array_i64", "array_i32"):
            if not isinstance(value, _DenseArray) or value.dtype != kind[6:]:
                raise bad(f"array<{kind[6:]}: ...>")
            return tuple(int(v) for v in value.values)
        if kind == "type":
            name = value.name if isinstance(value, _Ident) else value
            if not isinstance(name, str) or name not in NUMPY_DTYPES:
                raise bad("an element type such as i32")
            return name
        if kind == "element":
            # Typed by the input's element type, as tosa-opt requires (`-128 : i8`, `0.0 : f32`).
            dtype = operands[0].type.dtype if operands and isinstance(operands[0].type, TensorType) else None
            number = (_FloatAttr, _IntAttr) if dtype in _FLOATS else (_IntAttr,)
            if not isinstance(value, number) or value.type not in (None, dtype):
                raise bad(f"a number typed {dtype}")
            if dtype in _FLOATS:
                text = value.text if isinstance(value, _FloatAttr) else str(value.value)
                return float(_element(text, dtype))
            try:
                return _element(str(value.value), dtype) if dtype else value.value
            except ValueError as e:
                raise bad(f"a number typed {dtype} ({e})") from None
        if kind == "dense":
            if not isinstance(value, _Dense):
                raise bad("dense<...>")
            array = self.dense_value(value, token)
            if isinstance(declared, TensorType) and (tuple(value.type.shape), value.type.dtype) != \
                    (declared.shape, declared.dtype):
                raise self.error(f"{op.name}: values have type {value.type} but the result is {declared}", token)
            return array
        if kind == "shape":
            if not isinstance(value, _Dense) or value.type.dtype != "index" or len(value.type.shape) != 1:
                raise bad("dense<[...]> : tensor<Nxindex>")
            return tuple(int(v) for v in self.dense_value(value, token))
        if kind == "symbol":
            if not isinstance(value, str) or not value:
                raise bad('a non-empty name ("...")')
            return value
        if kind in ENUM_VALUES:
            if isinstance(value, _EnumAttr):
                name = value.value
            elif isinstance(value, _Ident):
                name = value.name
            elif isinstance(value, str):
                name = value
            else:
                raise bad(f"one of {', '.join(ENUM_VALUES[kind])}")
            if name not in ENUM_VALUES[kind]:
                raise bad(f"one of {', '.join(ENUM_VALUES[kind])}")
            return name
        raise self.error(f"attribute kind {kind} cannot be read", token)

    def dense_value(self, value: _Dense, token: _Token) -> np.ndarray:
        if value.resource is None:
            return value.array
        if value.resource == "__elided__":
            raise self.error("the constant's data was elided (dense_resource<__elided__>); print the graph "
                             "without elide_constants to read it back", token)
        blob = self.parser.resources.get(value.resource)
        if blob is None:
            raise self.error(f"no resource blob named {value.resource} in the file's resource section", token)
        if not blob.startswith("0x"):
            raise self.error(f"resource {value.resource} is not a hex blob", token)
        t = value.type
        try:
            raw = bytes.fromhex(blob[2:])[4:]  # the first 4 bytes hold the blob's alignment
            flat = _from_raw(raw, t.dtype, int(np.prod(t.shape, dtype=np.int64)))
        except ValueError as e:
            raise self.error(f"resource {value.resource}: {e}", token) from None
        return flat.reshape(t.shape)
