"""Go's value syntax as Consul parses and prints it: durations, unsigned ints, bools, quoting.

Consul is written in Go, so its error bodies quote Go's own messages
(`time: missing unit in duration "10"`, `strconv.ParseUint: parsing "x": invalid syntax`).
The double reproduces those texts exactly (consul-semantics.md §0 "Durations in requests").
Durations are integers of nanoseconds, as in Go.
"""

from __future__ import annotations

import json

NANOSECOND = 1
MICROSECOND = 1_000
MILLISECOND = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_MAX_INT64 = (1 << 63) - 1
_MAX_UINT64 = (1 << 64) - 1

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_DIGITS = "0123456789"


class GoSyntaxError(ValueError):
    """A value Go would refuse; str(error) is Go's message, word for word."""


def go_quote(text: str) -> str:
    """Go's strconv.Quote (and %q / %#v of a string) for the texts Consul quotes."""
    return json.dumps(text, ensure_ascii=False)


def parse_duration(text: str) -> int:
    """Parse like Go's time.ParseDuration; returns nanoseconds."""
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise _invalid_duration(text)
    total = 0
    while rest:
        amount, rest = _parse_duration_term(rest, text)
        total += amount
        if total > _MAX_INT64 + (1 if negative else 0):
            raise _invalid_duration(text)
    return -total if negative else total


def _parse_duration_term(rest: str, original: str) -> tuple[int, str]:
    """One `<number><unit>` term of a duration; returns (nanoseconds, remaining text)."""
    if rest[0] != "." and rest[0] not in _DIGITS:
        raise _invalid_duration(original)
    whole, rest = _take_digits(rest)
    fraction = ""
    if rest.startswith("."):
        fraction, rest = _take_digits(rest[1:])
        if not whole and not fraction:
            raise _invalid_duration(original)
    unit_length = 0
    while unit_length < len(rest) and rest[unit_length] not in "." + _DIGITS:
        unit_length += 1
    if unit_length == 0:
        raise GoSyntaxError(f"time: missing unit in duration {go_quote(original)}")
    unit_text, rest = rest[:unit_length], rest[unit_length:]
    unit = _UNITS.get(unit_text)
    if unit is None:
        raise GoSyntaxError(
            f"time: unknown unit {go_quote(unit_text)} in duration {go_quote(original)}"
        )
    amount = int(whole or "0") * unit
    if fraction:
        # Go truncates the fractional part towards zero at nanosecond precision.
        amount += int(fraction) * unit // (10 ** len(fraction))
    if amount > _MAX_INT64:
        raise _invalid_duration(original)
    return amount, rest


def _take_digits(text: str) -> tuple[str, str]:
    end = 0
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    return text[:end], text[end:]


def _invalid_duration(original: str) -> GoSyntaxError:
    return GoSyntaxError(f"time: invalid duration {go_quote(original)}")


def format_duration(nanoseconds: int) -> str:
    """Format like Go's time.Duration.String(): `10s`, `1m30s`, `24h0m0s`, `500ms`."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    magnitude = abs(nanoseconds)
    if magnitude < SECOND:
        return sign + _format_sub_second(magnitude)
    seconds, remainder = divmod(magnitude, SECOND)
    text = f"{seconds % 60}{_fraction_digits(remainder, 9)}s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        hours = minutes // 60
        if hours:
            text = f"{hours}h{text}"
    return sign + text


def _format_sub_second(magnitude: int) -> str:
    if magnitude < MICROSECOND:
        return f"{magnitude}ns"
    if magnitude < MILLISECOND:
        whole, remainder = divmod(magnitude, MICROSECOND)
        return f"{whole}{_fraction_digits(remainder, 3)}\u00b5s"
    whole, remainder = divmod(magnitude, MILLISECOND)
    return f"{whole}{_fraction_digits(remainder, 6)}ms"


def _fraction_digits(remainder: int, width: int) -> str:
    if remainder == 0:
        return ""
    return "." + f"{remainder:0{width}d}".rstrip("0")


def seconds_to_duration(seconds: float) -> int:
    """Seconds (the unit the double's Python API takes) to Go nanoseconds."""
    return round(seconds * SECOND)


def parse_uint64(text: str) -> int:
    """Parse like Go's strconv.ParseUint(text, 10, 64), with its error texts."""
    if not text or any(character not in _DIGITS for character in text):
        raise GoSyntaxError(f"strconv.ParseUint: parsing {go_quote(text)}: invalid syntax")
    value = int(text)
    if value > _MAX_UINT64:
        raise GoSyntaxError(f"strconv.ParseUint: parsing {go_quote(text)}: value out of range")
    return value


_TRUE_WORDS = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE_WORDS = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Parse like Go's strconv.ParseBool."""
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise GoSyntaxError(f"strconv.ParseBool: parsing {go_quote(text)}: invalid syntax")
