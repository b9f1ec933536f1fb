"""The double's own contract: lifecycle, fault injection, statistics, control API, TLS,
ACL plumbing and the command (DESIGN.md §5 and the faults of consul-semantics.md §1.4,
§1.6, §6). These tests run only against the double.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conformance.conftest import WaitUntil
from tests.consul_double import ConsulDouble, TlsConfig
from tests.consul_double.acl import AclSystem

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


@pytest.fixture
def cluster() -> Iterator[ConsulDouble]:
    with ConsulDouble(nodes=("n1", "n2", "n3"), session_ttl_min=1.0,
                      rpc_hold_timeout=0.0) as double:
        yield double


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def url(double: ConsulDouble, node: str, path: str) -> str:
    return double.node_addr(node) + path


def create_session(double: ConsulDouble, node: str, **body: Any) -> str:
    response = requests.put(url(double, node, "/v1/session/create"), json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    session_id: str = response.json()["ID"]
    return session_id


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(TIMEOUT)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def free_port_block(count: int) -> int:
    """A base port with `count` free ports after it (best effort on a quiet machine)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count < 65535 and all(_bindable(base + offset) for offset in range(count)):
            return base
    pytest.skip("no block of free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# -- lifecycle and addresses ---------------------------------------------------


def test_base_port_puts_node_i_on_port_plus_i() -> None:
    """Node i (0-based) listens on base_port+i; control on its own port."""
    base = free_port_block(4)
    with ConsulDouble(nodes=("a", "b", "c"), base_port=base, control_port=base + 3) as double:
        assert double.node_names == ("a", "b", "c")
        assert [double.node_addr(node) for node in double.node_names] == [
            f"http://127.0.0.1:{base + offset}" for offset in range(3)]
        assert double.control_addr == f"http://127.0.0.1:{base + 3}"


def test_exit_joins_every_thread_and_frees_every_port(background: ThreadPoolExecutor) -> None:
    """`__exit__` stops listeners and timers, ends open and blocked connections."""
    threads_before = set(threading.enumerate())
    with ConsulDouble(nodes=("n1", "n2"), session_ttl_min=1.0) as double:
        ports = [port_of(double.node_addr(node)) for node in double.node_names]
        ports.append(port_of(double.control_addr))
        keep_alive = requests.Session()
        session_id = keep_alive.put(url(double, "n1", "/v1/session/create"),
                                    json={"TTL": "10s"}).json()["ID"]
        keep_alive.put(url(double, "n1", f"/v1/kv/k?acquire={session_id}"))
        index = keep_alive.get(url(double, "n1", "/v1/kv/k")).headers["X-Consul-Index"]
        blocked: Future[Any] = background.submit(
            requests.get, url(double, "n2", f"/v1/kv/k?index={index}&wait=5m"), timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while double.state.blocked_queries() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    with pytest.raises(requests.ConnectionError):
        blocked.result(timeout=TIMEOUT)
    keep_alive.close()
    leftover = [thread for thread in set(threading.enumerate()) - threads_before
                if thread.name.startswith("consul-double")]
    assert leftover == []
    assert all(refuses_connections(port) and _bindable(port) for port in ports)


# -- node failure --------------------------------------------------------------


def test_failed_node_refuses_connections_and_recovers_on_the_same_port(
    cluster: ConsulDouble,
) -> None:
    """DESIGN.md §5: the failed node's listener is closed, and reopened on recover."""
    address = cluster.node_addr("n1")
    cluster.fail_node("n1")
    assert refuses_connections(port_of(address))
    assert requests.get(url(cluster, "n2", "/v1/status/leader"), timeout=TIMEOUT).ok
    cluster.recover_node("n1")
    assert cluster.node_addr("n1") == address
    assert requests.get(address + "/v1/agent/self", timeout=TIMEOUT).json()[
        "Config"]["NodeName"] == "n1"


def test_node_failure_marks_serf_health_critical(cluster: ConsulDouble) -> None:
    """§1.6: serfHealth critical with Consul's output, passing again after recovery."""
    cluster.fail_node("n1")
    checks = requests.get(url(cluster, "n2", "/v1/health/node/n1"), timeout=TIMEOUT).json()
    serf = next(check for check in checks if check["CheckID"] == "serfHealth")
    assert (serf["Status"], serf["Output"]) == ("critical", "Agent not live or unreachable")
    cluster.recover_node("n1")
    checks = requests.get(url(cluster, "n2", "/v1/health/node/n1"), timeout=TIMEOUT).json()
    serf = next(check for check in checks if check["CheckID"] == "serfHealth")
    assert (serf["Status"], serf["Output"]) == ("passing", "Agent alive and reachable")


def test_node_failure_invalidates_serf_sessions_with_lock_delay(cluster: ConsulDouble) -> None:
    """§1.6: sessions holding serfHealth go (keys released + lock-delay); others stay."""
    watched = create_session(cluster, "n1", LockDelay="10s")
    unwatched = create_session(cluster, "n1", NodeChecks=[])
    requests.put(url(cluster, "n1", f"/v1/kv/leader?acquire={watched}"), timeout=TIMEOUT)
    cluster.fail_node("n1")
    sessions = requests.get(url(cluster, "n2", "/v1/session/node/n1"), timeout=TIMEOUT).json()
    assert [session["ID"] for session in sessions] == [unwatched]
    entry = requests.get(url(cluster, "n2", "/v1/kv/leader"), timeout=TIMEOUT).json()[0]
    assert "Session" not in entry
    contender = create_session(cluster, "n2")
    acquired = requests.put(url(cluster, "n2", f"/v1/kv/leader?acquire={contender}"),
                            timeout=TIMEOUT)
    assert acquired.json() is False  # lock-delay from the invalidation


def test_node_failure_drops_requests_in_flight(
    cluster: ConsulDouble, background: ThreadPoolExecutor, wait_until: WaitUntil
) -> None:
    """A request blocked on the failed node's agent loses its connection."""
    index = requests.get(url(cluster, "n1", "/v1/kv/k"), timeout=TIMEOUT).headers[
        "X-Consul-Index"]
    pending = background.submit(
        requests.get, url(cluster, "n1", f"/v1/kv/k?index={index}&wait=5m"), timeout=TIMEOUT)
    wait_until(lambda: cluster.state.blocked_queries() == 1, message="the query to block")
    cluster.fail_node("n1")
    with pytest.raises(requests.ConnectionError):
        pending.result(timeout=TIMEOUT)


# -- servers down / up / failover ----------------------------------------------


def test_servers_down_fails_server_bound_calls_after_the_hold() -> None:
    """§6: KV/session/catalog/health answer 500 `No cluster leader` after rpc_hold_timeout."""
    with ConsulDouble(nodes=("n1",), rpc_hold_timeout=0.3) as double:
        double.servers_down()
        started = time.monotonic()
        response = requests.get(url(double, "n1", "/v1/kv/k"), timeout=TIMEOUT)
        assert (response.status_code, response.text) == (500, "No cluster leader")
        assert time.monotonic() - started >= 0.3
        for path in ("/v1/session/list", "/v1/catalog/services", "/v1/health/service/x"):
            assert requests.get(url(double, "n1", path), timeout=TIMEOUT).status_code == 500
        renew = requests.put(url(double, "n1", "/v1/session/renew/x"), timeout=TIMEOUT)
        assert (renew.status_code, renew.text) == (500, "No cluster leader")


def test_servers_down_leaves_agent_endpoints_working(cluster: ConsulDouble) -> None:
    """§6: agent-local endpoints answer without servers; status/leader says ""."""
    cluster.servers_down()
    assert requests.get(url(cluster, "n1", "/v1/agent/self"), timeout=TIMEOUT).ok
    register = requests.put(url(cluster, "n1", "/v1/agent/service/register"),
                            json={"Name": "web"}, timeout=TIMEOUT)
    assert register.status_code == 200
    assert "web" in requests.get(url(cluster, "n1", "/v1/agent/services"), timeout=TIMEOUT).json()
    assert requests.get(url(cluster, "n1", "/v1/status/leader"), timeout=TIMEOUT).json() == ""
    cluster.servers_up()
    leader = requests.get(url(cluster, "n1", "/v1/status/leader"), timeout=TIMEOUT).json()
    assert leader == "127.0.0.1:8300"


def test_stale_reads_work_without_a_leader(cluster: ConsulDouble) -> None:
    """§6: `?stale` reads answer without a leader, with X-Consul-KnownLeader: false."""
    requests.put(url(cluster, "n1", "/v1/kv/k"), data=b"v", timeout=TIMEOUT)
    cluster.servers_down()
    response = requests.get(url(cluster, "n1", "/v1/kv/k?stale"), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["X-Consul-KnownLeader"] == "false"
    default = requests.get(url(cluster, "n1", "/v1/kv/k"), timeout=TIMEOUT)
    assert default.status_code == 500


def test_servers_back_within_the_hold_serve_the_held_call(
    background: ThreadPoolExecutor, wait_until: WaitUntil
) -> None:
    """§6: the agent holds a call for a leader; if one returns in time the call succeeds."""
    with ConsulDouble(nodes=("n1",), rpc_hold_timeout=30.0) as double:
        double.servers_down()
        pending = background.submit(
            requests.put, url(double, "n1", "/v1/kv/held"), data=b"x", timeout=TIMEOUT)
        wait_until(lambda: double.state.blocked_queries() == 1, message="the call to be held")
        double.servers_up()
        response = pending.result(timeout=TIMEOUT)
        assert (response.status_code, response.json()) == (200, True)


def test_servers_down_answers_blocked_queries_with_no_cluster_leader(
    cluster: ConsulDouble, background: ThreadPoolExecutor, wait_until: WaitUntil
) -> None:
    """§3/§6: a blocking query in flight when the leader goes gets the 500 too."""
    index = requests.get(url(cluster, "n1", "/v1/kv/k"), timeout=TIMEOUT).headers[
        "X-Consul-Index"]
    pending = background.submit(
        requests.get, url(cluster, "n1", f"/v1/kv/k?index={index}&wait=5m"), timeout=TIMEOUT)
    wait_until(lambda: cluster.state.blocked_queries() == 1, message="the query to block")
    cluster.servers_down()
    response = pending.result(timeout=TIMEOUT)
    assert (response.status_code, response.text) == (500, "No cluster leader")


def test_failover_window_answers_no_cluster_leader(cluster: ConsulDouble) -> None:
    """DESIGN.md §5: during the failover window server-bound calls answer 500."""
    cluster.servers_failover(window=30.0)
    assert requests.get(url(cluster, "n1", "/v1/kv/k"), timeout=TIMEOUT).status_code == 500
    cluster.servers_up()
    assert requests.get(url(cluster, "n1", "/v1/kv/k"), timeout=TIMEOUT).status_code == 404


def test_failover_restarts_session_timers_at_two_ttl(wait_until: WaitUntil) -> None:
    """§1.4: after a leader election every session gets a fresh 2xTTL."""
    with ConsulDouble(nodes=("n1",), session_ttl_min=1.0, rpc_hold_timeout=5.0) as double:
        session_id = create_session(double, "n1", TTL="1s")
        time.sleep(1.0)  # scenario: half of the 2xTTL passes before the leader changes
        failover_at = time.monotonic()
        double.servers_failover(window=0.2)
        wait_until(lambda: double.state.session(session_id) is None, timeout=TIMEOUT,
                   message="the session to expire")
        assert time.monotonic() - failover_at >= 0.2 + 2.0


def test_sessions_do_not_expire_without_a_leader() -> None:
    """§1.4: TTL timers live on the leader; with none, nothing expires."""
    with ConsulDouble(nodes=("n1",), session_ttl_min=1.0) as double:
        session_id = create_session(double, "n1", TTL="1s")
        double.servers_down()
        time.sleep(2.5)  # scenario: longer than 2xTTL without a leader
        assert double.state.session(session_id) is not None
        double.servers_up()
        assert double.state.session(session_id) is not None


# -- latency, injected errors, statistics --------------------------------------


def test_latency_delays_each_request_of_a_node(cluster: ConsulDouble) -> None:
    """DESIGN.md §5: added delay before each request of that node."""
    cluster.set_latency(0.3, node="n1")
    started = time.monotonic()
    assert requests.get(url(cluster, "n1", "/v1/agent/self"), timeout=TIMEOUT).ok
    assert time.monotonic() - started >= 0.3
    cluster.set_latency(0.0)


def test_injected_errors_answer_a_burst_then_normal(cluster: ConsulDouble) -> None:
    """A burst of N 5xx answers on one node; other nodes unaffected."""
    cluster.inject_errors("n1", count=2, status=503)
    statuses = [requests.get(url(cluster, "n1", "/v1/status/leader"), timeout=TIMEOUT)
                .status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    cluster.inject_errors("n2", count=1)
    assert requests.get(url(cluster, "n2", "/v1/kv/x"), timeout=TIMEOUT).status_code == 500
    assert requests.get(url(cluster, "n3", "/v1/kv/x"), timeout=TIMEOUT).status_code == 404


def test_stats_count_requests_per_node_endpoint_and_class(cluster: ConsulDouble) -> None:
    """Counts per node and `METHOD template`, classified agent or server; resettable."""
    session_id = create_session(cluster, "n1", TTL="10s")
    for _ in range(3):
        requests.put(url(cluster, "n1", f"/v1/session/renew/{session_id}"), timeout=TIMEOUT)
    requests.get(url(cluster, "n2", "/v1/agent/services"), timeout=TIMEOUT)
    stats = cluster.stats()
    n1 = stats["nodes"]["n1"]["endpoints"]
    assert n1["PUT /v1/session/renew/:id"] == {"count": 3, "class": "server"}
    assert n1["PUT /v1/session/create"] == {"count": 1, "class": "server"}
    assert stats["nodes"]["n2"]["endpoints"]["GET /v1/agent/services"] == {
        "count": 1, "class": "agent"}
    assert (stats["nodes"]["n1"]["server"], stats["nodes"]["n2"]["agent"]) == (4, 1)
    assert stats["total"] == 5
    assert cluster.request_count(endpoint="PUT /v1/session/renew/:id") == 3
    cluster.reset_stats()
    assert cluster.stats()["total"] == 0


# -- control API ---------------------------------------------------------------


def control(double: ConsulDouble, method: str, path: str,
            body: dict[str, Any] | None = None) -> requests.Response:
    return requests.request(method, double.control_addr + path, json=body, timeout=TIMEOUT)


def test_control_state_is_the_snapshot(cluster: ConsulDouble) -> None:
    """GET /state returns the same JSON as snapshot(): sessions, KV, nodes with health."""
    session_id = create_session(cluster, "n2")
    requests.put(url(cluster, "n1", "/v1/kv/app/config"), data=b"on", timeout=TIMEOUT)
    state = control(cluster, "GET", "/state").json()
    assert state == cluster.snapshot()
    assert [session["ID"] for session in state["sessions"]] == [session_id]
    assert state["kv"][0]["Key"] == "app/config"
    assert state["nodes"]["n1"]["serfHealth"] == "passing"
    assert state["nodes"]["n3"]["address"] == cluster.node_addr("n3")


def test_control_faults_over_http(cluster: ConsulDouble) -> None:
    """POST /nodes/<n>/fail|recover, /servers/down|up|failover, /latency, /errors."""
    assert control(cluster, "POST", "/nodes/n1/fail").json() == {"ok": True}
    assert refuses_connections(port_of(cluster.node_addr("n1")))
    control(cluster, "POST", "/nodes/n1/recover")
    assert requests.get(url(cluster, "n1", "/v1/agent/self"), timeout=TIMEOUT).ok
    control(cluster, "POST", "/servers/down")
    assert requests.get(url(cluster, "n2", "/v1/kv/k"), timeout=TIMEOUT).status_code == 500
    control(cluster, "POST", "/servers/up")
    assert requests.get(url(cluster, "n2", "/v1/kv/k"), timeout=TIMEOUT).status_code == 404
    control(cluster, "POST", "/servers/failover", {"window": 0})
    assert requests.get(url(cluster, "n2", "/v1/kv/k"), timeout=TIMEOUT).status_code == 404
    control(cluster, "POST", "/errors", {"node": "n3", "count": 1, "status": 502})
    assert requests.get(url(cluster, "n3", "/v1/kv/k"), timeout=TIMEOUT).status_code == 502
    control(cluster, "POST", "/latency", {"seconds": 0.2})
    started = time.monotonic()
    requests.get(url(cluster, "n2", "/v1/kv/k"), timeout=TIMEOUT)
    assert time.monotonic() - started >= 0.2


def test_control_stats_and_reset_over_http(cluster: ConsulDouble) -> None:
    """GET /stats and POST /stats/reset."""
    requests.get(url(cluster, "n1", "/v1/agent/self"), timeout=TIMEOUT)
    assert control(cluster, "GET", "/stats").json()["nodes"]["n1"]["agent"] == 1
    control(cluster, "POST", "/stats/reset")
    assert control(cluster, "GET", "/stats").json()["total"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/nodes/n9/fail", None, 404),
        ("POST", "/latency", {"node": "n9", "seconds": 1}, 404),
        ("POST", "/errors", {"count": 1}, 400),
        ("POST", "/latency", {"seconds": -1}, 400),
        ("GET", "/servers/down", None, 405),
        ("POST", "/acl/tokens", {"secret": "s", "rules": ""}, 409),
        ("GET", "/nothing", None, 404),
    ],
)
def test_control_refusals(cluster: ConsulDouble, method: str, path: str,
                          body: dict[str, Any] | None, status: int) -> None:
    """Bad control requests answer JSON errors and change nothing."""
    response = control(cluster, method, path, body)
    assert response.status_code == status
    assert "error" in response.json()


# -- several nodes -------------------------------------------------------------


def test_agent_endpoints_are_node_local_and_the_catalog_shared(cluster: ConsulDouble) -> None:
    """DESIGN.md §5: a service registered on n2 is n2's; every node's catalog sees it."""
    requests.put(url(cluster, "n2", "/v1/agent/service/register"), json={"Name": "db"},
                 timeout=TIMEOUT)
    assert requests.get(url(cluster, "n1", "/v1/agent/services"), timeout=TIMEOUT).json() == {}
    assert "db" in requests.get(url(cluster, "n2", "/v1/agent/services"), timeout=TIMEOUT).json()
    instances = requests.get(url(cluster, "n1", "/v1/catalog/service/db"), timeout=TIMEOUT).json()
    assert [instance["Node"] for instance in instances] == ["n2"]
    self_n3 = requests.get(url(cluster, "n3", "/v1/agent/self"), timeout=TIMEOUT).json()
    assert self_n3["Config"]["NodeName"] == "n3"


# -- ACLs ----------------------------------------------------------------------


APP_RULES = 'key_prefix "app/" { policy = "write" }\nsession_prefix "" { policy = "write" }'


def test_acl_denial_answers_403_with_the_acl_message() -> None:
    """§6: no permission → 403 with Consul's wording; unknown token → 403 `ACL not found`."""
    acl = AclSystem(default_policy="deny", tokens={"app-token": APP_RULES})
    with ConsulDouble(nodes=("n1",), acl=acl) as double:
        allowed = requests.put(url(double, "n1", "/v1/kv/app/x"), data=b"1",
                               headers={"X-Consul-Token": "app-token"}, timeout=TIMEOUT)
        assert allowed.json() is True
        assert allowed.headers["X-Consul-Default-ACL-Policy"] == "deny"
        denied = requests.put(url(double, "n1", "/v1/kv/other"), data=b"1",
                              headers={"X-Consul-Token": "app-token"}, timeout=TIMEOUT)
        assert denied.status_code == 403
        assert denied.text.startswith("Permission denied")
        unknown = requests.get(url(double, "n1", "/v1/kv/app/x?token=nope"), timeout=TIMEOUT)
        assert (unknown.status_code, unknown.text) == (403, "ACL not found")


def test_acl_filters_lists_and_flags_it_when_a_token_was_sent() -> None:
    """§6: recurse drops unreadable keys and sets X-Consul-Results-Filtered-By-ACLs."""
    acl = AclSystem(default_policy="deny", tokens={"app-token": APP_RULES},
                    management_tokens=["root"])
    with ConsulDouble(nodes=("n1",), acl=acl) as double:
        for key in ("app/a", "secret/b"):
            requests.put(url(double, "n1", f"/v1/kv/{key}?token=root"), data=b"1",
                         timeout=TIMEOUT)
        listed = requests.get(url(double, "n1", "/v1/kv/?recurse&token=app-token"),
                              timeout=TIMEOUT)
        assert [entry["Key"] for entry in listed.json()] == ["app/a"]
        assert listed.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        everything = requests.get(url(double, "n1", "/v1/kv/?recurse&token=root"),
                                  timeout=TIMEOUT)
        assert "X-Consul-Results-Filtered-By-ACLs" not in everything.headers


def test_acl_tokens_are_added_and_revoked_through_the_control_api() -> None:
    """POST /acl/tokens and DELETE /acl/tokens/<secret>."""
    with ConsulDouble(nodes=("n1",), acl=AclSystem(default_policy="deny")) as double:
        control(double, "POST", "/acl/tokens", {"secret": "late", "rules": APP_RULES})
        path = "/v1/kv/app/x?token=late"
        assert requests.put(url(double, "n1", path), data=b"1", timeout=TIMEOUT).json() is True
        assert control(double, "DELETE", "/acl/tokens/late").json() == {"ok": True}
        revoked = requests.put(url(double, "n1", path), data=b"1", timeout=TIMEOUT)
        assert (revoked.status_code, revoked.text) == (403, "ACL not found")


def test_acls_off_still_send_the_default_policy_header(cluster: ConsulDouble) -> None:
    """§0: X-Consul-Default-ACL-Policy: allow on every response when ACLs are off."""
    response = requests.get(url(cluster, "n1", "/v1/kv/none"), timeout=TIMEOUT)
    assert response.headers["X-Consul-Default-ACL-Policy"] == "allow"


# -- TLS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    directory = tmp_path_factory.mktemp("tls")
    files = {name: str(directory / name) for name in (
        "ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")}
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", files["ca.key"], "-out", files["ca.pem"], "-days", "1",
             "-subj", "/CN=consul-double-test-ca")
    for role, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                            ("client", "extendedKeyUsage=clientAuth")):
        csr = str(directory / f"{role}.csr")
        extfile = directory / f"{role}.ext"
        extfile.write_text(extension + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", files[f"{role}.key"], "-out", csr, "-subj", f"/CN={role}")
        _openssl("x509", "-req", "-in", csr, "-CA", files["ca.pem"], "-CAkey", files["ca.key"],
                 "-CAcreateserial", "-out", files[f"{role}.pem"], "-days", "1",
                 "-extfile", str(extfile))
    return files


def _openssl(*arguments: str) -> None:
    subprocess.run(["openssl", *arguments], check=True, capture_output=True, timeout=60)


def test_tls_serves_https_on_agents_and_plain_http_on_control(
    certificates: dict[str, str],
) -> None:
    """Agent listeners speak HTTPS with the given certificate; control stays HTTP."""
    tls = TlsConfig(certificates["server.pem"], certificates["server.key"])
    with ConsulDouble(nodes=("n1",), tls=tls) as double:
        assert double.node_addr("n1").startswith("https://")
        response = requests.get(url(double, "n1", "/v1/agent/self"),
                                verify=certificates["ca.pem"], timeout=TIMEOUT)
        assert response.json()["Config"]["NodeName"] == "n1"
        assert double.control_addr.startswith("http://")
        assert requests.get(double.control_addr + "/stats", timeout=TIMEOUT).ok


def test_tls_verify_incoming_requires_a_client_certificate(
    certificates: dict[str, str],
) -> None:
    """With verify_incoming the handshake fails without a certificate from the CA."""
    tls = TlsConfig(certificates["server.pem"], certificates["server.key"],
                    cafile=certificates["ca.pem"], verify_incoming=True)
    with ConsulDouble(nodes=("n1",), tls=tls) as double:
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(url(double, "n1", "/v1/agent/self"), verify=certificates["ca.pem"],
                         timeout=TIMEOUT)
        response = requests.get(
            url(double, "n1", "/v1/agent/self"), verify=certificates["ca.pem"],
            cert=(certificates["client.pem"], certificates["client.key"]), timeout=TIMEOUT)
        assert response.ok


# -- the command ---------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_command_prints_one_json_line_and_stops_cleanly(stop_signal: int) -> None:
    """`python -m tests.consul_double` prints the addresses, serves, exits 0 on a signal."""
    base = free_port_block(3)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.consul_double", "--nodes", "n1,n2",
         "--port", str(base), "--control-port", str(base + 2), "--session-ttl-min", "1s",
         "--rpc-hold-timeout", "0s"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready == {
            "nodes": {"n1": f"http://127.0.0.1:{base}", "n2": f"http://127.0.0.1:{base + 1}"},
            "control": f"http://127.0.0.1:{base + 2}",
        }
        created = requests.put(ready["nodes"]["n2"] + "/v1/session/create",
                               json={"TTL": "1s"}, timeout=TIMEOUT)
        assert created.status_code == 200
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0
        assert "Traceback" not in stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=TIMEOUT)


def test_command_rejects_a_bad_duration_with_exit_2() -> None:
    """A bad argument is one line on stderr and exit status 2."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.consul_double", "--session-ttl-min", "10"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 2
    assert 'missing unit in duration "10"' in result.stderr
