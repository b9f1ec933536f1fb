"""`/v1/agent/self` and `/v1/agent/service*` (consul-semantics.md §4.1-§4.5).

Node-local, answered without the servers: services registered here belong to
the agent of the node the request reached; the catalog sees them in the same
write (§4.3, §7). The check endpoints live in checks.py.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .. import views
from ..catalog import CheckSpec
from ..decoding import SERVICE_DEFINITION
from ..durations import go_quote
from ..filter import AGENT_SERVICE
from ..model import CHECK_STATUSES, NodeRecord, ServiceRecord
from ..watch import WatchSpec, agent_service_topic
from ..wire import HttpError, Reply, json_reply
from .catalog import LEADER_ADDRESS
from .check_fields import (
    check_spec,
    check_type_problem,
    is_empty_check,
    translated_check_fields,
)
from .common import Call, agent_node, blocking_timeout, decode_or_400, parse_wait

_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
_META_MAX_PAIRS = 64
_META_KEY_MAX = 128
_META_VALUE_MAX = 512
_DEFAULT_WEIGHTS = {"Passing": 1, "Warning": 1}


# -- reads ------------------------------------------------------------------


def agent_self(call: Call) -> Reply:
    """§4.5: needs agent:read on this node."""
    call.require("agent", call.node, "read")
    with call.state.read():
        node = agent_node(call)
        server = call.node in call.state.server_nodes
        body = views.agent_self(node, call.state.datacenter, server, _agent_stats(call, node))
    return json_reply(body, call.request)


def services(call: Call) -> Reply:
    """§4.1: object keyed by ID; unreadable services dropped silently; `?filter`."""
    _ = call.authz
    with call.state.read():
        node = agent_node(call)
        listed = [
            views.agent_service(node.services[service_id], call.state.datacenter)
            for service_id in sorted(node.services)
            if call.allows("service", node.services[service_id].name)
        ]
    body = {view["ID"]: view for view in call.apply_filter(listed, AGENT_SERVICE)}
    return json_reply(body, call.request, call.acl_headers())


def service_by_id(call: Call) -> Reply:
    """§4.2 + §3 hash blocking: `?hash=<last>&wait=` answers when the definition changes."""
    wait = parse_wait(call.request)
    last_hash = call.request.param("hash") or ""
    service_id = call.suffix
    _ = call.authz

    def evaluate() -> tuple[str, dict[str, Any]]:
        service = agent_node(call).services.get(service_id)
        if service is None:
            raise HttpError(404, f"unknown service ID: {service_id}")
        call.require("service", service.name, "read")
        view = views.agent_service_with_hash(service, call.state.datacenter)
        return view["ContentHash"], view

    content_hash, body = call.state.local_blocking_query(
        evaluate,
        changed=lambda result: result[0] != last_hash,
        watch=WatchSpec.of(agent_service_topic(call.node, service_id)),
        timeout=blocking_timeout(wait) if last_hash else None,
        abort=call.aborted,
    )
    return json_reply(body, call.request, {"X-Consul-ContentHash": content_hash})


# -- services ---------------------------------------------------------------


def register_service(call: Call) -> Reply:
    """§4.3: strict decoding, validation in Consul's order, then a wholesale replace."""
    body = decode_or_400(call, SERVICE_DEFINITION)
    name = body.get("Name") or ""
    if not name:
        raise HttpError(400, "Missing service name")
    address = body.get("Address") or ""
    if _is_unspecified_ip(address):
        raise HttpError(400, "Invalid service address")
    _validate_weights(body.get("Weights"))
    _validate_meta(body.get("Meta"))
    check_types = _service_check_types(body)
    service = _service_record(body, name, address)
    specs = _service_check_specs(service, check_types)
    replace_existing_checks = _replace_existing_checks(call)
    _ = call.authz
    with call.state.write() as txn:
        existing = agent_node(call).services.get(service.id)
        call.require("service", service.name, "write")
        if existing is not None and existing.name != service.name:
            call.require("service", existing.name, "write")
        call.state.catalog.register_service(
            txn, call.node, service, specs, replace_existing_checks, call.token or ""
        )
    return Reply(200)


def deregister_service(call: Call) -> Reply:
    """§4.4: 404 for an unknown ID; removes its checks (and their bound sessions)."""
    service_id = call.suffix
    _ = call.authz
    with call.state.write() as txn:
        service = agent_node(call).services.get(service_id)
        if service is None:
            raise unknown_service(service_id)
        call.require("service", service.name, "write")
        call.state.catalog.deregister_service(txn, call.node, service_id)
    return Reply(200)


def unknown_service(service_id: str) -> HttpError:
    """consul: agent/agent.go (vetServiceUpdateWithAuthorizer), shared by the service
    endpoints that act on an existing service."""
    return HttpError(
        404,
        f"Unknown service ID {go_quote(service_id)}. "
        "Ensure that the service ID is passed, not the service name.",
    )


def _service_record(body: dict[str, Any], name: str, address: str) -> ServiceRecord:
    port = body.get("Port") or 0
    tagged = body.get("TaggedAddresses") or body.get("tagged_addresses") or {}
    weights = body.get("Weights")
    return ServiceRecord(
        id=body.get("ID") or name,
        name=name,
        tags=list(body.get("Tags") or []),
        address=address,
        port=port,
        meta=body.get("Meta"),
        tagged_addresses=_with_default_tagged_addresses(tagged, address, port),
        weights=dict(_DEFAULT_WEIGHTS) if weights is None else {
            "Passing": weights.get("Passing", 0), "Warning": weights.get("Warning", 0)
        },
        enable_tag_override=bool(
            body.get("EnableTagOverride") or body.get("enable_tag_override")
        ),
        kind=body.get("Kind") or "",
        socket_path=body.get("SocketPath") or "",
        locality=body.get("Locality"),
        proxy=body.get("Proxy"),
        connect=body.get("Connect"),
    )


