"""HTTP/1.1 listeners of the double: one per node, plus the control listener.

Guarantees:
* Keep-alive HTTP/1.1 on daemon threads, one thread per connection; each
  response goes out in a single write with TCP_NODELAY, so keep-alive clients
  never wait on Nagle's algorithm.
* `stop()` closes the listening socket (new connections are refused), shuts
  down every open connection, and joins every thread it started; `start()`
  reopens the same port (a failed node recovering, DESIGN.md §5).
* With TLS the listening socket is wrapped; each handshake runs on the
  connection's own thread, so a slow or failed handshake blocks nobody else.
  Plain HTTP sent to a TLS listener gets Go's fixed `400 Client sent an HTTP
  request to an HTTPS server.` answer, as from a real agent.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from requests.structures import CaseInsensitiveDict

from .core import RequestAborted
from .wire import Reply, Request, accepts_gzip, gzip_body

_LOG = logging.getLogger(__name__)
_JOIN_TIMEOUT = 10.0
_HANDSHAKE_TIMEOUT = 10.0
_MAX_BODY = 64 * 1024 * 1024


class HttpApp(Protocol):
    def handle(self, request: Request) -> Reply: ...

    def common_headers(self) -> dict[str, str]: ...


class _TrackingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its connections so stop() can end them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # a benchmark opens hundreds of connections at once

    def __init__(self, address: tuple[str, int], app: HttpApp, name: str,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(address, _Handler, bind_and_activate=False)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise
        if tls is not None:
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self.app = app
        self.name = name
        self.tls = tls is not None
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN; skip that lookup.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"consul-double-{self.name}-conn",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def _serve_connection(self, connection: socket.socket, client_address: Any) -> None:
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if isinstance(connection, ssl.SSLSocket):
                connection.settimeout(_HANDSHAKE_TIMEOUT)
                if _answered_plain_http(connection):
                    return
                connection.do_handshake()
                connection.settimeout(None)
            self.finish_request(connection, client_address)
        except (OSError, ssl.SSLError):
            pass  # the peer went away, refused our certificate, or stop() shut us down
        except Exception:
            _LOG.exception("consul double %s: connection failed", self.name)
        finally:
            self.shutdown_request(connection)
            with self._connections_lock:
                self._connections.pop(connection, None)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def join_connections(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._connections_lock:
            threads = list(self._connections.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _answered_plain_http(connection: ssl.SSLSocket) -> bool:
    """Go's TLS server answers plain HTTP with a 400 instead of a handshake error.

    net/http (`tlsRecordHeaderLooksLikeHTTP`): when the first five bytes where a TLS record
    header belongs read like an HTTP request line, it writes this fixed HTTP/1.0 answer and
    closes, before any handler (so the request is not counted in the statistics).
    """
    # The plain socket's recv/sendall: no TLS has been spoken on this connection yet.
    head = socket.socket.recv(connection, 5, socket.MSG_PEEK)
    if head not in _HTTP_REQUEST_STARTS:
        return False
    socket.socket.sendall(connection, _PLAIN_HTTP_TO_HTTPS_ANSWER)
    return True


_HTTP_REQUEST_STARTS = frozenset({b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO"})
_PLAIN_HTTP_TO_HTTPS_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TrackingServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the double serves thousands of requests per test run."""

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError as error:
            self._write(Reply(400, str(error).encode(), "text/plain; charset=utf-8"), False)
            self.close_connection = True
            return
        raw_path, _, raw_query = self.path.partition("?")
        request = Request(
            method=self.command,
            raw_path=raw_path,
            path=unquote(raw_path),
            query=parse_qs(raw_query, keep_blank_values=True),
            raw_query=raw_query,
            headers=CaseInsensitiveDict(self.headers.items()),
            body=body,
        )
        try:
            reply = self.server.app.handle(request)
        except RequestAborted:
            self.close_connection = True
            return
        self._write(reply, accepts_gzip(self.headers.get("Accept-Encoding")))

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        length = int(length_text) if length_text.isdigit() else -1
        if not 0 <= length <= _MAX_BODY:
            raise ValueError(f"invalid Content-Length {length_text!r}")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(65537).split(b";", 1)[0].strip()
            size = int(size_line, 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY:
                raise ValueError("chunked body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _write(self, reply: Reply, gzip_ok: bool) -> None:
        headers: dict[str, str] = {}
        if reply.consul_headers:
            headers.update(self.server.app.common_headers())
            headers["Vary"] = "Accept-Encoding"
        headers.update(reply.headers)
        body = reply.body
        if reply.content_type:
            headers["Content-Type"] = reply.content_type
        if body and gzip_ok and reply.consul_headers:
            body = gzip_body(body)
            headers["Content-Encoding"] = "gzip"
        headers["Date"] = formatdate(usegmt=True)
        headers["Content-Length"] = str(len(body))
        if self.close_connection:
            headers["Connection"] = "close"
        if self.command == "HEAD":
            body = b""
        self.wfile.write(self._head(reply.status, headers) + body)

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"{self.protocol_version} {status} {phrase}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append("\r\n")
        return "".join(lines).encode("latin-1", "replace")


class Listener:
    """One HTTP(S) listener that can be stopped and started again on the same port."""

    def __init__(self, name: str, host: str, port: int, app: HttpApp,
                 tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._app = app
        self._tls = tls
        self._server: _TrackingServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        server = _TrackingServer((self.host, self.port), self._app, self.name, self._tls)
        self.port = server.server_port  # an ephemeral port stays ours across restarts
        self._server = server
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=_accept_loop, args=(server, self._wake[0]),
            name=f"consul-double-{self.name}", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Refuse new connections, end the open ones, join every thread."""
        server, thread, wake = self._server, self._thread, self._wake
        if server is None or thread is None or wake is None:
            return
        self._server = self._thread = self._wake = None
        wake[1].send(b"x")  # ends the accept loop at once (no polling interval)
        thread.join(_JOIN_TIMEOUT)
        server.server_close()
        server.close_connections()
        server.join_connections(_JOIN_TIMEOUT)
        for end in wake:
            end.close()


def _accept_loop(server: _TrackingServer, wake: socket.socket) -> None:
    """Accept connections until `wake` becomes readable; each gets its own thread."""
    with selectors.DefaultSelector() as selector:
        selector.register(server.socket, selectors.EVENT_READ)
        selector.register(wake, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is wake:
                    return
                try:
                    connection, address = server.get_request()
                except OSError:
                    continue  # the client gave up before we accepted
                server.process_request(connection, address)
