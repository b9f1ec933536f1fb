"""A fault proxy between one sidecar and its Consul agent, on loopback.

The sidecar's `CONSUL_HTTP_ADDR` points at the proxy; the proxy forwards each request to the
agent and hands the agent's answer to a per-request *mutation hook* before sending it back.
With no hook it is a transparent pass-through.

Guarantees:
* The port never changes: `refuse()` closes the listening socket (new connections are refused,
  as by a dead agent) and resets every open connection; `accept()` listens again on the port.
* The hook sees the answer when the agent has produced it, so every answer *delivered* after a
  hook is installed went through that hook (in-flight blocking queries included).
* If the agent cannot be reached the client connection is reset, never answered: a proxy must
  not invent a status code.
* `close()` ends every thread it started (slow drips and blocking queries are cut).
* Counts every request it reads, per second, so a hot loop behind it shows up.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# Long enough for the sidecar's longest blocking query (wait 5m, plus its own margin).
UPSTREAM_TIMEOUT = 400.0
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer",
     "upgrade", "proxy-connection", "accept-encoding", "content-encoding"}
)
# Statuses whose answers carry no body, whatever the headers say (RFC 9110).
BODYLESS_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class Exchange:
    """One request and the agent's answer to it, as the hook sees them."""

    method: str
    path: str  # with the query string
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


@dataclass(frozen=True)
class Delivery:
    """What the proxy sends back. `declared_length` above `len(body)` cuts the body short
    (the connection is then reset); `drip` sends it `chunk` bytes at a time, `pause` apart."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    declared_length: int | None = None
    drip: tuple[int, float] | None = None
    mutated: bool = False

    @classmethod
    def of(cls, exchange: Exchange) -> Delivery:
        return cls(exchange.status, exchange.headers, exchange.body)

    def with_header(self, name: str, value: str | None) -> Delivery:
        kept = tuple((k, v) for k, v in self.headers if k.lower() != name.lower())
        headers = kept if value is None else (*kept, (name, value))
        return replace(self, headers=headers, mutated=True)


Hook = Callable[[Exchange], Delivery]


@dataclass
class ProxyStats:
    requests: int = 0
    mutated: int = 0
    per_second: Counter[int] = field(default_factory=Counter)
    last_clean_delivery: float | None = None  # time.time() of the last unmutated answer sent

    def busiest_second(self, since: float = 0.0) -> int:
        return max((n for second, n in self.per_second.items() if second >= since), default=0)


class FaultProxy:
    """Forwards HTTP/1.1 requests from one sidecar to one agent, optionally mutating answers."""

    def __init__(self, upstream: str, name: str = "proxy") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"need an http://host:port upstream, got {upstream!r}")
        self.name = name
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._hook: Hook | None = None
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._upstreams: set[http.client.HTTPConnection] = set()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self.stats = ProxyStats()
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self.accept()
        return self

    def accept(self) -> None:
        """Listen (again) on the proxy's port."""
        with self._lock:
            if self._server is not None:
                return
            server = _ProxyServer(("127.0.0.1", self.port), self)
            self.port = int(server.server_address[1])
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"{self.name}-accept", daemon=True,
            )
            self._thread.start()

    def refuse(self) -> None:
        """Stop listening and reset every open connection: the agent looks unreachable."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            connections = list(self._connections)
            upstreams = list(self._upstreams)
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)
        for connection in connections:
            _reset(connection)
        for upstream in upstreams:
            if upstream.sock is not None:  # wakes a thread blocked reading from the agent
                _reset(upstream.sock)

    def close(self) -> None:
        self._closing.set()
        self.refuse()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def refusing(self) -> bool:
        with self._lock:
            return self._server is None

    # -- faults ----------------------------------------------------------------------------

    def set_hook(self, hook: Hook | None) -> None:
        with self._lock:
            self._hook = hook

    @contextlib.contextmanager
    def hooked(self, hook: Hook) -> Any:
        self.set_hook(hook)
        try:
            yield self
        finally:
            self.set_hook(None)

    # -- used by the handler ---------------------------------------------------------------

    def _track(self, connection: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(connection)

    def _count_request(self) -> None:
        with self._lock:
            self.stats.requests += 1
            self.stats.per_second[int(time.monotonic())] += 1

    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> Exchange:
        upstream = http.client.HTTPConnection(*self._upstream, timeout=UPSTREAM_TIMEOUT)
        with self._lock:
            self._upstreams.add(upstream)
        try:
            upstream.request(method, path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
            return Exchange(method, path, headers, body, answer.status,
                            tuple(answer.getheaders()), payload)
        finally:
            with self._lock:
                self._upstreams.discard(upstream)
            upstream.close()

    def _deliverable(self, exchange: Exchange) -> Delivery:
        with self._lock:
            hook = self._hook
        delivery = hook(exchange) if hook is not None else Delivery.of(exchange)
        with self._lock:
            if delivery.mutated:
                self.stats.mutated += 1
        return delivery

    def _delivered(self, delivery: Delivery) -> None:
        if not delivery.mutated:
            with self._lock:
                self.stats.last_clean_delivery = time.time()

    def _pause(self, seconds: float) -> bool:
        """Wait during a drip; False when the proxy is closing or refusing."""
        return not self._closing.wait(seconds) and not self.refusing


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the timeline records what matters."""

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.proxy._track(self.connection, add=False)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:  # reset by refuse(), or by the client
            self.close_connection = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._relay
        raise AttributeError(name)

    def _relay(self) -> None:
        proxy = self.server.proxy
        proxy._count_request()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            exchange = proxy._forward(self.command, self.path, headers, body)
        except (OSError, http.client.HTTPException):
            # The agent is unreachable: so is the proxy, for this connection.
            self.close_connection = True
            _reset(self.connection)
            return
        delivery = proxy._deliverable(exchange)
        self._send(delivery)
        proxy._delivered(delivery)

    def _send(self, delivery: Delivery) -> None:
        declared = delivery.declared_length
        length = len(delivery.body) if declared is None else declared
        self.send_response_only(delivery.status)
        for name, value in delivery.headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "date":
                self.send_header(name, value)
        if delivery.status not in BODYLESS_STATUSES:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if delivery.status in BODYLESS_STATUSES:
            self.wfile.flush()
            return
        self._write_body(delivery)
        if length > len(delivery.body):  # cut short: the client must see a broken answer
            self.close_connection = True
            _reset(self.connection)

    def _write_body(self, delivery: Delivery) -> None:
        if delivery.drip is None:
            self.wfile.write(delivery.body)
            self.wfile.flush()
            return
        chunk, pause = delivery.drip
        for start in range(0, len(delivery.body), chunk):
            self.wfile.write(delivery.body[start : start + chunk])
            self.wfile.flush()
            if not self.server.proxy._pause(pause):
                self.close_connection = True
                _reset(self.connection)
                return


def _reset(connection: socket.socket) -> None:
    """Close with an RST, as a vanished peer would, so the client sees an error at once."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        connection.close()
