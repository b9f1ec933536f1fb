"""Consul's ``?filter=`` expression language, as the Consul stand-in speaks it.

Consul filters list results with go-bexpr **v0.1.2** (the version its go.mod pins), through
``bexpr.CreateFilter(expression, nil, results)``: the expression is parsed by a pigeon PEG
parser, then checked against the Go type of one result, then run on every result.

Guarantees
- Same language: the v0.1.2 grammar (``==``, ``!=``, ``is [not] empty``, ``[not] in``,
  ``[not] contains``, ``[not] matches``, ``and``/``or``/``not``, parentheses, ``"..."`` strings
  with Go escapes, backtick raw strings, numbers, bare words as values, ``a.b`` and ``a["b"]``).
- Same parse errors, byte for byte: pigeon's ``L:C (offset): rule "x": ...`` texts and its
  farthest-failure ``no match found, expected: ...`` lists (checked against consul#7338, #9441).
- Same type rules: field names are case-sensitive Go names; each field type allows only some
  operators; values are coerced to the field type with Go's strconv (``Port == "80"`` works,
  ``Port == "x"`` is an error); ``in`` means substring on strings, membership on lists and key
  presence on maps; an absent map key makes ``==``/``in``/``is not empty`` false and every other
  operator true; a selector through a list is true if any element matches.
- Same answer to a bad filter: HTTP 500 with the error text as a plain-text body (consul#7338:
  "this error happens on the servers", so it is not a 400).
- Compile once, evaluate many: parsing happens once per expression, type checking once per
  result shape, no ``eval``.

Non-guarantees
- Regular expressions run on Python's ``re`` after translating RE2 syntax (anchors, flags,
  octal/hex escapes, POSIX classes); ``\\p{..}`` classes and the ``U`` flag are refused,
  case-insensitive matching folds ASCII only, ``\\s`` also matches ``\\v``, and regex error
  texts are RE2-like rather than exact.
- Consul's Go process panics when a selector goes through a nil pointer (say ``Proxy.Mode``
  on a service without a proxy) and drops the connection; the stand-in raises ``FilterError``.
- Expressions nested deeper than Python's recursion limit allows are refused.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

Predicate = Callable[[Mapping[str, Any]], bool]

# consul#7338: filter errors surface from the servers as generic RPC errors, so HTTP 500.
BAD_FILTER_STATUS = 500
_CREATE_PREFIX = "Failed to create boolean expression evaluator: "
_TOO_DEEP = _CREATE_PREFIX + "expression nests too deeply for the consul double"


class FilterError(ValueError):
    """str(e) is the error text Consul would put in the response body."""

    status: int

    def __init__(self, message: str, status: int = BAD_FILTER_STATUS) -> None:
        super().__init__(message)
        self.status = status


def compile_filter(expression: str, *, schema: Struct | None = None) -> Predicate:
    """Compile ``expression`` once; the result tells whether one JSON result item matches.

    With ``schema`` (one of the shapes below) every check Consul makes up front happens
    here, as Consul does it, even if no item is ever filtered. Without it the shape is
    recognised from each item (agent service, agent check, catalog service node, health
    entry, else inferred from the JSON), so those errors surface from the predicate instead.
    Either way the predicate may also raise ``FilterError`` where Consul fails mid-filter
    (a selector through a nil pointer) or when an item's JSON cannot come from the Go type.
    An empty expression matches everything, as in Consul.
    """
    if expression == "":
        return _match_everything
    tree = _parse(expression)
    if schema is not None:
        return _BoundFilter(_bind(tree, schema), schema)
    return _ShapeDetectingFilter(tree)


def _match_everything(_item: Mapping[str, Any]) -> bool:
    return True


# ---------------------------------------------------------------------------------------------
# Result shapes: the Go structs Consul filters, by their selectable (Go) field names.
# ---------------------------------------------------------------------------------------------


class Kind(Enum):
    """Go primitive kinds that bexpr can compare against a value."""

    STRING = "string"
    INT = "int"
    BOOL = "bool"
    FLOAT = "float"


@dataclass(frozen=True)
class Primitive:
    kind: Kind


@dataclass(frozen=True)
class ListOf:
    element: FieldType


@dataclass(frozen=True)
class MapOf:
    """A Go map with string keys."""

    value: FieldType


@dataclass(frozen=True)
class Struct:
    """A Go struct; ``nullable`` marks a pointer field, which may be nil (JSON null/absent)."""

    fields: tuple[tuple[str, FieldType], ...]
    nullable: bool = False

    def field(self, name: str) -> FieldType | None:
        for field_name, field_type in self.fields:
            if field_name == name:
                return field_type
        return None


FieldType = Primitive | ListOf | MapOf | Struct


def struct(*, nullable: bool = False, **fields: FieldType) -> Struct:
    """Build a ``Struct`` from keyword arguments, keeping their order."""
    return Struct(tuple(fields.items()), nullable)


_STR = Primitive(Kind.STRING)
_INT = Primitive(Kind.INT)
_BOOL = Primitive(Kind.BOOL)
_STRINGS = ListOf(_STR)
_STRING_MAP = MapOf(_STR)
_SERVICE_ADDRESS = struct(Address=_STR, Port=_INT)
_WEIGHTS = struct(Passing=_INT, Warning=_INT)
_MESH_GATEWAY = struct(Mode=_STR)
_UPSTREAM = struct(
    Datacenter=_STR,
    DestinationName=_STR,
    DestinationNamespace=_STR,
    DestinationType=_STR,
    LocalBindAddress=_STR,
    LocalBindPort=_INT,
    MeshGateway=_MESH_GATEWAY,
)


def _proxy(*, nullable: bool, transparent_proxy_nullable: bool) -> Struct:
    return struct(
        nullable=nullable,
        DestinationServiceID=_STR,
        DestinationServiceName=_STR,
        LocalServiceAddress=_STR,
        LocalServicePort=_INT,
        Mode=_STR,
        TransparentProxy=struct(nullable=transparent_proxy_nullable, OutboundListenerPort=_INT),
        MeshGateway=_MESH_GATEWAY,
        Upstreams=ListOf(_UPSTREAM),
    )


# The selectors below are the ones Consul documents for each endpoint (api-docs "Filtering"
# tables); pointer-ness follows api.AgentService and structs.CheckServiceNode.

#: ``GET /v1/agent/services`` values (api.AgentService).
AGENT_SERVICE = struct(
    Address=_STR,
    Connect=struct(nullable=True, Native=_BOOL),
    EnableTagOverride=_BOOL,
    ID=_STR,
    Kind=_STR,
    Meta=_STRING_MAP,
    Port=_INT,
    Proxy=_proxy(nullable=True, transparent_proxy_nullable=True),
    Service=_STR,
    TaggedAddresses=MapOf(_SERVICE_ADDRESS),
    Tags=_STRINGS,
    Weights=_WEIGHTS,
)

#: ``GET /v1/agent/checks`` values and health ``Checks`` elements (structs.HealthCheck).
AGENT_CHECK = struct(
    CheckID=_STR,
    Name=_STR,
    Node=_STR,
    Notes=_STR,
    Output=_STR,
    ServiceID=_STR,
    ServiceName=_STR,
    ServiceTags=_STRINGS,
    Status=_STR,
)

#: ``GET /v1/catalog/service/:name`` elements (structs.ServiceNode).
CATALOG_SERVICE = struct(
    Address=_STR,
    Datacenter=_STR,
    ID=_STR,
    Node=_STR,
    NodeMeta=_STRING_MAP,
    ServiceAddress=_STR,
    ServiceConnect=struct(Native=_BOOL),
    ServiceEnableTagOverride=_BOOL,
    ServiceID=_STR,
    ServiceKind=_STR,
    ServiceMeta=_STRING_MAP,
    ServiceName=_STR,
    ServicePort=_INT,
    ServiceProxy=_proxy(nullable=False, transparent_proxy_nullable=False),
    ServiceTaggedAddresses=MapOf(_SERVICE_ADDRESS),
    ServiceTags=_STRINGS,
    ServiceWeights=_WEIGHTS,
    TaggedAddresses=_STRING_MAP,
)

#: ``GET /v1/health/service/:name`` elements (structs.CheckServiceNode).
HEALTH_SERVICE = struct(
    Checks=ListOf(Struct(AGENT_CHECK.fields, nullable=True)),
    Node=struct(
        nullable=True,
        Address=_STR,
        Datacenter=_STR,
        ID=_STR,
        Meta=_STRING_MAP,
        Node=_STR,
        TaggedAddresses=_STRING_MAP,
    ),
    Service=struct(
        nullable=True,
        Address=_STR,
        Connect=struct(Native=_BOOL),
        EnableTagOverride=_BOOL,
        ID=_STR,
        Kind=_STR,
        Meta=_STRING_MAP,
        Port=_INT,
        Proxy=_proxy(nullable=False, transparent_proxy_nullable=False),
        Service=_STR,
        TaggedAddresses=MapOf(_SERVICE_ADDRESS),
        Tags=_STRINGS,
        Weights=Struct(_WEIGHTS.fields, nullable=True),
    ),
)


def _recognise_shape(item: Mapping[str, Any]) -> Struct:
    """The Consul result type ``item`` was serialised from, else a shape read off the JSON."""
    if "CheckID" in item:
        return AGENT_CHECK
    if "Checks" in item and isinstance(item.get("Node"), Mapping):
        return HEALTH_SERVICE
    if "ServiceID" in item and "ServiceName" in item:
        return CATALOG_SERVICE
    if "Service" in item and "ID" in item:
        return AGENT_SERVICE
    return _infer_struct(item)


def _infer_struct(document: Mapping[str, Any]) -> Struct:
    fields = tuple((str(key), _infer_type(str(key), value)) for key, value in document.items())
    return Struct(fields)


def _infer_type(name: str, value: Any) -> FieldType:
    """Guess the Go type behind a JSON value; nested objects named like maps are maps."""
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return Primitive(Kind.FLOAT)
    if isinstance(value, list):
        return ListOf(_infer_type(name, value[0]) if value else _STR)
    if isinstance(value, Mapping):
        if name.endswith("Meta") or name.endswith("TaggedAddresses"):
            first = next(iter(value.values()), "")
            return MapOf(_infer_type(name, first))
        return _infer_struct(value)
    return _STR


# ---------------------------------------------------------------------------------------------
# Syntax tree
# ---------------------------------------------------------------------------------------------


class _Op(Enum):
    """Match operators; the values are bexpr's MatchOperator.String() texts."""

    EQUAL = "Equal"
    NOT_EQUAL = "Not Equal"
    IN = "In"
    NOT_IN = "Not In"
    IS_EMPTY = "Is Empty"
    IS_NOT_EMPTY = "Is Not Empty"
    MATCHES = "Matches"
    NOT_MATCHES = "Not Matches"


