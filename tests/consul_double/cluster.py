"""ConsulDouble: a Consul agent + servers stand-in served over real HTTP on loopback.

    with ConsulDouble(nodes=("n1", "n2"), session_ttl_min=1.0, rpc_hold_timeout=0.0) as consul:
        requests.put(consul.node_addr("n1") + "/v1/session/create", json={"TTL": "2s"})
        consul.fail_node("n1")

Each node has its own agent listener (node-local `/v1/agent/*`, sessions
default to it, its own serfHealth); one control listener (plain HTTP, see
control.py) inspects and injects faults. Behaviour follows
/work/shared/consul-semantics.md; DESIGN.md §5 describes the role.

Inspection: `events(since_mono, kind)` is the event journal (events.py: sessions,
locks, checks, services, node and server faults, each with monotonic and wall
clocks), `blocked_queries()` counts requests held in a blocking query, `stats()`
counts requests per node and endpoint, `snapshot()` is the whole state.

Guarantees: `__exit__` stops every listener and the timer thread and joins
them, so no thread or socket outlives the `with` block. A failed node's port
refuses connections until it recovers on the same port.

Deliberate simplifications (where the double is not Consul):
* Error bodies carry the bare core text, never `rpc error making call: ` or
  `apply failed: ` prefixes (§0 lets a double do that; clients match substrings).
* A failover is "no leader for `failover_window` seconds": calls made meanwhile
  are held up to `rpc_hold_timeout` like in any leaderless period, so they see
  500 `No cluster leader` only when the hold is shorter than the window.
* Agent-local changes reach the catalog at once, even while there is no leader
  (a real agent syncs them when the servers return); TTL checks of a failed
  node keep running; output-only check updates stay on the agent until the next
  status change (the 5m deferred sync is not modelled).
* Servers are not catalog nodes (no `consul` service), there is no periodic
  anti-entropy, `PUT /v1/catalog/register` is not served, tombstones are never
  reaped, and lock-delays run on the monotonic clock.
* `PUT /v1/catalog/deregister` (addendum §14) drops a service, check or node's
  registrations from the catalog only; the agent keeps them and puts a service back
  when it is registered again or a check of it syncs a status change with a token that
  may write. The periodic full sync that would also put it back (within minutes, with a
  token that may still write) is not modelled; the node form keeps the node itself.
* `/v1/status/leader` answers "" at once while there is no leader (any server
  answers it), without the hold.
* Nodes are client agents unless named in `servers=` (the first leads while there
  is a leader); there is one datacenter, `dc1` (docs/consul-semantics-addendum.md §12).
* Checks sync with their own token (addendum §11) at once: Consul's skipped sync of
  an identical re-registration and the periodic full sync are not modelled; the
  agent has no default token, so a check registered without one syncs as anonymous.
* Alias checks (addendum §9): a remote alias re-evaluates on any catalog change of
  its node (no RPC backoff). Maintenance mode (addendum §15): not persisted across agent
  restarts.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .acl import AclSystem
from .api import AgentApi
from .api.common import Settings
from .catalog import ALIAS_REFRESH_INTERVAL
from .control import ControlApi
from .events import DEFAULT_CAPACITY, EventJournal
from .faults import NodeFaults
from .server import Listener
from .stats import RequestStats
from .store import ClusterState

DEFAULT_FAILOVER_WINDOW = 0.5


@dataclass(frozen=True)
class TlsConfig:
    """HTTPS for every agent listener; with verify_incoming, clients need a cert from cafile."""

    certfile: str
    keyfile: str
    cafile: str | None = None
    verify_incoming: bool = False

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        if self.cafile:
            context.load_verify_locations(self.cafile)
        if self.verify_incoming:
            if not self.cafile:
                raise ValueError("verify_incoming needs a cafile to verify client certificates")
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class ConsulDouble:
    """The stand-in: context manager, in-process API, and the owner of all listeners."""

    def __init__(
        self,
        nodes: tuple[str, ...] = ("n1",),
        servers: tuple[str, ...] = (),
        session_ttl_min: float = 10.0,
        rpc_hold_timeout: float = 7.0,
        acl: AclSystem | None = None,
        tls: TlsConfig | None = None,
        host: str = "127.0.0.1",
        base_port: int = 0,
        control_port: int = 0,
        failover_window: float = DEFAULT_FAILOVER_WINDOW,
        journal_capacity: int = DEFAULT_CAPACITY,
        alias_refresh_interval: float = ALIAS_REFRESH_INTERVAL,
    ) -> None:
        self.node_names = tuple(nodes)
        self.state = ClusterState(
            self.node_names, session_ttl_min=session_ttl_min, rpc_hold_timeout=rpc_hold_timeout,
            node_address=host, journal=EventJournal(journal_capacity), acl=acl, servers=servers,
            alias_refresh_interval=alias_refresh_interval,
        )
        self.acl = acl
        self.failover_window = failover_window
        self._stats = RequestStats(self.node_names)
        self._faults = {name: NodeFaults() for name in self.node_names}
        self._lock = threading.Lock()  # serialises fault injection on listeners
        settings = Settings(self.state, acl)
        tls_context = tls.server_context() if tls is not None else None
        self._listeners = {
            name: Listener(
                name,
                host,
                base_port + position if base_port else 0,
                AgentApi(name, settings, self._stats, self._faults[name]),
                tls_context,
            )
            for position, name in enumerate(self.node_names)
        }
        self._control = Listener("control", host, control_port, ControlApi(self))
        self._started = False

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> ConsulDouble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        if self._started:
            return
        self.state.start()
        try:
            for listener in self._listeners.values():
                listener.start()
            self._control.start()
        except BaseException:
            self.close()
            raise
        self._started = True

    def close(self) -> None:
        """Answer nothing more, stop every listener and the timer thread, join them all."""
        self.state.close()
        for faults in self._faults.values():
            faults.listener_stopping()
        for listener in (*self._listeners.values(), self._control):
            listener.stop()
        self._started = False

    # -- addresses -----------------------------------------------------------

    def node_addr(self, node: str) -> str:
        return self._listener(node).url

    @property
    def control_addr(self) -> str:
        return self._control.url

    def addresses(self) -> dict[str, Any]:
        """The JSON line the command prints: every node's URL and the control URL."""
        return {
            "nodes": {name: self.node_addr(name) for name in self.node_names},
            "control": self.control_addr,
        }

    # -- faults --------------------------------------------------------------

    def fail_node(self, node: str) -> None:
        """§1.6: serfHealth critical (its sessions invalidated), its port refuses connections."""
        listener = self._listener(node)
        with self._lock:
            self.state.fail_node(node)
            self._faults[node].listener_stopping()
            listener.stop()

    def recover_node(self, node: str) -> None:
        listener = self._listener(node)
        with self._lock:
            self._faults[node].listener_started()
            listener.start()
            self.state.recover_node(node)

    def servers_down(self) -> None:
        self.state.servers_down()

    def servers_up(self) -> None:
        self.state.servers_up()

    def servers_failover(self, window: float | None = None) -> None:
        """§1.4: a new leader after `window` seconds (default failover_window)."""
        self.state.servers_failover(self.failover_window if window is None else window)

    def set_latency(self, seconds: float, node: str | None = None) -> None:
        for name in self.node_names if node is None else (node,):
            self._node_faults(name).set_latency(seconds)

    def inject_errors(self, node: str, count: int, status: int = 500) -> None:
        self._node_faults(node).inject_errors(count, status)

    def add_acl_token(self, secret: str, rules: str) -> None:
        self._require_acl().add_token(secret, rules)

    def revoke_acl_token(self, secret: str) -> None:
        self._require_acl().revoke_token(secret)

    # -- inspection ----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def request_count(self, node: str | None = None, endpoint: str | None = None,
                      klass: str | None = None) -> int:
        """E.g. `request_count("n1", "PUT /v1/session/renew/:id")`."""
        return self._stats.count(node, endpoint, klass)

    def events(self, since_mono: float | None = None, kind: str | None = None
               ) -> list[dict[str, Any]]:
        """The event journal (see events.py): events with `mono > since_mono`, of `kind`.

        E.g. `events(kind="kv_lock_acquired")[-1]["mono"]` is when the last lock was taken.
        """
        return self.state.journal.events(since_mono, kind)

    def blocked_queries(self) -> int:
        """Requests currently waiting in a blocking query or for a leader."""
        return self.state.blocked_queries()

    def snapshot(self) -> dict[str, Any]:
        snapshot = self.state.snapshot()
        for name, node in snapshot["nodes"].items():
            node["address"] = self.node_addr(name)
        snapshot["control"] = self.control_addr
        return snapshot

    # -- helpers -------------------------------------------------------------

    def _listener(self, node: str) -> Listener:
        try:
            return self._listeners[node]
        except KeyError:
            raise KeyError(f"unknown node {node!r}; nodes are {list(self.node_names)}") from None

    def _node_faults(self, node: str) -> NodeFaults:
        try:
            return self._faults[node]
        except KeyError:
            raise KeyError(f"unknown node {node!r}; nodes are {list(self.node_names)}") from None

    def _require_acl(self) -> AclSystem:
        if self.acl is None:
            raise RuntimeError("ACLs are disabled in this double (pass acl=AclSystem(...))")
        return self.acl
