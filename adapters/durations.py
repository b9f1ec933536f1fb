"""Go ``time.Duration`` text, parsed and formatted the way Consul does.

Consul reads every duration in its HTTP API (session ``TTL``, ``LockDelay``,
blocking ``wait``) with Go's ``time.ParseDuration``, and the seed tool's knobs use
the same syntax. Guarantees:

* ``parse_duration`` accepts exactly the strings ``time.ParseDuration`` accepts
  (units ``ns us µs μs ms s m h``, combinations such as ``1h30m``, fractions such
  as ``1.5s``, an optional sign, and the bare ``"0"``) and rejects the rest with a
  ``DurationError`` whose text matches Go's (``time: missing unit in duration "10"``).
* Values are whole nanoseconds computed the way Go computes them (including its
  float64 step for fractions), so range and rounding are Go's: at most about
  292 years, and fractions below a nanosecond are dropped.
* ``format_duration`` writes what Go's ``Duration.String`` writes (``15s``,
  ``1m30s``, ``500ms``, ``1h0m0s``), which ``time.ParseDuration`` reads back to
  the same value.
"""

from __future__ import annotations

NANOSECOND = 1
MICROSECOND = 1_000 * NANOSECOND
MILLISECOND = 1_000 * MICROSECOND
SECOND = 1_000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS: dict[str, int] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # U+00B5 MICRO SIGN
    "\u03bcs": MICROSECOND,  # U+03BC GREEK SMALL LETTER MU
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}

# Go keeps durations in an int64; the magnitude before the sign is applied may reach 2**63.
_MAX_MAGNITUDE = 1 << 63
# Go stops accumulating fraction digits once another digit could overflow an int64.
_MAX_FRACTION_NUMERATOR = (_MAX_MAGNITUDE - 1) // 10
_DIGITS = "0123456789"


class DurationError(ValueError):
    """A string that Go's ``time.ParseDuration`` would reject.

    ``reason`` is the short cause without the quoted input (``missing unit``,
    ``unknown unit "x"``, ``invalid duration``), for messages that quote the input
    themselves.
    """

    def __init__(self, reason: str, text: str) -> None:
        where = "" if reason == "invalid duration" else " in duration"
        super().__init__(f"time: {reason}{where} {go_quote(text)}")
        self.reason = reason
        self.text = text


def go_quote(text: str) -> str:
    """Quote ``text`` like Go's ``time.quote``: non-ASCII and control bytes as ``\\xNN``."""
    parts = ['"']
    for char in text:
        if char < " " or ord(char) >= 0x80:
            parts.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
        elif char in '"\\':
            parts.append("\\" + char)
        else:
            parts.append(char)
    parts.append('"')
    return "".join(parts)


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds (``"1m30s"`` → ``90.0``)."""
    return parse_duration_ns(text) / SECOND


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into whole nanoseconds, exactly as Go does."""
    rest, negative = _consume_sign(text)
    if rest == "0":
        return 0
    if rest == "":
        raise DurationError("invalid duration", text)
    total = 0
    while rest:
        value, rest = _consume_component(rest, text)
        total += value
        if total > _MAX_MAGNITUDE:
            raise DurationError("invalid duration", text)
    if negative:
        return -total
    if total > _MAX_MAGNITUDE - 1:
        raise DurationError("invalid duration", text)
    return total


def _consume_sign(text: str) -> tuple[str, bool]:
    if text[:1] in ("-", "+"):
        return text[1:], text[0] == "-"
    return text, False


def _consume_component(rest: str, text: str) -> tuple[int, str]:
    """Read one ``<number><unit>`` group; return its nanoseconds and what follows."""
    if rest[0] != "." and rest[0] not in _DIGITS:
        raise DurationError("invalid duration", text)
    whole, rest = _take_while(rest, _DIGITS)
    fraction = ""
    if rest[:1] == ".":
        fraction, rest = _take_while(rest[1:], _DIGITS)
        if not whole and not fraction:
            raise DurationError("invalid duration", text)  # ".s", "-.s"
    unit_text, rest = _take_until(rest, _DIGITS + ".")
    if not unit_text:
        raise DurationError("missing unit", text)
    unit = _UNITS.get(unit_text)
    if unit is None:
        raise DurationError(f"unknown unit {go_quote(unit_text)}", text)
    return _component_nanoseconds(whole, fraction, unit, text), rest


def _component_nanoseconds(whole: str, fraction: str, unit: int, text: str) -> int:
    value = int(whole) if whole else 0
    if value > _MAX_MAGNITUDE or value > _MAX_MAGNITUDE // unit:
        raise DurationError("invalid duration", text)
    value *= unit
    numerator, scale = _leading_fraction(fraction)
    if numerator:
        # Go computes this part in float64 (exact enough for fractions of an hour); so do we,
        # so that results agree to the nanosecond.
        value += int(float(numerator) * (float(unit) / scale))
    if value > _MAX_MAGNITUDE:
        raise DurationError("invalid duration", text)
    return value


def _leading_fraction(digits: str) -> tuple[int, float]:
    """Go's leadingFraction: digits that would overflow an int64 are read but ignored."""
    numerator, scale = 0, 1.0
    for digit in digits:
        candidate = numerator * 10 + int(digit)
        if numerator > _MAX_FRACTION_NUMERATOR or candidate > _MAX_MAGNITUDE:
            break
        numerator, scale = candidate, scale * 10
    return numerator, scale


def _take_while(text: str, allowed: str) -> tuple[str, str]:
    end = 0
    while end < len(text) and text[end] in allowed:
        end += 1
    return text[:end], text[end:]


def _take_until(text: str, stop: str) -> tuple[str, str]:
    end = 0
    while end < len(text) and text[end] not in stop:
        end += 1
    return text[:end], text[end:]


def format_duration(seconds: float) -> str:
    """Write ``seconds`` the way Go's ``Duration.String`` does (``90.0`` → ``"1m30s"``).

    The value is rounded to the nearest nanosecond first.
    """
    return format_duration_ns(round(seconds * SECOND))


def format_duration_ns(nanoseconds: int) -> str:
    """Write a nanosecond count the way Go's ``Duration.String`` does."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    magnitude = abs(nanoseconds)
    if magnitude < SECOND:
        return sign + _format_sub_second(magnitude)
    hours, remainder = divmod(magnitude, HOUR)
    minutes, remainder = divmod(remainder, MINUTE)
    seconds_text = _format_fixed(remainder, SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds_text}"
    if minutes:
        return f"{sign}{minutes}m{seconds_text}"
    return sign + seconds_text


def _format_sub_second(nanoseconds: int) -> str:
    # Go picks the largest unit that keeps the integer part non-zero, and writes "µs".
    if nanoseconds < MICROSECOND:
        return f"{nanoseconds}ns"
    if nanoseconds < MILLISECOND:
        return _format_fixed(nanoseconds, MICROSECOND) + "\u00b5s"
    return _format_fixed(nanoseconds, MILLISECOND) + "ms"


def _format_fixed(value: int, unit: int) -> str:
    """``value / unit`` in decimal, with trailing zeros of the fraction dropped."""
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    width = len(str(unit)) - 1
    return f"{whole}.{fraction:0{width}d}".rstrip("0")