_NEGATION_OF: dict[_Op, _Op] = {
    _Op.NOT_EQUAL: _Op.EQUAL,
    _Op.NOT_IN: _Op.IN,
    _Op.IS_NOT_EMPTY: _Op.IS_EMPTY,
    _Op.NOT_MATCHES: _Op.MATCHES,
}


@dataclass(frozen=True)
class _Match:
    selector: tuple[str, ...]
    op: _Op
    raw_value: str | None


@dataclass(frozen=True)
class _Not:
    operand: _Node


@dataclass(frozen=True)
class _And:
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Or:
    left: _Node
    right: _Node


_Node = _Match | _Not | _And | _Or


# ---------------------------------------------------------------------------------------------
# Go compatibility: strconv quoting, unquoting and number parsing
# ---------------------------------------------------------------------------------------------

_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
               "\v": r"\v", "\\": r"\\", '"': r"\""}


def _go_quote(text: str) -> str:
    """strconv.Quote (what Go's ``%q`` prints)."""
    return '"' + "".join(_go_quote_char(char) for char in text) + '"'


def _go_quote_char(char: str) -> str:
    if char in _GO_ESCAPES:
        return _GO_ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a raw byte smuggled through surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:  # Go sees a lone surrogate's UTF-8 bytes as invalid bytes
        return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    if char.isprintable():
        return char
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class _GoSyntaxError(Exception):
    """strconv.ErrSyntax."""


_SIMPLE_ESCAPE_VALUES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                         "v": "\v", "\\": "\\", '"': '"'}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_OCTAL_DIGITS = frozenset("01234567")


def _go_unquote(literal: str) -> str:
    """strconv.Unquote for a ``"..."`` or backtick literal; raises _GoSyntaxError."""
    body = literal[1:-1]
    if literal[0] == "`":
        return body.replace("\r", "")  # Go drops carriage returns from raw strings
    if "\n" in body:
        raise _GoSyntaxError
    decoded = bytearray()
    index = 0
    while index < len(body):
        if body[index] == "\\":
            index = _decode_escape(body, index + 1, decoded)
        else:
            decoded += body[index].encode("utf-8", "surrogatepass")
            index += 1
    # \x and octal escapes may yield bytes that are not UTF-8; keep them as Go keeps them.
    return decoded.decode("utf-8", "surrogateescape")


def _decode_escape(body: str, index: int, out: bytearray) -> int:
    """Decode the escape whose code letter is at ``body[index]``; return the next index."""
    if index >= len(body):
        raise _GoSyntaxError
    code = body[index]
    if code in _SIMPLE_ESCAPE_VALUES:
        out += _SIMPLE_ESCAPE_VALUES[code].encode()
        return index + 1
    if code in "xuU":
        width = {"x": 2, "u": 4, "U": 8}[code]
        digits = body[index + 1 : index + 1 + width]
        if len(digits) < width or not set(digits) <= _HEX_DIGITS:
            raise _GoSyntaxError
        value = int(digits, 16)
        if code == "x":
            out.append(value)
        elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            raise _GoSyntaxError
        else:
            out += chr(value).encode()
        return index + 1 + width
    digits = body[index : index + 3]
    if len(digits) < 3 or not set(digits) <= _OCTAL_DIGITS or int(digits, 8) > 0xFF:
        raise _GoSyntaxError
    out.append(int(digits, 8))
    return index + 3


class _GoNumError(Exception):
    """strconv.NumError; str() is Go's Error() text."""

    def __init__(self, function: str, number: str, reason: str) -> None:
        super().__init__(f"strconv.{function}: parsing {_go_quote(number)}: {reason}")


class _NumSyntax(Exception):
    pass


class _NumRange(Exception):
    pass


