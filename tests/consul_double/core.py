"""The one lock, the raft index and the table indexes every part of the state shares.

Guarantees:
* Every read and write of the cluster state happens under `Core.lock`.
* A write transaction takes a raft index only when it really changes something,
  and then every change inside it carries that one index (like one Raft apply).
  A write that changes nothing takes no index and wakes nobody
  (consul-semantics.md §2.3 "No-op writes", §3).
* Table indexes (`kvs`, `sessions`, `nodes`, `services`, `checks`) are the max
  index of each table, as memdb's index table keeps them; queries answer with
  them when they have nothing more specific (§2.2, §1.3).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .events import EventJournal
from .timers import TimerWheel
from .watch import Topic, WatchHub


class StateError(Exception):
    """A refusal from the servers' state store or RPC layer: HTTP 500 with this text."""


class NoClusterLeader(Exception):
    """No leader within the agent's rpc_hold_timeout: HTTP 500 `No cluster leader` (§6)."""

    def __init__(self) -> None:
        super().__init__("No cluster leader")


class RequestAborted(Exception):
    """The node serving the request failed or the double is stopping: drop the connection."""


class Txn:
    """One state-store write: lazily takes a raft index, collects topics to wake."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._index: int | None = None
        self.topics: set[Topic] = set()

    @property
    def index(self) -> int:
        """The raft index of this write, taken on first use (so no-ops take none)."""
        if self._index is None:
            self._index = self._core.next_raft_index()
        return self._index

    def changed(self, table: str, *topics: Topic) -> int:
        """Record a real change to `table`; returns the index to stamp on the record."""
        index = self.index
        self._core.table_indexes[table] = index
        self.topics.update(topics)
        return index

    def touch(self, *topics: Topic) -> None:
        self.topics.update(topics)


class Core:
    """Shared lock, counters, watch hub, timer wheel and event journal of one double."""

    def __init__(self, timers: TimerWheel, clock: Callable[[], float],
                 journal: EventJournal | None = None) -> None:
        self.lock = threading.Lock()
        self.journal = journal if journal is not None else EventJournal()
        self.hub = WatchHub(self.lock)
        self.timers = timers
        self.clock = clock
        self.table_indexes: defaultdict[str, int] = defaultdict(int)
        self._raft_index = 0

    @property
    def raft_index(self) -> int:
        return self._raft_index

    def next_raft_index(self) -> int:
        self._raft_index += 1
        return self._raft_index

    def table_index(self, *tables: str) -> int:
        return max(self.table_indexes[table] for table in tables)

    @contextmanager
    def write(self) -> Iterator[Txn]:
        """Hold the lock for one write; wake the waiters of what it changed at the end."""
        with self.lock:
            txn = Txn(self)
            try:
                yield txn
            finally:
                # Publish even after an exception: a partial change must not go unseen.
                if txn.topics:
                    self.hub.publish(txn.topics)
