"""How Nomad decides that a service it owns must be registered again.

nomad: command/agent/consul/service_client.go (agentServiceUpdateRequired,
maybeTweakTags, maybeTweakTaggedAddresses, different, weightsDifferent) and
helper/funcs.go (SliceSetEq). `wanted` is Nomad's stored registration (a dict in the
JSON shape of api.AgentServiceRegistration); `existing` is the agent's view of the
service (api.AgentService from `/v1/agent/services`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import ids

SYNC_PERIODIC = "periodic"
SYNC_OPERATIONS = "operations"
SYNC_SHUTDOWN = "shutdown"
SYNC_REASONS = (SYNC_PERIODIC, SYNC_OPERATIONS, SYNC_SHUTDOWN)

_CONSUL_INJECTED_ADDRESSES = ("lan_ipv4", "wan_ipv4", "lan_ipv6", "wan_ipv6")
_SET_COMPARE_ABOVE = 10  # helper.SliceSetEq switches to a set comparison above 10 items

Service = dict[str, Any]


def update_required(reason: str, wanted: Service, existing: Service) -> bool:
    """nomad: service_client.go (agentServiceUpdateRequired). Only a periodic sync
    adopts the agent's tags, and it does so in place: `wanted` is Nomad's stored copy."""
    if reason == SYNC_PERIODIC:
        maybe_tweak_tags(wanted, existing)
    maybe_tweak_tagged_addresses(wanted, existing)
    return different(wanted, existing) is not None


def maybe_tweak_tags(wanted: Service, existing: Service) -> None:
    # nomad: service_client.go (maybeTweakTags): with enable_tag_override the tags
    # Consul holds overwrite Nomad's own copy, so later syncs push them (not the jobspec's).
    # The Connect sidecar half is not modelled (no Connect here).
    if wanted.get("EnableTagOverride"):
        wanted["Tags"] = list(existing.get("Tags") or [])


def maybe_tweak_tagged_addresses(wanted: Service, existing: Service) -> None:
    # nomad: service_client.go (maybeTweakTaggedAddresses): Consul adds lan/wan addresses
    # to a service registered without them; ignore those (in the agent's copy only).
    service_id = str(wanted.get("ID", ""))
    if not (ids.is_nomad_agent(service_id) or ids.is_nomad_service(service_id)):
        return
    wanted_addresses = wanted.get("TaggedAddresses") or {}
    existing_addresses = existing.get("TaggedAddresses")
    if not existing_addresses:
        return
    for key in _CONSUL_INJECTED_ADDRESSES:
        if key not in wanted_addresses:
            existing_addresses.pop(key, None)


def different(wanted: Service, existing: Service) -> str | None:
    """The first field that differs, in Nomad's order, or None (nomad: different)."""
    for name, differs in _FIELDS:
        if differs(wanted, existing):
            return name
    return None


def slice_set_eq(left: list[str], right: list[str]) -> bool:
    # nomad: helper/funcs.go (SliceSetEq): same length and every item of left in right
    # (so order never matters; ["a", "a"] even equals ["a", "b"], as in Nomad).
    if len(left) != len(right):
        return False
    if len(left) > _SET_COMPARE_ABOVE:
        return set(left) == set(right)
    return all(item in right for item in left)


def _weights_different(wanted: Service, existing: Service) -> bool:
    # nomad: service_client.go (weightsDifferent): no weights wanted means Consul's
    # defaults (1, 1) are expected.
    have = existing.get("Weights") or {}
    want = wanted.get("Weights")
    if want is None:
        return bool(have.get("Passing", 0) != 1 or have.get("Warning", 0) != 1)
    return bool(want.get("Passing") != have.get("Passing")
                or want.get("Warning") != have.get("Warning"))


def _addresses(service: Service) -> dict[str, tuple[str, int]]:
    return {key: (value.get("Address", ""), value.get("Port", 0))
            for key, value in (service.get("TaggedAddresses") or {}).items()}


def _field(wanted_key: str, existing_key: str, default: Any) -> Callable[[Service, Service], bool]:
    return lambda wanted, existing: bool(
        wanted.get(wanted_key, default) != existing.get(existing_key, default))


# nomad: service_client.go (different): kind, ID, port, address, name, ETO, meta (a nil
# and an empty map are equal, as maps.Equal), tagged addresses, tags as a set, the
# Connect sidecar (not modelled: no Connect), weights.
_FIELDS: tuple[tuple[str, Callable[[Service, Service], bool]], ...] = (
    ("kind", _field("Kind", "Kind", "")),
    ("id", _field("ID", "ID", "")),
    ("port", _field("Port", "Port", 0)),
    ("address", _field("Address", "Address", "")),
    ("service name", _field("Name", "Service", "")),
    ("enable_tag_override", _field("EnableTagOverride", "EnableTagOverride", False)),
    ("meta", lambda w, e: dict(w.get("Meta") or {}) != dict(e.get("Meta") or {})),
    ("tagged_addresses", lambda w, e: _addresses(w) != _addresses(e)),
    ("tags", lambda w, e: not slice_set_eq(list(w.get("Tags") or []),
                                           list(e.get("Tags") or []))),
    ("weights", _weights_different),
)