def _with_default_tagged_addresses(
    tagged: dict[str, dict[str, Any]], address: str, port: int
) -> dict[str, dict[str, Any]]:
    """addServiceInternal: an IP address adds lan/wan tagged addresses unless given."""
    result = {key: {"Address": value.get("Address", ""), "Port": value.get("Port", 0)}
              for key, value in tagged.items()}
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return result
    family = "ipv4" if ip.version == 4 else "ipv6"
    for scope in ("lan", "wan"):
        result.setdefault(f"{scope}_{family}", {"Address": address, "Port": port})
    return result


def _service_check_types(body: dict[str, Any]) -> list[dict[str, Any]]:
    """ServiceDefinition.CheckTypes: `Check` unless empty, then `Checks`, each validated."""
    candidates: list[dict[str, Any]] = []
    single = body.get("Check")
    if single and not is_empty_check(single):
        candidates.append(single)
    candidates.extend(item or {} for item in body.get("Checks") or [])
    check_types = [translated_check_fields(item) for item in candidates]
    for fields in check_types:
        problem = check_type_problem(fields)
        if problem:
            raise HttpError(400, f"Invalid check: {problem}")
    for fields in check_types:
        status = fields.get("Status") or ""
        if status and status not in CHECK_STATUSES:
            raise HttpError(400, "Status for checks must 'passing', 'warning', 'critical'")
    return check_types


def _service_check_specs(
    service: ServiceRecord, check_types: list[dict[str, Any]]
) -> list[CheckSpec]:
    """§4.3 defaults: ID `service:<id>[:n]`, Name `Service '<name>' check`."""
    specs = []
    for position, fields in enumerate(check_types, start=1):
        check_id = fields.get("CheckID") or f"service:{service.id}"
        if not fields.get("CheckID") and len(check_types) > 1:
            check_id += f":{position}"
        name = fields.get("Name") or f"Service '{service.name}' check"
        specs.append(check_spec(fields, check_id, name, service.id))
    return specs


# -- validation and helpers -------------------------------------------------


def _replace_existing_checks(call: Call) -> bool:
    """§4.3: on only when present with an empty value or exactly `true` (`=false`, `=1`: off)."""
    if not call.request.has("replace-existing-checks"):
        return False
    return (call.request.param("replace-existing-checks") or "") in ("", "true")


def _is_unspecified_ip(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _validate_weights(weights: dict[str, Any] | None) -> None:
    if weights is None:
        return
    passing = weights.get("Passing", 0)
    warning = weights.get("Warning", 0)
    problem = None
    if passing < 1:
        problem = "Passing must be greater than 0"
    elif warning < 0:
        problem = "Warning must be greater or equal than 0"
    elif passing > 65535 or warning > 65535:
        problem = "DNS Weight must be between 0 and 65535"
    if problem:
        raise HttpError(400, f"Invalid Weights: {problem}")


def _validate_meta(meta: dict[str, str] | None) -> None:
    """structs.validateMetadata, with Consul's messages."""
    if not meta:
        return
    if len(meta) > _META_MAX_PAIRS:
        raise HttpError(400, "Invalid Service Meta: Node metadata cannot contain more than "
                             f"{_META_MAX_PAIRS} key/value pairs")
    for key in sorted(meta):
        problem = _meta_pair_problem(key, meta[key])
        if problem:
            raise HttpError(
                400,
                f"Invalid Service Meta: Couldn't load metadata pair ('{key}', "
                f"'{meta[key]}'): {problem}",
            )


def _meta_pair_problem(key: str, value: str) -> str | None:
    if not key:
        return "Key cannot be blank"
    if not _META_KEY.match(key):
        return "Key contains invalid characters"
    if len(key) > _META_KEY_MAX:
        return f"Key is too long (limit: {_META_KEY_MAX} characters)"
    if key.startswith("consul-"):
        return "Key prefix 'consul-' is reserved for internal use"
    if len(value) > _META_VALUE_MAX:
        return f"Value is too long (limit: {_META_VALUE_MAX} characters)"
    return None




def _agent_stats(call: Call, node: NodeRecord) -> dict[str, dict[str, str]]:
    """`Stats` of /v1/agent/self (addendum §12), every value a string as Go prints it.

    consul: agent/agent.go (Agent.Stats adds `agent` and `build`), agent/consul/server.go
    and client.go (Server.Stats / Client.Stats give the `consul` section).
    """
    return {
        "consul": _consul_stats(call, node.name),
        "agent": {
            "check_monitors": "0",
            "check_ttls": str(sum(1 for check in node.checks.values() if check.ttl_ns > 0)),
            "checks": str(len(node.checks)),
            "services": str(len(node.services)),
        },
        "build": {"prerelease": "", "revision": views.REVISION[:8],
                  "version": views.CONSUL_VERSION},
    }


def _consul_stats(call: Call, node_name: str) -> dict[str, str]:
    state = call.state
    acl = "enabled" if call.settings.acl_enabled else "disabled"
    if node_name not in state.server_nodes:
        known_servers = len(state.server_nodes) or 1  # the servers outside the node list
        return {"acl": acl, "known_servers": str(known_servers), "server": "false"}
    has_leader = state.leader_present()
    return {
        "acl": acl,
        "bootstrap": "false",
        "known_datacenters": "1",
        "leader": _go_bool(has_leader and node_name == state.server_nodes[0]),
        "leader_addr": LEADER_ADDRESS if has_leader else "",  # raft.Leader(): "" when none
        "server": "true",
    }


def _go_bool(value: bool) -> str:
    return "true" if value else "false"
