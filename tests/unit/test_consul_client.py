"""ConsulClient against real loopback servers: plain HTTP, HTTPS with a throw-away PKI
made with the openssl CLI, and a unix socket. Nothing is mocked below the server."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from consul_leader.adapters.config import load_config
from consul_leader.adapters.consul.errors import (
    ConsulDenied,
    ConsulError,
    ConsulRejected,
    ConsulUnavailable,
    TlsError,
)
from consul_leader.adapters.consul.transport import (
    ConsulClient,
    Reply,
    RequestObserver,
    endpoint_template,
    is_watch,
)

TOKEN = "4f3e2d1c-0000-1111-2222-333344445555"

# --- a throw-away PKI ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(folder: Path) -> Pki:
    """A CA, an unrelated CA, a server cert (consul.test + 127.0.0.1) and a client cert."""
    folder.mkdir(parents=True, exist_ok=True)
    _make_ca(folder, "ca", "Test CA")
    _make_ca(folder, "other-ca", "Other CA")
    _issue(folder, "server", "consul.test",
           "subjectAltName=DNS:consul.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _issue(folder, "client", "consul-leader-client", "extendedKeyUsage=clientAuth\n")
    return Pki(folder / "ca.pem", folder / "other-ca.pem", folder / "server.pem",
               folder / "server.key", folder / "client.pem", folder / "client.key")


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def _make_ca(folder: Path, name: str, common_name: str) -> None:
    _openssl(folder, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={common_name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _issue(folder: Path, name: str, common_name: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        + extensions)
    _openssl(folder, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={common_name}")
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- a recording fake Consul --------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # path and query as sent on the request line
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    peer_common_name: str | None


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"[]"
    headers: Mapping[str, str] = field(default_factory=dict)


class FakeConsul:
    """Records every request and answers with ``respond`` (a test may replace it)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.server_names: list[str | None] = []
        self.handshake_failures: list[str] = []
        self.release = threading.Event()  # lets answers that wait on it finish
        self.respond: Callable[[Seen], Answer] = lambda seen: Answer()
        self.address = ""

    def answer_with(self, *answers: Answer) -> None:
        """Answer with these, in order; the last one repeats."""
        queue = list(answers)

        def next_answer(seen: Seen) -> Answer:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.respond = next_answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        fake: FakeConsul = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(self.command, self.path,
                    {name.lower(): value for name, value in self.headers.items()},
                    self.rfile.read(length), self._peer_common_name())
        fake.seen.append(seen)
        answer = fake.respond(seen)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_PUT = do_DELETE = do_POST = do_GET

    def _peer_common_name(self) -> str | None:
        if not isinstance(self.connection, ssl.SSLSocket):
            return None
        cert = self.connection.getpeercert() or {}
        subject = cast("tuple[tuple[tuple[str, str], ...], ...]", cert.get("subject", ()))
        names = [value for rdn in subject for key, value in rdn if key == "commonName"]
        return names[0] if names else None

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


class _TcpServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.fake.handshake_failures.append(str(client_address))  # type: ignore[attr-defined]


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def _serve(server: socketserver.BaseServer, fake: FakeConsul) -> Iterator[FakeConsul]:
    server.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def consul() -> Iterator[FakeConsul]:
    fake = FakeConsul()
    server = _TcpServer(("127.0.0.1", 0), _Handler)
    fake.address = f"127.0.0.1:{server.server_address[1]}"
    yield from _serve(server, fake)


