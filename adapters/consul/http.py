"""`ConsulPort` over the agent's HTTP API: builds each request, and reads each answer into the
port's types, checking its shape.

Anything Consul answers that does not fit what consul-semantics.md documents (a list where an
object belongs, a missing ID, a string where a number belongs, a body that is not JSON) is a
`MalformedAnswer`: no answer at all, as far as the adapters are concerned. Errors are matched
only on texts Consul sends (each quoted from its source below), as substrings, because they
arrive with prefixes such as `rpc error making call: ` or `apply failed: `.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from consul_leader.adapters.consul.errors import (
    CheckNotUsable,
    ConsulError,
    InvalidSession,
    MalformedAnswer,
    SettingRefused,
)
from consul_leader.adapters.consul.port import (
    AgentService,
    HealthEntry,
    HealthRead,
    KeyRead,
    ServiceRead,
    ServicesRead,
    SessionSpec,
)
from consul_leader.adapters.consul.transport import Reply
from consul_leader.fsm.observation import KeyObservation

# agent/consul/state/session.go validateSessionChecksTxn.
_MISSING_CHECK = re.compile(r"Missing check '(?P<id>[^']*)' registration")
_CRITICAL_CHECK = re.compile(r"Check '(?P<id>[^']*)' is in critical state")
# agent/consul/session_endpoint.go Apply.
_BAD_TTL = "Invalid Session TTL"
# agent/consul/state/kvs.go kvsLockTxn: `invalid session %#v`.
_INVALID_SESSION = "invalid session"
# Before Consul 1.11 a pass of an unknown check was a 500: `Unknown check %q` (agent/acl.go
# vetCheckUpdate, with ACLs on) or `CheckID %q does not have associated TTL` (agent.go
# updateTTLCheck); now it is a 404 `Unknown check ID %q...`.
_UNKNOWN_CHECK = ("Unknown check", "does not have associated TTL")
# agent.go addCheckLocked before the handler answered 404 itself: `ServiceID %q does not exist`.
_UNKNOWN_SERVICE = "does not exist"
_FILTERED = "X-Consul-Results-Filtered-By-ACLs"


class Transport(Protocol):
    """What `adapters.consul.transport.ConsulClient` offers."""

    def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
             data: bytes | None = None, json_body: Any = None, timeout: float,
             allow: Collection[int] = ()) -> Reply: ...


class HttpConsul:
    """The Consul port over one agent's HTTP API."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    # -- sessions -----------------------------------------------------------------------

    def session_create(self, spec: SessionSpec, *, timeout: float) -> str:
        body: dict[str, Any] = {
            "Name": spec.name, "TTL": spec.ttl, "LockDelay": spec.lock_delay,
            "Behavior": "release", "NodeChecks": list(spec.node_checks),
        }
        if spec.service_checks:
            body["ServiceChecks"] = [{"ID": check} for check in spec.service_checks]
        if spec.node:
            body["Node"] = spec.node
        try:
            reply = self._call("PUT", "/v1/session/create", json_body=body, timeout=timeout)
        except ConsulError as exc:
            raise _create_refusal(exc) or exc from None
        answer = _object(reply)
        session = answer.get("ID")
        if not isinstance(session, str) or not session:
            raise _malformed(reply, "no session ID")
        return session

    def session_renew(self, session: str, *, timeout: float) -> bool:
        reply = self._call("PUT", f"/v1/session/renew/{session}", timeout=timeout,
                           allow=(404,))
        if reply.status == 404:
            return False
        # A renew's 200 carries the session back as a one-element array (§1.3).
        answer = _json(reply)
        if not (isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], dict)
                and answer[0].get("ID") == session):
            raise _malformed(reply, "the renew answer does not describe our session")
        return True

    def session_destroy(self, session: str, *, timeout: float) -> None:
        self._call("PUT", f"/v1/session/destroy/{session}", timeout=timeout)

    def session_exists(self, session: str, *, timeout: float) -> bool:
        reply = self._call("GET", f"/v1/session/info/{session}", timeout=timeout)
        answer = _json(reply)
        if not isinstance(answer, list) and answer is not None:
            raise _malformed(reply, "session info is not a list")
        return any(isinstance(item, dict) and item.get("ID") == session
                   for item in answer or [])

    def session_gone(self, session: str, *, timeout: float) -> bool:
        reply = self._call("GET", f"/v1/session/info/{session}", timeout=timeout)
        answer = _json(reply)
        if not isinstance(answer, list) and answer is not None:
            raise _malformed(reply, "session info is not a list")
        # ACLs drop sessions the token may not read and say so: then absence proves nothing.
        return not answer and not _filtered(reply)

    # -- KV -----------------------------------------------------------------------------

    def kv_get(self, key: str, *, timeout: float, index: int = 0, wait: str | None = None,
               consistent: bool = False) -> KeyRead:
        params: dict[str, str] = {}
        if index:
            params["index"] = str(index)
        if index and wait:
            params["wait"] = wait
        if consistent:
            params["consistent"] = ""
        reply = self._call("GET", f"/v1/kv/{key}", params=params or None, timeout=timeout,
                           allow=(404,))
        if reply.status == 404:
            return KeyRead(KeyObservation(exists=False, modify_index=reply.index or 0),
                           reply.index)
        return KeyRead(_key_observation(reply), reply.index)

    def kv_acquire(self, key: str, session: str, value: bytes, *, timeout: float) -> bool:
        try:
            reply = self._call("PUT", f"/v1/kv/{key}", params={"acquire": session}, data=value,
                               timeout=timeout)
        except ConsulError as exc:
            if exc.status is not None and exc.status >= 500 and _INVALID_SESSION in exc.body:
                raise InvalidSession("Consul does not know the session", method=exc.method,
                                     endpoint=exc.endpoint, status=exc.status,
                                     body=exc.body) from None
            raise
        return _boolean(reply)

    def kv_release(self, key: str, session: str, value: bytes, *, timeout: float) -> bool:
        reply = self._call("PUT", f"/v1/kv/{key}", params={"release": session}, data=value,
                           timeout=timeout)
        return _boolean(reply)

    def kv_put(self, key: str, value: bytes, *, timeout: float) -> bool:
        return _boolean(self._call("PUT", f"/v1/kv/{key}", data=value, timeout=timeout))

    # -- agent services and checks ------------------------------------------------------

    def agent_service(self, service_id: str, *, timeout: float, hash: str | None = None,
                      wait: str | None = None) -> ServiceRead:
        params = ({"hash": hash, "wait": wait} if wait else {"hash": hash}) if hash else None
        reply = self._call("GET", f"/v1/agent/service/{service_id}", params=params,
                           timeout=timeout, allow=(404,))
        if reply.status == 404:
            return ServiceRead(None, None)
        return ServiceRead(_service(_object(reply), reply), reply.content_hash)

    def agent_services(self, *, timeout: float) -> ServicesRead:
        reply = self._call("GET", "/v1/agent/services", timeout=timeout)
        answer = _object(reply)
        services = {}
        for service_id, entry in answer.items():
            if not isinstance(entry, dict):
                raise _malformed(reply, "a service entry is not an object")
            services[service_id] = _service(entry, reply, default_id=service_id)
        return ServicesRead(services, _filtered(reply))

    def service_register(self, registration: Mapping[str, Any], *, timeout: float,
                         replace_existing_checks: bool = False) -> None:
        params = {"replace-existing-checks": "true"} if replace_existing_checks else None
        self._call("PUT", "/v1/agent/service/register", params=params,
                   json_body=dict(registration), timeout=timeout)

    def service_deregister(self, service_id: str, *, timeout: float) -> bool:
        reply = self._call("PUT", f"/v1/agent/service/deregister/{service_id}",
                           timeout=timeout, allow=(404,))
        return reply.status != 404

    def check_register(self, check: Mapping[str, Any], *, timeout: float) -> bool:
        try:
            reply = self._call("PUT", "/v1/agent/check/register", json_body=dict(check),
                               timeout=timeout, allow=(404,))
        except ConsulError as exc:
            if exc.status == 500 and "ServiceID" in exc.body and _UNKNOWN_SERVICE in exc.body:
                return False
            raise
        return reply.status != 404

    def check_deregister(self, check_id: str, *, timeout: float) -> bool:
        reply = self._call("PUT", f"/v1/agent/check/deregister/{check_id}", timeout=timeout,
                           allow=(404,))
        return reply.status != 404

    def check_pass(self, check_id: str, note: str, *, timeout: float) -> bool:
        try:
            reply = self._call("PUT", f"/v1/agent/check/pass/{check_id}",
                               params={"note": note}, timeout=timeout, allow=(404,))
        except ConsulError as exc:
            if exc.status == 500 and any(text in exc.body for text in _UNKNOWN_CHECK):
                return False
            raise
        return reply.status != 404

    # -- health and the agent -----------------------------------------------------------

    def health_service(self, name: str, *, timeout: float, index: int = 0,
                       wait: str | None = None) -> HealthRead:
        params = {"index": str(index), "wait": wait} if index and wait else None
        reply = self._call("GET", f"/v1/health/service/{name}", params=params,
                           timeout=timeout)
        answer = _json(reply)
        if not isinstance(answer, list):
            raise _malformed(reply, "health answer is not a list")
        return HealthRead(tuple(_health_entry(entry, reply) for entry in answer),
                          _filtered(reply), reply.index)

    def agent_node_name(self, *, timeout: float) -> str:
        reply = self._call("GET", "/v1/agent/self", timeout=timeout)
        config = _object(reply).get("Config")
        name = config.get("NodeName") if isinstance(config, dict) else None
        if not isinstance(name, str) or not name:
            raise _malformed(reply, "no Config.NodeName")
        return name

    # -- the catalog --------------------------------------------------------------------

    def catalog_deregister(self, node: str, service_id: str, *, timeout: float) -> None:
        self._call("PUT", "/v1/catalog/deregister",
                   json_body={"Node": node, "ServiceID": service_id}, timeout=timeout)

    # -- helpers ------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
              data: bytes | None = None, json_body: Any = None, timeout: float,
              allow: Collection[int] = ()) -> Reply:
        return self._transport.call(method, path, params=params, data=data,
                                    json_body=json_body, timeout=timeout, allow=allow)


