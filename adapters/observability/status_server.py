"""The sidecar's one small HTTP server: metrics, health and role checks, status.

Routes (GET and HEAD; other methods on them answer 405, unknown paths 404):
- ``/metrics``  Prometheus exposition of the injected registry; the format is negotiated from
  ``Accept`` (text or OpenMetrics) and gzip is used when ``Accept-Encoding`` allows it.
- ``/livez``    Liveness: 200 ``ok`` while the control loop runs, else 503 with the reason.
  A leader past its lease (say, during a Consul partition) is live: it steps down by itself,
  and restarting it would not help. What restart policies and ``HEALTHCHECK`` should ask.
- ``/readyz``   Readiness: 200 ``ok`` while live with a confirmed session whose lease has not
  run out (so never for a leader past its lease), else 503 with the reason.
- ``/healthz``  The same as ``/livez``; kept for existing users (before, it also failed for a
  leader past its lease, which made restart policies restart it during Consul outages).
- ``/primary``  200 only while Leader *and* the local lease is unexpired, else 503 (JSON).
- ``/replica``  200 while Follower, else 503 (JSON).
- ``/status``   JSON view of the sidecar's state, with ``live`` and ``ready`` (and ``healthy``,
  the same as ``live``, for existing readers).

Write paths (POST only; other methods answer 405), issue 12:
- ``/switchover[?to=<instance>][&hold_off=5s]``  hand leadership over (adapters/election/
  switchover.py): JSON on success, else one line. Each write request is first let through, or
  not, by ``WritePaths.authorize`` (adapters/observability/write_auth.py: off unless enabled,
  bearer token when configured); a refusal is one line and is logged without the token.

Listening: the socket is bound in the constructor, so a busy or unusable address fails
(``ListenError``) before anything else starts. Host ``""`` (``ALL_INTERFACES``) means every
interface: one dual-stack IPv6 socket (``IPV6_V6ONLY=0``) that takes IPv4 connections too, or an
IPv4 socket where the host has no IPv6. Any other host binds exactly that address.

Guarantees:
- Every answer is computed from one fresh snapshot, taken per request; nothing is cached.
- A snapshot (or a metrics collection) that raises gives 500 for that request; the server
  keeps serving.
- ``stop()`` stops the accept loop, joins its thread, closes the listening socket, gives
  in-flight requests a short grace period and then cuts the connections of clients that are
  still silent, so no thread of this server outlives ``stop()`` (unless the snapshot callable
  itself hangs: after the grace period that thread is left running as a daemon).
- Request threads are daemons with a socket timeout, so a stuck client can neither keep the
  process alive nor hold a thread for long, even before ``stop()``.

The state names ``Leader``, ``Follower`` and ``NoSession`` are written out here so this module
does not import ``fsm``; they must match the machine's state names.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger(__name__)

ALL_INTERFACES: Final = ""
# What binding "::" fails with where the host has no IPv6 (disabled in the kernel or on every
# interface): then every interface means every IPv4 one.
_NO_IPV6: Final = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EADDRNOTAVAIL})

LEADER: Final = "Leader"
FOLLOWER: Final = "Follower"
NO_SESSION: Final = "NoSession"

TEXT: Final = "text/plain; charset=utf-8"
JSON: Final = "application/json"
ALLOWED_METHODS: Final = "GET, HEAD"
WRITE_METHOD: Final = "POST"

# Long enough for any scrape on loopback or a LAN, short enough that a silent client cannot
# pin a thread for long.
REQUEST_SOCKET_TIMEOUT: Final = 10.0
# How often the accept loop checks for stop(); bounds how long stop() waits for it.
ACCEPT_POLL_INTERVAL: Final = 0.1
# stop() runs inside the shutdown budget (Nomad kills after 5 s): never wait long on clients.
REQUEST_DRAIN_TIMEOUT: Final = 1.0
# Bodies are never used; small ones are read so closing the socket does not reset the reply.
MAX_DISCARDED_BODY: Final = 64 * 1024


@dataclass(frozen=True)
class StatusSnapshot:
    """What the control loop knows at one instant; built by the caller for each request."""

    state: str
    since: float  # wall-clock time of the last state change
    session: str | None
    key: str
    fencing_token: int | None
    holder: str | None  # session currently holding the key, as last observed
    last_renew_age: float | None  # seconds since the last confirmed renew; None if never
    lease_remaining: float | None  # seconds until the local lease deadline; None if no lease
    loop_alive: bool  # control loop heartbeat is fresh
    published: bool = True  # Consul shows the primary label on every target (when Leader)
    # Switchover and priorities (issue 12).
    priority: int | None = None
    excluded: dict[str, Any] | None = None  # what keeps it out of the race now (hold-off...)
    # Issue 12: the health gate: off, waiting, healthy or critical, and why it is critical.
    health_gate: str = "off"
    health_gate_reason: str = ""

    def lease_valid(self) -> bool:
        return self.lease_remaining is not None and self.lease_remaining > 0

    def is_primary(self) -> bool:
        """True only while Leader with an unexpired lease and the primary label published:
        what clients may route writes to."""
        return self.state == LEADER and self.lease_valid() and self.published

    def live(self) -> tuple[bool, str]:
        """(live, reason). Not live only when the control loop is wedged."""
        if not self.loop_alive:
            return False, "control loop is not running (no recent heartbeat)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """(ready, reason). Ready when live with a confirmed session and an unexpired lease."""
        live, reason = self.live()
        if not live:
            return live, reason
        if self.state == LEADER and not self.lease_valid():
            return False, f"stale leader: {self._lease_problem()}"
        if self.state == NO_SESSION or self.session is None:
            return False, "no confirmed session"
        if not self.lease_valid():
            return False, f"session not confirmed: {self._lease_problem()}"
        return True, "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since,
            "session": self.session,
            "key": self.key,
            "fencing_token": self.fencing_token,
            "last_renew_age": self.last_renew_age,
            "lease_remaining": self.lease_remaining,
            "holder": self.holder,
            "published": self.published,
            "live": self.live()[0],
            "ready": self.ready()[0],
            "healthy": self.live()[0],  # the /healthz answer, kept for existing readers
            "priority": self.priority,
            "excluded": self.excluded,
            "health_gate": self.health_gate,
            "health_gate_reason": self.health_gate_reason,
        }

    def _lease_problem(self) -> str:
        if self.lease_remaining is None:
            return "no confirmed session renewal"
        return f"lease expired {-self.lease_remaining:.1f}s ago"


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # may carry a query string
    accept: str
    accept_encoding: str
    authorization: str = ""  # never logged
    client: str = ""


class WriteRefusal(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...


class WriteAnswer(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def document(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class WritePaths:
    """The write routes' handlers (issue 12), injected by the composition root."""

    authorize: Callable[[str], WriteRefusal | None]  # the Authorization header -> refusal
    switchover: Callable[[str | None, str | None], WriteAnswer]  # (to, hold_off)


