"""`/v1/agent/checks` and `/v1/agent/check/*` (consul-semantics.md §4.6): node-local checks.

Registration, deregistration and TTL updates act on the agent of the node the
request reached; status changes reach the catalog in the same write and a
check going critical (or away) invalidates the sessions bound to it (§1.5).
"""

from __future__ import annotations

from .. import views
from ..decoding import CHECK_DEFINITION, CHECK_UPDATE
from ..durations import format_duration, go_quote
from ..filter import AGENT_CHECK
from ..model import CHECK_STATUSES, CRITICAL, PASSING, WARNING
from ..wire import HttpError, Reply, json_reply
from .check_fields import check_spec, check_type_problem, translated_check_fields
from .common import Call, agent_node, decode_or_400


def checks(call: Call) -> Reply:
    """§4.6: object keyed by CheckID (the agent's own checks, not serfHealth); `?filter`."""
    _ = call.authz
    with call.state.read():
        node = agent_node(call)
        listed = [
            views.health_check(node.checks[check_id], agent_view=True)
            for check_id in sorted(node.checks)
            if _check_readable(call, node.checks[check_id].service_name)
        ]
    body = {view["CheckID"]: view for view in call.apply_filter(listed, AGENT_CHECK)}
    return json_reply(body, call.request, call.acl_headers())


def _check_readable(call: Call, service_name: str) -> bool:
    if service_name:
        return call.allows("service", service_name)
    return call.allows("node", call.node)


def register_check(call: Call) -> Reply:
    """§4.6 `check/register`: Name required, ID defaults to Name, ServiceID must exist."""
    fields = translated_check_fields(decode_or_400(call, CHECK_DEFINITION))
    name = fields.get("Name") or ""
    if not name:
        raise HttpError(400, "Missing check name")
    status = fields.get("Status") or ""
    if status and status not in CHECK_STATUSES:
        raise HttpError(400, "Bad check status")
    problem = check_type_problem(fields)
    if problem:
        raise HttpError(400, f"Invalid check: {problem}")
    service_id = fields.get("ServiceID") or ""
    spec = check_spec(fields, fields.get("ID") or name, name, service_id)
    spec.interval = format_duration(fields.get("Interval") or 0)
    spec.timeout = format_duration(fields.get("Timeout") or 0)
    _ = call.authz
    with call.state.write() as txn:
        node = agent_node(call)
        service = node.services.get(service_id) if service_id else None
        if service_id and service is None:
            raise HttpError(404, f"ServiceID {go_quote(service_id)} does not exist")
        _require_check_write(call, service.name if service else "")
        call.state.catalog.register_check(txn, call.node, spec, call.token or "")
    return Reply(200)


def deregister_check(call: Call) -> Reply:
    check_id = call.suffix
    _ = call.authz
    with call.state.write() as txn:
        check = agent_node(call).checks.get(check_id)
        if check is None:
            raise _unknown_check(check_id)
        _require_check_write(call, check.service_name)
        call.state.catalog.deregister_check(txn, call.node, check_id)
    return Reply(200)


def check_pass(call: Call) -> Reply:
    return _update_ttl_check(call, PASSING, call.request.param("note") or "")


def check_warn(call: Call) -> Reply:
    return _update_ttl_check(call, WARNING, call.request.param("note") or "")


def check_fail(call: Call) -> Reply:
    return _update_ttl_check(call, CRITICAL, call.request.param("note") or "")


def check_update(call: Call) -> Reply:
    """§4.6 `check/update/:id` with `{"Status", "Output"}`; the status is checked first."""
    body = decode_or_400(call, CHECK_UPDATE)
    status = body.get("Status") or ""
    if status not in CHECK_STATUSES:
        raise HttpError(400, f"Invalid check status: '{status}'")
    return _update_ttl_check(call, status, body.get("Output") or "")


def _update_ttl_check(call: Call, status: str, output: str) -> Reply:
    """404 for an unknown ID, 500 for a check without TTL; resets the TTL timer."""
    check_id = call.suffix
    _ = call.authz
    with call.state.write() as txn:
        check = agent_node(call).checks.get(check_id)
        if check is None:
            raise _unknown_check(check_id)
        _require_check_write(call, check.service_name)
        call.state.catalog.update_ttl_check(txn, call.node, check_id, status, output)
    return Reply(200)


def _require_check_write(call: Call, service_name: str) -> None:
    """vetCheckUpdate: service:write on its service, or node:write for a node check."""
    if service_name:
        call.require("service", service_name, "write")
    else:
        call.require("node", call.node, "write")


def _unknown_check(check_id: str) -> HttpError:
    return HttpError(
        404,
        f"Unknown check ID {go_quote(check_id)}. "
        "Ensure that the check ID is passed, not the check name.",
    )
