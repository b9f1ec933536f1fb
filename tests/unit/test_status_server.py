"""Status HTTP server: every route in every state, against a real server on a loopback port."""

from __future__ import annotations

import dataclasses
import errno
import gzip
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge

from consul_leader.adapters.observability.status_server import (
    ListenError,
    StatusServer,
    StatusSnapshot,
)

STATES = ["NoSession", "Follower", "Candidate", "Leader"]
ROUTES = ["/metrics", "/livez", "/readyz", "/healthz", "/primary", "/replica", "/status"]
TIMEOUT = 5.0

FOLLOWER = StatusSnapshot(state="Follower", since=1_700_000_000.0, session="sess-1",
                          key="consul-leader/db/lock", fencing_token=None, holder="sess-2",
                          last_renew_age=2.0, lease_remaining=13.0, loop_alive=True)
LEADER = dataclasses.replace(FOLLOWER, state="Leader", holder="sess-1", fencing_token=12)


def snapshot_in(state: str, **changes: object) -> StatusSnapshot:
    return dataclasses.replace(FOLLOWER, state=state, **changes)  # type: ignore[arg-type]


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("status-http")]


class Sidecar:
    """A running StatusServer whose snapshot the test controls."""

    def __init__(self) -> None:
        self.snapshot: StatusSnapshot = FOLLOWER
        self.failure: Exception | None = None  # raised by the snapshot callable when set
        self.registry = CollectorRegistry()
        Gauge("consul_leader_is_leader", "1 while leader.", registry=self.registry)
        self.server = StatusServer(("127.0.0.1", 0), self.registry, self.current)

    def current(self) -> StatusSnapshot:
        if self.failure is not None:
            raise self.failure
        return self.snapshot

    def url(self, path: str) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}{path}"

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url(path), timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def sidecar() -> Iterator[Sidecar]:
    running = Sidecar()
    running.server.start()
    yield running
    running.server.stop()
    assert server_threads() == [], "stop() left a server thread behind"


# -- StatusSnapshot.live and .ready (pure) ---------------------------------------------------

@pytest.mark.parametrize("state", STATES)
def test_live_in_every_state_while_the_loop_runs(state: str) -> None:
    assert snapshot_in(state, lease_remaining=-5.0).live() == (True, "ok")


@pytest.mark.parametrize("state", STATES)
def test_wedged_loop_is_neither_live_nor_ready(state: str) -> None:
    snapshot = snapshot_in(state, loop_alive=False)

    for answer in (snapshot.live(), snapshot.ready()):
        assert not answer[0]
        assert "control loop" in answer[1]


@pytest.mark.parametrize("state", ["Follower", "Candidate", "Leader"])
def test_ready_with_a_confirmed_session_and_lease(state: str) -> None:
    assert snapshot_in(state).ready() == (True, "ok")


def test_no_session_is_not_ready() -> None:
    snapshot = snapshot_in("NoSession", session=None, lease_remaining=None, last_renew_age=None)

    assert snapshot.ready() == (False, "no confirmed session")


def test_leader_past_its_lease_is_live_but_not_ready() -> None:
    stale = dataclasses.replace(LEADER, lease_remaining=-2.5, last_renew_age=17.5)

    assert stale.live() == (True, "ok")
    assert stale.ready() == (False, "stale leader: lease expired 2.5s ago")


def test_leader_without_any_lease_is_not_ready() -> None:
    ready, reason = dataclasses.replace(LEADER, lease_remaining=None).ready()

    assert not ready
    assert reason.startswith("stale leader")


def test_lease_ending_exactly_now_counts_as_expired() -> None:
    assert not dataclasses.replace(LEADER, lease_remaining=0.0).ready()[0]


def test_follower_whose_lease_ran_out_is_not_ready() -> None:
    ready, reason = snapshot_in("Follower", lease_remaining=-0.5).ready()

    assert (ready, reason) == (False, "session not confirmed: lease expired 0.5s ago")


# -- /livez, /readyz and /healthz ------------------------------------------------------------

@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
def test_health_endpoints_are_ok_for_a_renewing_follower(sidecar: Sidecar, path: str) -> None:
    response = sidecar.get(path)

    assert (response.status_code, response.text) == (200, "ok\n")
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(("path", "status", "text"), [
    ("/livez", 200, "ok\n"),
    ("/healthz", 200, "ok\n"),
    ("/readyz", 503, "stale leader: lease expired 1.0s ago\n"),
])
def test_a_leader_past_its_lease_is_live_but_not_ready(sidecar: Sidecar, path: str, status: int,
                                                       text: str) -> None:
    sidecar.snapshot = dataclasses.replace(LEADER, lease_remaining=-1.0)

    response = sidecar.get(path)

    assert (response.status_code, response.text) == (status, text)


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
def test_health_endpoints_are_503_when_the_loop_is_wedged(sidecar: Sidecar, path: str) -> None:
    sidecar.snapshot = snapshot_in("Follower", loop_alive=False)

    response = sidecar.get(path)

    assert response.status_code == 503
    assert "control loop" in response.text


