"""Wake-ups for blocking queries, routed by topic under the cluster lock.

A blocking query (consul-semantics.md §3) registers a Waiter for the topics its
answer depends on (one KV key, a KV prefix, one session, one service...). A
write publishes the topics it really changed, so only the waiters whose answer
may differ wake up and re-run their query; a write that changes nothing
publishes nothing (§2.3 "No-op writes", §3 "Identical re-writes do not").
Every waiter's Condition shares the cluster lock, so a waiter registered and
evaluated under that lock cannot miss a publish.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

Topic = tuple[str, ...]


def kv_topic(key: str) -> Topic:
    return ("kv", key)


SESSIONS_TOPIC: Topic = ("sessions",)
LEADER_TOPIC: Topic = ("leader",)
CATALOG_SERVICES_TOPIC: Topic = ("catalog-services",)
CATALOG_NODES_TOPIC: Topic = ("catalog-nodes",)
CHECKS_TOPIC: Topic = ("checks",)


def session_topic(session_id: str) -> Topic:
    return ("session", session_id)


def session_node_topic(node: str) -> Topic:
    return ("session-node", node)


def service_topic(name: str) -> Topic:
    return ("service", name)


def node_topic(node: str) -> Topic:
    return ("node", node)


def agent_service_topic(node: str, service_id: str) -> Topic:
    return ("agent-service", node, service_id)


@dataclass(frozen=True)
class WatchSpec:
    """What a blocking query depends on: exact topics and, for KV lists, a key prefix."""

    topics: frozenset[Topic] = field(default_factory=frozenset)
    kv_prefix: str | None = None

    @classmethod
    def of(cls, *topics: Topic, kv_prefix: str | None = None) -> WatchSpec:
        return cls(frozenset(topics), kv_prefix)


class Waiter:
    """One blocked request; `wait` releases the cluster lock while it sleeps."""

    def __init__(self, lock: threading.Lock, spec: WatchSpec) -> None:
        self.spec = spec
        self._condition = threading.Condition(lock)
        self._notified = False

    def wait(self, timeout: float) -> None:
        """Sleep until notified or `timeout` seconds pass; the caller holds the lock."""
        if not self._notified:
            self._condition.wait(timeout)
        self._notified = False

    def notify(self) -> None:
        self._notified = True
        self._condition.notify()


class WatchHub:
    """Registry of waiters by topic; every method is called with the cluster lock held."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._by_topic: defaultdict[Topic, set[Waiter]] = defaultdict(set)
        self._by_prefix: set[Waiter] = set()
        self._all: set[Waiter] = set()

    def register(self, spec: WatchSpec) -> Waiter:
        waiter = Waiter(self._lock, spec)
        for topic in spec.topics:
            self._by_topic[topic].add(waiter)
        if spec.kv_prefix is not None:
            self._by_prefix.add(waiter)
        self._all.add(waiter)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        for topic in waiter.spec.topics:
            waiters = self._by_topic.get(topic)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_topic[topic]
        self._by_prefix.discard(waiter)
        self._all.discard(waiter)

    def publish(self, topics: Iterable[Topic]) -> None:
        woken: set[Waiter] = set()
        changed_keys: list[str] = []
        for topic in topics:
            woken.update(self._by_topic.get(topic, ()))
            if topic[0] == "kv":
                changed_keys.append(topic[1])
        if changed_keys:
            woken.update(
                waiter
                for waiter in self._by_prefix
                if any(key.startswith(waiter.spec.kv_prefix or "") for key in changed_keys)
            )
        for waiter in woken:
            waiter.notify()

    def waiting(self) -> int:
        """How many requests are blocked right now."""
        return len(self._all)

    def publish_all(self) -> None:
        """Wake every waiter: the leader went away, a node failed, or the double stops."""
        for waiter in self._all:
            waiter.notify()
