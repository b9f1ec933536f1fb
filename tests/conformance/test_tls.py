"""HTTPS on the double's agent listeners (what `CONSUL_HTTP_SSL`/`CONSUL_CACERT`/
`CONSUL_CLIENT_CERT` clients meet on a Consul agent with `verify_incoming`).

These tests need certificates the test makes, so they run only against the double.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.conformance.conftest import REAL_CONSUL_ADDR, WaitUntil
from tests.consul_double import ConsulDouble, TlsConfig

TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(bool(REAL_CONSUL_ADDR), reason="needs the Consul double")


@pytest.fixture
def https(tls_files: dict[str, str]) -> Iterator[ConsulDouble]:
    tls = TlsConfig(tls_files["server.pem"], tls_files["server.key"])
    with ConsulDouble(nodes=("n1", "n2"), tls=tls) as double:
        yield double


@pytest.fixture
def mutual(tls_files: dict[str, str]) -> Iterator[ConsulDouble]:
    tls = TlsConfig(tls_files["server.pem"], tls_files["server.key"],
                    cafile=tls_files["ca.pem"], verify_incoming=True)
    with ConsulDouble(nodes=("n1",), tls=tls) as double:
        yield double


def client_cert(tls_files: dict[str, str], name: str = "client") -> tuple[str, str]:
    return tls_files[f"{name}.pem"], tls_files[f"{name}.key"]


def peer_common_name(address: str, cafile: str) -> str:
    parts = urlsplit(address)
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname=parts.hostname) as wrapped:
        certificate: dict[str, Any] = wrapped.getpeercert() or {}
    subject = dict(item[0] for item in certificate["subject"])
    return str(subject["commonName"])


def test_every_agent_listener_serves_https_with_the_configured_certificate(
    https: ConsulDouble, tls_files: dict[str, str]
) -> None:
    """Each node's address is https://; the handshake presents the given certificate."""
    for node in https.node_names:
        address = https.node_addr(node)
        assert address.startswith("https://127.0.0.1:")
        assert peer_common_name(address, tls_files["ca.pem"]) == "server"
        response = requests.get(address + "/v1/agent/self", verify=tls_files["ca.pem"],
                                timeout=TIMEOUT)
        assert response.json()["Config"]["NodeName"] == node


def test_a_client_trusting_another_ca_refuses_the_server(
    https: ConsulDouble, tls_files: dict[str, str]
) -> None:
    """The chain is the configured one: verification against another CA fails."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https.node_addr("n1") + "/v1/agent/self",
                     verify=tls_files["rogue-ca.pem"], timeout=TIMEOUT)


def test_plain_http_to_an_https_listener_gets_go_s_400(https: ConsulDouble) -> None:
    """A client that forgot CONSUL_HTTP_SSL gets Go's fixed answer, handled by no endpoint."""
    plain = https.node_addr("n1").replace("https://", "http://")
    response = requests.get(plain + "/v1/agent/self", timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.text == "Client sent an HTTP request to an HTTPS server.\n"
    assert https.request_count() == 0


def test_the_control_listener_stays_plain_http(https: ConsulDouble) -> None:
    assert https.control_addr.startswith("http://")
    assert requests.get(https.control_addr + "/state", timeout=TIMEOUT).ok


def test_verify_incoming_refuses_a_client_without_a_certificate(
    mutual: ConsulDouble, tls_files: dict[str, str]
) -> None:
    """verify_incoming: the handshake needs a client certificate."""
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(mutual.node_addr("n1") + "/v1/agent/self", verify=tls_files["ca.pem"],
                     timeout=TIMEOUT)


def test_verify_incoming_refuses_a_certificate_from_another_ca(
    mutual: ConsulDouble, tls_files: dict[str, str]
) -> None:
    """verify_incoming: only certificates signed by the configured CA are accepted."""
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(mutual.node_addr("n1") + "/v1/agent/self", verify=tls_files["ca.pem"],
                     cert=client_cert(tls_files, "rogue-client"), timeout=TIMEOUT)


def test_verify_incoming_serves_a_whole_lock_cycle_to_a_trusted_client(
    mutual: ConsulDouble, tls_files: dict[str, str]
) -> None:
    """With a certificate from the CA every endpoint works as over plain HTTP."""
    # Per call, not on a Session: REQUESTS_CA_BUNDLE would override Session.verify.
    trusted: dict[str, Any] = {"verify": tls_files["ca.pem"], "cert": client_cert(tls_files),
               "timeout": TIMEOUT}
    base = mutual.node_addr("n1")
    session_id = requests.put(base + "/v1/session/create", json={"TTL": "15s"},
                              **trusted).json()["ID"]
    acquired = requests.put(f"{base}/v1/kv/leader?acquire={session_id}", data=b"me", **trusted)
    assert acquired.json() is True
    assert requests.put(f"{base}/v1/session/renew/{session_id}", **trusted).ok
    assert requests.get(base + "/v1/kv/leader", **trusted).json()[0]["Session"] == session_id


def test_verify_incoming_needs_a_ca(tls_files: dict[str, str]) -> None:
    """A double that could verify no client refuses to start rather than accept everyone."""
    with pytest.raises(ValueError, match="verify_incoming needs a cafile"):
        TlsConfig(tls_files["server.pem"], tls_files["server.key"],
                  verify_incoming=True).server_context()


def test_a_failed_node_recovers_with_https_on_the_same_port(
    https: ConsulDouble, tls_files: dict[str, str]
) -> None:
    address = https.node_addr("n2")
    https.fail_node("n2")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(address + "/v1/agent/self", verify=tls_files["ca.pem"], timeout=TIMEOUT)
    https.recover_node("n2")
    assert https.node_addr("n2") == address
    response = requests.get(address + "/v1/agent/self", verify=tls_files["ca.pem"],
                            timeout=TIMEOUT)
    assert response.json()["Config"]["NodeName"] == "n2"


def test_a_stalled_handshake_blocks_no_other_client(
    https: ConsulDouble, tls_files: dict[str, str]
) -> None:
    """Each handshake runs on its connection's thread: a silent client stalls only itself."""
    parts = urlsplit(https.node_addr("n1"))
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT):
        response = requests.get(https.node_addr("n1") + "/v1/agent/self",
                                verify=tls_files["ca.pem"], timeout=TIMEOUT)
        assert response.ok


def test_the_command_serves_https_with_the_tls_flags(
    tls_files: dict[str, str], wait_until: WaitUntil
) -> None:
    """`python -m tests.consul_double --tls-cert --tls-key --tls-ca --tls-verify-incoming`."""
    command = [sys.executable, "-m", "tests.consul_double", "--port", "0", "--control-port",
               "0", "--tls-cert", tls_files["server.pem"], "--tls-key",
               tls_files["server.key"], "--tls-ca", tls_files["ca.pem"],
               "--tls-verify-incoming"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        addresses = json.loads(process.stdout.readline())
        address = addresses["nodes"]["n1"]
        assert address.startswith("https://")
        response = requests.get(address + "/v1/agent/self", verify=tls_files["ca.pem"],
                                cert=client_cert(tls_files), timeout=TIMEOUT)
        assert response.json()["Config"]["NodeName"] == "n1"
    finally:
        process.terminate()
        assert process.wait(timeout=TIMEOUT) == 0