_INVALID_SYNTAX = "invalid syntax"
_OUT_OF_RANGE = "value out of range"
_UINT64_MAX = 2**64 - 1
_BASE_PREFIXES = {"b": 2, "o": 8, "x": 16}


def _parse_go_int(text: str) -> int:
    """strconv.ParseInt(text, 0, 64): Go literal syntax with 0x/0o/0b/0 prefixes and ``_``."""
    negative = text[:1] == "-"
    unsigned = text[1:] if text[:1] in ("+", "-") else text
    try:
        magnitude = _parse_go_uint(unsigned)
    except _NumSyntax:
        raise _GoNumError("ParseInt", text, _INVALID_SYNTAX) from None
    except _NumRange:
        raise _GoNumError("ParseInt", text, _OUT_OF_RANGE) from None
    if magnitude > (2**63 if negative else 2**63 - 1):
        raise _GoNumError("ParseInt", text, _OUT_OF_RANGE)
    return -magnitude if negative else magnitude


def _parse_go_uint(text: str) -> int:
    """strconv.ParseUint(text, 0, 64); overflow is reported as soon as it happens, like Go."""
    if text == "":
        raise _NumSyntax
    base, digits = 10, text
    if text[0] == "0":
        prefixed = len(text) >= 3 and text[1].lower() in _BASE_PREFIXES
        base = _BASE_PREFIXES[text[1].lower()] if prefixed else 8
        digits = text[2:] if prefixed else text[1:]
    value, saw_underscore = 0, False
    for char in digits:
        if char == "_":
            saw_underscore = True
            continue
        digit = int(char, 36) if char.isascii() and char.isalnum() else base
        if digit >= base:
            raise _NumSyntax
        value = value * base + digit
        if value > _UINT64_MAX:
            raise _NumRange
    if saw_underscore and not _underscores_ok(text):
        raise _NumSyntax
    return value


def _underscores_ok(text: str) -> bool:
    """Go's rule: ``_`` only between digits, or between a base prefix and a digit."""
    last = "^"  # ^ start, 0 digit or prefix, _ underscore, ! anything else
    body = text
    is_hex = False
    if len(body) >= 2 and body[0] == "0" and body[1].lower() in _BASE_PREFIXES:
        is_hex = body[1].lower() == "x"
        body, last = body[2:], "0"
    for char in body:
        if (char.isascii() and char.isdigit()) or (is_hex and char in _HEX_DIGITS):
            last = "0"
        elif char == "_":
            if last != "0":
                return False
            last = "_"
        elif last == "_":
            return False
        else:
            last = "!"
    return last != "_"


_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_GO_DECIMAL_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_GO_FLOAT_WORDS = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def _parse_go_bool(text: str) -> bool:
    if text not in _GO_BOOLS:
        raise _GoNumError("ParseBool", text, _INVALID_SYNTAX)
    return _GO_BOOLS[text]


def _parse_go_float(text: str) -> float:
    """strconv.ParseFloat(text, 64) for decimal notation (hex floats are not accepted here)."""
    if not (_GO_DECIMAL_FLOAT.fullmatch(text) or _GO_FLOAT_WORDS.fullmatch(text)):
        raise _GoNumError("ParseFloat", text, _INVALID_SYNTAX)
    value = float(text)
    if value in (float("inf"), float("-inf")) and not _GO_FLOAT_WORDS.fullmatch(text):
        raise _GoNumError("ParseFloat", text, _OUT_OF_RANGE)
    return value


_COERCERS: dict[Kind, Callable[[str], Any]] = {
    Kind.STRING: str,
    Kind.INT: _parse_go_int,
    Kind.BOOL: _parse_go_bool,
    Kind.FLOAT: _parse_go_float,
}


# ---------------------------------------------------------------------------------------------
# PEG engine with pigeon's error reporting
# ---------------------------------------------------------------------------------------------


class _Parser:
    """Parse state: input, position, farthest failure and errors, as pigeon tracks them.

    Positions are rune indexes; ``where`` renders them as pigeon does (line, rune column,
    byte offset, with a newline counting as column 0 of the next line).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.inverted = False  # inside a !-predicate, matches count as expected-failures
        self.farthest = 0
        self.expected: list[str] = []
        self.errors: list[str] = []
        self.rule_stack: list[_Rule] = []
        self.memo: dict[tuple[int, int, bool], tuple[bool, Any, int]] = {}
        self._positions = _pigeon_positions(text)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def record(self, matched: bool, pos: int, want: str) -> None:
        """pigeon's failAt: remember what was wanted at the farthest position reached."""
        if matched != self.inverted or pos < self.farthest:
            return
        if pos > self.farthest:
            self.farthest = pos
            self.expected = []
        self.expected.append("!" + want if self.inverted else want)

    def add_error(self, message: str, pos: int) -> None:
        prefix = self.where(pos)
        if self.rule_stack:
            prefix += ": rule " + self.rule_stack[-1].label
        self.errors.append(f"{prefix}: {message}")

    def where(self, pos: int) -> str:
        line, column, offset = self._positions[pos]
        return f"{line}:{column} ({offset})"

    def no_match_error(self) -> str:
        wanted = set(self.expected)
        saw_eof = "!." in wanted
        wanted.discard("!.")
        names = sorted(wanted) + (["EOF"] if saw_eof else [])
        return f"{self.where(self.farthest)}: no match found, expected: {_list_join(names)}"


def _pigeon_positions(text: str) -> list[tuple[int, int, int]]:
    positions = []
    line, column, offset, width = 1, 0, 0, 0
    for char in [*text, ""]:
        offset += width
        column += 1
        if char == "\n":
            line, column = line + 1, 0
        positions.append((line, column, offset))
        width = len(char.encode("utf-8", "surrogatepass"))
    return positions


def _list_join(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} or {names[-1]}"


class _Expr:
    """A parsing expression: ``parse`` returns (matched, value) and restores on failure."""

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        raise NotImplementedError


class _Literal(_Expr):
    def __init__(self, text: str) -> None:
        self.text = text
        self.want = _go_quote(text)

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        start = p.pos
        matched = p.text.startswith(self.text, start)
        p.record(matched, start, self.want)
        if matched:
            p.pos += len(self.text)
        return matched, self.text


class _CharClass(_Expr):
    def __init__(self, label: str, accepts: Callable[[str], bool]) -> None:
        self.label = label
        self.accepts = accepts

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        start = p.pos
        matched = not p.at_end() and self.accepts(p.text[start])
        p.record(matched, start, self.label)
        if matched:
            p.pos += 1
        return matched, p.text[start : p.pos]


class _AnyChar(_Expr):
    def parse(self, p: _Parser) -> tuple[bool, Any]:
        start = p.pos
        matched = not p.at_end()
        p.record(matched, start, ".")
        if matched:
            p.pos += 1
        return matched, p.text[start : p.pos]


class _Sequence(_Expr):
    def __init__(self, *items: _Expr) -> None:
        self.items = items

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        start = p.pos
        values: list[Any] = []
        for item in self.items:
            matched, value = item.parse(p)
            if not matched:
                p.pos = start
                return False, None
            values.append(value)
        return True, values


class _Choice(_Expr):
    def __init__(self, *alternatives: _Expr) -> None:
        self.alternatives = alternatives

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        for alternative in self.alternatives:
            matched, value = alternative.parse(p)
            if matched:
                return True, value
        return False, None