def _tls_server(pki: Pki, fake: FakeConsul, require_client_cert: bool) -> _TcpServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)

    def record_server_name(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        fake.server_names.append(name)

    context.sni_callback = record_server_name
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    server = _TcpServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    fake.address = f"127.0.0.1:{server.server_address[1]}"
    return server


@pytest.fixture
def tls_consul(pki: Pki) -> Iterator[FakeConsul]:
    fake = FakeConsul()
    yield from _serve(_tls_server(pki, fake, require_client_cert=False), fake)


@pytest.fixture
def mtls_consul(pki: Pki) -> Iterator[FakeConsul]:
    fake = FakeConsul()
    yield from _serve(_tls_server(pki, fake, require_client_cert=True), fake)


ClientFactory = Callable[..., ConsulClient]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """Build clients from environment variables, as the sidecar does; close them after."""
    clients: list[ConsulClient] = []

    def build(env: Mapping[str, str], observer: RequestObserver | None = None) -> ConsulClient:
        client = ConsulClient(load_config(env).consul, observer=observer)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- answers -------------------------------------------------------------------------------


def test_success_returns_body_index_and_hash(consul: FakeConsul,
                                             make_client: ClientFactory) -> None:
    consul.answer_with(Answer(200, b'[{"Key":"consul-leader/lock"}]',
                              {"X-Consul-Index": "42", "X-Consul-ContentHash": "9f86d08"}))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address, "CONSUL_HTTP_TOKEN": TOKEN})

    reply = client.call("GET", "/v1/kv/consul-leader/lock", params={"consistent": ""},
                        timeout=5)

    assert (reply.status, reply.json(), reply.index, reply.content_hash) == (
        200, [{"Key": "consul-leader/lock"}], 42, "9f86d08")
    [seen] = consul.seen
    assert (seen.method, seen.target) == ("GET", "/v1/kv/consul-leader/lock?consistent=")
    assert seen.headers["x-consul-token"] == TOKEN
    assert "authorization" not in seen.headers
    assert TOKEN not in seen.target


@pytest.mark.parametrize("header", [None, "", "abc", "-1", "12x", "\u0661\u0662"])
def test_index_is_none_when_missing_or_garbage(header: str | None) -> None:
    headers = {} if header is None else {"X-Consul-Index": header}
    assert Reply(200, headers, b"").index is None
    assert Reply(200, headers, b"").content_hash is None


def test_allowed_status_is_returned(consul: FakeConsul, make_client: ClientFactory) -> None:
    consul.answer_with(Answer(404, b"", {"X-Consul-Index": "7"}))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    reply = client.call("GET", "/v1/kv/consul-leader/lock", timeout=5, allow=(404,))

    assert (reply.status, reply.body, reply.index) == (404, b"", 7)


def test_status_not_allowed_is_rejected(consul: FakeConsul, make_client: ClientFactory) -> None:
    consul.answer_with(Answer(404, b"Session id 'abc' not found"))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    with pytest.raises(ConsulRejected) as info:
        client.call("PUT", "/v1/session/renew/abc", timeout=5)

    assert (info.value.status, info.value.endpoint) == (404, "/v1/session/renew/:id")
    assert str(info.value) == ("PUT /v1/session/renew/:id: request rejected (HTTP 404): "
                               "Session id 'abc' not found")


def test_bad_request_is_rejected_with_its_body(consul: FakeConsul,
                                               make_client: ClientFactory) -> None:
    consul.answer_with(Answer(400, b"Conflicting flags: acquire=x&release=x\n"))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    with pytest.raises(ConsulRejected) as info:
        client.call("PUT", "/v1/kv/k", params={"acquire": "x", "release": "x"}, timeout=5)

    assert info.value.body.startswith("Conflicting flags")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("PUT /v1/kv/:key: ")


def test_long_body_is_trimmed(consul: FakeConsul, make_client: ClientFactory) -> None:
    consul.answer_with(Answer(500, b"x" * 5000))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    with pytest.raises(ConsulUnavailable) as info:
        client.call("GET", "/v1/agent/self", timeout=5)

    assert info.value.body == "x" * 300


def test_permission_denied(consul: FakeConsul, make_client: ClientFactory) -> None:
    body = b"Permission denied: token with AccessorID 'a1' lacks permission 'key:write' on \"x\""
    consul.answer_with(Answer(403, body))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address, "CONSUL_HTTP_TOKEN": TOKEN})

    with pytest.raises(ConsulDenied) as info:
        client.call("PUT", "/v1/kv/x", data=b"", timeout=5)

    assert info.value.status == 403
    assert "Permission denied" in info.value.body
    assert "token from env" in str(info.value)
    assert len(consul.seen) == 1


