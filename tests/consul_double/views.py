"""Consul's JSON shapes, field for field and in Go's field order.

Each function turns one record of the double's state into the object Consul
marshals for it (consul-semantics.md §1.2 Session, §2.1 DirEntry, §4.1
AgentService, §4.6 HealthCheck, §5 ServiceNode / CheckServiceNode). Python
dicts keep insertion order, so the order written here is the order on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from .model import CheckRecord, KvEntry, NodeRecord, ServiceRecord, Session

CONSUL_VERSION = "1.20.2"
REVISION = "consul-double"
_EMPTY_PROXY: dict[str, Any] = {"MeshGateway": {}, "Expose": {}}


def kv_entry(entry: KvEntry) -> dict[str, Any]:
    """§2.1: Value is base64 or null when empty; Session is left out when unlocked."""
    view: dict[str, Any] = {
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": base64.b64encode(entry.value).decode("ascii") if entry.value else None,
    }
    if entry.session:
        view["Session"] = entry.session
    view["CreateIndex"] = entry.create_index
    view["ModifyIndex"] = entry.modify_index
    return view


def session(record: Session) -> dict[str, Any]:
    """§1.2: LockDelay in nanoseconds, TTL echoed as sent, Checks only when non-empty."""
    view: dict[str, Any] = {
        "ID": record.id,
        "Name": record.name,
        "Node": record.node,
        "LockDelay": record.lock_delay_ns,
        "Behavior": record.behavior,
        "TTL": record.ttl,
        "NodeChecks": record.node_checks,
        "ServiceChecks": (
            None
            if record.service_checks is None
            else [{"ID": ref.id, "Namespace": ref.namespace} for ref in record.service_checks]
        ),
    }
    if record.checks:
        view["Checks"] = record.checks
    view["CreateIndex"] = record.create_index
    view["ModifyIndex"] = record.modify_index
    return view


def agent_service(service: ServiceRecord, datacenter: str) -> dict[str, Any]:
    """§4.1 `api.AgentService` as buildAgentService fills it: Tags [] and Meta {}."""
    view: dict[str, Any] = {}
    if service.kind:
        view["Kind"] = service.kind
    view.update(
        {
            "ID": service.id,
            "Service": service.name,
            "Tags": list(service.tags),
            "Meta": dict(service.meta or {}),
            "Port": service.port,
            "Address": service.address,
        }
    )
    if service.socket_path:
        view["SocketPath"] = service.socket_path
    if service.tagged_addresses:
        view["TaggedAddresses"] = _sorted_map(service.tagged_addresses)
    view["Weights"] = dict(service.weights)
    view["EnableTagOverride"] = service.enable_tag_override
    if service.proxy is not None:
        view["Proxy"] = service.proxy
    if service.connect:
        view["Connect"] = service.connect
    view["Datacenter"] = datacenter
    if service.locality is not None:
        view["Locality"] = service.locality
    return view


def content_hash(service: ServiceRecord) -> str:
    """§4.2 ContentHash: 16 hex digits that change whenever the definition does."""
    definition = agent_service(service, datacenter="")
    definition.pop("Datacenter", None)  # hash:"ignore" in api.AgentService
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:16]


def agent_service_with_hash(service: ServiceRecord, datacenter: str) -> dict[str, Any]:
    """§4.2 `GET /v1/agent/service/:id`: the same object plus ContentHash."""
    with_hash: dict[str, Any] = {}
    for field_name, value in agent_service(service, datacenter).items():
        with_hash[field_name] = value
        if field_name == "EnableTagOverride":  # ContentHash follows it in api.AgentService
            with_hash["ContentHash"] = content_hash(service)
    return with_hash


def health_check(check: CheckRecord, agent_view: bool = False) -> dict[str, Any]:
    """§4.6 `structs.HealthCheck`. The agent view shows the agent's copy (status and
    output), the catalog view what the last sync sent (addendum §11)."""
    return {
        "Node": check.node,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status if agent_view else check.catalog_status,
        "Notes": check.notes,
        "Output": check.output if agent_view else check.catalog_output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags),
        "Type": check.type,
        "Interval": check.interval,
        "Timeout": check.timeout,
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": 0 if agent_view else check.create_index,
        "ModifyIndex": 0 if agent_view else check.modify_index,
    }


def catalog_node(node: NodeRecord, datacenter: str) -> dict[str, Any]:
    """§5 `structs.Node` (the `Node` of a health entry, an item of /v1/catalog/nodes)."""
    return {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": datacenter,
        "TaggedAddresses": _node_tagged_addresses(node),
        "Meta": {"consul-network-segment": ""},
        "CreateIndex": node.create_index,
        "ModifyIndex": node.modify_index,
    }


def service_node(node: NodeRecord, service: ServiceRecord, datacenter: str) -> dict[str, Any]:
    """§5 `structs.ServiceNode`: one item of /v1/catalog/service/:name."""
    view: dict[str, Any] = {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": datacenter,
        "TaggedAddresses": _node_tagged_addresses(node),
        "NodeMeta": {"consul-network-segment": ""},
        "ServiceKind": service.kind,
        "ServiceID": service.id,
        "ServiceName": service.name,
        "ServiceTags": list(service.tags),
        "ServiceAddress": service.address,
    }
    if service.tagged_addresses:
        view["ServiceTaggedAddresses"] = _sorted_map(service.tagged_addresses)
    view.update(
        {
            "ServiceWeights": dict(service.weights),
            "ServiceMeta": service.meta,
            "ServicePort": service.port,
            "ServiceSocketPath": service.socket_path,
            "ServiceEnableTagOverride": service.enable_tag_override,
            "ServiceProxy": service.proxy if service.proxy is not None else dict(_EMPTY_PROXY),
            "ServiceConnect": service.connect or {},
            "ServiceLocality": service.locality,
            "CreateIndex": service.create_index,
            "ModifyIndex": service.modify_index,
        }
    )
    return view


def node_service(service: ServiceRecord) -> dict[str, Any]:
    """§5 `structs.NodeService`: the `Service` of a health entry (Port omitted when 0)."""
    view: dict[str, Any] = {}
    if service.kind:
        view["Kind"] = service.kind
    view.update({"ID": service.id, "Service": service.name, "Tags": list(service.tags),
                 "Address": service.address})
    if service.tagged_addresses:
        view["TaggedAddresses"] = _sorted_map(service.tagged_addresses)
    view["Meta"] = service.meta
    if service.port:
        view["Port"] = service.port
    if service.socket_path:
        view["SocketPath"] = service.socket_path
    view["Weights"] = dict(service.weights)
    view["EnableTagOverride"] = service.enable_tag_override
    if service.locality is not None:
        view["Locality"] = service.locality
    view["Proxy"] = service.proxy if service.proxy is not None else dict(_EMPTY_PROXY)
    view["Connect"] = service.connect or {}
    view["PeerName"] = ""
    view["CreateIndex"] = service.create_index
    view["ModifyIndex"] = service.modify_index
    return view


def health_entry(
    node: NodeRecord, service: ServiceRecord, checks: list[CheckRecord], datacenter: str
) -> dict[str, Any]:
    """§5 `structs.CheckServiceNode`: one item of /v1/health/service/:name."""
    return {
        "Node": catalog_node(node, datacenter),
        "Service": node_service(service),
        "Checks": [health_check(check) for check in checks],
    }


def agent_self(
    node: NodeRecord, datacenter: str, server: bool, stats: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """§4.5 + addendum §12: the parts of /v1/agent/self a client reads."""
    return {
        "Config": {
            "Datacenter": datacenter,
            "PrimaryDatacenter": datacenter,
            "NodeName": node.name,
            "NodeID": node.node_id,
            "Revision": REVISION,
            "Server": server,
            "Version": CONSUL_VERSION,
            "BuildDate": "2024-01-01T00:00:00Z",
        },
        "DebugConfig": {},
        "Coord": None,
        "Member": {
            "Name": node.name,
            "Addr": node.address,
            "Port": 8301,
            "Tags": {"dc": datacenter, "role": "consul" if server else "node"},
            "Status": 1 if node.alive else 4,
        },
        "Stats": {section: _sorted_map(values) for section, values in sorted(stats.items())},
        "Meta": {"consul-network-segment": ""},
        "xDS": None,
    }


def _node_tagged_addresses(node: NodeRecord) -> dict[str, str]:
    return {
        "lan": node.address,
        "lan_ipv4": node.address,
        "wan": node.address,
        "wan_ipv4": node.address,
    }


def _sorted_map(mapping: dict[str, Any]) -> dict[str, Any]:
    # Go marshals maps with their keys sorted.
    return {key: mapping[key] for key in sorted(mapping)}