def _create_refusal(exc: ConsulError) -> ConsulError | None:
    """The refusals of `session/create` we act on by name; None for any other error."""
    if exc.status is None or exc.status < 500:
        return None
    for pattern, problem in ((_MISSING_CHECK, "missing"), (_CRITICAL_CHECK, "critical")):
        found = pattern.search(exc.body)
        if found:
            return CheckNotUsable(found.group("id"), problem, exc)
    if _BAD_TTL in exc.body:
        return SettingRefused("CONSUL_LEADER_TTL", exc)
    return None


def _malformed(reply: Reply, what: str) -> MalformedAnswer:
    return MalformedAnswer(f"unexpected answer: {what}", method=reply.method,
                           endpoint=reply.endpoint, status=reply.status)


def _json(reply: Reply) -> Any:
    return reply.json()  # MalformedAnswer when not JSON


def _object(reply: Reply) -> dict[str, Any]:
    answer = _json(reply)
    if not isinstance(answer, dict):
        raise _malformed(reply, "not a JSON object")
    return answer


def _boolean(reply: Reply) -> bool:
    answer = _json(reply)
    if not isinstance(answer, bool):
        raise _malformed(reply, "not true or false")
    return answer


def _filtered(reply: Reply) -> bool:
    return reply.headers.get(_FILTERED, "").lower() == "true"


