"""Pure helpers of publishing: the tags of a role, the registration body that keeps a
service's definition, and which services of an allocation are the targets."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from consul_leader.adapters.consul.port import AgentService

# Fields of /v1/agent/services output that a registration body accepts under another name
# or as is (§4.1 vs §4.3). Everything else (ContentHash, Datacenter, indexes) is refused.
_COPIED_FIELDS = (
    "ID", "Tags", "Address", "Port", "Meta", "EnableTagOverride", "Weights", "Kind", "Proxy",
    "Connect", "SocketPath", "Namespace", "Partition", "Locality",
)
# The agent adds these itself when Address is an IP (§4.1); sending them back would make them
# explicit, which Nomad's sync would count as a difference.
_AUTO_TAGGED_ADDRESSES = ("lan_ipv4", "wan_ipv4", "lan_ipv6", "wan_ipv6", "lan", "wan")
SESSION_META_KEY = "session"


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
    tagged = {
        name: value
        for name, value in (service.get("TaggedAddresses") or {}).items()
        if not (name in _AUTO_TAGGED_ADDRESSES and value.get("Address") == service.get("Address"))
    }
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