class _Repeat(_Expr):
    def __init__(self, item: _Expr, minimum: int) -> None:
        self.item = item
        self.minimum = minimum

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        values: list[Any] = []
        while True:
            matched, value = self.item.parse(p)
            if not matched:
                return len(values) >= self.minimum, values
            values.append(value)


class _Optional(_Expr):
    def __init__(self, item: _Expr) -> None:
        self.item = item

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        return True, self.item.parse(p)[1]


class _Lookahead(_Expr):
    """``&e`` (wanted) or ``!e`` (not wanted); never consumes input."""

    def __init__(self, item: _Expr, *, wanted: bool) -> None:
        self.item = item
        self.wanted = wanted

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        start = p.pos
        if not self.wanted:
            p.inverted = not p.inverted
        matched, _ = self.item.parse(p)
        if not self.wanted:
            p.inverted = not p.inverted
        p.pos = start
        return matched == self.wanted, None


class _Reject(_Expr):
    """A grammar ``&{ return false, errors.New(...) }`` block: records an error and fails."""

    def __init__(self, message: str) -> None:
        self.message = message

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        p.add_error(self.message, p.pos)
        return False, None


class _ActionFailed(Exception):
    """Raised by an action to report an error; pigeon keeps the match and records the error."""

    def __init__(self, message: str, fallback: Any) -> None:
        super().__init__(message)
        self.fallback = fallback


class _Action(_Expr):
    def __init__(self, item: _Expr, build: Callable[[Any, str], Any]) -> None:
        self.item = item
        self.build = build

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        start = p.pos
        matched, value = self.item.parse(p)
        if not matched:
            return False, None
        try:
            return True, self.build(value, p.text[start : p.pos])
        except _ActionFailed as failure:
            p.add_error(str(failure), start)
            return True, failure.fallback


class _Rule(_Expr):
    """A named rule; results are memoised, which changes no outcome and no error text."""

    _count: ClassVar[int] = 0

    def __init__(self, name: str, display_name: str | None = None) -> None:
        self.label = display_name or name
        self.body: _Expr | None = None
        _Rule._count += 1
        self._key = _Rule._count

    def parse(self, p: _Parser) -> tuple[bool, Any]:
        key = (self._key, p.pos, p.inverted)
        if key in p.memo:
            matched, value, end = p.memo[key]
            p.pos = end
            return matched, value
        assert self.body is not None, f"rule {self.label} has no body"
        p.rule_stack.append(self)
        matched, value = self.body.parse(p)
        p.rule_stack.pop()
        p.memo[key] = (matched, value, p.pos)
        return matched, value


# ---------------------------------------------------------------------------------------------
# The go-bexpr v0.1.2 grammar (grammar.peg), rule for rule
# ---------------------------------------------------------------------------------------------


def _opt(item: _Expr) -> _Expr:
    return _Optional(item)


def _star(item: _Expr) -> _Expr:
    return _Repeat(item, 0)


def _plus(item: _Expr) -> _Expr:
    return _Repeat(item, 1)


def _not(item: _Expr) -> _Expr:
    return _Lookahead(item, wanted=False)


def _and(item: _Expr) -> _Expr:
    return _Lookahead(item, wanted=True)


def _pick(index: int) -> Callable[[Any, str], Any]:
    return lambda values, _text: values[index]


def _text(_values: Any, text: str) -> str:
    return text


def _constant(value: Any) -> Callable[[Any, str], Any]:
    return lambda _values, _text: value


def _binary_chain(make: Callable[[_Node, _Node], _Node]) -> Callable[[Any, str], Any]:
    """Fold ``first (sep next)*`` right-associatively, as bexpr's right-recursive rules do."""

    def build(values: Any, _text: str) -> _Node:
        first, rest = values
        operands = [first, *(pair[1] for pair in rest)]
        node: _Node = operands[-1]
        for operand in reversed(operands[:-1]):
            node = make(operand, node)
        return node

    return build


def _negate(values: Any, _text: str) -> _Node:
    operand = values[2]
    # bexpr folds "not not x" into x.
    return operand.operand if isinstance(operand, _Not) else _Not(operand)


def _unquote_literal(_values: Any, text: str) -> str:
    try:
        return _go_unquote(text)
    except _GoSyntaxError:
        raise _ActionFailed(_INVALID_SYNTAX, "") from None


def _build_grammar() -> _Rule:
    rules = {
        name: _Rule(name, display)
        for name, display in [
            ("Input", None), ("OrExpression", None), ("AndExpression", None),
            ("NotExpression", None), ("ParenthesizedExpression", '"grouping"'),
            ("MatchExpression", '"match"'), ("MatchSelectorOpValue", '"match"'),
            ("MatchSelectorOp", '"match"'), ("MatchValueOpSelector", '"match"'),
            ("MatchEqual", None), ("MatchNotEqual", None), ("MatchIsEmpty", None),
            ("MatchIsNotEmpty", None), ("MatchIn", None), ("MatchNotIn", None),
            ("MatchContains", None), ("MatchNotContains", None), ("MatchMatches", None),
            ("MatchNotMatches", None), ("Selector", '"selector"'), ("Identifier", None),
            ("SelectorOrIndex", None), ("IndexExpression", '"index"'), ("Value", '"value"'),
            ("NumberLiteral", '"number"'), ("AfterNumbers", None), ("IntegerOrFloat", None),
            ("StringLiteral", '"string"'), ("RawStringChar", None), ("DoubleStringChar", None),
            ("_", '"whitespace"'), ("EOF", None),
        ]
    }
    _define_expressions(rules)
    _define_matches(rules)
    _define_operators(rules)
    _define_selectors(rules)
    _define_literals(rules)
    return rules["Input"]


def _define_expressions(r: dict[str, _Rule]) -> None:
    ws = r["_"]
    r["Input"].body = _Choice(
        _Action(_Sequence(_opt(ws), _Literal("("), _opt(ws), r["OrExpression"], _opt(ws),
                          _Literal(")"), _opt(ws), r["EOF"]), _pick(3)),
        _Action(_Sequence(_opt(ws), r["OrExpression"], _opt(ws), r["EOF"]), _pick(1)),
    )
    # "left _ op _ right:Self / left" written as a loop: same language, same failures,
    # no recursion depth per operand.
    r["OrExpression"].body = _Action(
        _Sequence(r["AndExpression"],
                  _star(_Sequence(_Sequence(ws, _Literal("or"), ws), r["AndExpression"]))),
        _binary_chain(_Or),
    )
    r["AndExpression"].body = _Action(
        _Sequence(r["NotExpression"],
                  _star(_Sequence(_Sequence(ws, _Literal("and"), ws), r["NotExpression"]))),
        _binary_chain(_And),
    )
    r["NotExpression"].body = _Choice(
        _Action(_Sequence(_Literal("not"), ws, r["NotExpression"]), _negate),
        r["ParenthesizedExpression"],
    )
    r["ParenthesizedExpression"].body = _Choice(
        _Action(_Sequence(_Literal("("), _opt(ws), r["OrExpression"], _opt(ws), _Literal(")")),
                _pick(2)),
        r["MatchExpression"],
        _Sequence(_Literal("("), _opt(ws), r["OrExpression"], _opt(ws), _not(_Literal(")")),
                  _Reject("Unmatched parentheses")),
    )


