"""Fixtures for the conformance tests: a Consul to talk to, real or the double.

By default every test runs against a fresh ConsulDouble (nodes n1 and n2,
session_ttl_min=1s, rpc_hold_timeout=0.2s) and talks to node n1. With
CONSUL_TEST_HTTP_ADDR set (e.g. http://127.0.0.1:8500 of a `consul agent -dev`),
tests marked `real_consul` run against that agent instead and every other test
is skipped; those tests use TTLs of at least 10s, never wait for an expiry,
work under a unique key prefix, and clean up what they create.

Fixtures:
* `consul`: a ConsulTarget (`.addr`, `.double` or None, request helpers).
* `double`: the ConsulDouble behind `consul`; skips the test against real Consul.
* `wait_until`: poll a condition with a deadline (never a bare sleep).
* `tls_files`: PEM files made with the openssl CLI: a CA, a server certificate for
  127.0.0.1/localhost and a client certificate from it, and a second ("rogue") CA
  with its own client certificate.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.consul_double import ConsulDouble

REAL_CONSUL_ADDR = os.environ.get("CONSUL_TEST_HTTP_ADDR", "").rstrip("/")
DOUBLE_NODES = ("n1", "n2")
DOUBLE_SESSION_TTL_MIN = 1.0
DOUBLE_RPC_HOLD_TIMEOUT = 0.2
HTTP_TIMEOUT = 30.0


class ConsulTarget:
    """One Consul agent under test, with small request helpers and cleanup."""

    def __init__(self, addr: str, double: ConsulDouble | None) -> None:
        self.addr = addr
        self.double = double
        self.http = requests.Session()
        self.prefix = f"conformance/{uuid.uuid4().hex[:12]}/"
        self._sessions: list[str] = []
        self._services: list[str] = []
        self._checks: list[str] = []
        self.node = self.get("/v1/agent/self").json()["Config"]["NodeName"]

    @property
    def session_ttl_min(self) -> str:
        """session_ttl_min as Consul prints it in errors (Go duration)."""
        return "1s" if self.double is not None else "10s"

    def key(self, name: str) -> str:
        """A key unique to this test (so tests against a shared Consul never collide)."""
        return self.prefix + name

    def unique(self, name: str) -> str:
        """A service or check ID unique to this test, e.g. `db-3f2a9c...`."""
        return f"{name}-{self.prefix.split('/')[1]}"

    # -- HTTP --------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return self.http.get(self.addr + path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return self.http.put(self.addr + path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return self.http.delete(self.addr + path, **kwargs)

    # -- fixtures of state -------------------------------------------------

    def create_session(self, **body: Any) -> str:
        response = self.put("/v1/session/create", json=body)
        assert response.status_code == 200, response.text
        session_id: str = response.json()["ID"]
        self._sessions.append(session_id)
        return session_id

    def session_info(self, session_id: str) -> list[dict[str, Any]]:
        response = self.get(f"/v1/session/info/{session_id}")
        assert response.status_code == 200, response.text
        info: list[dict[str, Any]] = response.json()
        return info

    def kv_entry(self, key: str) -> dict[str, Any] | None:
        response = self.get(f"/v1/kv/{key}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        entry: dict[str, Any] = response.json()[0]
        return entry

    def register_ttl_check(self, check_id: str, status: str = "passing") -> str:
        """A node-level TTL check on this agent (long TTL: it never expires in a test)."""
        check_id = self.unique(check_id)
        body = {"ID": check_id, "Name": check_id, "TTL": "10m", "Status": status}
        response = self.put("/v1/agent/check/register", json=body)
        assert response.status_code == 200, response.text
        self._checks.append(check_id)
        return check_id

    def register_check(self, definition: dict[str, Any]) -> None:
        response = self.put("/v1/agent/check/register", json=definition)
        assert response.status_code == 200, response.text
        self._checks.append(_field(definition, "ID") or _field(definition, "Name"))

    def track_service(self, service_id: str) -> None:
        """Deregister `service_id` at cleanup (it was registered by another client)."""
        self._services.append(service_id)

    def register_service(self, definition: dict[str, Any]) -> None:
        response = self.put("/v1/agent/service/register", json=definition)
        assert response.status_code == 200, response.text
        self._services.append(_field(definition, "ID") or _field(definition, "Name"))

    def assert_error(self, response: requests.Response, status: int, text: str) -> None:
        """Consul's code and plain-text body. Real Consul may prefix `rpc error making
        call: ` or `apply failed: ` (§0), so only the double is held to the exact text."""
        assert response.status_code == status, (response.status_code, response.text)
        if self.double is not None:
            assert response.text == text
        else:
            assert text in response.text

    def cleanup(self) -> None:
        for session_id in self._sessions:
            self.put(f"/v1/session/destroy/{session_id}")
        for service_id in self._services:
            self.put(f"/v1/agent/service/deregister/{service_id}")
        for check_id in self._checks:
            self.put(f"/v1/agent/check/deregister/{check_id}")
        self.delete(f"/v1/kv/{self.prefix}?recurse")
        self.http.close()


def _field(body: dict[str, Any], name: str) -> str:
    """A body field matched case-insensitively, as Consul's decoder matches it."""
    return next((str(value) for key, value in body.items() if key.lower() == name.lower()), "")


@pytest.fixture
def consul(request: pytest.FixtureRequest) -> Iterator[ConsulTarget]:
    if REAL_CONSUL_ADDR:
        if request.node.get_closest_marker("real_consul") is None:
            pytest.skip("needs the Consul double (CONSUL_TEST_HTTP_ADDR is set)")
        target = ConsulTarget(REAL_CONSUL_ADDR, None)
        try:
            yield target
        finally:
            target.cleanup()
        return
    with ConsulDouble(
        nodes=DOUBLE_NODES,
        session_ttl_min=DOUBLE_SESSION_TTL_MIN,
        rpc_hold_timeout=DOUBLE_RPC_HOLD_TIMEOUT,
    ) as double:
        target = ConsulTarget(double.node_addr(DOUBLE_NODES[0]), double)
        try:
            yield target
        finally:
            target.http.close()


@pytest.fixture
def double(consul: ConsulTarget) -> ConsulDouble:
    if consul.double is None:
        pytest.skip("needs the Consul double")
    return consul.double


Condition = Callable[[], Any]
WaitUntil = Callable[..., Any]


def _wait_until(condition: Condition, timeout: float = 10.0, interval: float = 0.02,
                message: str = "condition") -> Any:
    """Poll until `condition()` is truthy (returning it), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def wait_until() -> WaitUntil:
    return _wait_until


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("conformance-tls")
    files: dict[str, str] = {}
    for ca in ("ca", "rogue-ca"):
        files.update(_make_ca(directory, ca))
    files.update(_make_leaf(directory, "server", "ca",
                            "subjectAltName=IP:127.0.0.1,DNS:localhost"))
    files.update(_make_leaf(directory, "client", "ca", "extendedKeyUsage=clientAuth"))
    files.update(_make_leaf(directory, "rogue-client", "rogue-ca",
                            "extendedKeyUsage=clientAuth"))
    return files


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _make_ca(directory: Path, name: str) -> dict[str, str]:
    pem, key = str(directory / f"{name}.pem"), str(directory / f"{name}.key")
    _openssl("req", "-x509", *_EC_KEY, "-keyout", key, "-out", pem, "-days", "1",
             "-subj", f"/CN=conformance-{name}")
    return {f"{name}.pem": pem, f"{name}.key": key}


def _make_leaf(directory: Path, name: str, ca: str, extension: str) -> dict[str, str]:
    pem, key = str(directory / f"{name}.pem"), str(directory / f"{name}.key")
    csr, extfile = directory / f"{name}.csr", directory / f"{name}.ext"
    extfile.write_text(extension + "\n")
    _openssl("req", *_EC_KEY, "-keyout", key, "-out", str(csr), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(directory / f"{ca}.pem"),
             "-CAkey", str(directory / f"{ca}.key"), "-CAcreateserial", "-out", pem,
             "-days", "1", "-extfile", str(extfile))
    return {f"{name}.pem": pem, f"{name}.key": key}


def _openssl(*arguments: str) -> None:
    subprocess.run(["openssl", *arguments], check=True, capture_output=True, timeout=60)
