"""The flatbuffer verifier LiteRT runs before it reads a model, over the whole TFLite schema.

LiteRT builds a model only after flatbuffers' `Verifier` has walked it through the schema's generated
`Verify` functions: every offset in the buffer and aligned, every table's vtable whole, every vector and
string inside the buffer (strings ending in a NUL), at most 64 tables deep and a million tables in all. The
same walk runs here with the same rules. The schema is read off the `tflite` package's generated accessors
(each names its vtable slot and what the slot holds), so every table and field of the schema that package
was generated from is covered, option tables included, without a second copy of it.
"""

from __future__ import annotations

import importlib
import re
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tflite

MAX_BUFFER_SIZE = 2**31 - 1   # FLATBUFFERS_MAX_BUFFER_SIZE
MAX_DEPTH = 64                # flatbuffers::Verifier::Options defaults
MAX_TABLES = 1_000_000
IDENTIFIER = b"TFL3"

SCALAR_SIZES = {"Bool": 1, "Uint8": 1, "Int8": 1, "Uint16": 2, "Int16": 2, "Uint32": 4, "Int32": 4,
                "Float32": 4, "Uint64": 8, "Int64": 8, "Float64": 8}

# The union fields of the schema and the enum naming each member table (the accessors do not say).
UNION_ENUMS = {
    ("Operator", "BuiltinOptions"): tflite.BuiltinOptions,
    ("Operator", "BuiltinOptions2"): tflite.BuiltinOptions2,
    ("QuantizationParameters", "Details"): tflite.QuantizationDetails,
    ("DimensionMetadata", "ArraySegments"): tflite.SparseIndexVector,
    ("DimensionMetadata", "ArrayIndices"): tflite.SparseIndexVector,
}


@dataclass(frozen=True)
class Field:
    """One field of a table: its vtable slot and what lies there."""
    name: str
    slot: int
    kind: str          # scalar, string, table, vector, strings, tables, union
    size: int = 0      # a scalar's size, or a vector element's
    table: str = ""    # the table class of a table field or of a vector's elements
    members: tuple = ()  # a union's (type code, table class) pairs


F = Field
# LiteRT's schema (3d and later) has fields and tables the `tflite` package predates; each is written here as
# its accessor would describe it, and verified like the rest.
NEWER_FIELDS = {
    "Model": (F("external_buffer_groups", 20, "tables", 4, "ExternalBufferGroup"),
              F("external_buffers", 22, "tables", 4, "ExternalBuffer")),
    "Tensor": (F("external_buffer", 24, "scalar", 4),),
    "ExternalBufferGroup": (F("name", 4, "string"),),
    "ExternalBuffer": (F("id", 4, "scalar", 4), F("group", 6, "scalar", 4), F("offset", 8, "scalar", 8),
                       F("length", 10, "scalar", 8), F("packing", 12, "string")),
    "BlockwiseQuantization": (F("scales", 4, "scalar", 4), F("zero_points", 6, "scalar", 4),
                              F("block_size", 8, "scalar", 4)),
    "MultiAxisQuantization": (F("scales", 4, "scalar", 4), F("zero_points", 6, "scalar", 4),
                              F("block_size", 8, "scalar", 4), F("quantized_dimensions", 10, "vector", 4)),
    "StablehloCaseOptions": (F("branch_subgraph_indices", 4, "vector", 4),),
}
NEWER_UNION_MEMBERS = {
    ("QuantizationParameters", "Details"): ((2, "BlockwiseQuantization"), (3, "MultiAxisQuantization")),
    ("Operator", "BuiltinOptions2"): ((23, "StablehloCaseOptions"),),
}