def _text(status: HTTPStatus, message: str, *extra_headers: tuple[str, str]) -> Response:
    return Response(status, f"{message}\n".encode(), (("Content-Type", TEXT), *extra_headers))


def _json(status: HTTPStatus, document: dict[str, Any]) -> Response:
    body = (json.dumps(document, sort_keys=True) + "\n").encode()
    return Response(status, body, (("Content-Type", JSON),))


def _ok_or_unavailable(ok: bool) -> HTTPStatus:
    return HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE


class Routes:
    """Turns a request into a response; no sockets, so it is the part worth testing in depth."""

    def __init__(self, registry: CollectorRegistry,
                 snapshot: Callable[[], StatusSnapshot],
                 writes: WritePaths | None = None) -> None:
        self._registry = registry
        self._snapshot = snapshot
        self._writes = writes
        self._status_routes: dict[str, Callable[[StatusSnapshot], Response]] = {
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/healthz": self._livez,
            "/primary": self._primary,
            "/replica": self._replica,
            "/status": self._status,
        }

    def respond(self, request: Request) -> Response:
        url = urlsplit(request.path)
        if url.path == "/switchover":
            return self._write(request, url.query)
        if url.path != "/metrics" and url.path not in self._status_routes:
            return _text(HTTPStatus.NOT_FOUND, "not found")
        if request.method not in ("GET", "HEAD"):
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed",
                         ("Allow", ALLOWED_METHODS))
        try:
            if url.path == "/metrics":
                return self._metrics(request, url.query)
            return self._status_routes[url.path](self._snapshot())
        except Exception:
            log.exception("status endpoint %s failed", url.path)
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def _write(self, request: Request, query: str) -> Response:
        if request.method != WRITE_METHOD:
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed",
                         ("Allow", WRITE_METHOD))
        if self._writes is None:
            return _text(HTTPStatus.FORBIDDEN, "write paths are disabled")
        try:
            refusal = self._writes.authorize(request.authorization)
            if refusal is not None:
                log.warning("write request refused", extra={
                    "path": "/switchover", "status": refusal.status, "client": request.client,
                    "reason": refusal.message})
                return _text(HTTPStatus(refusal.status), refusal.message, *refusal.headers)
            params = {name: values[-1] for name, values in parse_qs(query).items()}
            answer = self._writes.switchover(params.get("to"), params.get("hold_off"))
        except Exception:
            log.exception("write endpoint /switchover failed")
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        if answer.document is not None:
            return _json(HTTPStatus(answer.status), answer.document)
        return _text(HTTPStatus(answer.status), answer.message)

    def _metrics(self, request: Request, query: str) -> Response:
        encoder, content_type = choose_encoder(request.accept)
        names = parse_qs(query).get("name[]")
        registry = self._registry.restricted_registry(names) if names else self._registry
        body = encoder(registry)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(request.accept_encoding):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        return Response(HTTPStatus.OK, body, tuple(headers))

    @staticmethod
    def _livez(snapshot: StatusSnapshot) -> Response:
        live, reason = snapshot.live()
        return _text(_ok_or_unavailable(live), reason)

    @staticmethod
    def _readyz(snapshot: StatusSnapshot) -> Response:
        ready, reason = snapshot.ready()
        return _text(_ok_or_unavailable(ready), reason)

    @staticmethod
    def _primary(snapshot: StatusSnapshot) -> Response:
        return _json(_ok_or_unavailable(snapshot.is_primary()), {"state": snapshot.state})

    @staticmethod
    def _replica(snapshot: StatusSnapshot) -> Response:
        return _json(_ok_or_unavailable(snapshot.state == FOLLOWER), {"state": snapshot.state})

    @staticmethod
    def _status(snapshot: StatusSnapshot) -> Response:
        return _json(HTTPStatus.OK, snapshot.to_json())


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = REQUEST_SOCKET_TIMEOUT
    server_version = "consul-leader"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _refuse_method(self) -> None:
        self._discard_body()
        self._answer(send_body=True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _answer(self, *, send_body: bool) -> None:
        request = Request(self.command, self.path, self.headers.get("Accept", ""),
                          self.headers.get("Accept-Encoding", ""),
                          self.headers.get("Authorization", ""),
                          str(self.client_address[0]) if self.client_address else "")
        response = self.server.routes.respond(request)
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(response.body)

    def _discard_body(self) -> None:
        declared = self.headers.get("Content-Length", "")
        if declared.isdigit() and 0 < int(declared) <= MAX_DISCARDED_BODY:
            self.rfile.read(int(declared))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status http: " + format, *args)


class ListenError(Exception):
    """The listen address cannot be bound: in use, not on this host, unresolvable, forbidden."""

    def __init__(self, address: str, cause: OSError) -> None:
        super().__init__(f"cannot listen on {address}: {cause.strerror or cause}")
        self.errno = cause.errno

    @property
    def address_in_use(self) -> bool:
        return self.errno == errno.EADDRINUSE


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(listen: tuple[str, int], routes: Routes) -> _HTTPServer:
    """A bound, listening server for ``listen``; see the module docstring for ``""``."""
    host, port = listen
    if host != ALL_INTERFACES:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return _bind_one((host, port), routes, family)
    try:
        return _bind_one(("::", port), routes, socket.AF_INET6, dual_stack=True)
    except ListenError as exc:
        if exc.errno not in _NO_IPV6:
            raise
    log.info("this host has no IPv6: listening on IPv4 only", extra={"port": port})
    return _bind_one(("0.0.0.0", port), routes, socket.AF_INET)


def _bind_one(address: tuple[str, int], routes: Routes, family: socket.AddressFamily,
              dual_stack: bool = False) -> _HTTPServer:
    try:
        return _HTTPServer(address, routes, family, dual_stack)
    except OSError as exc:  # socket.gaierror for a name that does not resolve is one too
        raise ListenError(_shown(*address), exc) from exc


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its daemon request threads so stop() can end them."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int], routes: Routes, family: socket.AddressFamily,
                 dual_stack: bool) -> None:
        self.routes = routes
        self._in_flight: dict[threading.Thread, socket.socket] = {}
        self._in_flight_lock = threading.Lock()
        self.address_family = family
        self._dual_stack = dual_stack
        super().__init__(listen, _Handler)

    def server_bind(self) -> None:
        if self._dual_stack:
            # Linux defaults to dual-stack, but net.ipv6.bindv6only and other systems may not.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind resolves getfqdn(host), which can stall on DNS; we never need it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address),
                                  name="status-http-request", daemon=True)
        with self._in_flight_lock:
            self._in_flight = {t: s for t, s in self._in_flight.items() if t.is_alive()}
            self._in_flight[thread] = request
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer are routine; never print tracebacks to stderr for them.
        log.debug("status http: request from %s failed", client_address, exc_info=True)

    def finish_requests(self, grace: float) -> None:
        """Let in-flight requests finish within ``grace``, then cut the connections still open."""
        with self._in_flight_lock:
            in_flight = dict(self._in_flight)
        _join_all(in_flight, grace)
        for thread, connection in in_flight.items():
            if thread.is_alive():
                # Unblocks a handler waiting on a silent client; it then ends on its own.
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        _join_all(in_flight, grace)


def _join_all(threads: Iterable[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


class StatusServer:
    """Serves ``Routes`` on ``listen`` (port 0 picks a free port) from a daemon thread.

    The socket is bound in the constructor (``ListenError`` if it cannot be), so a bad or busy
    address fails before anything else starts and ``address`` is known before ``start()``.
    """

    def __init__(self, listen: tuple[str, int], registry: CollectorRegistry,
                 snapshot: Callable[[], StatusSnapshot],
                 writes: WritePaths | None = None) -> None:
        self._httpd = _bind(listen, Routes(registry, snapshot, writes))
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        if self._thread is not None or self._stopped:
            raise RuntimeError("a status server can be started once")
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": ACCEPT_POLL_INTERVAL},
                                        name="status-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, join the server thread, close the socket. Safe to call twice."""
        self._stopped = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self._httpd.finish_requests(REQUEST_DRAIN_TIMEOUT)