def test_readyz_is_503_without_a_session_while_livez_is_200(sidecar: Sidecar) -> None:
    sidecar.snapshot = snapshot_in("NoSession", session=None, lease_remaining=None)

    assert (sidecar.get("/readyz").status_code, sidecar.get("/livez").status_code) == (503, 200)


# -- /primary and /replica -------------------------------------------------------------------

def test_primary_is_200_for_a_leader_with_a_valid_lease(sidecar: Sidecar) -> None:
    sidecar.snapshot = LEADER

    response = sidecar.get("/primary")

    assert (response.status_code, response.json()) == (200, {"state": "Leader"})
    assert response.headers["Content-Type"] == "application/json"


def test_primary_is_503_for_a_leader_whose_lease_expired(sidecar: Sidecar) -> None:
    sidecar.snapshot = dataclasses.replace(LEADER, lease_remaining=-0.1)

    response = sidecar.get("/primary")

    assert (response.status_code, response.json()) == (503, {"state": "Leader"})


@pytest.mark.parametrize("state", ["NoSession", "Follower", "Candidate"])
def test_primary_is_503_in_every_other_state(sidecar: Sidecar, state: str) -> None:
    sidecar.snapshot = snapshot_in(state)

    response = sidecar.get("/primary")

    assert (response.status_code, response.json()) == (503, {"state": state})


@pytest.mark.parametrize(("state", "expected"), [("Follower", 200), ("NoSession", 503),
                                                 ("Candidate", 503), ("Leader", 503)])
def test_replica_is_200_only_while_follower(sidecar: Sidecar, state: str, expected: int) -> None:
    sidecar.snapshot = snapshot_in(state)

    response = sidecar.get("/replica")

    assert (response.status_code, response.json()) == (expected, {"state": state})


def test_role_checks_follow_state_changes_between_requests(sidecar: Sidecar) -> None:
    sidecar.snapshot = LEADER
    assert sidecar.get("/primary").status_code == 200

    sidecar.snapshot = FOLLOWER

    assert sidecar.get("/primary").status_code == 503
    assert sidecar.get("/replica").status_code == 200


# -- /status ---------------------------------------------------------------------------------

def test_status_reports_every_field(sidecar: Sidecar) -> None:
    sidecar.snapshot = LEADER

    response = sidecar.get("/status")

    assert response.status_code == 200
    assert response.json() == {
        "state": "Leader", "since": 1_700_000_000.0, "session": "sess-1",
        "key": "consul-leader/db/lock", "fencing_token": 12, "last_renew_age": 2.0,
        "lease_remaining": 13.0, "holder": "sess-1", "published": True, "live": True,
        "ready": True, "healthy": True, "priority": None, "excluded": None,
        "health_gate": "off", "health_gate_reason": "",
    }


def test_primary_waits_for_the_label_to_be_published(sidecar: Sidecar) -> None:
    sidecar.snapshot = dataclasses.replace(LEADER, published=False)
    assert sidecar.get("/primary").status_code == 503
    sidecar.snapshot = LEADER
    assert sidecar.get("/primary").status_code == 200


@pytest.mark.parametrize("state", STATES)
def test_status_answers_200_in_every_state(sidecar: Sidecar, state: str) -> None:
    sidecar.snapshot = snapshot_in(state, session=None, fencing_token=None, holder=None,
                                   last_renew_age=None, lease_remaining=None)

    response = sidecar.get("/status")

    assert response.status_code == 200
    assert response.json()["state"] == state
    assert response.json()["session"] is None


def test_status_of_a_stale_leader_says_live_but_not_ready(sidecar: Sidecar) -> None:
    sidecar.snapshot = dataclasses.replace(LEADER, lease_remaining=-3.0)

    status = sidecar.get("/status").json()

    assert (status["live"], status["ready"], status["healthy"]) == (True, False, True)


# -- /metrics --------------------------------------------------------------------------------

def test_metrics_default_to_the_classic_text_format(sidecar: Sidecar) -> None:
    response = sidecar.get("/metrics", headers={"Accept": "*/*"})

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "consul_leader_is_leader 0.0" in response.text


