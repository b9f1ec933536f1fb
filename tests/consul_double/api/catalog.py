"""`/v1/catalog/*`, `/v1/health/*`, `/v1/status/*` (consul-semantics.md §5, §6).

Catalog and health reads are server-bound, blocking, and filtered by ACLs
(`service:read` and `node:read`) and by `?filter`.
"""

from __future__ import annotations

from typing import Any

from .. import views
from ..core import StateError
from ..decoding import CATALOG_DEREGISTER
from ..durations import GoSyntaxError, parse_bool
from ..filter import AGENT_CHECK, CATALOG_SERVICE, HEALTH_SERVICE
from ..model import CHECK_STATUSES, PASSING, CheckRecord, NodeRecord, ServiceRecord
from ..store import QueryResult
from ..watch import (
    CATALOG_NODES_TOPIC,
    CATALOG_SERVICES_TOPIC,
    CHECKS_TOPIC,
    WatchSpec,
    node_topic,
    service_topic,
)
from ..wire import HttpError, Reply, json_reply
from .common import (
    NO_DC_PATH,
    Call,
    QueryOptions,
    decode_or_400,
    path_id,
    require_local_dc,
    run_query,
)

LEADER_ADDRESS = "127.0.0.1:8300"


def catalog_services(call: Call) -> Reply:
    options = QueryOptions.parse(call.request)
    catalog = call.state.catalog

    def evaluate() -> QueryResult:
        names = {
            name: tags for name, tags in catalog.service_tags().items()
            if call.allows("service", name)
        }
        return QueryResult(names, catalog.table_index("services"))

    result, headers = run_query(call, options, WatchSpec.of(CATALOG_SERVICES_TOPIC), evaluate)
    return json_reply(result.value, call.request, headers)


def catalog_nodes(call: Call) -> Reply:
    options = QueryOptions.parse(call.request)
    catalog = call.state.catalog

    def evaluate() -> QueryResult:
        listed = [
            views.catalog_node(node, call.state.datacenter)
            for node in catalog.nodes()
            if call.allows("node", node.name)
        ]
        return QueryResult(call.apply_filter(listed), catalog.table_index("nodes"))

    result, headers = run_query(call, options, WatchSpec.of(CATALOG_NODES_TOPIC), evaluate)
    return json_reply(result.value, call.request, headers)


def catalog_service(call: Call) -> Reply:
    """§5: instances of one service; `?tag` repeatable (AND, case-insensitive); `?filter`."""
    options = QueryOptions.parse(call.request)
    name = path_id(call, "Missing service name")

    def evaluate() -> QueryResult:
        listed = [
            views.service_node(node, service, call.state.datacenter)
            for node, service in _readable_instances(call, name)
        ]
        return QueryResult(
            call.apply_filter(listed, CATALOG_SERVICE), call.state.catalog.service_index(name)
        )

    result, headers = run_query(call, options, WatchSpec.of(service_topic(name)), evaluate)
    return json_reply(result.value, call.request, headers)


def health_service(call: Call) -> Reply:
    """§5: node + service + checks (serfHealth included); `?passing` after the query."""
    options = QueryOptions.parse(call.request)
    name = path_id(call, "Missing service name")
    catalog = call.state.catalog

    def evaluate() -> QueryResult:
        listed = [
            views.health_entry(
                node, service, catalog.instance_checks(node, service.id), call.state.datacenter
            )
            for node, service in _readable_instances(call, name)
        ]
        return QueryResult(call.apply_filter(listed, HEALTH_SERVICE), catalog.service_index(name))

    result, headers = run_query(call, options, WatchSpec.of(service_topic(name)), evaluate)
    entries: list[dict[str, Any]] = result.value
    if _passing_only(call):
        entries = [entry for entry in entries if _all_passing(entry)]
    return json_reply(entries, call.request, headers)


def health_checks(call: Call) -> Reply:
    """The checks of every instance of a service (service checks only)."""
    options = QueryOptions.parse(call.request)
    name = path_id(call, "Missing service name")

    def evaluate() -> QueryResult:
        listed = [
            views.health_check(check)
            for node, service in _readable_instances(call, name, tags=False)
            for check in sorted(node.catalog_checks(), key=lambda check: check.check_id)
            if check.service_id == service.id
        ]
        return QueryResult(
            call.apply_filter(listed, AGENT_CHECK), call.state.catalog.service_index(name)
        )

    result, headers = run_query(call, options, WatchSpec.of(service_topic(name)), evaluate)
    return json_reply(result.value, call.request, headers)


def health_node(call: Call) -> Reply:
    """Every check of a node, serfHealth included; `[]` for an unknown node."""
    options = QueryOptions.parse(call.request)
    node_name = path_id(call, "Missing node name")
    catalog = call.state.catalog

    def evaluate() -> QueryResult:
        node = catalog.node(node_name)
        checks = [] if node is None else _readable_checks(call, node, node.catalog_checks())
        listed = [views.health_check(check) for check in checks]
        return QueryResult(call.apply_filter(listed, AGENT_CHECK), catalog.table_index("checks"))

    result, headers = run_query(call, options, WatchSpec.of(node_topic(node_name)), evaluate)
    return json_reply(result.value, call.request, headers)


