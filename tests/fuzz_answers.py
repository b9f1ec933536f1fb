"""Generated Consul answers for fuzzing the adapters in-process (seeded, so a failure repeats).

`FuzzedConsul` is a transport for the real `HttpConsul`: each request gets an answer that is
plausible for its endpoint most of the time, and otherwise wrong in the ways a broken proxy,
an old Consul or a bug would be wrong: another JSON type, fields missing or extra or of the
wrong type, a body that is not JSON or is cut short, odd statuses (1xx, 204, 3xx, 418, 599),
Consul's own error texts, no answer at all, and `X-Consul-Index` going backwards, missing,
zero or garbage. It keeps a ledger of what it answered, so a test can check that an adapter
claimed the lock only on an answer that showed it held.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from consul_leader.adapters.consul.errors import ConsulUnavailable
from consul_leader.adapters.consul.transport import Reply, endpoint_template, sort_answer

SESSIONS = ("s-ours", "s-other", "", None)
SERVICE_IDS = ("_nomad-task-a1-db-db-db", "_nomad-task-a2-db-db-db",
               "consul-leader-a1-_nomad-task-a1-db-db-db",
               "consul-leader-a2-_nomad-task-a2-db-db-db", "other")
ERROR_TEXTS = (
    "No cluster leader", "rpc error making call: No cluster leader",
    "Missing check 'consul-leader:lease:a1' registration", "Check 'x' is in critical state",
    'invalid session "s-ours"', 'Unknown check "x"', 'CheckID "x" does not have associated TTL',
    "Permission denied", "ACL not found", 'ServiceID "x" does not exist', "", "\x00\xff",
)
ODD_STATUSES = (100, 204, 301, 307, 400, 405, 418, 429, 502, 503, 599)


@dataclass
class Answered:
    """One request and the answer it got (None: the transport failed)."""

    method: str
    endpoint: str
    params: Mapping[str, str] | None
    status: int | None
    body: Any  # the decoded JSON, or None when not JSON
    sent: Any = None  # the JSON body of the request


@dataclass
class FuzzedConsul:
    """A transport answering every request with a generated answer."""

    seed: int
    clock: Callable[[], float]
    ours: str = "s-ours"
    ledger: list[Answered] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # when each request was sent
    rng: random.Random = field(init=False)
    index: int = 100
    # Share of health entries that are passing primaries naming a session (another sidecar's
    # instance), for fuzzing what a new leader does about them.
    other_primaries: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def answers(self) -> int:
        return len(self.ledger)

    def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
             data: bytes | None = None, json_body: Any = None, timeout: float,
             allow: Collection[int] = ()) -> Reply:
        endpoint = endpoint_template(method, path)
        rng = self.rng
        self.times.append(self.clock())
        if rng.random() < 0.03:
            self.ledger.append(Answered(method, endpoint, params, None, None, json_body))
            raise ConsulUnavailable("cannot reach Consul: connection refused", method=method,
                                    endpoint=endpoint)
        status = self._status()
        body = self._body(method, endpoint, params) if status == 200 else rng.choice(ERROR_TEXTS)
        content, decoded = self._encode(body)
        self.ledger.append(Answered(method, endpoint, params, status, decoded, json_body))
        return sort_answer(method, endpoint, status, self._headers(), content, allow)

    def last_key_read(self) -> Answered | None:
        for answered in reversed(self.ledger):
            if answered.endpoint == "/v1/kv/:key" and answered.method == "GET":
                return answered
        return None

    def last_acquire(self) -> Answered | None:
        for answered in reversed(self.ledger):
            if answered.method == "PUT" and answered.params and "acquire" in answered.params:
                return answered
        return None

    # -- generation -----------------------------------------------------------------------

    def _status(self) -> int:
        roll = self.rng.random()
        if roll < 0.70:
            return 200
        if roll < 0.78:
            return 404
        if roll < 0.86:
            return 500
        if roll < 0.90:
            return 403
        return self.rng.choice(ODD_STATUSES)

    def _headers(self) -> dict[str, str]:
        rng, headers = self.rng, {}
        roll = rng.random()
        if roll < 0.6:
            self.index += rng.randint(0, 3)
            headers["X-Consul-Index"] = str(self.index)
        elif roll < 0.75:
            headers["X-Consul-Index"] = str(max(0, self.index - rng.randint(1, 50)))  # backwards
        elif roll < 0.85:
            headers["X-Consul-Index"] = rng.choice(["0", "-1", "abc", "1e3", "", "\uff11\uff12"])
        if rng.random() < 0.7:
            headers["X-Consul-ContentHash"] = rng.choice(["h1", "h2", "h3", ""])
        if rng.random() < 0.05:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return headers

    def _body(self, method: str, endpoint: str, params: Mapping[str, str] | None) -> Any:
        plausible = self._plausible(method, endpoint, params)
        return self._corrupt(plausible) if self.rng.random() < 0.3 else plausible

    def _plausible(self, method: str, endpoint: str, params: Mapping[str, str] | None) -> Any:
        rng = self.rng
        if endpoint == "/v1/session/create":
            return {"ID": rng.choice(["s-ours", "s-new", ""])}
        if endpoint == "/v1/session/renew/:id":
            return [{"ID": rng.choice([self.ours, "s-other"]), "TTL": "3s"}]
        if endpoint == "/v1/session/info/:id":
            return [{"ID": self.ours}] if rng.random() < 0.5 else []
        if endpoint == "/v1/kv/:key":
            if method == "PUT":
                return rng.random() < 0.5
            return [self._kv_entry()]
        if endpoint == "/v1/agent/service/:id":
            return self._service(rng.choice(SERVICE_IDS))
        if endpoint == "/v1/agent/services":
            return {sid: self._service(sid) for sid in SERVICE_IDS if rng.random() < 0.6}
        if endpoint == "/v1/health/service/:name":
            return [self._health_entry(sid) for sid in SERVICE_IDS if rng.random() < 0.7]
        if endpoint == "/v1/agent/self":
            return {"Config": {"NodeName": rng.choice(["n1", "n2"])}}
        return "" if rng.random() < 0.8 else True  # writes answer an empty body

    def _kv_entry(self) -> dict[str, Any]:
        rng = self.rng
        entry: dict[str, Any] = {
            "Key": "consul-leader/db/lock", "LockIndex": rng.randint(0, 9),
            "ModifyIndex": rng.randint(0, 10**6), "CreateIndex": 1, "Flags": 0,
            "Value": rng.choice([base64.b64encode(b"v").decode(), None]),
        }
        session = rng.choice(SESSIONS)
        if session is not None:
            entry["Session"] = session
        return entry

    def _service(self, service_id: str) -> dict[str, Any]:
        rng = self.rng
        return {"ID": service_id, "Service": "db",
                "Tags": rng.sample(["v1", "primary", "replica", "PRIMARY"], rng.randint(0, 3)),
                "Meta": {"external-source": "nomad"}, "Port": 5432, "Address": "10.0.0.5",
                "ContentHash": "h1"}

    def _health_entry(self, service_id: str) -> dict[str, Any]:
        rng = self.rng
        if self.other_primaries and rng.random() < self.other_primaries:
            return {"Node": {"Node": rng.choice(["n1", "n2"])},
                    "Service": {"ID": service_id, "Tags": ["primary"],
                                "Meta": {"session": rng.choice(["s-other", "s-gone"])}},
                    "Checks": [{"CheckID": "app", "Status": "passing"}]}
        service: dict[str, Any] = {"ID": service_id,
                                   "Tags": rng.sample(["primary", "v1"], rng.randint(0, 2))}
        if rng.random() < 0.5:
            service["Meta"] = {"session": rng.choice(["s-other", "s-gone", ""])}
        return {"Node": {"Node": rng.choice(["n1", "n2"])}, "Service": service,
                "Checks": [{"CheckID": rng.choice(["serfHealth", "_node_maintenance", "app"]),
                            "Status": rng.choice(["passing", "critical", "warning"])}]}

    def _corrupt(self, value: Any, whole: bool = True) -> Any:
        rng = self.rng
        kind = rng.randrange(7 if whole else 5)
        if kind == 0:
            return rng.choice([0, -1, 2**70, "x", [], {}, None, True, 1.5])
        if kind == 1 and isinstance(value, dict) and value:
            value = dict(value)
            value.pop(rng.choice(list(value)))
            return value
        if kind == 2 and isinstance(value, dict):
            return {**value, "Unexpected": rng.choice([1, "x", None])}
        if kind == 3 and isinstance(value, dict) and value:
            key = rng.choice(list(value))
            return {**value, key: rng.choice([1, "1", None, [], {}, False, -5])}
        if kind == 4 and isinstance(value, list) and value and isinstance(value[0], dict):
            return [self._corrupt(value[0], whole=False), *value[1:]]
        if kind == 5:
            return _Raw(rng.choice([b"", b"{", b"[1,", b"not json", b"\xff\xfe", b"nul"]))
        return [value] if rng.random() < 0.5 else value

    def _encode(self, body: Any) -> tuple[bytes, Any]:
        if isinstance(body, _Raw):
            return body.content, None
        if isinstance(body, str) and self.rng.random() < 0.5:
            return body.encode("utf-8", "surrogateescape"), None  # a plain-text body
        content = json.dumps(body).encode()
        if self.rng.random() < 0.02:
            return content[: len(content) // 2], None  # cut short
        return content, body


@dataclass(frozen=True)
class _Raw:
    content: bytes


def busiest_second(times: list[float]) -> int:
    """The most requests sent within any one second of fake time."""
    counts: dict[int, int] = {}
    for at in times:
        counts[int(at)] = counts.get(int(at), 0) + 1
    return max(counts.values(), default=0)

