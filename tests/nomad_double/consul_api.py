"""The Consul calls a Nomad client makes: its agent's HTTP API and the ACL control.

nomad: command/agent/consul/service_client.go (AgentAPI: ServicesWithFilterOpts,
ChecksWithFilterOpts, ServiceRegisterOpts, ServiceDeregisterOpts, CheckRegisterOpts,
CheckDeregisterOpts, UpdateTTLOpts, Self). Tokens travel in `X-Consul-Token` as the Go
client sends them; an empty token means the Nomad agent's own.
"""

from __future__ import annotations

import threading
from typing import Any

import requests

DEFAULT_REQUEST_TIMEOUT = 2.0


class ConsulError(Exception):
    """A Consul call that failed: transport error or a status other than 200."""


class AgentClient:
    """One Consul agent, called with the Nomad agent's token unless a call names another.

    Thread-safe: each thread keeps its own HTTP session."""

    def __init__(self, address: str, agent_token: str | None = None,
                 timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.address = address.rstrip("/")
        self.agent_token = agent_token
        self.timeout = timeout
        self._local = threading.local()
        self._answered = 0
        self._answered_lock = threading.Lock()

    @property
    def answered(self) -> int:
        """Requests the agent answered (any status): those its request statistics count, so
        a benchmark can tell Nomad's own load from its tasks'."""
        with self._answered_lock:
            return self._answered

    # -- reads (always the agent's own token) ------------------------------------------

    def self_info(self) -> dict[str, Any]:
        return self._json("GET", "/v1/agent/self")

    def services(self) -> dict[str, dict[str, Any]]:
        return self._json("GET", "/v1/agent/services")

    def checks(self) -> dict[str, dict[str, Any]]:
        return self._json("GET", "/v1/agent/checks")

    def service(self, service_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/agent/service/{service_id}")

    # -- writes ---------------------------------------------------------------------------

    def register_service(self, body: dict[str, Any], replace_existing_checks: bool,
                         token: str | None) -> None:
        params = {"replace-existing-checks": "true"} if replace_existing_checks else None
        self._call("PUT", "/v1/agent/service/register", token, json=body, params=params)

    def deregister_service(self, service_id: str) -> None:
        self._call("PUT", f"/v1/agent/service/deregister/{service_id}", None)

    def register_check(self, body: dict[str, Any], token: str | None) -> None:
        self._call("PUT", "/v1/agent/check/register", token, json=body)

    def deregister_check(self, check_id: str) -> None:
        self._call("PUT", f"/v1/agent/check/deregister/{check_id}", None)

    def update_ttl(self, check_id: str, status: str, output: str, token: str | None) -> None:
        body = {"Status": status, "Output": output}
        self._call("PUT", f"/v1/agent/check/update/{check_id}", token, json=body)

    # -- plumbing -------------------------------------------------------------------------

    def _json(self, method: str, path: str) -> dict[str, Any]:
        reply = self._call(method, path, None)
        try:
            body = reply.json()
        except ValueError as error:
            raise ConsulError(f"{method} {path}: not JSON: {error}") from None
        if not isinstance(body, dict):
            raise ConsulError(f"{method} {path}: not a JSON object")
        return body

    def _call(self, method: str, path: str, token: str | None, **kwargs: Any
              ) -> requests.Response:
        chosen = token or self.agent_token
        headers = {"X-Consul-Token": chosen} if chosen else {}
        try:
            reply = self._session().request(method, self.address + path, headers=headers,
                                            timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise ConsulError(f"{method} {path}: {error}") from None
        with self._answered_lock:
            self._answered += 1
        if reply.status_code != 200:
            raise ConsulError(f"{method} {path}: {reply.status_code} {reply.text.strip()[:200]}")
        return reply

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session


class AclControl:
    """Creates and revokes tokens through the stand-in's control API (`POST /acl/tokens`,
    `DELETE /acl/tokens/<secret>`), standing in for Consul's JWT login and token delete
    (client/allocrunner/consul_hook.go, getConsulToken / revokeTokens)."""

    def __init__(self, control_address: str, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.address = control_address.rstrip("/")
        self.timeout = timeout

    def create(self, secret: str, rules: str) -> None:
        self._call("POST", "/acl/tokens", {"secret": secret, "rules": rules})

    def revoke(self, secret: str) -> None:
        self._call("DELETE", f"/acl/tokens/{secret}", None)

    def _call(self, method: str, path: str, body: dict[str, str] | None) -> None:
        try:
            reply = requests.request(method, self.address + path, json=body,
                                     timeout=self.timeout)
        except requests.RequestException as error:
            raise ConsulError(f"ACL control {method} {path}: {error}") from None
        if reply.status_code != 200:
            raise ConsulError(f"ACL control {method} {path}: {reply.status_code} {reply.text}")