def test_metrics_negotiate_openmetrics(sidecar: Sidecar) -> None:
    response = sidecar.get("/metrics", headers={"Accept": "application/openmetrics-text"})

    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_metrics_are_gzipped_when_accepted(sidecar: Sidecar) -> None:
    response = sidecar.get("/metrics", headers={"Accept-Encoding": "gzip"}, stream=True)

    raw = response.raw.read(decode_content=False)

    assert response.headers["Content-Encoding"] == "gzip"
    assert b"consul_leader_is_leader" in gzip.decompress(raw)


def test_metrics_are_plain_when_gzip_is_not_accepted(sidecar: Sidecar) -> None:
    response = sidecar.get("/metrics", headers={"Accept-Encoding": "identity"})

    assert "Content-Encoding" not in response.headers
    assert "consul_leader_is_leader" in response.text


def test_metrics_can_be_filtered_by_name(sidecar: Sidecar) -> None:
    Gauge("consul_leader_fencing_token", "Token.", registry=sidecar.registry)

    response = sidecar.get("/metrics", params={"name[]": "consul_leader_fencing_token"})

    assert "consul_leader_fencing_token" in response.text
    assert "consul_leader_is_leader" not in response.text


def test_served_metrics_pass_promtool(sidecar: Sidecar) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found on PATH: install it (apt-get install prometheus)")

    body = sidecar.get("/metrics").content
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            timeout=30, check=False)

    assert (result.returncode, (result.stdout + result.stderr).decode()) == (0, "")


def test_metrics_do_not_need_a_snapshot(sidecar: Sidecar) -> None:
    sidecar.failure = RuntimeError("controller wedged")

    assert sidecar.get("/metrics").status_code == 200


# -- HEAD, 404, 405, 500 ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ROUTES)
def test_head_matches_get_without_a_body(sidecar: Sidecar, path: str) -> None:
    headers = {"Accept-Encoding": "identity"}
    get = sidecar.get(path, headers=headers)

    head = requests.head(sidecar.url(path), headers=headers, timeout=TIMEOUT)

    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    if path != "/metrics":  # metrics change between the two requests (e.g. process CPU)
        assert head.headers["Content-Length"] == str(len(get.content))


def test_head_reports_role_status(sidecar: Sidecar) -> None:
    sidecar.snapshot = LEADER

    assert requests.head(sidecar.url("/primary"), timeout=TIMEOUT).status_code == 200
    assert requests.head(sidecar.url("/replica"), timeout=TIMEOUT).status_code == 503


@pytest.mark.parametrize("path", ["/", "/leader", "/metrics/", "/healthz/extra", "/livez/",
                                  "/ready", "/favicon.ico"])
def test_unknown_paths_are_404(sidecar: Sidecar, path: str) -> None:
    assert sidecar.get(path).status_code == 404


def test_unknown_path_is_404_whatever_the_method(sidecar: Sidecar) -> None:
    response = requests.post(sidecar.url("/nope"), data=b"x", timeout=TIMEOUT)

    assert response.status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ROUTES)
def test_other_methods_are_405(sidecar: Sidecar, method: str, path: str) -> None:
    response = requests.request(method, sidecar.url(path), data=b'{"state": "Leader"}',
                                timeout=TIMEOUT)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", [r for r in ROUTES if r != "/metrics"])
def test_failing_snapshot_gives_500_and_the_server_keeps_serving(sidecar: Sidecar,
                                                                 path: str) -> None:
    sidecar.failure = RuntimeError("controller lock poisoned")

    failed = sidecar.get(path)

    assert (failed.status_code, failed.text) == (500, "internal error\n")
    assert sidecar.get("/metrics").status_code == 200
    sidecar.failure = None
    assert sidecar.get(path).status_code in (200, 503)


def test_a_slow_request_does_not_block_others(sidecar: Sidecar) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow() -> StatusSnapshot:
        entered.set()
        release.wait(TIMEOUT)
        return FOLLOWER

    server = StatusServer(("127.0.0.1", 0), sidecar.registry, slow)
    server.start()
    host, port = server.address
    results: list[int] = []
    waiting = threading.Thread(target=lambda: results.append(
        requests.get(f"http://{host}:{port}/status", timeout=TIMEOUT).status_code))
    waiting.start()
    try:
        assert entered.wait(TIMEOUT)
        assert requests.get(f"http://{host}:{port}/metrics", timeout=TIMEOUT).status_code == 200
    finally:
        release.set()
        waiting.join(TIMEOUT)
        server.stop()

    assert results == [200]


# -- lifecycle -------------------------------------------------------------------------------

def test_address_is_known_before_start_and_port_zero_picks_a_port() -> None:
    server = StatusServer(("127.0.0.1", 0), CollectorRegistry(), lambda: FOLLOWER)
    try:
        host, port = server.address
        assert host == "127.0.0.1"
        assert port > 0
    finally:
        server.stop()


