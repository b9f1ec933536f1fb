"""The records the double's cluster state is made of, mirroring Consul's structs.

Field meanings follow consul-semantics.md: KvEntry is `structs.DirEntry` (§2.1),
Session is `structs.Session` (§1.2), ServiceRecord is an agent's service
definition (§4.3), CheckRecord is `structs.HealthCheck` (§4.6), NodeRecord a
catalog node with its serfHealth state (§1.6). Durations are Go nanoseconds.
The JSON shapes are produced by views.py, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .timers import TimerHandle

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
CHECK_STATUSES = (PASSING, WARNING, CRITICAL)

SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
SERF_ALIVE_OUTPUT = "Agent alive and reachable"
SERF_FAILED_OUTPUT = "Agent not live or unreachable"

BEHAVIOR_RELEASE = "release"
BEHAVIOR_DELETE = "delete"


@dataclass
class KvEntry:
    key: str
    value: bytes | None
    flags: int
    lock_index: int = 0
    session: str = ""
    create_index: int = 0
    modify_index: int = 0

    def same_content(self, other: KvEntry) -> bool:
        """`DirEntry.Equal`: the fields whose change makes a write real (§2.3 no-op writes)."""
        return (
            self.lock_index == other.lock_index
            and self.key == other.key
            and self.flags == other.flags
            and (self.value or b"") == (other.value or b"")
            and self.session == other.session
        )


@dataclass
class ServiceCheckRef:
    id: str
    namespace: str = ""


@dataclass
class Session:
    id: str
    name: str
    node: str
    lock_delay_ns: int
    behavior: str
    ttl: str
    node_checks: list[str] | None
    service_checks: list[ServiceCheckRef] | None
    checks: list[str] | None
    create_index: int = 0
    modify_index: int = 0
    ttl_ns: int = 0
    ttl_timer: TimerHandle | None = field(default=None, repr=False, compare=False)

    def check_ids(self) -> list[str]:
        """`Session.CheckIDs()`: legacy Checks, then NodeChecks, then ServiceChecks (§1.1)."""
        ids = list(self.checks or ())
        ids.extend(self.node_checks or ())
        ids.extend(ref.id for ref in self.service_checks or ())
        return ids


@dataclass
class ServiceRecord:
    """One service as an agent holds it; the catalog shows the same record."""

    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str] | None  # None when the registration sent no Meta
    tagged_addresses: dict[str, dict[str, Any]]
    weights: dict[str, int]
    enable_tag_override: bool
    kind: str = ""
    socket_path: str = ""
    locality: dict[str, Any] | None = None
    proxy: dict[str, Any] | None = None
    connect: dict[str, Any] | None = None
    create_index: int = 0
    modify_index: int = 0
    # False after `PUT /v1/catalog/deregister`: the servers dropped it, the agent still
    # holds it (addendum §14). Not part of the definition: the agent does not know.
    in_catalog: bool = True

    def definition(self) -> tuple[Any, ...]:
        """Everything but the raft indexes, to tell a real change from a re-register."""
        return (
            self.id,
            self.name,
            self.tags,
            self.address,
            self.port,
            self.meta,
            self.tagged_addresses,
            self.weights,
            self.enable_tag_override,
            self.kind,
            self.socket_path,
            self.locality,
            self.proxy,
            self.connect,
        )


@dataclass
class CheckRecord:
    node: str
    check_id: str
    name: str
    status: str
    notes: str = ""
    output: str = ""
    # What the catalog shows: an output-only change stays on the agent (§4.6).
    catalog_output: str = ""
    # What the catalog shows as the status: the agent syncs a status change with the
    # check's own token, so after that token is revoked the two differ (addendum §11).
    catalog_status: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    type: str = ""
    interval: str = ""
    timeout: str = ""
    ttl_ns: int = 0
    # The ACL token the agent registered the check with and syncs it with ("" = the
    # agent's default token), as local/state.go CheckState.Token.
    token: str = ""
    alias_service: str = ""  # AliasService / AliasNode of an alias check (addendum §9)
    alias_node: str = ""
    # CheckTTL.lastOutput: the output of the last pass/warn/fail/update, which the
    # `TTL expired` message quotes; a re-registration starts a new CheckTTL without it.
    ttl_last_output: str = ""
    create_index: int = 0
    modify_index: int = 0
    # False after a catalog deregistration of it or of its service (addendum §14).
    in_catalog: bool = True
    ttl_timer: TimerHandle | None = field(default=None, repr=False, compare=False)
    alias_timer: TimerHandle | None = field(default=None, repr=False, compare=False)

    @property
    def is_alias(self) -> bool:
        return bool(self.alias_service or self.alias_node)

    def catalog_fields(self) -> tuple[Any, ...]:
        """`HealthCheck.IsSame`: the fields whose change is synced to the catalog."""
        return (
            self.node,
            self.check_id,
            self.name,
            self.catalog_status,
            self.notes,
            self.catalog_output,
            self.service_id,
            self.service_name,
            self.service_tags,
            self.type,
            self.in_catalog,
        )


@dataclass
class NodeRecord:
    name: str
    node_id: str
    address: str
    serf_check: CheckRecord
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    checks: dict[str, CheckRecord] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    @property
    def alive(self) -> bool:
        return self.serf_check.catalog_status == PASSING

    def catalog_checks(self) -> list[CheckRecord]:
        """Every check the catalog holds for this node: serfHealth plus the agent's checks
        that were not deregistered from the catalog alone (addendum §14)."""
        return [self.serf_check, *(check for check in self.checks.values() if check.in_catalog)]

    def catalog_check(self, check_id: str) -> CheckRecord | None:
        """The check the servers hold under this ID, matched case-insensitively.

        consul: agent/consul/state/catalog.go (indexFromNodeCheckQuery lowercases the ID).
        """
        wanted = check_id.lower()
        return next(
            (check for check in self.catalog_checks() if check.check_id.lower() == wanted), None
        )
