"""What the fault proxy can do to an agent's answer: status, body, `X-Consul-Index`, pacing.

A `Mutation` is plain data (so hypothesis can generate it and a report can print it) plus
`apply`, the proxy hook. `ambiguous` says whether the answer no longer tells the sidecar what
Consul said; the suite's rule is that an ambiguous answer may never make a sidecar Leader
nor extend its lease.

Guarantees: every body change of a non-empty body yields bytes no JSON decoder accepts, or
JSON of the wrong type for every Consul answer the sidecar reads (never the literal `true`,
the one answer that grants a lock, and never a string where Consul sends an ID), so a sidecar
that checks what it reads can always tell.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from tests.chaos.proxy import BODYLESS_STATUSES, Delivery, Exchange

INDEX_HEADER = "X-Consul-Index"
MAX_DRIP_SECONDS = 1.5  # a slow drip never holds one answer longer than this


@dataclass(frozen=True)
class Keep:
    def change(self, body: bytes) -> bytes:
        return body


@dataclass(frozen=True)
class Empty:
    def change(self, body: bytes) -> bytes:
        return b""


@dataclass(frozen=True)
class Replace:
    """A JSON document of the wrong shape, or raw garbage."""

    payload: bytes

    def change(self, body: bytes) -> bytes:
        return self.payload


@dataclass(frozen=True)
class Truncate:
    """A strict prefix, with a Content-Length that matches it (valid HTTP, broken JSON)."""

    fraction: float

    def change(self, body: bytes) -> bytes:
        return body[: int(len(body) * self.fraction)] if body else body


@dataclass(frozen=True)
class Cut:
    """A strict prefix under the full Content-Length: the connection dies mid-body."""

    fraction: float

    def change(self, body: bytes) -> bytes:
        return body[: int(len(body) * self.fraction)] if body else body


@dataclass(frozen=True)
class Corrupt:
    """Bytes flipped to non-UTF-8, so the body cannot decode as JSON at all."""

    positions: tuple[int, ...] = (0,)

    def change(self, body: bytes) -> bytes:
        if not body:
            return body
        flipped = bytearray(body)
        for position in self.positions:
            flipped[position % len(body)] |= 0x80
        return bytes(flipped)


@dataclass(frozen=True)
class Huge:
    """`megabytes` of garbage, or of valid JSON of the wrong shape."""

    megabytes: float
    json_shaped: bool

    def change(self, body: bytes) -> bytes:
        size = int(self.megabytes * 1024 * 1024)
        if not self.json_shaped:
            pattern = b"\x00garbage\xff"
            return (pattern * (size // len(pattern) + 1))[:size]
        item = b'{"ID":7,"Session":[],"LockIndex":"x"},'
        return b"[" + item * (size // len(item)) + b"null]"


BodyChange = Keep | Empty | Replace | Truncate | Cut | Corrupt | Huge


class BackwardsIndex:
    """Reports an index lower than the last one it reported (wrapping to the real one at 1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: int | None = None

    def next(self, real: int) -> int:
        with self._lock:
            last = self._last
            reported = last - 1 if last is not None and last > 1 else real
            self._last = reported
            return reported


@dataclass(frozen=True)
class Mutation:
    """One way of changing every answer; `None`/`Keep()` fields leave that part alone.

    index: "keep", "missing", "zero", "backwards", or any other text sent as the header value.
    """

    status: int | None = None
    body: BodyChange = Keep()
    index: str = "keep"
    drip: tuple[int, float] | None = None
    _backwards: BackwardsIndex = field(default_factory=BackwardsIndex, compare=False,
                                       repr=False)

    @property
    def ambiguous(self) -> bool:
        """Every answer no longer says what Consul said. An index or pacing change keeps the
        meaning, and so does another 2xx status over the intact body of a success."""
        if not isinstance(self.body, Keep):
            return True
        status = self.status
        return status is not None and not (200 <= status < 300 and
                                           status not in BODYLESS_STATUSES)

    def describe(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"status {self.status}")
        if not isinstance(self.body, Keep):
            parts.append(_describe_body(self.body))
        if self.index != "keep":
            parts.append(f"index {self.index}")
        if self.drip is not None:
            parts.append(f"drip {self.drip[0]}B/{self.drip[1]:.2f}s")
        return ", ".join(parts) or "unchanged"

    def apply(self, exchange: Exchange) -> Delivery:
        """The proxy hook."""
        status = exchange.status if self.status is None else self.status
        body = b"" if status in BODYLESS_STATUSES else self.body.change(exchange.body)
        declared = len(exchange.body) if isinstance(self.body, Cut) and exchange.body else None
        changed = status != exchange.status or body != exchange.body or declared is not None
        delivery = replace(Delivery.of(exchange), status=status, body=body,
                           declared_length=declared, mutated=changed)
        delivery = self._rewrite_index(delivery, exchange)
        if self.drip is not None and body:
            delivery = replace(delivery, drip=_bounded_drip(self.drip, len(body)))
        return delivery

    def _rewrite_index(self, delivery: Delivery, exchange: Exchange) -> Delivery:
        if self.index == "keep":
            return delivery
        if self.index == "missing":
            return delivery.with_header(INDEX_HEADER, None)
        if self.index == "zero":
            return delivery.with_header(INDEX_HEADER, "0")
        if self.index == "backwards":
            real = exchange.header(INDEX_HEADER)
            if real is None or not real.isdigit():
                return delivery
            return delivery.with_header(INDEX_HEADER, str(self._backwards.next(int(real))))
        return delivery.with_header(INDEX_HEADER, self.index)


def _bounded_drip(drip: tuple[int, float], length: int) -> tuple[int, float]:
    chunk, pause = drip
    writes_allowed = max(1, int(MAX_DRIP_SECONDS / pause)) if pause > 0 else length
    return max(chunk, -(-length // writes_allowed)), pause


def _describe_body(body: BodyChange) -> str:
    if isinstance(body, Replace):
        text = body.payload[:40].decode("utf-8", "replace")
        more = "..." if len(body.payload) > 40 else ""
        return f"body {text!r}{more}"
    if isinstance(body, Huge):
        kind = "JSON" if body.json_shaped else "garbage"
        return f"huge {kind} body {body.megabytes:.1f} MB"
    return f"body {body!r}"


# -- the named faults of scenario 11 ---------------------------------------------------------


class Alternating:
    """Hook that applies its mutations in turn, one per answer."""

    def __init__(self, *mutations: Mutation) -> None:
        self._mutations = mutations
        self._lock = threading.Lock()
        self._next = 0

    def __call__(self, exchange: Exchange) -> Delivery:
        with self._lock:
            mutation = self._mutations[self._next % len(self._mutations)]
            self._next += 1
        return mutation.apply(exchange)


def index_rewrite(kind: str) -> Mutation:
    return Mutation(index=kind)


def truncated_bodies() -> Alternating:
    return Alternating(Mutation(body=Truncate(0.5)), Mutation(body=Cut(0.5)))


def corrupted_bodies() -> Mutation:
    return Mutation(body=Corrupt((0, 7, 31)))


def wrong_json(value: Any) -> Replace:
    return Replace(json.dumps(value).encode())