_ACCESSOR = re.compile(r"\n    def (\w+)\(self(?:, j)?\):\n(.*?)(?=\n    (?:#|def |@)|\n\S|\Z)", re.S)
_HELPERS = re.compile(r"^(Init|GetRootAs.*|.*BufferHasIdentifier|.*Length|.*IsNone|.*AsNumpy)$")
_SLOT = re.compile(r"self\._tab\.Offset\((\d+)\)")
_FLAGS = re.compile(r"number_types\.(\w+)Flags, [ao] \+")
_CLASS = re.compile(r"from tflite\.(\w+) import")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _field(table: str, name: str, body: str) -> Field | None:
    slot = _SLOT.search(body)
    if slot is None:
        return None
    slot, snake = int(slot.group(1)), _snake(name)
    if "self._tab.Union(" in body:
        enum = UNION_ENUMS[(table, name)]
        members = tuple((code, member) for member, code in vars(enum).items()
                        if not member.startswith("_") and member != "NONE")
        return Field(snake, slot, "union", members=members + NEWER_UNION_MEMBERS.get((table, name), ()))
    if "self._tab.Vector(o)" in body:
        if "self._tab.Indirect(" in body:
            return Field(snake, slot, "tables", 4, _CLASS.search(body).group(1))
        if "self._tab.String(" in body:
            return Field(snake, slot, "strings", 4)
        return Field(snake, slot, "vector", SCALAR_SIZES[_FLAGS.search(body).group(1)])
    if "self._tab.String(o" in body:
        return Field(snake, slot, "string")
    if "self._tab.Indirect(o" in body:
        return Field(snake, slot, "table", table=_CLASS.search(body).group(1))
    flags = _FLAGS.search(body)
    if flags is None:
        raise RuntimeError(f"tflite.{table}.{name}: an accessor the verifier does not understand")
    return Field(snake, slot, "scalar", SCALAR_SIZES[flags.group(1)])


@cache
def table_fields(table: str) -> tuple[Field, ...]:
    """The fields of schema table `table`, read off the accessors of its class in the `tflite` package, and
    those LiteRT's schema adds."""
    if not hasattr(tflite, table):
        return NEWER_FIELDS[table]
    source = Path(importlib.import_module(f"tflite.{table}").__file__).read_text()
    fields = (_field(table, name, body) for name, body in _ACCESSOR.findall(source) if not _HELPERS.match(name))
    return tuple(field for field in fields if field is not None) + NEWER_FIELDS.get(table, ())


class _Invalid(Exception):
    pass


@dataclass(frozen=True)
class Site:
    """Where a scalar field, or a vector of scalars, lies in a verified buffer (for structure-aware fuzzing)."""
    path: str
    pos: int        # the scalar, or the vector's length word (its elements follow)
    size: int       # the scalar's or an element's size in bytes
    length: int = -1  # a vector's element count; -1 for a scalar


