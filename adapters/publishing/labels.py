"""Pure helpers of publishing: the tags of a role, the registration body that keeps a
service's definition, the registration of the instance the sidecar owns for a target, the
IDs of its checks, and which services of an allocation are the targets."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consul_leader.adapters.consul.port import AgentService, HealthEntry
from consul_leader.adapters.peers import META_INSTANCE, META_PRIORITY

# Fields of /v1/agent/services output that a registration body accepts under another name
# or as is (§4.1 vs §4.3). Everything else (ContentHash, Datacenter, indexes) is refused.
_COPIED_FIELDS = (
    "ID", "Tags", "Address", "Port", "Meta", "EnableTagOverride", "Weights", "Kind", "Proxy",
    "Connect", "SocketPath", "Namespace", "Partition", "Locality",
)
# The agent adds these itself when Address is an IP (§4.1); sending them back would make them
# explicit, which Nomad's sync would count as a difference.
_AUTO_TAGGED_ADDRESSES = ("lan_ipv4", "wan_ipv4", "lan_ipv6", "wan_ipv6", "lan", "wan")


class Role(enum.Enum):
    PRIMARY = "primary"
    REPLICA = "replica"


def labelled(tags: Sequence[str], role: Role, primary: str, replica: str | None) -> list[str]:
    """The tags with our labels set for `role`; other tags keep their order.

    Consul's ?tag= filter is case-insensitive (§5), so our labels are removed in any case.
    """
    ours = {primary.lower()} | ({replica.lower()} if replica else set())
    kept = [tag for tag in tags if tag.lower() not in ours]
    wanted = primary if role is Role.PRIMARY else replica
    return [*kept, wanted] if wanted else kept


def registration_body(
    service: Mapping[str, Any], tags: list[str], meta: dict[str, str]
) -> dict[str, Any]:
    """`service` (as /v1/agent/service answers it) as a registration, with `tags` and `meta`."""
    body: dict[str, Any] = {"Name": service.get("Service")}
    for name in _COPIED_FIELDS:
        value = service.get(name)
        if value not in (None, "", {}, []) or name in ("Tags", "Port"):
            body[name] = value
    tagged = _explicit_tagged_addresses(service)
    if tagged:
        body["TaggedAddresses"] = tagged
    body["Tags"] = tags
    body["Meta"] = meta
    return body


def alloc_targets(services: Mapping[str, AgentService], prefix: str, name: str) -> list[str]:
    """The allocation's services to label: those named like our service if there are any
    (so a metrics service of the same allocation is left alone), else all of them, as the
    original sidecar did."""
    mine = {sid: svc for sid, svc in services.items() if sid.startswith(prefix)}
    named = [sid for sid, svc in mine.items() if svc.name == name]
    return sorted(named or mine)


# -- the registration the sidecar owns (CONSUL_LEADER_PUBLISH=registration) ---------------------

OWNED_PREFIX = "consul-leader-"
META_SESSION = "session"
META_ALLOC = "alloc"
META_TARGET = "target"
META_FENCING_TOKEN = "fencing_token"
# Consul reaps a service whose check stays critical this long (its minimum is one minute): a
# dead sidecar's instance is out of `?passing` at the role check's TTL, and gone a minute on.
OWNED_REAP_AFTER = "1m"


def owned_service_id(owner: str, target: str) -> str:
    """Our instance for `target`: never `_nomad-` first, so Nomad's sync leaves it alone."""
    return f"{OWNED_PREFIX}{owner}-{target}"


def role_check_id(target: str) -> str:
    return f"consul-leader:role:{target}"


ALIAS_CHECK_PREFIX = "consul-leader:alias:"


def alias_check_id(target: str) -> str:
    return f"{ALIAS_CHECK_PREFIX}{target}"