def _index(value: Any) -> int:
    """A Raft index or counter: a non-negative integer (JSON numbers only, bools are not)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("not a non-negative integer")
    return value


def _key_observation(reply: Reply) -> KeyObservation:
    entries = _json(reply)
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise _malformed(reply, "KV answer is not a list of entries")
    entry: dict[str, Any] = entries[0]
    raw, session = entry.get("Value"), entry.get("Session")
    try:
        value = base64.b64decode(raw, validate=True) if raw is not None else None
        if session is not None and not isinstance(session, str):
            raise TypeError("Session is not a string")
        return KeyObservation(
            exists=True, session=session or None, lock_index=_index(entry.get("LockIndex")),
            modify_index=_index(entry.get("ModifyIndex")), value=value,
            flags=_index(entry.get("Flags")),
        )
    except (TypeError, ValueError, binascii.Error) as exc:
        raise _malformed(reply, f"KV entry: {exc}") from None


def _service(entry: Mapping[str, Any], reply: Reply, default_id: str = "") -> AgentService:
    """The agent's view of one service, checked for the fields we use (§4.2)."""
    service_id = entry.get("ID", default_id)
    name = entry.get("Service")
    tags, meta = entry.get("Tags") or [], entry.get("Meta") or {}
    address, port = entry.get("Address") or "", entry.get("Port") or 0
    if not isinstance(service_id, str) or not service_id or not isinstance(name, str):
        raise _malformed(reply, "a service without an ID or name")
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise _malformed(reply, "service Tags is not a list of strings")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _malformed(reply, "service Meta is not a map of strings")
    if not isinstance(address, str) or isinstance(port, bool) or not isinstance(port, int):
        raise _malformed(reply, "service Address or Port of the wrong type")
    tagged = entry.get("TaggedAddresses")
    if tagged is not None and not (isinstance(tagged, dict) and all(
            isinstance(value, dict) for value in tagged.values())):
        raise _malformed(reply, "service TaggedAddresses is not a map of addresses")
    return AgentService(id=service_id, name=name, tags=tuple(tags), meta=dict(meta),
                        address=address, port=port, definition=dict(entry))


def _health_entry(entry: Any, reply: Reply) -> HealthEntry:
    if not isinstance(entry, dict):
        raise _malformed(reply, "a health entry is not an object")
    service, node, checks = entry.get("Service"), entry.get("Node"), entry.get("Checks") or []
    if not isinstance(service, dict) or not isinstance(service.get("ID"), str):
        raise _malformed(reply, "a health entry without a service ID")
    node_name = node.get("Node") if isinstance(node, dict) else None
    tags = service.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise _malformed(reply, "health entry Tags is not a list of strings")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise _malformed(reply, "health entry Checks is not a list of checks")
    meta = service.get("Meta") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _malformed(reply, "health entry Meta is not a map of strings")
    return HealthEntry(service_id=service["ID"], node=str(node_name or ""), tags=tuple(tags),
                       statuses=tuple(str(check.get("Status")) for check in checks),
                       meta=dict(meta),
                       check_ids=tuple(str(check.get("CheckID")) for check in checks))