def _token_gate(valid: str) -> Callable[[Seen], Answer]:
    def respond(seen: Seen) -> Answer:
        if seen.headers.get("x-consul-token") == valid:
            return Answer(200, b"true")
        return Answer(403, b"ACL not found")

    return respond


def test_rotated_token_file_is_reread_and_retried_once(consul: FakeConsul, tmp_path: Path,
                                                       make_client: ClientFactory) -> None:
    token_file = tmp_path / "consul_token"
    token_file.write_text("old-token\n")
    consul.respond = _token_gate("new-token")
    client = make_client({"CONSUL_HTTP_ADDR": consul.address,
                          "CONSUL_HTTP_TOKEN_FILE": str(token_file),
                          "CONSUL_HTTP_TOKEN": "env-token"})
    token_file.write_text("  new-token  \n")  # Nomad rotated the workload identity token

    reply = client.call("PUT", "/v1/kv/x", data=b"v", timeout=5)

    assert reply.json() is True
    assert [seen.headers["x-consul-token"] for seen in consul.seen] == ["old-token", "new-token"]
    assert consul.seen[1].body == b"v"
    client.call("PUT", "/v1/kv/x", timeout=5)
    assert consul.seen[2].headers["x-consul-token"] == "new-token"  # kept for later calls
    assert client.token_source == "file"


def test_unchanged_token_file_is_not_retried(consul: FakeConsul, tmp_path: Path,
                                             make_client: ClientFactory) -> None:
    token_file = tmp_path / "consul_token"
    token_file.write_text("same-token")
    consul.respond = _token_gate("other")
    client = make_client({"CONSUL_HTTP_ADDR": consul.address,
                          "CONSUL_HTTP_TOKEN_FILE": str(token_file)})

    with pytest.raises(ConsulDenied):
        client.call("GET", "/v1/agent/self", timeout=5)

    assert len(consul.seen) == 1


def test_rotated_token_that_is_also_denied_is_retried_only_once(
        consul: FakeConsul, tmp_path: Path, make_client: ClientFactory) -> None:
    token_file = tmp_path / "consul_token"
    token_file.write_text("first")
    consul.respond = _token_gate("never")
    client = make_client({"CONSUL_HTTP_ADDR": consul.address,
                          "CONSUL_HTTP_TOKEN_FILE": str(token_file)})
    token_file.write_text("second")

    with pytest.raises(ConsulDenied):
        client.call("GET", "/v1/agent/self", timeout=5)

    assert [seen.headers["x-consul-token"] for seen in consul.seen] == ["first", "second"]


def test_unreadable_token_file_after_403_is_denied(consul: FakeConsul, tmp_path: Path,
                                                   make_client: ClientFactory) -> None:
    token_file = tmp_path / "consul_token"
    token_file.write_text("first")
    consul.respond = _token_gate("never")
    client = make_client({"CONSUL_HTTP_ADDR": consul.address,
                          "CONSUL_HTTP_TOKEN_FILE": str(token_file)})
    token_file.unlink()

    with pytest.raises(ConsulDenied):
        client.call("GET", "/v1/agent/self", timeout=5)

    assert len(consul.seen) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"No cluster leader"),
        (500, b'rpc error making call: raft apply failed: invalid session "abc"'),
        (500, b"Invalid Session TTL '3000000000', must be between [10s=24h0m0s]"),
        (503, b"rate limit exceeded for operation that can only be performed by the leader"),
        (429, b""),
    ],
)
def test_server_errors_and_rate_limits_are_unavailable(
        consul: FakeConsul, make_client: ClientFactory, status: int, body: bytes) -> None:
    consul.answer_with(Answer(status, body))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    with pytest.raises(ConsulUnavailable) as info:
        client.call("PUT", "/v1/session/create", json_body={}, timeout=5)

    assert not isinstance(info.value, TlsError)
    assert (info.value.status, info.value.body) == (status, body.decode())
    assert info.value.endpoint == "/v1/session/create"


