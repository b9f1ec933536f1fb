"""The typed Consul port: every call the adapters make to Consul, and what each answers.

Adapters depend on `ConsulPort` only, never on HTTP: `adapters.consul.http.HttpConsul` is the
implementation over the agent's HTTP API, and the unit tests use a strict fake. The contract,
for every method:

* a *semantic* answer is a return value (`False` for "Consul does not know that session /
  check / service", `None` for "no such key"...);
* "Consul could not answer" raises `ConsulUnavailable` (an answer of the wrong shape is
  `MalformedAnswer`, one of them), "Consul said no" raises `ConsulDenied` (403) or
  `ConsulRejected` (another 4xx), and the few refusals the adapters act on by name have their
  own errors (`CheckNotUsable`, `SettingRefused`, `InvalidSession`). Nothing else escapes.
* `timeout` bounds the request; a blocking read (`index`/`hash` with `wait`) returns when what
  it watches changes or the wait runs out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from consul_leader.adapters.consul.errors import (
    CheckNotUsable,
    ConsulDenied,
    ConsulError,
    ConsulRejected,
    ConsulUnavailable,
    InvalidSession,
    MalformedAnswer,
    SettingRefused,
    TlsError,
    log_level,
)
from consul_leader.fsm.observation import KeyObservation

__all__ = [
    "AgentService",
    "CheckNotUsable",
    "ConsulDenied",
    "ConsulError",
    "ConsulPort",
    "ConsulRejected",
    "ConsulUnavailable",
    "HealthEntry",
    "HealthRead",
    "InvalidSession",
    "KeyRead",
    "MalformedAnswer",
    "ServiceRead",
    "ServicesRead",
    "SessionSpec",
    "SettingRefused",
    "TlsError",
    "log_level",
]

PASSING = "passing"
CRITICAL = "critical"


@dataclass(frozen=True)
class SessionSpec:
    """What `session/create` is asked for (consul-semantics §1.1)."""

    name: str
    ttl: str  # Go duration text, as sent
    lock_delay: str
    node: str | None = None  # None: the agent's own node
    service_checks: tuple[str, ...] = ()  # check IDs on the session's node it binds to
    node_checks: tuple[str, ...] = ("serfHealth",)


@dataclass(frozen=True)
class KeyRead:
    """One read of a key: what it holds, and the index to block on next (None when the
    answer carried no usable `X-Consul-Index`)."""

    observation: KeyObservation
    index: int | None


@dataclass(frozen=True)
class AgentService:
    """One service as the local agent holds it (`/v1/agent/service/:id`)."""

    id: str
    name: str
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    address: str = ""
    port: int = 0
    # The whole answer as Consul gave it, for a registration that must keep every field.
    definition: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceRead:
    """A service (None: not registered on this agent) and its content hash to block on."""

    service: AgentService | None
    content_hash: str | None


@dataclass(frozen=True)
class ServicesRead:
    """Every service of the local agent the token may read; `filtered` when ACLs hid some."""

    services: Mapping[str, AgentService]
    filtered: bool = False


@dataclass(frozen=True)
class HealthEntry:
    """One instance of a service with the status of every check that decides `?passing`
    (node checks such as serfHealth included)."""

    service_id: str
    node: str
    tags: tuple[str, ...]
    statuses: tuple[str, ...]
    meta: Mapping[str, str] = field(default_factory=dict)  # the instance's Meta (issue 12)
    check_ids: tuple[str, ...] = ()  # of the same checks, in the same order

    @property
    def critical_checks(self) -> tuple[str, ...]:
        """The checks that make this instance critical (what an alias check of it sees,
        node checks such as `_node_maintenance` included)."""
        return tuple(check_id for check_id, status in zip(self.check_ids, self.statuses,
                                                          strict=False)
                     if status == CRITICAL)

    @property
    def passing(self) -> bool:
        return all(status == PASSING for status in self.statuses)

    def tagged(self, label: str) -> bool:
        """As `?tag=` matches (case-insensitively, consul-semantics §5)."""
        return label.lower() in (tag.lower() for tag in self.tags)


@dataclass(frozen=True)
class HealthRead:
    entries: tuple[HealthEntry, ...]
    filtered: bool = False  # X-Consul-Results-Filtered-By-ACLs: instances were left out
    index: int | None = None  # X-Consul-Index, to block on next


class ConsulPort(Protocol):
    """The calls the adapters make. See the module docstring for the error contract."""

    # Sessions.
    def session_create(self, spec: SessionSpec, *, timeout: float) -> str:
        """The new session's ID. `CheckNotUsable` when a bound check is missing or critical,
        `SettingRefused` when Consul refuses the TTL."""
        ...

    def session_renew(self, session: str, *, timeout: float) -> bool:
        """True when Consul renewed `session`; False when it no longer knows it (404)."""
        ...

    def session_destroy(self, session: str, *, timeout: float) -> None: ...

    def session_exists(self, session: str, *, timeout: float) -> bool:
        """Whether Consul still knows `session` (`/v1/session/info`)."""
        ...

    def session_gone(self, session: str, *, timeout: float) -> bool:
        """True only when `/v1/session/info` answers an empty list that ACLs did not cut
        down: proof that the session no longer exists (False when it exists, or when the
        answer may have hidden it)."""
        ...

    # The KV store.
    def kv_get(self, key: str, *, timeout: float, index: int = 0, wait: str | None = None,
               consistent: bool = False) -> KeyRead: ...

    def kv_acquire(self, key: str, session: str, value: bytes, *, timeout: float) -> bool:
        """`?acquire=`: True when `session` holds the key now. `InvalidSession` when Consul
        does not know the session."""
        ...

    def kv_release(self, key: str, session: str, value: bytes, *, timeout: float) -> bool:
        """`?release=`: Consul writes `value` into the key as it frees it (keep the holder's
        value, or it is cleared). False when `session` did not hold it."""
        ...

    def kv_put(self, key: str, value: bytes, *, timeout: float) -> bool: ...

    # The local agent's services and checks.
    def agent_service(self, service_id: str, *, timeout: float, hash: str | None = None,
                      wait: str | None = None) -> ServiceRead: ...

    def agent_services(self, *, timeout: float) -> ServicesRead: ...

    def service_register(self, registration: Mapping[str, Any], *, timeout: float,
                         replace_existing_checks: bool = False) -> None: ...

    def service_deregister(self, service_id: str, *, timeout: float) -> bool:
        """False when the agent does not know the service."""
        ...

    def check_register(self, check: Mapping[str, Any], *, timeout: float) -> bool:
        """False when the check's service is not registered on the agent."""
        ...

    def check_deregister(self, check_id: str, *, timeout: float) -> bool:
        """False when the agent does not know the check."""
        ...

    def check_pass(self, check_id: str, note: str, *, timeout: float) -> bool:
        """Pass a TTL check. False when the agent does not know the check (404, or 500
        `Unknown check` / `does not have associated TTL` before Consul 1.11)."""
        ...

    # Health and the agent itself.
    def health_service(self, name: str, *, timeout: float, index: int = 0,
                       wait: str | None = None) -> HealthRead:
        """Every instance of service `name` with its checks (not only passing ones, so an
        answer cut down by ACLs shows). With `index` and `wait`, a blocking read."""
        ...

    def agent_node_name(self, *, timeout: float) -> str:
        """The local agent's node name (`/v1/agent/self`, `Config.NodeName`)."""
        ...

    # The catalog (the servers' view, not the agent's).
    def catalog_deregister(self, node: str, service_id: str, *, timeout: float) -> None:
        """`PUT /v1/catalog/deregister`: the instance leaves the catalog (the agent that
        registered it still holds it, and puts it back when it can sync it again)."""
        ...