def _define_matches(r: dict[str, _Rule]) -> None:
    r["MatchExpression"].body = _Choice(
        r["MatchSelectorOpValue"], r["MatchSelectorOp"], r["MatchValueOpSelector"]
    )
    value_operators = _Choice(*(r[name] for name in (
        "MatchEqual", "MatchNotEqual", "MatchContains", "MatchNotContains", "MatchMatches",
        "MatchNotMatches")))
    r["MatchSelectorOpValue"].body = _Action(
        _Sequence(r["Selector"], value_operators, r["Value"]),
        lambda v, _t: _Match(v[0], v[1], v[2]),
    )
    r["MatchSelectorOp"].body = _Action(
        _Sequence(r["Selector"], _Choice(r["MatchIsEmpty"], r["MatchIsNotEmpty"])),
        lambda v, _t: _Match(v[0], v[1], None),
    )
    membership = _Choice(r["MatchIn"], r["MatchNotIn"])
    r["MatchValueOpSelector"].body = _Choice(
        _Action(_Sequence(r["Value"], membership, r["Selector"]),
                lambda v, _t: _Match(v[2], v[1], v[0])),
        _Sequence(r["Value"], membership, _not(r["Selector"]), _Reject("Invalid selector")),
    )


def _define_operators(r: dict[str, _Rule]) -> None:
    ws = r["_"]
    words = {
        "MatchEqual": ((_opt(ws), _Literal("=="), _opt(ws)), _Op.EQUAL),
        "MatchNotEqual": ((_opt(ws), _Literal("!="), _opt(ws)), _Op.NOT_EQUAL),
        "MatchIsEmpty": ((ws, _Literal("is"), ws, _Literal("empty")), _Op.IS_EMPTY),
        "MatchIsNotEmpty": ((ws, _Literal("is"), ws, _Literal("not"), ws, _Literal("empty")),
                            _Op.IS_NOT_EMPTY),
        "MatchIn": ((ws, _Literal("in"), ws), _Op.IN),
        "MatchNotIn": ((ws, _Literal("not"), ws, _Literal("in"), ws), _Op.NOT_IN),
        "MatchContains": ((ws, _Literal("contains"), ws), _Op.IN),
        "MatchNotContains": ((ws, _Literal("not"), ws, _Literal("contains"), ws), _Op.NOT_IN),
        "MatchMatches": ((ws, _Literal("matches"), ws), _Op.MATCHES),
        "MatchNotMatches": ((ws, _Literal("not"), ws, _Literal("matches"), ws),
                            _Op.NOT_MATCHES),
    }
    for name, (items, op) in words.items():
        r[name].body = _Action(_Sequence(*items), _constant(op))


def _define_selectors(r: dict[str, _Rule]) -> None:
    ws = r["_"]
    r["Selector"].body = _Action(
        _Sequence(r["Identifier"], _star(r["SelectorOrIndex"])),
        lambda v, _t: (v[0], *v[1]),
    )
    r["Identifier"].body = _Action(
        _Sequence(_CharClass("[a-zA-Z]", _is_ascii_letter),
                  _star(_CharClass("[a-zA-Z0-9_]", _is_identifier_char))),
        _text,
    )
    r["SelectorOrIndex"].body = _Choice(
        _Action(_Sequence(_Literal("."), r["Identifier"]), _pick(1)),
        r["IndexExpression"],
    )
    r["IndexExpression"].body = _Choice(
        _Action(_Sequence(_Literal("["), _opt(ws), r["StringLiteral"], _opt(ws), _Literal("]")),
                _pick(2)),
        _Sequence(_Literal("["), _opt(ws), _not(r["StringLiteral"]), _Reject("Invalid index")),
        _Sequence(_Literal("["), _opt(ws), r["StringLiteral"], _opt(ws), _not(_Literal("]")),
                  _Reject("Unclosed index expression")),
    )
    r["Value"].body = _Choice(
        _Action(r["Selector"], lambda selector, _t: ".".join(selector)),
        r["NumberLiteral"],
        r["StringLiteral"],
    )


def _define_literals(r: dict[str, _Rule]) -> None:
    ws = r["_"]
    number = _Sequence(_opt(_Literal("-")), r["IntegerOrFloat"])
    r["NumberLiteral"].body = _Choice(
        _Action(_Sequence(number, _and(r["AfterNumbers"])), _text),
        _Sequence(number, _not(r["AfterNumbers"]), _Reject("Invalid number literal")),
    )
    r["AfterNumbers"].body = _and(_Choice(ws, r["EOF"], _Literal(")")))
    digit = _CharClass("[0-9]", _is_ascii_digit)
    r["IntegerOrFloat"].body = _Sequence(
        _Choice(_Literal("0"), _Sequence(_CharClass("[1-9]", _is_nonzero_digit), _star(digit))),
        _opt(_Sequence(_Literal("."), _plus(digit))),
    )
    raw_open = _Sequence(_Literal("`"), _star(r["RawStringChar"]))
    quoted_open = _Sequence(_Literal('"'), _star(r["DoubleStringChar"]))
    r["StringLiteral"].body = _Choice(
        _Action(_Choice(_Sequence(raw_open, _Literal("`")),
                        _Sequence(quoted_open, _Literal('"'))), _unquote_literal),
        _Sequence(_Choice(raw_open, quoted_open), r["EOF"],
                  _Reject("Unterminated string literal")),
    )
    r["RawStringChar"].body = _Sequence(_not(_Literal("`")), _AnyChar())
    r["DoubleStringChar"].body = _Sequence(_not(_Literal('"')), _AnyChar())
    r["_"].body = _plus(_CharClass(r"[ \t\r\n]", lambda char: char in " \t\r\n"))
    r["EOF"].body = _not(_AnyChar())


def _is_ascii_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _is_ascii_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_nonzero_digit(char: str) -> bool:
    return "1" <= char <= "9"


def _is_identifier_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


_GRAMMAR = _build_grammar()


def _parse(expression: str) -> _Node:
    """Parse like bexpr.CreateEvaluator; errors carry Consul's full body text."""
    parser = _Parser(expression)
    try:
        matched, tree = _GRAMMAR.parse(parser)
    except RecursionError:
        raise FilterError(_TOO_DEEP) from None
    if not matched and not parser.errors:
        parser.errors.append(parser.no_match_error())
    if parser.errors:
        # pigeon's errList: duplicates dropped, first occurrence kept, one per line.
        raise FilterError(_CREATE_PREFIX + "\n".join(dict.fromkeys(parser.errors)))
    assert isinstance(tree, _Match | _Not | _And | _Or)
    return tree


# ---------------------------------------------------------------------------------------------
# Binding an expression to a result shape (bexpr's validate step)
# ---------------------------------------------------------------------------------------------

_STRING_OPS = frozenset(_Op) - {_Op.IS_EMPTY, _Op.IS_NOT_EMPTY}
_SCALAR_OPS = frozenset({_Op.EQUAL, _Op.NOT_EQUAL})
_EMPTINESS_OPS = frozenset({_Op.IS_EMPTY, _Op.IS_NOT_EMPTY})
_CONTAINER_OPS = _EMPTINESS_OPS | {_Op.IN, _Op.NOT_IN}