class _Walk:
    """flatbuffers::Verifier over one buffer: positions are byte offsets from the buffer's start. With
    `sites`, every scalar field and vector of scalars it passes is recorded there."""

    def __init__(self, buf: bytes, sites: list[Site] | None = None):
        self.buf = buf
        self.size = len(buf)
        self.depth = 0
        self.tables = 0
        self.sites = sites

    def check(self, ok: bool, path: str, what: str) -> None:
        if not ok:
            raise _Invalid(f"{path}: {what}")

    def inside(self, pos: int, length: int) -> bool:
        return 0 <= pos and length < self.size and pos <= self.size - length

    def scalar(self, pos: int, size: int, path: str) -> None:
        self.check(pos % size == 0, path, f"a {size}-byte value at byte {pos} is not aligned")
        self.check(self.inside(pos, size), path, f"a {size}-byte value at byte {pos} lies outside the buffer")

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.buf, pos)[0]

    def offset(self, pos: int, path: str) -> int:
        """VerifyOffset: the uoffset at `pos` is aligned, inside, non-zero, positive as a signed value, and
        points inside the buffer; returns where it points."""
        self.scalar(pos, 4, path)
        value = self.u32(pos)
        self.check(0 < value < 2**31, path, f"offset {value} at byte {pos} is {'zero' if not value else 'negative'}")
        self.check(self.inside(pos + value, 1), path, f"offset at byte {pos} points past the buffer's end")
        return pos + value

    def vector(self, pos: int, element: int, path: str) -> int:
        """VerifyVectorOrString: the length is aligned and inside, and so is the whole vector; returns the
        length."""
        self.scalar(pos, 4, path)
        length = self.u32(pos)
        self.check(length < MAX_BUFFER_SIZE // element, path, f"vector length {length} is too large")
        self.check(self.inside(pos, 4 + element * length), path,
                   f"a vector of {length} {element}-byte elements at byte {pos} runs past the buffer's end")
        return length

    def string(self, pos: int, path: str) -> None:
        end = pos + 4 + self.vector(pos, 1, path)
        self.check(self.inside(end, 1) and self.buf[end] == 0, path, f"the string at byte {pos} has no NUL end")

    def table(self, pos: int, name: str, path: str) -> None:
        self.check(pos % 4 == 0 and self.inside(pos, 4), path, f"table at byte {pos} is unaligned or outside")
        vtable = pos - struct.unpack_from("<i", self.buf, pos)[0]
        self.depth += 1
        self.tables += 1
        self.check(self.depth <= MAX_DEPTH, path, f"tables nest deeper than {MAX_DEPTH}")
        self.check(self.tables <= MAX_TABLES, path, f"more than {MAX_TABLES} tables")
        self.check(vtable % 2 == 0 and self.inside(vtable, 2), path, f"the vtable of the table at byte {pos} is "
                   f"unaligned or outside the buffer")
        vsize = struct.unpack_from("<H", self.buf, vtable)[0]
        self.check(vsize % 2 == 0 and self.inside(vtable, vsize), path,
                   f"the vtable at byte {vtable} ({vsize} bytes) is odd-sized or runs past the buffer's end")
        present = {}
        for field in table_fields(name):
            at = struct.unpack_from("<H", self.buf, vtable + field.slot)[0] if field.slot < vsize else 0
            if at:
                present[field.name] = pos + at
        for field in table_fields(name):
            if field.name in present:
                self.field(field, present[field.name], present, f"{path}.{field.name}")
        self.depth -= 1

    def field(self, field: Field, at: int, present: dict, path: str) -> None:
        if field.kind == "scalar":
            self.scalar(at, field.size, path)
            if self.sites is not None:
                self.sites.append(Site(path, at, field.size))
            return
        target = self.offset(at, path)
        if field.kind == "string":
            self.string(target, path)
        elif field.kind == "table":
            self.table(target, field.table, path)
        elif field.kind == "vector":
            length = self.vector(target, field.size, path)
            if self.sites is not None:
                self.sites.append(Site(path, target, field.size, length))
        elif field.kind in ("tables", "strings"):
            for i in range(self.vector(target, 4, path)):
                element = target + 4 + 4 * i
                if field.kind == "tables":
                    self.table(element + self.u32(element), field.table, f"{path}[{i}]")
                else:
                    self.string(element + self.u32(element), f"{path}[{i}]")
        else:
            type_at = present.get(field.name + "_type")
            code = self.buf[type_at] if type_at is not None else 0
            member = dict(field.members).get(code)
            if member is not None:  # NONE and codes the schema lacks pass, as in the generated Verify
                self.table(target, member, f"{path} ({member})")


def verify_model(buf: bytes, sites: list[Site] | None = None) -> str | None:
    """What makes `buf` an invalid TFLite flatbuffer by LiteRT's verifier (where and which rule), or None.
    `sites`, when given, receives where each scalar field and vector of scalars lies."""
    if not (8 <= len(buf) < MAX_BUFFER_SIZE) or buf[4:8] != IDENTIFIER:
        return "no 'TFL3' identifier at byte 4"
    walk = _Walk(buf, sites)
    try:
        walk.table(walk.offset(0, "root"), "Model", "model")
    except _Invalid as problem:
        return str(problem)
    return None