def test_timeout_is_unavailable(consul: FakeConsul, make_client: ClientFactory) -> None:
    def stall(seen: Seen) -> Answer:
        consul.release.wait(10)
        return Answer()

    consul.respond = stall
    observed: list[tuple[str, str, int | None, float]] = []
    client = make_client({"CONSUL_HTTP_ADDR": consul.address},
                         observer=lambda *labels: observed.append(labels))

    with pytest.raises(ConsulUnavailable) as info:
        client.call("GET", "/v1/kv/k", params={"index": "5", "wait": "1s"}, timeout=0.2)

    assert info.value.status is None
    assert "no answer within 0.2s" in str(info.value)
    assert [labels[:3] for labels in observed] == [("GET", "/v1/kv/:key", None)]


def test_connection_refused_is_unavailable(make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": f"127.0.0.1:{_free_port()}"})

    with pytest.raises(ConsulUnavailable) as info:
        client.call("GET", "/v1/agent/self", timeout=5)

    assert info.value.status is None
    assert "Connection refused" in str(info.value)
    assert str(info.value).startswith("GET /v1/agent/self: cannot reach Consul at http://127.0.0.1:")


def test_garbage_json_is_unavailable(consul: FakeConsul, make_client: ClientFactory) -> None:
    consul.answer_with(Answer(200, b"<html>proxy error</html>"))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})
    reply = client.call("GET", "/v1/session/info/abc", timeout=5)

    with pytest.raises(ConsulUnavailable) as info:
        reply.json()

    assert info.value.endpoint == "/v1/session/info/:id"
    assert "unparsable answer" in str(info.value)
    assert info.value.body == "<html>proxy error</html>"


def test_gzip_answers_are_decoded(consul: FakeConsul, make_client: ClientFactory) -> None:
    consul.answer_with(Answer(200, gzip.compress(b'{"ID":"s1"}'),
                              {"Content-Encoding": "gzip"}))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    assert client.call("PUT", "/v1/session/create", timeout=5).json() == {"ID": "s1"}
    assert "gzip" in consul.seen[0].headers["accept-encoding"]


def test_redirects_are_not_followed(consul: FakeConsul, make_client: ClientFactory) -> None:
    consul.answer_with(Answer(301, b"", {"Location": "http://127.0.0.1:1/v1/kv/x"}))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address, "CONSUL_HTTP_TOKEN": TOKEN})

    with pytest.raises(ConsulRejected) as info:
        client.call("PUT", "/v1/kv/x", timeout=5)

    assert info.value.status == 301
    assert len(consul.seen) == 1


# --- requests ------------------------------------------------------------------------------