def _supported_ops(field_type: FieldType) -> frozenset[_Op]:
    if isinstance(field_type, Primitive):
        return _STRING_OPS if field_type.kind is Kind.STRING else _SCALAR_OPS
    if isinstance(field_type, MapOf):
        return _CONTAINER_OPS
    if isinstance(field_type, ListOf):
        return _CONTAINER_OPS if isinstance(field_type.element, Primitive) else _EMPTINESS_OPS
    return frozenset()  # structs only lead to their fields


def _value_kind(field_type: FieldType) -> Kind:
    """The kind an operand is coerced to: the field's, a list's elements', or a map's keys."""
    if isinstance(field_type, Primitive):
        return field_type.kind
    if isinstance(field_type, ListOf) and isinstance(field_type.element, Primitive):
        return field_type.element.kind
    return Kind.STRING


def _child_type(field_type: FieldType, name: str) -> FieldType | None:
    """What ``.name`` selects inside ``field_type``; lists select inside their elements."""
    if isinstance(field_type, Struct):
        return field_type.field(name)
    if isinstance(field_type, MapOf):
        return field_type.value
    if isinstance(field_type, ListOf) and not isinstance(field_type.element, Primitive):
        return _child_type(field_type.element, name)
    return None


@dataclass(frozen=True)
class _BoundMatch:
    selector: tuple[str, ...]
    op: _Op
    operand: Any
    pattern: re.Pattern[str] | None


@dataclass(frozen=True)
class _BoundNot:
    operand: _Bound


@dataclass(frozen=True)
class _BoundAll:
    operands: tuple[_Bound, ...]


@dataclass(frozen=True)
class _BoundAny:
    operands: tuple[_Bound, ...]


_Bound = _BoundMatch | _BoundNot | _BoundAll | _BoundAny


def _bind(tree: _Node, schema: Struct) -> _Bound:
    """Check every match against ``schema`` left to right, as bexpr's validate does."""
    try:
        return _bind_node(tree, schema)
    except RecursionError:
        raise FilterError(_TOO_DEEP) from None


def _bind_node(node: _Node, schema: Struct) -> _Bound:
    if isinstance(node, _Match):
        return _bind_match(node, schema)
    if isinstance(node, _Not):
        return _BoundNot(_bind_node(node.operand, schema))
    chain = _And if isinstance(node, _And) else _Or
    operands = tuple(_bind_node(operand, schema) for operand in _flatten(node, chain))
    return _BoundAll(operands) if chain is _And else _BoundAny(operands)


def _flatten(node: _Node, chain: type[_And] | type[_Or]) -> Iterator[_Node]:
    """Operands of a right-leaning and/or chain, left to right, without recursion."""
    while isinstance(node, chain):
        yield node.left
        node = node.right
    yield node


def _bind_match(node: _Match, schema: Struct) -> _BoundMatch:
    field_type = _resolve_selector(node.selector, schema)
    selector_text = _go_quote(".".join(node.selector))
    if node.op not in _supported_ops(field_type):
        raise FilterError(f"{_CREATE_PREFIX}Invalid match operator {_go_quote(node.op.value)} "
                          f"for selector {selector_text}")
    if node.raw_value is None:
        return _BoundMatch(node.selector, node.op, None, None)
    try:
        operand = _COERCERS[_value_kind(field_type)](node.raw_value)
    except _GoNumError as error:
        raise FilterError(f"{_CREATE_PREFIX}Failed to coerce value {_go_quote(node.raw_value)} "
                          f"for selector {selector_text}: {error}") from None
    pattern = None
    if node.op in (_Op.MATCHES, _Op.NOT_MATCHES):
        pattern = _compile_regex_operand(node.raw_value)
    return _BoundMatch(node.selector, node.op, operand, pattern)


def _resolve_selector(selector: tuple[str, ...], schema: Struct) -> FieldType:
    field_type: FieldType = schema
    for depth, name in enumerate(selector):
        child = _child_type(field_type, name)
        if child is None:
            invalid = _go_quote(".".join(selector[: depth + 1]))
            raise FilterError(f"{_CREATE_PREFIX}Selector {invalid} is not valid")
        field_type = child
    return field_type


def _compile_regex_operand(raw: str) -> re.Pattern[str]:
    try:
        return _compile_re2(raw)
    except _RegexError as error:
        raise FilterError(f"{_CREATE_PREFIX}Failed to compile regular expression "
                          f"{_go_quote(raw)}: {error}") from None


# ---------------------------------------------------------------------------------------------
# Evaluation against a JSON result item
# ---------------------------------------------------------------------------------------------

# Consul's Go process panics here (reflect on a nil pointer) and the client sees the
# connection drop; the stand-in answers 500 with the panic text instead.
_NIL_POINTER_PANIC = "reflect: call of reflect.Value.Interface on zero Value"


class _BoundFilter:
    """A filter already checked against one result shape; calls never raise type errors."""

    def __init__(self, bound: _Bound, schema: Struct) -> None:
        self._bound = bound
        self._schema = schema

    def __call__(self, item: Mapping[str, Any]) -> bool:
        try:
            return _evaluate(self._bound, item, self._schema)
        except RecursionError:
            raise FilterError(_TOO_DEEP) from None


class _ShapeDetectingFilter:
    """A parsed filter that binds itself to each item's shape, once per distinct shape."""

    def __init__(self, tree: _Node) -> None:
        self._tree = tree
        self._bound: dict[Struct, _BoundFilter | FilterError] = {}

    def __call__(self, item: Mapping[str, Any]) -> bool:
        schema = _recognise_shape(item)
        if schema not in self._bound:
            try:
                self._bound[schema] = _BoundFilter(_bind(self._tree, schema), schema)
            except FilterError as error:
                self._bound[schema] = error
        bound = self._bound[schema]
        if isinstance(bound, FilterError):
            raise FilterError(str(bound), bound.status)
        return bound(item)


def _evaluate(node: _Bound, item: Mapping[str, Any], schema: Struct) -> bool:
    if isinstance(node, _BoundMatch):
        return _matches_at(node, item, schema, 0)
    if isinstance(node, _BoundNot):
        return not _evaluate(node.operand, item, schema)
    if isinstance(node, _BoundAll):
        return all(_evaluate(operand, item, schema) for operand in node.operands)
    return any(_evaluate(operand, item, schema) for operand in node.operands)


def _matches_at(match: _BoundMatch, value: Any, field_type: FieldType, depth: int) -> bool:
    """Walk ``match.selector`` from ``depth`` down ``value`` (JSON) typed as ``field_type``."""
    if depth == len(match.selector):
        return _apply(match, value, field_type)
    if isinstance(field_type, ListOf):
        return any(_matches_in_element(match, element, field_type.element, depth)
                   for element in _as_list(value))
    if isinstance(field_type, MapOf):
        return _matches_in_map(match, _as_mapping(value), field_type.value, depth)
    assert isinstance(field_type, Struct), "bind() admits no selector below a primitive"
    name = match.selector[depth]
    child_type = field_type.field(name)
    assert child_type is not None, "bind() admits only known fields"
    child = _struct_field(_as_mapping(value), name)
    if isinstance(child_type, Struct) and child_type.nullable and child is None:
        raise FilterError(_NIL_POINTER_PANIC)
    return _matches_at(match, child, child_type, depth + 1)