def test_busy_address_fails_in_the_constructor() -> None:
    first = StatusServer(("127.0.0.1", 0), CollectorRegistry(), lambda: FOLLOWER)
    try:
        with pytest.raises(ListenError) as info:
            StatusServer(first.address, CollectorRegistry(), lambda: FOLLOWER)
    finally:
        first.stop()

    assert info.value.address_in_use
    assert str(info.value) == (f"cannot listen on 127.0.0.1:{first.address[1]}: "
                               "Address already in use")


def test_every_interface_is_busy_when_ipv4_alone_is_taken() -> None:
    # Falling back to IPv4 would fail the same way; the error is reported, not papered over.
    ipv4 = socket.create_server(("0.0.0.0", 0))
    try:
        with pytest.raises(ListenError, match="Address already in use"):
            StatusServer(("", ipv4.getsockname()[1]), CollectorRegistry(), lambda: FOLLOWER)
    finally:
        ipv4.close()


def test_unresolvable_host_is_a_listen_error() -> None:
    with pytest.raises(ListenError, match=r"^cannot listen on nowhere\.invalid:0: "):
        StatusServer(("nowhere.invalid", 0), CollectorRegistry(), lambda: FOLLOWER)


# -- every interface: IPv6 and IPv4 ----------------------------------------------------------

def answers_on(host: str, port: int) -> int:
    shown = f"[{host}]" if ":" in host else host
    return requests.get(f"http://{shown}:{port}/livez", timeout=TIMEOUT).status_code


def test_every_interface_means_ipv6_and_ipv4() -> None:
    server = StatusServer(("", 0), CollectorRegistry(), lambda: FOLLOWER)
    server.start()
    try:
        host, port = server.address
        dual = server._httpd.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)

        assert (host, dual) == ("::", 0)
        assert (answers_on("127.0.0.1", port), answers_on("::1", port)) == (200, 200)
    finally:
        server.stop()


def test_an_ipv4_address_listens_on_ipv4_only() -> None:
    server = StatusServer(("127.0.0.1", 0), CollectorRegistry(), lambda: FOLLOWER)
    server.start()
    try:
        port = server.address[1]
        assert answers_on("127.0.0.1", port) == 200
        with pytest.raises(requests.ConnectionError):
            answers_on("::1", port)
    finally:
        server.stop()


@pytest.mark.parametrize("refusal", [errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL])
def test_every_interface_falls_back_to_ipv4_without_ipv6(monkeypatch: pytest.MonkeyPatch,
                                                         refusal: int) -> None:
    real_socket = socket.socket

    def without_ipv6(family: int = -1, *args: object, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6:  # as on a host booted with ipv6.disable=1
            raise OSError(refusal, os.strerror(refusal))
        return real_socket(family, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "socket", without_ipv6)
    server = StatusServer(("", 0), CollectorRegistry(), lambda: FOLLOWER)
    monkeypatch.undo()
    server.start()
    try:
        host, port = server.address
        assert host == "0.0.0.0"
        assert answers_on("127.0.0.1", port) == 200
    finally:
        server.stop()


def test_stop_leaves_no_thread_and_closes_the_socket() -> None:
    server = StatusServer(("127.0.0.1", 0), CollectorRegistry(), lambda: FOLLOWER)
    server.start()
    host, port = server.address
    for path in ("/metrics", "/healthz", "/status"):
        assert requests.get(f"http://{host}:{port}{path}", timeout=TIMEOUT).ok
    assert server_threads()

    server.stop()

    assert server_threads() == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{host}:{port}/healthz", timeout=TIMEOUT)


def test_stop_cuts_off_a_client_that_never_sends_a_request() -> None:
    server = StatusServer(("127.0.0.1", 0), CollectorRegistry(), lambda: FOLLOWER)
    server.start()
    silent = socket.create_connection(server.address, timeout=TIMEOUT)
    try:
        wait_until(lambda: any(t.name == "status-http-request" for t in server_threads()))

        server.stop()

        assert server_threads() == []
        assert silent.recv(1) == b""  # the server closed the connection
    finally:
        silent.close()


def test_stop_is_idempotent_and_a_stopped_server_cannot_restart() -> None:
    server = StatusServer(("127.0.0.1", 0), CollectorRegistry(), lambda: FOLLOWER)
    server.start()
    server.stop()
    server.stop()

    with pytest.raises(RuntimeError):
        server.start()


def test_start_twice_is_refused() -> None:
    server = StatusServer(("127.0.0.1", 0), CollectorRegistry(), lambda: FOLLOWER)
    server.start()
    try:
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
