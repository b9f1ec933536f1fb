"""Request statistics per node and endpoint, for tests and benchmarks to assert on.

Each request a node's listener reads is counted once, under its method and
endpoint template (`PUT /v1/session/renew/:id`, `GET /v1/kv/:key`), and
classified `agent` (answered by the agent alone, `/v1/agent/*`) or `server`
(forwarded to the servers: KV, sessions, catalog, health, status).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

AGENT = "agent"
SERVER = "server"


class RequestStats:
    def __init__(self, node_names: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._node_names = node_names
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def record(self, node: str, endpoint: str, klass: str) -> None:
        with self._lock:
            self._counts[(node, endpoint, klass)] += 1

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def count(self, node: str | None = None, endpoint: str | None = None,
              klass: str | None = None) -> int:
        """Requests matching every given criterion (None matches anything)."""
        with self._lock:
            return sum(
                count
                for (counted_node, counted_endpoint, counted_class), count in self._counts.items()
                if node in (None, counted_node)
                and endpoint in (None, counted_endpoint)
                and klass in (None, counted_class)
            )

    def snapshot(self) -> dict[str, Any]:
        """`{"total": n, "nodes": {node: {"total", "agent", "server", "endpoints"}}}`."""
        with self._lock:
            counts = dict(self._counts)
        nodes: dict[str, Any] = {
            name: {"total": 0, AGENT: 0, SERVER: 0, "endpoints": {}} for name in self._node_names
        }
        for (node, endpoint, klass), count in sorted(counts.items()):
            entry = nodes[node]
            entry["total"] += count
            entry[klass] += count
            entry["endpoints"][endpoint] = {"count": count, "class": klass}
        return {"total": sum(counts.values()), "nodes": nodes}