def health_state(call: Call) -> Reply:
    """Every check in one state (`any` for all)."""
    options = QueryOptions.parse(call.request)
    state = path_id(call, "Missing check state")
    if state != "any" and state not in CHECK_STATUSES:
        raise HttpError(400, "Invalid check state")
    catalog = call.state.catalog

    def evaluate() -> QueryResult:
        listed = [
            views.health_check(check)
            for node in catalog.nodes()
            for check in _readable_checks(call, node, node.catalog_checks())
            if state in ("any", check.catalog_status)
        ]
        return QueryResult(call.apply_filter(listed, AGENT_CHECK), catalog.table_index("checks"))

    result, headers = run_query(call, options, WatchSpec.of(CHECKS_TOPIC), evaluate)
    return json_reply(result.value, call.request, headers)


def catalog_deregister(call: Call) -> Reply:
    """Addendum §14: a service, else a check, else a node's registrations leave the catalog.

    consul: agent/catalog_endpoint.go (CatalogDeregister: decodeBody, the body's Datacenter,
    the request's token) and agent/consul/catalog_endpoint.go (Catalog.Deregister: `Must
    provide node`, then the token, then vetDeregisterWithACL). The agent's own view is left
    alone: `/v1/agent/services` still lists what was deregistered here.
    """
    body = decode_or_400(call, CATALOG_DEREGISTER)
    datacenter = body.get("Datacenter") or ""
    if datacenter and datacenter != call.state.datacenter:
        raise HttpError(500, NO_DC_PATH)
    node, service_id, check_id = (
        body.get("Node") or "", body.get("ServiceID") or "", body.get("CheckID") or ""
    )
    if not node:
        raise StateError("Must provide node")
    _ = call.authz
    with call.state.server_write(call.aborted) as txn:
        _vet_deregister(call, node, service_id, check_id)
        call.state.catalog.catalog_deregister(txn, node, service_id, check_id)
    return json_reply(True, call.request)


def _vet_deregister(call: Call, node: str, service_id: str, check_id: str) -> None:
    """consul: agent/consul/catalog_endpoint.go (vetDeregisterWithACL): node:write allows
    anything on the node; else a service needs service:write on its name, a check that of
    its service (node:write for a node check), and a whole node node:write."""
    if not call.settings.acl_enabled or call.authz.allows("node", node, "write"):
        return
    catalog = call.state.catalog
    if service_id:
        service = catalog.catalog_service(node, service_id)
        if service is None:
            raise StateError(f"Unknown service ID '{service_id}'")
        call.require("service", service.name, "write")
    elif check_id:
        check = catalog.catalog_check_of(node, check_id)
        if check is None:
            raise StateError(f"Unknown check ID '{check_id}'")
        if check.service_id:
            call.require("service", check.service_name, "write")
        else:
            call.require("node", node, "write")
    else:
        call.require("node", node, "write")


def status_leader(call: Call) -> Reply:
    """§5: the leader's address, or "" while there is none (any server answers this)."""
    require_local_dc(call)
    return json_reply(LEADER_ADDRESS if call.state.has_leader else "", call.request)


def status_peers(call: Call) -> Reply:
    require_local_dc(call)
    return json_reply([LEADER_ADDRESS] if call.state.has_leader else [], call.request)


def _readable_instances(
    call: Call, name: str, tags: bool = True
) -> list[tuple[NodeRecord, ServiceRecord]]:
    wanted = [tag.lower() for tag in call.request.query.get("tag", [])] if tags else []
    return [
        (node, service)
        for node, service in call.state.catalog.service_instances(name)
        if _has_tags(service, wanted)
        and call.allows("node", node.name)
        and call.allows("service", service.name)
    ]


def _has_tags(service: ServiceRecord, wanted: list[str]) -> bool:
    """serviceTagFilter: every requested tag, compared case-insensitively (§5)."""
    present = {tag.lower() for tag in service.tags}
    return all(tag in present for tag in wanted)


def _readable_checks(
    call: Call, node: NodeRecord, checks: list[CheckRecord]
) -> list[CheckRecord]:
    if not call.allows("node", node.name):
        return []
    return [
        check for check in sorted(checks, key=lambda check: check.check_id)
        if not check.service_name or call.allows("service", check.service_name)
    ]


def _passing_only(call: Call) -> bool:
    """`?passing`: empty means true, else Go's ParseBool; an invalid value answers 400."""
    if not call.request.has("passing"):
        return False
    value = call.request.param("passing") or ""
    if not value:
        return True
    try:
        return parse_bool(value)
    except GoSyntaxError:
        raise HttpError(400, "Invalid value for ?passing") from None


def _all_passing(entry: dict[str, Any]) -> bool:
    return all(check["Status"] == PASSING for check in entry["Checks"])