def _matches_in_element(match: _BoundMatch, element: Any, element_type: FieldType,
                        depth: int) -> bool:
    if element is None and not isinstance(element_type, Primitive):
        where = _go_quote(".".join(match.selector[:depth]))
        raise FilterError(f"Value at selector {where} with type invalid does not support "
                          "nested field selection")
    return _matches_at(match, element, element_type, depth)


def _matches_in_map(match: _BoundMatch, mapping: Mapping[str, Any], value_type: FieldType,
                    depth: int) -> bool:
    key = match.selector[depth]
    nil_pointer = isinstance(value_type, Struct) and value_type.nullable
    if key not in mapping or (nil_pointer and mapping[key] is None):
        # bexpr: nothing is equal to, inside, or non-empty in a value that is not there.
        return match.op not in (_Op.EQUAL, _Op.IN, _Op.IS_NOT_EMPTY)
    return _matches_at(match, mapping[key], value_type, depth + 1)


def _apply(match: _BoundMatch, value: Any, field_type: FieldType) -> bool:
    positive_op = _NEGATION_OF.get(match.op, match.op)
    outcome = _apply_positive(positive_op, match, value, field_type)
    return outcome if positive_op is match.op else not outcome


def _apply_positive(op: _Op, match: _BoundMatch, value: Any, field_type: FieldType) -> bool:
    if op is _Op.IS_EMPTY:
        return len(_as_container(value, field_type)) == 0
    if op is _Op.IN:
        container = _as_container(value, field_type)
        if isinstance(container, str):
            return bool(match.operand in container)
        return any(_same(element, match.operand) for element in container)
    scalar = _as_scalar(value, field_type)
    if op is _Op.MATCHES:
        assert match.pattern is not None
        return match.pattern.search(str(scalar)) is not None
    return _same(scalar, match.operand)


def _same(value: Any, operand: Any) -> bool:
    """Go equality of same-kind values (so a JSON true never equals the number 1)."""
    return isinstance(value, bool) == isinstance(operand, bool) and bool(value == operand)


def _as_container(value: Any, field_type: FieldType) -> Any:
    if isinstance(field_type, MapOf):
        return _as_mapping(value)
    if isinstance(field_type, ListOf):
        return _as_list(value)
    return _as_scalar(value, field_type)


_ZERO_VALUES: dict[Kind, Any] = {Kind.STRING: "", Kind.INT: 0, Kind.BOOL: False, Kind.FLOAT: 0.0}
_JSON_TYPES: dict[Kind, tuple[type, ...]] = {
    Kind.STRING: (str,), Kind.INT: (int,), Kind.BOOL: (bool,), Kind.FLOAT: (int, float),
}


def _as_scalar(value: Any, field_type: FieldType) -> Any:
    """The Go value behind a JSON scalar; absent or null stands for the Go zero value."""
    assert isinstance(field_type, Primitive), "bind() admits scalar operators on primitives only"
    if value is None:
        return _ZERO_VALUES[field_type.kind]
    fits = isinstance(value, _JSON_TYPES[field_type.kind])
    if not fits or (isinstance(value, bool) and field_type.kind is not Kind.BOOL):
        raise _misfit(value, field_type.kind.value)
    return value


def _as_list(value: Any) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _misfit(value, "slice")
    return value


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _misfit(value, "map or struct")
    return value


def _misfit(value: Any, go_type: str) -> FilterError:
    """A result item whose JSON cannot come from the Go type: a bug in the stand-in."""
    return FilterError(f"consul double: JSON {type(value).__name__} where Go has a {go_type}")


def _struct_field(document: Mapping[str, Any], name: str) -> Any:
    """A struct field from JSON; Go's JSON matches keys case-insensitively, so do we."""
    if name in document:
        return document[name]
    folded = name.casefold()
    for key, value in document.items():
        if isinstance(key, str) and key.casefold() == folded:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# RE2 -> Python re
# ---------------------------------------------------------------------------------------------


class _RegexError(Exception):
    """Go's regexp/syntax error: ``error parsing regexp: <code>: `<expr>```."""

    def __init__(self, code: str, expr: str | None = None) -> None:
        detail = code if expr is None else f"{code}: `{expr}`"
        super().__init__(f"error parsing regexp: {detail}")


_RE2_FLAGS = re.compile(r"\(\?([imsU]*)(?:-([imsU]*))?([:)])")
_RE2_NAMED_GROUP = re.compile(r"\(\?P?<([A-Za-z0-9_]+)>")
_RE2_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z",
    "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_PASS_THROUGH_ESCAPES = frozenset("AbBdDsSwWfnrtv")
_MAX_REPEAT = 1000


def _compile_re2(pattern: str) -> re.Pattern[str]:
    translated = _Re2Translator(pattern).translate()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Python's "possible nested set" FutureWarnings
            return re.compile(translated, re.ASCII)
    except re.error as error:
        raise _RegexError(error.msg) from None


@dataclass
class _Group:
    multiline: bool
    scoped_flags: list[str]  # "(?i)"-style flags opened inside this group, re-opened after |