@dataclass(frozen=True)
class Owned:
    """What our instance for one target says; `registration()` is the body to register."""

    owner: str  # the allocation (or the instance name outside Nomad)
    name: str  # the published service name
    role: Role
    labels: tuple[str, str | None]  # (primary, replica)
    session: str | None
    alloc_id: str | None
    fencing_token: int | None
    role_ttl: str | None  # None: no role check (CONSUL_LEADER_HEALTH_CHECK=false)
    priority: int | None = None  # CONSUL_LEADER_PRIORITY, published with the instance name

    def tags(self, target: AgentService) -> list[str]:
        primary, replica = self.labels
        return labelled(target.tags, self.role, primary, replica)

    def meta(self, target: AgentService) -> dict[str, str]:
        meta = {META_TARGET: target.id}
        if self.alloc_id:
            meta[META_ALLOC] = self.alloc_id
        if self.session:
            meta[META_SESSION] = self.session
        if self.role is Role.PRIMARY and self.fencing_token is not None:
            meta[META_FENCING_TOKEN] = str(self.fencing_token)
        if self.priority is not None:
            meta[META_INSTANCE] = self.owner
            meta[META_PRIORITY] = str(self.priority)
        return meta

    def registration(self, target: AgentService) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ID": owned_service_id(self.owner, target.id),
            "Name": self.name,
            "Tags": self.tags(target),
            "Meta": self.meta(target),
            "Port": target.port,
            "EnableTagOverride": False,
            "Checks": [self._alias_check(target)] + (
                [role_check_body(target.id, self.role_ttl, service_id=None)]
                if self.role_ttl else []),
        }
        if target.address:
            body["Address"] = target.address
        tagged = _explicit_tagged_addresses(target.definition)
        if tagged:
            body["TaggedAddresses"] = tagged
        return body

    def shown_by(self, target: AgentService, ours: AgentService) -> bool:
        """Whether the agent's copy of our instance says what it should."""
        wanted = self.registration(target)
        tagged = _explicit_tagged_addresses(ours.definition)
        return bool(ours.name == wanted["Name"] and list(ours.tags) == wanted["Tags"]
                    and dict(ours.meta) == wanted["Meta"] and ours.port == wanted["Port"]
                    and ours.address == wanted.get("Address", "")
                    and tagged == wanted.get("TaggedAddresses", {}))

    def _alias_check(self, target: AgentService) -> dict[str, Any]:
        # Critical when the target (or its node) is not healthy, or gone: then this instance
        # is not offered, whatever its role.
        return {"CheckID": alias_check_id(target.id),
                "Name": f"consul-leader: {target.id} is healthy", "AliasService": target.id}


def role_check_body(target: str, role_ttl: str, service_id: str | None) -> dict[str, Any]:
    """The role TTL check: passed only when the sidecar can vouch for the role shown."""
    body: dict[str, Any] = {
        "CheckID": role_check_id(target), "Name": "consul-leader role confirmed",
        "Notes": "Critical when the consul-leader sidecar cannot confirm this instance's role.",
        "TTL": role_ttl, "Status": "critical",
        "DeregisterCriticalServiceAfter": OWNED_REAP_AFTER,
    }
    if service_id is not None:  # registered on its own (not inside its service's body)
        body = {"ID": body.pop("CheckID"), "ServiceID": service_id, **body}
    return body


def _explicit_tagged_addresses(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The tagged addresses someone set, without those the agent adds by itself (§4.1)."""
    address = definition.get("Address")
    return {name: value for name, value in (definition.get("TaggedAddresses") or {}).items()
            if not (name in _AUTO_TAGGED_ADDRESSES and isinstance(value, dict)
                    and value.get("Address") == address)}


# -- other primaries a new leader may evict from the catalog -----------------------------------

NOMAD_PREFIX = "_nomad-"


@dataclass(frozen=True)
class EvictionCandidate:
    """Another passing primary that names, in its Meta, the session it led with."""

    node: str
    service_id: str
    session: str


def eviction_candidates(entries: Sequence[HealthEntry]) -> tuple[EvictionCandidate, ...]:
    """The other primaries that could be proven stale: our kind of registration (a session in
    Meta, a node), never a Nomad-owned `_nomad-` one. Proof comes from Consul no longer
    knowing that session: whoever holds the lock holds it with a session, so an instance
    whose session is gone leads nothing, even if its ACL token was revoked before it could
    tell the catalog (docs/consul-semantics-addendum.md §11)."""
    return tuple(
        EvictionCandidate(entry.node, entry.service_id, entry.meta[META_SESSION])
        for entry in entries
        if entry.meta.get(META_SESSION) and entry.node
        and not entry.service_id.startswith(NOMAD_PREFIX)
    )