def test_key_segments_are_escaped_but_slashes_kept(consul: FakeConsul,
                                                  make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    client.call("PUT", "/v1/kv/team a/lock?x#y%2F", params={"acquire": "s 1&2"}, timeout=5)

    assert consul.seen[0].target == "/v1/kv/team%20a/lock%3Fx%23y%252F?acquire=s+1%262"


def test_path_prefix_is_kept(consul: FakeConsul, make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": f"http://{consul.address}/consul/"})

    client.call("GET", "/v1/status/leader", timeout=5)

    assert consul.seen[0].target == "/consul/v1/status/leader"


def test_bodies_carry_a_content_type(consul: FakeConsul, make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    client.call("PUT", "/v1/session/create", json_body={"TTL": "15s"}, timeout=5)
    client.call("PUT", "/v1/kv/k", data=b"\x00raw", timeout=5)
    client.call("GET", "/v1/agent/self", timeout=5)

    json_put, raw_put, get = consul.seen
    assert (json.loads(json_put.body), json_put.headers["content-type"]) == (
        {"TTL": "15s"}, "application/json")
    assert (raw_put.body, raw_put.headers["content-type"]) == (
        b"\x00raw", "application/octet-stream")
    assert get.body == b""
    assert "content-type" not in get.headers


def test_programming_errors_are_refused_before_sending(consul: FakeConsul,
                                                       make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    with pytest.raises(ValueError, match="not both"):
        client.call("PUT", "/v1/kv/k", data=b"x", json_body={}, timeout=5)
    with pytest.raises(ValueError, match="timeout"):
        client.call("GET", "/v1/kv/k", timeout=0)
    assert consul.seen == []


def test_http_basic_auth(consul: FakeConsul, make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": consul.address,
                          "CONSUL_HTTP_AUTH": "ops:pa:ss\u00e9"})

    client.call("GET", "/v1/agent/self", timeout=5)

    scheme, encoded = consul.seen[0].headers["authorization"].split()
    assert (scheme, base64.b64decode(encoded).decode()) == ("Basic", "ops:pa:ss\u00e9")


def test_no_token_header_without_a_token(consul: FakeConsul,
                                         make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})

    client.call("GET", "/v1/agent/self", timeout=5)

    assert "x-consul-token" not in consul.seen[0].headers
    assert client.token_source == "none"


def test_token_never_shows_in_errors_or_reprs(consul: FakeConsul,
                                              make_client: ClientFactory) -> None:
    consul.answer_with(Answer(500, f"bad token {TOKEN} in request".encode()))
    client = make_client({"CONSUL_HTTP_ADDR": consul.address, "CONSUL_HTTP_TOKEN": TOKEN,
                          "CONSUL_HTTP_AUTH": "user:hunter2"})

    with pytest.raises(ConsulUnavailable) as info:
        client.call("GET", "/v1/agent/self", timeout=5)

    texts = [str(info.value), repr(info.value), info.value.body, repr(client),
             repr(load_config({"CONSUL_HTTP_TOKEN": TOKEN, "CONSUL_HTTP_AUTH": "u:hunter2"}))]
    assert all(TOKEN not in text and "hunter2" not in text for text in texts)
    assert "<redacted>" in info.value.body


def test_observer_sees_every_attempt_with_bounded_labels(consul: FakeConsul, tmp_path: Path,
                                                         make_client: ClientFactory) -> None:
    token_file = tmp_path / "consul_token"
    token_file.write_text("old")
    observed: list[tuple[str, str, int | None, float]] = []
    client = make_client({"CONSUL_HTTP_ADDR": consul.address,
                          "CONSUL_HTTP_TOKEN_FILE": str(token_file)},
                         observer=lambda *labels: observed.append(labels))
    client.call("PUT", "/v1/session/renew/0b8f-11", timeout=5)
    client.call("GET", "/v1/health/service/web", timeout=5)
    consul.respond = _token_gate("new")
    token_file.write_text("new")
    client.call("PUT", "/v1/agent/check/pass/service:web", timeout=5)

    assert [labels[:3] for labels in observed] == [
        ("PUT", "/v1/session/renew/:id", 200),
        ("GET", "/v1/health/service/:name", 200),
        ("PUT", "/v1/agent/check/pass/:id", 403),
        ("PUT", "/v1/agent/check/pass/:id", 200),
    ]
    assert all(labels[3] >= 0 for labels in observed)


@pytest.mark.parametrize(("method", "params", "watch"), [
    ("GET", {"index": "42", "wait": "5m"}, True),
    ("GET", {"hash": "a1b2", "wait": "5m"}, True),
    ("get", {"index": "42"}, True),
    ("GET", None, False),  # the first read of a watch answers at once
    ("GET", {"index": "0", "wait": "5m"}, False),  # Consul does not block on index 0
    ("GET", {"consistent": ""}, False),
    ("PUT", {"acquire": "sess", "index": "42"}, False),
])
def test_is_watch_only_for_blocking_gets(method: str, params: dict[str, str] | None,
                                         watch: bool) -> None:
    assert is_watch(method, params) is watch


def test_observer_is_told_which_requests_are_watches(consul: FakeConsul,
                                                      make_client: ClientFactory) -> None:
    observed: list[tuple[str, str, int | None, float, bool]] = []
    client = make_client({"CONSUL_HTTP_ADDR": consul.address},
                         observer=lambda *labels: observed.append(labels))

    client.call("GET", "/v1/kv/k", timeout=5)
    client.call("GET", "/v1/kv/k", params={"index": "3", "wait": "1s"}, timeout=5)
    client.call("GET", "/v1/agent/service/web", params={"hash": "ab", "wait": "1s"}, timeout=5)

    assert [(labels[1], labels[4]) for labels in observed] == [
        ("/v1/kv/:key", False), ("/v1/kv/:key", True), ("/v1/agent/service/:id", True)]


def test_failing_observer_does_not_fail_the_call(consul: FakeConsul,
                                                 make_client: ClientFactory) -> None:
    def broken(*labels: object) -> None:
        raise RuntimeError("metrics bug")

    client = make_client({"CONSUL_HTTP_ADDR": consul.address}, observer=broken)

    assert client.call("GET", "/v1/agent/self", timeout=5).status == 200


def test_a_held_blocking_query_does_not_block_other_calls(consul: FakeConsul,
                                                          make_client: ClientFactory) -> None:
    def hold_blocking_queries(seen: Seen) -> Answer:
        if "index=" in seen.target:
            consul.release.wait(10)
        return Answer(200, b"[]", {"X-Consul-Index": "8"})

    consul.respond = hold_blocking_queries
    client = make_client({"CONSUL_HTTP_ADDR": consul.address})
    results: list[Reply] = []
    watcher = threading.Thread(target=lambda: results.append(client.call(
        "GET", "/v1/kv/k", params={"index": "7", "wait": "5m"}, timeout=10)))
    watcher.start()
    wait_until(lambda: len(consul.seen) == 1)

    other = client.call("PUT", "/v1/session/renew/s", timeout=5)

    assert other.status == 200 and not results
    consul.release.set()
    watcher.join(5)
    assert results[0].index == 8


def test_proxy_from_the_environment_is_used(consul: FakeConsul, make_client: ClientFactory,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{consul.address}")
    client = make_client({"CONSUL_HTTP_ADDR": "consul.service.invalid:8500"})

    client.call("GET", "/v1/status/leader", timeout=5)

    assert consul.seen[0].target == "http://consul.service.invalid:8500/v1/status/leader"


# --- TLS ---------------------------------------------------------------------------------


def _https(fake: FakeConsul, **env: str) -> dict[str, str]:
    return {"CONSUL_HTTP_ADDR": f"https://{fake.address}", **env}


def test_tls_with_ca_file(tls_consul: FakeConsul, pki: Pki, make_client: ClientFactory) -> None:
    client = make_client(_https(tls_consul, CONSUL_CACERT=str(pki.ca)))

    assert client.call("GET", "/v1/agent/self", timeout=5).status == 200


def test_tls_upgraded_by_consul_http_ssl(tls_consul: FakeConsul, pki: Pki,
                                         make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": f"http://{tls_consul.address}",
                          "CONSUL_HTTP_SSL": "true", "CONSUL_CACERT": str(pki.ca)})

    assert client.call("GET", "/v1/agent/self", timeout=5).status == 200


def test_tls_with_ca_directory(tls_consul: FakeConsul, pki: Pki, tmp_path: Path,
                               make_client: ClientFactory) -> None:
    # Plain file names, no c_rehash links: every file is loaded, recursively, as Go does.
    nested = tmp_path / "cas" / "team"
    nested.mkdir(parents=True)
    (tmp_path / "cas" / "unrelated.crt").write_bytes(pki.other_ca.read_bytes())
    (nested / "consul-ca.crt").write_bytes(pki.ca.read_bytes())
    client = make_client(_https(tls_consul, CONSUL_CAPATH=str(tmp_path / "cas")))

    assert client.call("GET", "/v1/agent/self", timeout=5).status == 200


def test_tls_client_certificate(mtls_consul: FakeConsul, pki: Pki,
                                make_client: ClientFactory) -> None:
    client = make_client(_https(mtls_consul, CONSUL_CACERT=str(pki.ca),
                                CONSUL_CLIENT_CERT=str(pki.client_cert),
                                CONSUL_CLIENT_KEY=str(pki.client_key)))

    assert client.call("GET", "/v1/agent/self", timeout=5).status == 200
    assert mtls_consul.seen[0].peer_common_name == "consul-leader-client"


def test_tls_without_a_required_client_certificate_fails(mtls_consul: FakeConsul, pki: Pki,
                                                         make_client: ClientFactory) -> None:
    client = make_client(_https(mtls_consul, CONSUL_CACERT=str(pki.ca)))

    with pytest.raises(ConsulUnavailable):  # a TlsError, or a reset if the alert comes late
        client.call("GET", "/v1/agent/self", timeout=5)

    assert mtls_consul.seen == []


def test_tls_server_name_override(tls_consul: FakeConsul, pki: Pki,
                                  make_client: ClientFactory) -> None:
    client = make_client(_https(tls_consul, CONSUL_CACERT=str(pki.ca),
                                CONSUL_TLS_SERVER_NAME="consul.test:8501"))

    assert client.call("GET", "/v1/agent/self", timeout=5).status == 200
    assert tls_consul.server_names == ["consul.test"]


def test_tls_wrong_ca_fails_and_never_falls_back(tls_consul: FakeConsul, pki: Pki,
                                                 make_client: ClientFactory) -> None:
    client = make_client(_https(tls_consul, CONSUL_CACERT=str(pki.other_ca)))

    with pytest.raises(TlsError) as info:
        client.call("GET", "/v1/agent/self", timeout=5)

    assert "certificate verify failed" in str(info.value)
    assert info.value.status is None
    assert tls_consul.seen == []


def test_tls_wrong_name_fails(tls_consul: FakeConsul, pki: Pki,
                              make_client: ClientFactory) -> None:
    client = make_client(_https(tls_consul, CONSUL_CACERT=str(pki.ca),
                                CONSUL_TLS_SERVER_NAME="vault.test"))

    with pytest.raises(TlsError) as info:
        client.call("GET", "/v1/agent/self", timeout=5)

    assert "vault.test" in str(info.value)
    assert tls_consul.seen == []


def test_tls_uses_system_roots_only_without_a_ca(tls_consul: FakeConsul, pki: Pki,
                                                 make_client: ClientFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # requests' own CA variables must neither widen nor replace the configured trust.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.ca))
    for env in ({}, {"CONSUL_CACERT": str(pki.other_ca)}):
        client = make_client(_https(tls_consul, **env))
        with pytest.raises(TlsError):
            client.call("GET", "/v1/agent/self", timeout=5)
    assert tls_consul.seen == []


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verification_off_only_when_asked(tls_consul: FakeConsul, pki: Pki,
                                              make_client: ClientFactory) -> None:
    client = make_client(_https(tls_consul, CONSUL_CACERT=str(pki.other_ca),
                                CONSUL_HTTP_SSL_VERIFY="false"))

    assert client.call("GET", "/v1/agent/self", timeout=5).status == 200


def test_tls_setup_failure_is_a_tls_error(pki: Pki, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca.read_bytes())
    settings = load_config({"CONSUL_HTTP_ADDR": "https://127.0.0.1:8501",
                            "CONSUL_CACERT": str(ca)}).consul
    ca.unlink()  # removed between validation and use

    with pytest.raises(TlsError, match="cannot set up TLS"):
        ConsulClient(settings)


# --- unix socket -------------------------------------------------------------------------


@pytest.fixture
def unix_consul(tmp_path: Path) -> Iterator[FakeConsul]:
    fake = FakeConsul()
    fake.address = str(tmp_path / "consul.sock")
    yield from _serve(_UnixServer(fake.address, _Handler), fake)


def test_unix_socket(unix_consul: FakeConsul, make_client: ClientFactory,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")  # must not apply to the socket
    client = make_client({"CONSUL_HTTP_ADDR": f"unix://{unix_consul.address}",
                          "CONSUL_HTTP_TOKEN": TOKEN})

    reply = client.call("GET", "/v1/kv/a b", params={"index": "3"}, timeout=5)

    assert reply.status == 200
    [seen] = unix_consul.seen
    assert (seen.target, seen.headers["host"]) == ("/v1/kv/a%20b?index=3", "localhost")
    assert seen.headers["x-consul-token"] == TOKEN


def test_missing_unix_socket_is_unavailable(tmp_path: Path, make_client: ClientFactory) -> None:
    client = make_client({"CONSUL_HTTP_ADDR": f"unix://{tmp_path}/absent.sock"})

    with pytest.raises(ConsulUnavailable) as info:
        client.call("GET", "/v1/agent/self", timeout=5)

    assert info.value.status is None
    assert "absent.sock" in str(info.value)


# --- endpoint labels ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "label"),
    [
        ("GET", "/v1/kv/consul-leader/lock", "/v1/kv/:key"),
        ("PUT", "/v1/kv/consul-leader/web/lock?acquire=s", "/v1/kv/:key"),
        ("DELETE", "/v1/kv/x", "/v1/kv/:key"),
        ("PUT", "/v1/session/create", "/v1/session/create"),
        ("GET", "/v1/session/list", "/v1/session/list"),
        ("PUT", "/v1/session/renew/adf4238a-882b", "/v1/session/renew/:id"),
        ("PUT", "/v1/session/destroy/adf4238a-882b", "/v1/session/destroy/:id"),
        ("GET", "/v1/session/info/adf4238a-882b", "/v1/session/info/:id"),
        ("GET", "/v1/session/node/n1", "/v1/session/node/:node"),
        ("PUT", "/v1/agent/service/register", "/v1/agent/service/register"),
        ("GET", "/v1/agent/service/register", "/v1/agent/service/:id"),
        ("GET", "/v1/agent/service/_nomad-task-b4e6-redis-http-http",
         "/v1/agent/service/:id"),
        ("GET", "/v1/agent/service/pg/node-1", "/v1/agent/service/:id"),
        ("PUT", "/v1/agent/service/deregister/web-1", "/v1/agent/service/deregister/:id"),
        ("PUT", "/v1/agent/service/maintenance/web-1", "/v1/agent/service/maintenance/:id"),
        ("GET", "/v1/agent/services", "/v1/agent/services"),
        ("GET", "/v1/agent/checks", "/v1/agent/checks"),
        ("GET", "/v1/agent/self", "/v1/agent/self"),
        ("PUT", "/v1/agent/check/register", "/v1/agent/check/register"),
        ("PUT", "/v1/agent/check/pass/service:web-1", "/v1/agent/check/pass/:id"),
        ("PUT", "/v1/agent/check/warn/c", "/v1/agent/check/warn/:id"),
        ("PUT", "/v1/agent/check/fail/c", "/v1/agent/check/fail/:id"),
        ("PUT", "/v1/agent/check/update/c", "/v1/agent/check/update/:id"),
        ("PUT", "/v1/agent/check/deregister/c", "/v1/agent/check/deregister/:id"),
        ("GET", "/v1/health/service/web", "/v1/health/service/:name"),
        ("GET", "/v1/health/checks/web", "/v1/health/checks/:name"),
        ("GET", "/v1/health/node/n1", "/v1/health/node/:node"),
        ("GET", "/v1/health/state/critical", "/v1/health/state/:state"),
        ("GET", "/v1/catalog/service/web", "/v1/catalog/service/:name"),
        ("GET", "/v1/catalog/node/n1", "/v1/catalog/node/:node"),
        ("GET", "/v1/catalog/services", "/v1/catalog/services"),
        ("PUT", "/v1/catalog/register", "/v1/catalog/register"),
        ("GET", "/v1/status/leader", "/v1/status/leader"),
        ("PUT", "/v1/txn", "/v1/txn"),
        ("GET", "/v1/acl/token/self", "other"),
        ("GET", "/v1/kv", "other"),
        ("GET", "/metrics", "other"),
    ],
)
def test_endpoint_template(method: str, path: str, label: str) -> None:
    assert endpoint_template(method, path) == label


def test_errors_share_one_base() -> None:
    for error in (ConsulUnavailable, ConsulDenied, ConsulRejected, TlsError):
        assert issubclass(error, ConsulError)
    assert issubclass(TlsError, ConsulUnavailable)
