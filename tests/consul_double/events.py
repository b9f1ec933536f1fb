"""The event journal: a bounded, in-memory record of what happened in the cluster.

Each event is a dict `{"seq", "mono", "time", "kind", ...fields}`:
* `mono` is `time.monotonic()` (system-wide on Linux, so another process on this
  machine can compare it with its own monotonic clock), `time` is `time.time()`.
* `seq` counts from 1 and never repeats; `mono` strictly increases with `seq`, so
  `since_mono=<last event's mono>` never misses or repeats an event.

Kinds and their fields:
    session_created       id, node
    session_invalidated   id, node, cause: destroy | ttl | check | node | deregister
    kv_lock_acquired      key, session, lock_index, modify_index (the key's, once taken)
    kv_lock_released      key, session, lock_index,
                          cause: release | invalidation | delete (plain DELETE of a held key)
    check_status          node, id (the check ID), old (None for a new check), new
                          (the catalog's status: a change the agent cannot sync is not one)
    service_registered    node, id, name, tags   (only when the definition really changed)
    service_deregistered  node, id, name, tags
    node_failed / node_recovered   node
    servers_down / servers_up      (no fields)
    servers_failover      window (seconds without a leader)
    leader_elected        (a failover window ended)

Guarantees: thread-safe; the oldest events are dropped once `capacity` is reached;
events of one write transaction are recorded in the order the write made them.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

DEFAULT_CAPACITY = 100_000

SESSION_CREATED = "session_created"
SESSION_INVALIDATED = "session_invalidated"
KV_LOCK_ACQUIRED = "kv_lock_acquired"
KV_LOCK_RELEASED = "kv_lock_released"
CHECK_STATUS = "check_status"
SERVICE_REGISTERED = "service_registered"
SERVICE_DEREGISTERED = "service_deregistered"
NODE_FAILED = "node_failed"
NODE_RECOVERED = "node_recovered"
SERVERS_DOWN = "servers_down"
SERVERS_UP = "servers_up"
SERVERS_FAILOVER = "servers_failover"
LEADER_ELECTED = "leader_elected"

EVENT_KINDS = (
    SESSION_CREATED,
    SESSION_INVALIDATED,
    KV_LOCK_ACQUIRED,
    KV_LOCK_RELEASED,
    CHECK_STATUS,
    SERVICE_REGISTERED,
    SERVICE_DEREGISTERED,
    NODE_FAILED,
    NODE_RECOVERED,
    SERVERS_DOWN,
    SERVERS_UP,
    SERVERS_FAILOVER,
    LEADER_ELECTED,
)

# Causes of session_invalidated (consul-semantics.md §1.5 lists the triggers).
CAUSE_DESTROY = "destroy"
CAUSE_TTL = "ttl"
CAUSE_CHECK = "check"
CAUSE_NODE = "node"
CAUSE_DEREGISTER = "deregister"

# Causes of kv_lock_released.
CAUSE_RELEASE = "release"
CAUSE_INVALIDATION = "invalidation"
CAUSE_DELETE = "delete"


class EventJournal:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError(f"the journal needs a positive capacity, got {capacity}")
        self._lock = threading.Lock()
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._seq = 0
        self._last_mono = -math.inf

    def record(self, kind: str, **fields: Any) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        with self._lock:
            self._seq += 1
            # Two events may read the same clock value; nudging keeps `since` exact.
            mono = max(time.monotonic(), math.nextafter(self._last_mono, math.inf))
            self._last_mono = mono
            event = {"seq": self._seq, "mono": mono, "time": time.time(), "kind": kind}
            event.update(fields)
            self._events.append(event)

    def events(self, since_mono: float | None = None, kind: str | None = None
               ) -> list[dict[str, Any]]:
        """Copies of the events with `mono > since_mono` (all when None) of `kind` (any)."""
        if kind is not None and kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; kinds are {list(EVENT_KINDS)}")
        with self._lock:
            recent = self._events if since_mono is None else self._newer_than(since_mono)
            return [dict(event) for event in recent if kind is None or event["kind"] == kind]

    def _newer_than(self, since_mono: float) -> list[dict[str, Any]]:
        """Lock held. `mono` grows along the deque, so scan back only as far as needed
        (a poller asking for the last second never walks the whole journal)."""
        newer: list[dict[str, Any]] = []
        for event in reversed(self._events):
            if event["mono"] <= since_mono:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
