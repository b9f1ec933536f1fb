"""A fenced store: accepts a write only with a fencing token not lower than the highest seen.

The rule (`FencedStore.attempt`), decided under one lock so concurrent writers are ordered:
* token >= the highest accepted so far: accepted (equal is the same leader writing again),
  and the token becomes the highest;
* token < the highest: rejected (HTTP 409), the highest stays.
Every attempt is recorded, accepted or not, with the writer's ID, its token, the session it
believes holds the lock, the verdict and the instant (`time.monotonic()`, system-wide on
Linux, so it lines up with the Consul stand-in's journal and the chaos timeline).

Served over real HTTP on loopback (`StoreServer`, in-process from tests; `python -m
tests.fencing` as a command):

    POST /write   {"writer": str, "token": int, "session": str}
                  200 {"accepted": true, "highest": H} | 409 {"accepted": false, ...} | 400
    GET  /record  every attempt, in the order the store decided them
    GET  /state   {"highest": H, "accepted": n, "rejected": n}
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Attempt:
    """One write attempt, as the store decided it (`seq` is the order of decisions)."""

    seq: int
    writer: str
    token: int
    session: str
    accepted: bool
    highest_before: int | None
    at: float  # time.monotonic() when decided


class FencedStore:
    """The rule and the record; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._highest: int | None = None
        self._attempts: list[Attempt] = []

    def attempt(self, writer: str, token: int, session: str = "") -> Attempt:
        with self._lock:
            before = self._highest
            accepted = before is None or token >= before
            if accepted:
                self._highest = token
            record = Attempt(len(self._attempts) + 1, writer, token, session, accepted, before,
                             time.monotonic())
            self._attempts.append(record)
            return record

    @property
    def highest(self) -> int | None:
        with self._lock:
            return self._highest

    def record(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def state(self) -> dict[str, Any]:
        attempts = self.record()
        accepted = sum(1 for a in attempts if a.accepted)
        return {"highest": self.highest, "accepted": accepted,
                "rejected": len(attempts) - accepted}


class WriteRejected(ValueError):
    """A request the store cannot read (not a fencing verdict)."""


def parse_write(body: bytes) -> tuple[str, int, str]:
    """(writer, token, session) of a write request, or WriteRejected saying what is wrong."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise WriteRejected(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise WriteRejected("body is not a JSON object")
    writer, token, session = document.get("writer"), document.get("token"), \
        document.get("session", "")
    if not isinstance(writer, str) or not writer:
        raise WriteRejected("writer must be a non-empty string")
    if isinstance(token, bool) or not isinstance(token, int):
        raise WriteRejected("token must be an integer")
    if not isinstance(session, str):
        raise WriteRejected("session must be a string")
    return writer, token, session


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        if self.path != "/write":
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            writer, token, session = parse_write(self.rfile.read(length))
        except WriteRejected as exc:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        attempt = self.server.store.attempt(writer, token, session)
        verdict: dict[str, object] = {"accepted": attempt.accepted,
                                      "highest": self.server.store.highest}
        if not attempt.accepted:
            verdict["error"] = f"token {token} is below the highest seen ({attempt.highest_before})"
        self._reply(HTTPStatus.OK if attempt.accepted else HTTPStatus.CONFLICT, verdict)

    def do_GET(self) -> None:
        store = self.server.store
        if self.path == "/record":
            self._reply(HTTPStatus.OK, [asdict(a) for a in store.record()])
        elif self.path == "/state":
            self._reply(HTTPStatus.OK, store.state())
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})

    def _reply(self, status: HTTPStatus, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per write would drown the test output


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: FencedStore) -> None:
        self.store = store
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A writer stopped in the middle of a write (Nomad's SIGTERM) hangs up before our
        # answer: the attempt is recorded already, and that is no error of the store's.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class StoreServer:
    """A FencedStore served on loopback in a thread; `url` once started. The store (and so
    its record) outlives the server, for judging after a run."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 store: FencedStore | None = None) -> None:
        self.store = store or FencedStore()
        self._server = _Server((host, port), self.store)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fenced-store", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StoreServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> StoreServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
