"""TLS end to end: the sidecar against the stand-in serving HTTPS with test certificates.

Certificates are made with the `openssl` CLI once per module: a CA, an unrelated CA, a server
certificate for `consul.test` and `127.0.0.1`, one for `consul.test` only, and a client
certificate. Each test starts its own stand-in with the TLS settings it needs.

What must hold: every documented way to trust the server (CA file, CA directory, client
certificate, server name, `CONSUL_HTTP_SSL` with a bare `host:port`) leads to an election; a
wrong CA (file, directory, or only the system roots), a wrong name or a missing client
certificate fails with a clear TLS error logged at level error, the sidecar never becomes
Leader, and the stand-in never completes a single request from it (so it never fell back to an
unverified or plain connection). Every scenario's logs are scanned for the token it was given.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.consul_double import ConsulDouble, TlsConfig
from tests.harness import Sidecar, wait_for
from tests.integration.support import (
    ConsulView,
    SecretVault,
    log_lines,
    role_endpoints_checked,
    scanned_for_tokens,
    start_sidecar,
    state_of,
    stopped_at_exit,
    transitions_to,
)

pytestmark = pytest.mark.slow

# Consul alone, on purpose: these tests are about the sidecar's TLS to its agent, and the
# Nomad model's registration client (tests/nomad_double/consul_api.py) speaks plain HTTP with
# no CA and no client certificate, so it could not register a service with an agent that
# serves HTTPS (let alone one that verifies clients). The sidecars run without an allocation.

SERVER_NAME = "consul.test"
KV_PATH = "consul-leader/db/lock"  # the sidecars' default key for service "db"


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    folder: Path

    def path(self, name: str) -> str:
        return str(self.folder / name)


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=30)


def _new_ca(folder: Path, name: str) -> None:
    _openssl(folder, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _issue(folder: Path, name: str, *, ca: str, usage: str, alt_names: str = "") -> None:
    extensions = f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
    if alt_names:
        extensions += f"subjectAltName={alt_names}\n"
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(folder, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
             f"{ca}.key", "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
             "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    _new_ca(folder, "ca")
    _new_ca(folder, "other-ca")
    _issue(folder, "server", ca="ca", usage="serverAuth",
           alt_names=f"DNS:{SERVER_NAME},IP:127.0.0.1")
    _issue(folder, "server-name-only", ca="ca", usage="serverAuth", alt_names=f"DNS:{SERVER_NAME}")
    _issue(folder, "client", ca="ca", usage="clientAuth")
    # A CA directory as Go's CAPath reads it: every file, recursively, no c_rehash names.
    (folder / "ca-dir" / "nested").mkdir(parents=True)
    (folder / "ca-dir" / "other.pem").write_text((folder / "other-ca.pem").read_text())
    (folder / "ca-dir" / "nested" / "ours.crt").write_text((folder / "ca.pem").read_text())
    (folder / "other-ca-dir").mkdir()
    (folder / "other-ca-dir" / "other.pem").write_text((folder / "other-ca.pem").read_text())
    return Pki(folder)


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    name: str
    env: Callable[[Pki, str], dict[str, str]]  # (pki, https URL of the agent) -> variables
    server_cert: str = "server"
    verify_incoming: bool = False
    # For a refused connection: what the log line must say after "TLS handshake failed".
    refusal: str = ""


def _ca_file(pki: Pki, url: str) -> dict[str, str]:
    return {"CONSUL_HTTP_ADDR": url, "CONSUL_CACERT": pki.path("ca.pem")}


def _host_port(url: str) -> str:
    return url.removeprefix("https://")


WORKING = [
    Case("ca-file", _ca_file),
    Case("ca-directory", lambda pki, url: {"CONSUL_HTTP_ADDR": url,
                                           "CONSUL_CAPATH": pki.path("ca-dir")}),
    Case("client-certificate", lambda pki, url: {
        **_ca_file(pki, url), "CONSUL_CLIENT_CERT": pki.path("client.pem"),
        "CONSUL_CLIENT_KEY": pki.path("client.key")}, verify_incoming=True),
    Case("server-name", lambda pki, url: {**_ca_file(pki, url),
                                          "CONSUL_TLS_SERVER_NAME": f"{SERVER_NAME}:8501"},
         server_cert="server-name-only"),
    Case("ssl-flag-with-host-port", lambda pki, url: {
        "CONSUL_HTTP_ADDR": _host_port(url), "CONSUL_HTTP_SSL": "true",
        "CONSUL_CACERT": pki.path("ca.pem")}),
]

REFUSED = [
    Case("wrong-ca", lambda pki, url: {"CONSUL_HTTP_ADDR": url,
                                       "CONSUL_CACERT": pki.path("other-ca.pem")},
         refusal=r"certificate verify failed"),
    Case("wrong-ca-directory", lambda pki, url: {"CONSUL_HTTP_ADDR": url,
                                                 "CONSUL_CAPATH": pki.path("other-ca-dir")},
         refusal=r"certificate verify failed"),
    Case("system-roots-only", lambda pki, url: {"CONSUL_HTTP_ADDR": url},
         refusal=r"certificate verify failed"),
    Case("wrong-server-name", lambda pki, url: {**_ca_file(pki, url),
                                                "CONSUL_TLS_SERVER_NAME": "wrong.test"},
         refusal=r"hostname 'wrong\.test' doesn't match"),
    Case("ip-not-in-certificate", _ca_file, server_cert="server-name-only",
         refusal=r"certificate verify failed: IP address mismatch"),
    # TLS 1.3 clients finish the handshake before the server checks them, so the server's
    # alert can lose the race with its closing the connection: then only a hint is possible.
    Case("client-certificate-missing", _ca_file, verify_incoming=True,
         refusal=r"(alert certificate required|may require a client certificate: "
                 r"set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY)"),
    # The CA file wins: the right CA in the directory does not rescue a wrong CA file.
    Case("ca-file-wins-over-directory", lambda pki, url: {
        "CONSUL_HTTP_ADDR": url, "CONSUL_CACERT": pki.path("other-ca.pem"),
        "CONSUL_CAPATH": pki.path("ca-dir")}, refusal=r"certificate verify failed"),
]


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[SecretVault]:
    with scanned_for_tokens(tmp_path) as secrets:
        yield secrets


@pytest.fixture
def make_consul(pki: Pki) -> Iterator[Callable[[Case], ConsulDouble]]:
    doubles: list[ConsulDouble] = []

    def make(case: Case) -> ConsulDouble:
        tls = TlsConfig(certfile=pki.path(f"{case.server_cert}.pem"),
                        keyfile=pki.path(f"{case.server_cert}.key"),
                        cafile=pki.path("ca.pem"), verify_incoming=case.verify_incoming)
        double = ConsulDouble(nodes=("n1",), session_ttl_min=1.0, rpc_hold_timeout=0.5, tls=tls)
        double.start()
        doubles.append(double)
        return double

    try:
        yield make
    finally:
        for double in doubles:
            double.close()


def tls_failures(sidecar: Sidecar, refusal: str, message: str = "") -> list[str]:
    """Log lines reporting a failed TLS handshake for `refusal`, optionally of one message."""
    pattern = re.compile(r"TLS handshake failed: .*" + refusal)
    return [
        line
        for line in log_lines(sidecar.logs())
        if pattern.search(line) and f'msg="{message}' in line
    ]


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", WORKING, ids=lambda case: case.name)
def test_verified_tls_elects(case: Case, pki: Pki, make_consul: Callable[[Case], ConsulDouble],
                             vault: SecretVault, tmp_path: Path) -> None:
    consul = make_consul(case)
    url = consul.node_addr("n1")
    assert url.startswith("https://")
    env = {**case.env(pki, url), "CONSUL_HTTP_TOKEN": vault.new("tls")}
    with stopped_at_exit([]) as sidecars, role_endpoints_checked(lambda: sidecars) as probe:
        sidecar = start_sidecar(tmp_path, case.name, url, **env)
        sidecars.append(sidecar)
        probe.expect(sidecar, "Leader", timeout=5.0)
        assert ConsulView.of(consul).holder(KV_PATH) == sidecar.status()["session"]
    assert not log_lines(sidecar.logs(), "error")
    assert "TLS handshake failed" not in sidecar.logs()


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case.name)
def test_unverified_server_is_refused(case: Case, pki: Pki,
                                      make_consul: Callable[[Case], ConsulDouble],
                                      vault: SecretVault, tmp_path: Path) -> None:
    consul = make_consul(case)
    url = consul.node_addr("n1")
    env = {**case.env(pki, url), "CONSUL_HTTP_TOKEN": vault.new("tls")}
    with stopped_at_exit([]) as sidecars, role_endpoints_checked(lambda: sidecars) as probe:
        sidecar = start_sidecar(tmp_path, case.name, url, **env)
        sidecars.append(sidecar)
        # Refused twice: the first attempt and a retry (publishing the replica role comes
        # first; without it no session is asked for).
        wait_for(lambda: len(tls_failures(sidecar, case.refusal)) >= 2, 8.0,
                 f"two requests failing with 'TLS handshake failed: ...{case.refusal}'")
        probe.sample(sidecar)
        assert "Leader" not in probe.states_seen()
        assert state_of(sidecar) == "NoSession"
        assert transitions_to(sidecar, "Leader") == 0
        assert consul.request_count() == 0, (
            f"the stand-in answered requests over an unverified connection: {consul.stats()}"
        )
    failures = tls_failures(sidecar, case.refusal)
    assert [line for line in failures if " level=error " in line], (
        f"the TLS failure is logged, but never at level error: {failures[0][:300]}"
    )
