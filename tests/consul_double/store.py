"""ClusterState: the one shared state of the double's agents and servers.

It owns the lock, the raft index, the KV, session and catalog tables, the
timer thread, and the cluster-level facts the fault injection changes:
whether there is a leader, and which nodes are unreachable.

Guarantees (consul-semantics.md):
* Server-bound calls wait up to `rpc_hold_timeout` for a leader, then fail with
  `No cluster leader` (§6); `?stale` reads answer without one, with
  `X-Consul-KnownLeader: false`.
* A blocking query answers as soon as its index passes the client's, at its
  timeout with the current data, or with `No cluster leader` when the leader
  goes away for longer than the hold (§3).
* Session TTL timers run only while there is a leader and restart at 2xTTL
  when one is elected (§1.4).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from . import events, views
from .acl import AclSystem
from .catalog import ALIAS_REFRESH_INTERVAL, CatalogTable
from .core import Core, NoClusterLeader, RequestAborted, Txn
from .durations import seconds_to_duration
from .events import EventJournal
from .kv import KvTable
from .model import KvEntry, NodeRecord, Session
from .sessions import SessionTable
from .timers import TimerHandle, TimerWheel
from .watch import LEADER_TOPIC, WatchSpec

DATACENTER = "dc1"


@dataclass(frozen=True)
class LeaderView:
    """What a read tells the client about the leader (X-Consul-KnownLeader/LastContact)."""

    known: bool
    last_contact_ms: int


@dataclass(frozen=True)
class QueryResult:
    """One evaluation of a read: its payload, its index, and whether it found nothing."""

    value: Any
    index: int
    missing: bool = False


Abort = Callable[[], bool]
T = TypeVar("T")


def _never() -> bool:
    return False


class ClusterState:
    """Everything the double's servers and agents know; thread-safe."""

    def __init__(
        self,
        node_names: tuple[str, ...],
        session_ttl_min: float = 10.0,
        rpc_hold_timeout: float = 7.0,
        node_address: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
        journal: EventJournal | None = None,
        acl: AclSystem | None = None,
        alias_refresh_interval: float = ALIAS_REFRESH_INTERVAL,
        servers: tuple[str, ...] = (),
    ) -> None:
        if not node_names:
            raise ValueError("a cluster needs at least one node")
        if len(set(node_names)) != len(node_names):
            raise ValueError(f"node names must be unique: {node_names}")
        unknown = [name for name in servers if name not in node_names]
        if unknown:
            raise ValueError(f"servers must be among the nodes {node_names}: {unknown}")
        self.node_names = tuple(node_names)
        # Nodes whose agents are servers; the first one leads while there is a leader.
        # With none, the servers are outside the node list (every agent is a client).
        self.server_nodes = tuple(servers)
        self.datacenter = DATACENTER
        self.rpc_hold_timeout = rpc_hold_timeout
        self._clock = clock
        self._timers = TimerWheel(clock)
        self._core = Core(self._timers, clock, journal)
        self.journal = self._core.journal
        self._nodes: dict[str, NodeRecord] = {}
        self.kv = KvTable(self._core)
        self.sessions = SessionTable(
            self._core, self.kv, self._nodes, seconds_to_duration(session_ttl_min)
        )
        # The agents resolve check tokens for anti-entropy and alias RPCs (addendum §9, §11).
        self.catalog = CatalogTable(
            self._core, self._nodes, self.sessions, acl, alias_refresh_interval
        )
        self._leader_lost_at: float | None = None
        self._election: TimerHandle | None = None
        self._unreachable: set[str] = set()
        self._closing = False
        with self._core.write() as txn:
            for name in self.node_names:
                self.catalog.add_node(txn, name, node_address)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._timers.start()

    def close(self) -> None:
        """Fail every in-flight request and stop the timer thread."""
        with self._core.lock:
            self._closing = True
            self._core.hub.publish_all()
        self._timers.stop()

    # -- locking -------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the cluster lock for a consistent read of the tables."""
        with self._core.lock:
            yield

    @contextmanager
    def write(self) -> Iterator[Txn]:
        """One write transaction, with no leader requirement (agent-local changes)."""
        with self._core.write() as txn:
            yield txn

    @contextmanager
    def server_write(self, abort: Abort = _never) -> Iterator[Txn]:
        """One write through the servers: waits for a leader first (§6)."""
        with self._core.write() as txn:
            self._await_leader(allow_stale=False, abort=abort)
            yield txn

    @contextmanager
    def server_call(self, abort: Abort = _never) -> Iterator[LeaderView]:
        """A non-blocking server RPC (e.g. renew): waits for a leader, holds the lock."""
        with self._core.lock:
            yield self._await_leader(allow_stale=False, abort=abort)

    # -- reads ---------------------------------------------------------------

    def blocking_query(
        self,
        evaluate: Callable[[], QueryResult],
        watch: WatchSpec,
        min_index: int,
        timeout: float,
        allow_stale: bool = False,
        abort: Abort = _never,
    ) -> tuple[QueryResult, LeaderView]:
        """Run `evaluate` under the lock; block per §3 while its index is <= min_index."""
        with self._core.lock:
            leader = self._await_leader(allow_stale, abort)
            result = evaluate()
            if min_index == 0 or result.index > min_index:
                return result, leader
            return self._block(evaluate, watch, min_index, timeout, allow_stale, abort, result)

    def _block(
        self,
        evaluate: Callable[[], QueryResult],
        watch: WatchSpec,
        min_index: int,
        timeout: float,
        allow_stale: bool,
        abort: Abort,
        result: QueryResult,
    ) -> tuple[QueryResult, LeaderView]:
        deadline = self._clock() + timeout
        seen_missing = result.missing
        waiter = self._core.hub.register(watch)
        try:
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return result, self._leader_view()
                waiter.wait(remaining)
                if abort() or self._closing:
                    raise RequestAborted
                leader = self._await_leader(allow_stale, abort)
                result = evaluate()
                if result.missing:
                    # §3 missing-key rule: once nothing was found, wake-ups that
                    # still find nothing raise the bar instead of answering.
                    if seen_missing:
                        min_index = max(min_index, result.index)
                    seen_missing = True
                if result.index > min_index:
                    return result, leader
        finally:
            self._core.hub.unregister(waiter)

    def local_blocking_query(
        self,
        evaluate: Callable[[], T],
        changed: Callable[[T], bool],
        watch: WatchSpec,
        timeout: float | None,
        abort: Abort = _never,
    ) -> T:
        """Agent-local blocking (§3 hash blocking): no leader needed; answer once `changed`.

        With timeout None the query answers at once.
        """
        with self._core.lock:
            result = evaluate()
            if timeout is None or changed(result):
                return result
            deadline = self._clock() + timeout
            waiter = self._core.hub.register(watch)
            try:
                while True:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        return result
                    waiter.wait(remaining)
                    if abort() or self._closing:
                        raise RequestAborted
                    result = evaluate()
                    if changed(result):
                        return result
            finally:
                self._core.hub.unregister(waiter)

    def _await_leader(self, allow_stale: bool, abort: Abort) -> LeaderView:
        """Lock held. Hold a server-bound call up to rpc_hold_timeout for a leader (§6)."""
        if self._leader_lost_at is None or allow_stale:
            return self._leader_view()
        deadline = self._clock() + self.rpc_hold_timeout
        waiter = self._core.hub.register(WatchSpec.of(LEADER_TOPIC))
        try:
            while self._leader_lost_at is not None:
                if abort() or self._closing:
                    raise RequestAborted
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise NoClusterLeader
                waiter.wait(remaining)
        finally:
            self._core.hub.unregister(waiter)
        return self._leader_view()

    def _leader_view(self) -> LeaderView:
        if self._leader_lost_at is None:
            return LeaderView(known=True, last_contact_ms=0)
        return LeaderView(
            known=False, last_contact_ms=int((self._clock() - self._leader_lost_at) * 1000)
        )

    @property
    def has_leader(self) -> bool:
        with self._core.lock:
            return self._leader_lost_at is None

    def leader_present(self) -> bool:
        """Like has_leader, for a caller that already holds the cluster lock."""
        return self._leader_lost_at is None

    def node_reachable(self, name: str) -> bool:
        return name not in self._unreachable and not self._closing

    # -- faults --------------------------------------------------------------

    def fail_node(self, name: str) -> None:
        """§1.6: the node is lost: serfHealth critical (invalidating its sessions)."""
        self._require_node(name)
        with self._core.write() as txn:
            self._unreachable.add(name)
            self.journal.record(events.NODE_FAILED, node=name)
            self.catalog.set_node_alive(txn, name, alive=False)
            self._core.hub.publish_all()  # drop the requests in flight on that node

    def recover_node(self, name: str) -> None:
        self._require_node(name)
        with self._core.write() as txn:
            self._unreachable.discard(name)
            self.journal.record(events.NODE_RECOVERED, node=name)
            self.catalog.set_node_alive(txn, name, alive=True)

    def servers_down(self) -> None:
        """The servers lose their leader until `servers_up` (or a failover window ends)."""
        with self._core.lock:
            self.journal.record(events.SERVERS_DOWN)
            self._cancel_election()
            self._lose_leader()

    def servers_up(self) -> None:
        with self._core.lock:
            self.journal.record(events.SERVERS_UP)
            self._cancel_election()
            self._elect_leader()

    def servers_failover(self, window: float) -> None:
        """§1.4: the leader changes; no leader for `window` seconds, then timers restart."""
        with self._core.lock:
            self.journal.record(events.SERVERS_FAILOVER, window=window)
            self._cancel_election()
            self._lose_leader()
            if window <= 0:
                self._elect_leader()
            else:
                self._election = self._timers.schedule(window, self._on_election)

    def _on_election(self, handle: TimerHandle) -> None:
        with self._core.lock:
            if self._election is handle:
                self._election = None
                self.journal.record(events.LEADER_ELECTED)
                self._elect_leader()

    def _cancel_election(self) -> None:
        self._timers.cancel(self._election)
        self._election = None

    def _lose_leader(self) -> None:
        if self._leader_lost_at is None:
            self._leader_lost_at = self._clock()
            self.sessions.stop_timers()
        self._core.hub.publish_all()  # in-flight blocking queries go through the hold again

    def _elect_leader(self) -> None:
        self._leader_lost_at = None
        self.sessions.restart_timers()
        self._core.hub.publish([LEADER_TOPIC])

    def _require_node(self, name: str) -> None:
        if name not in self._nodes:
            raise KeyError(f"unknown node {name!r}; nodes are {list(self.node_names)}")

    # -- inspection (tests and the control API) ------------------------------

    @property
    def raft_index(self) -> int:
        with self._core.lock:
            return self._core.raft_index

    def kv_entry(self, key: str) -> KvEntry | None:
        with self._core.lock:
            return self.kv.get(key)[1]

    def session(self, session_id: str) -> Session | None:
        with self._core.lock:
            return self.sessions.get(session_id)

    def lock_delay_remaining(self, key: str) -> float:
        with self._core.lock:
            return self.kv.lock_delay_remaining(key)

    def blocked_queries(self) -> int:
        """Requests currently waiting in a blocking query or for a leader."""
        with self._core.lock:
            return self._core.hub.waiting()

    def snapshot(self) -> dict[str, Any]:
        """The JSON of the control API's `GET /state`."""
        with self._core.lock:
            return {
                "index": self._core.raft_index,
                "leader": self._leader_lost_at is None,
                "nodes": {node.name: self._node_snapshot(node) for node in self.catalog.nodes()},
                "sessions": [views.session(session) for session in self.sessions.all()],
                "kv": [self._kv_snapshot(entry) for entry in self.kv.list_prefix("")[1]],
                "lock_delays": self.kv.lock_delays(),
            }

    def _node_snapshot(self, node: NodeRecord) -> dict[str, Any]:
        return {
            "reachable": node.name not in self._unreachable,
            "serfHealth": node.serf_check.catalog_status,
            "services": {
                service_id: views.agent_service(node.services[service_id], self.datacenter)
                for service_id in sorted(node.services)
            },
            "checks": {
                check_id: views.health_check(node.checks[check_id], agent_view=True)
                for check_id in sorted(node.checks)
            },
            # What the agent holds but the catalog no longer lists (addendum §14).
            "not_in_catalog": sorted(
                [sid for sid, service in node.services.items() if not service.in_catalog]
                + [cid for cid, check in node.checks.items() if not check.in_catalog]
            ),
        }

    @staticmethod
    def _kv_snapshot(entry: KvEntry) -> dict[str, Any]:
        view = views.kv_entry(entry)
        # Decoded too, so a human reading /state sees the value.
        view["ValueText"] = (entry.value or b"").decode("utf-8", "replace")
        return view