class _Re2Translator:
    """Rewrites an RE2 pattern into Python syntax with the same meaning, or refuses it.

    Differences handled: ``$`` and ``\\z`` mean end of text (Python's ``\\Z``), ``(?flags)``
    may appear anywhere (Python wants scoped groups), octal/``\\x{..}``/``\\Q..\\E`` escapes,
    POSIX classes, literal ``{`` that is not a repeat, and constructs RE2 rejects
    (look-arounds, back-references, possessive or nested repeats).
    """

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.i = 0
        self.out: list[str] = []
        self.groups = [_Group(multiline=False, scoped_flags=[])]
        self.last = "none"  # what precedes: "none" (nothing to repeat), "atom" or "repeat"
        self.last_repeat = ""
        self.repeat_is_lazy = False
        self.handlers: dict[str, Callable[[], None]] = {
            "\\": self._escape, "[": self._char_class, "(": self._open_group,
            ")": self._close_group, "|": self._alternation, "{": self._brace,
        }

    def translate(self) -> str:
        while self.i < len(self.src):
            self._step()
        if len(self.groups) > 1:
            raise _RegexError("missing closing )", self.src)
        self._close_scoped_flags()
        return "".join(self.out)

    def _step(self) -> None:
        char = self.src[self.i]
        if char in self.handlers:
            self.handlers[char]()
        elif char in "*+?":
            self._repeat(char, char)
        else:
            end_of_text = char == "$" and not self.groups[-1].multiline
            self._emit_atom(r"\Z" if end_of_text else char)

    def _emit_atom(self, text: str, advance: int = 1) -> None:
        self.out.append(text)
        self.i += advance
        self.last = "atom"

    def _repeat(self, op: str, text: str) -> None:
        if self.last == "none":
            raise _RegexError("missing argument to repetition operator", op)
        # One "?" right after a repeat makes it lazy; any other repeat of a repeat is refused.
        lazy = self.last == "repeat" and op == "?" and not self.repeat_is_lazy
        if self.last == "repeat" and not lazy:
            raise _RegexError("invalid nested repetition operator", self.last_repeat + op)
        self.out.append(text)
        self.i += len(op)
        self.last = "repeat"
        self.last_repeat = self.last_repeat + op if lazy else op
        self.repeat_is_lazy = lazy

    def _brace(self) -> None:
        found = _RE2_REPEAT.match(self.src, self.i)
        if found is None:  # RE2 reads a "{" that is not a repeat as a literal
            self._emit_atom(r"\{")
            return
        low = int(found.group(1))
        high = low if found.group(2) is None else int(found.group(3) or low)
        if low > _MAX_REPEAT or high > _MAX_REPEAT or (found.group(3) and high < low):
            raise _RegexError("invalid repeat count", found.group(0))
        self._repeat(found.group(0), found.group(0))

    def _alternation(self) -> None:
        reopen = list(self.groups[-1].scoped_flags)
        self._close_scoped_flags()
        self.out.append("|")
        for flags in reopen:
            self._open_scoped_flags(flags)
        self.i += 1
        self.last = "none"

    def _open_group(self) -> None:
        rest = self.src[self.i :]
        if not rest.startswith("(?"):
            self._push_group("(", 1, self.groups[-1].multiline)
            return
        named = _RE2_NAMED_GROUP.match(self.src, self.i)
        if named:
            self._push_group(f"(?P<{named.group(1)}>", named.end() - self.i,
                             self.groups[-1].multiline)
            return
        flags = _RE2_FLAGS.match(self.src, self.i)
        if flags is None or flags.group(0) in ("(?)", "(?-)", "(?-:") or flags.group(2) == "":
            raise _RegexError("invalid or unsupported Perl syntax", rest[:3])
        if "U" in flags.group(0):
            raise _RegexError("the consul double does not support the U flag", flags.group(0))
        enabled, disabled = flags.group(1), flags.group(2) or ""
        python_flags = enabled + (f"-{disabled}" if disabled else "")
        multiline = "m" in enabled or ("m" not in disabled and self.groups[-1].multiline)
        if flags.group(3) == ":":
            self._push_group(f"(?{python_flags}:" if python_flags else "(?:",
                             len(flags.group(0)), multiline)
            return
        self.i += len(flags.group(0))
        self.groups[-1].multiline = multiline
        if python_flags:
            self._open_scoped_flags(python_flags)

    def _push_group(self, text: str, length: int, multiline: bool) -> None:
        self.out.append(text)
        self.groups.append(_Group(multiline=multiline, scoped_flags=[]))
        self.i += length
        self.last = "none"

    def _close_group(self) -> None:
        if len(self.groups) == 1:
            raise _RegexError("unexpected )", self.src)
        self._close_scoped_flags()
        self.groups.pop()
        self._emit_atom(")")

    def _open_scoped_flags(self, flags: str) -> None:
        self.out.append(f"(?{flags}:")
        self.groups[-1].scoped_flags.append(flags)
        self.last = "none"

    def _close_scoped_flags(self) -> None:
        self.out.append(")" * len(self.groups[-1].scoped_flags))
        self.groups[-1].scoped_flags.clear()

    def _escape(self) -> None:
        if self.i + 1 >= len(self.src):
            raise _RegexError("trailing backslash at end of expression", "")
        code = self.src[self.i + 1]
        if code == "Q":
            end = self.src.find(r"\E", self.i + 2)
            quoted = self.src[self.i + 2 :] if end < 0 else self.src[self.i + 2 : end]
            self._emit_atom(re.escape(quoted), (len(self.src) if end < 0 else end + 2) - self.i)
        elif code == "z":
            self._emit_atom(r"\Z", 2)
        elif code in _PASS_THROUGH_ESCAPES:
            self._emit_atom("\\" + code, 2)
        else:
            char, length = self._escaped_char(self.i)
            self._emit_atom(_literal(char), length)

    def _escaped_char(self, start: int) -> tuple[str, int]:
        """The single character an escape at ``start`` denotes, and the escape's length."""
        code = self.src[start + 1]
        simple = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
        if code in simple:
            return simple[code], 2
        if code in "01234567":
            return self._octal_escape(start)
        if code == "x":
            return self._hex_escape(start)
        if code in "pP":
            raise _RegexError("the consul double does not support Unicode classes",
                              self.src[start : start + 2])
        if code.isascii() and not code.isalnum():
            return code, 2
        raise _RegexError("invalid escape sequence", self.src[start : start + 2])

    def _octal_escape(self, start: int) -> tuple[str, int]:
        # RE2: \1-\7 alone would be a back-reference (unsupported); otherwise up to 3 digits.
        digits = self.src[start + 1]
        follower = self.src[start + 2 : start + 3]
        if digits != "0" and not (follower and follower in _OCTAL_DIGITS):
            raise _RegexError("invalid escape sequence", self.src[start : start + 2])
        for char in self.src[start + 2 : start + 4]:
            if char not in _OCTAL_DIGITS:
                break
            digits += char
        return chr(int(digits, 8)), 1 + len(digits)

    def _hex_escape(self, start: int) -> tuple[str, int]:
        braced = re.compile(r"\\x\{([0-9A-Fa-f]+)\}").match(self.src, start)
        if braced and int(braced.group(1), 16) <= 0x10FFFF:
            return chr(int(braced.group(1), 16)), braced.end() - start
        two = self.src[start + 2 : start + 4]
        if len(two) == 2 and set(two) <= _HEX_DIGITS:
            return chr(int(two, 16)), 4
        raise _RegexError("invalid escape sequence", self.src[start : start + 4])

    def _char_class(self) -> None:
        start = self.i
        self.i += 1
        parts = ["["]
        if self.src.startswith("^", self.i):
            parts.append("^")
            self.i += 1
        first = True
        while first or not self.src.startswith("]", self.i):
            if self.i >= len(self.src):
                raise _RegexError("missing closing ]", self.src[start:])
            parts.append(self._class_item(start, first))
            first = False
        self.i += 1
        self._emit_atom("".join(parts) + "]", 0)

    def _class_item(self, class_start: int, first: bool) -> str:
        posix = re.compile(r"\[:(\^?)([a-z]+):\]").match(self.src, self.i)
        if posix:
            if posix.group(2) not in _POSIX_CLASSES:
                raise _RegexError("invalid character class range", posix.group(0))
            if posix.group(1):
                raise _RegexError("the consul double does not support negated POSIX classes",
                                  posix.group(0))
            self.i = posix.end()
            return _POSIX_CLASSES[posix.group(2)]
        if self.src.startswith("\\", self.i) and self.src[self.i + 1 : self.i + 2] in set("dDsSwW"):
            self.i += 2
            return self.src[self.i - 2 : self.i]
        item_start = self.i
        low = self._class_char(class_start)
        if self.src.startswith("-", self.i) and self.src[self.i + 1 : self.i + 2] not in ("]", ""):
            self.i += 1
            high = self._class_char(class_start)
            if high < low:
                raise _RegexError("invalid character class range", self.src[item_start : self.i])
            return f"{_literal(low)}-{_literal(high)}"
        return _literal(low)

    def _class_char(self, class_start: int) -> str:
        if self.i >= len(self.src):
            raise _RegexError("missing closing ]", self.src[class_start:])
        if self.src[self.i] != "\\":
            self.i += 1
            return self.src[self.i - 1]
        if self.i + 1 >= len(self.src):
            raise _RegexError("trailing backslash at end of expression", "")
        char, length = self._escaped_char(self.i)
        self.i += length
        return char


def _literal(char: str) -> str:
    """A character as a Python regex literal, safe inside and outside classes."""
    if char.isascii() and not char.isalnum():
        return "\\" + char if char.isprintable() else f"\\x{ord(char):02x}"
    return char
