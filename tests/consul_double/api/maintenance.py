"""`/v1/agent/maintenance` and `/v1/agent/service/maintenance/:id` (addendum §15).

Maintenance mode is a fake check on the agent, registered critical like any other check:
`_node_maintenance` (node-level) or `_service_maintenance:<service id>` (on that service).
Because it is an ordinary check it counts wherever checks count: `?passing`, DNS, alias
checks, and sessions bound to it. Being node-level, `_node_maintenance` notifies no local
alias check (addendum §9.3): an alias sees it only at its next notification or refresh.

consul: agent/agent_endpoint.go (AgentNodeMaintenance, AgentServiceMaintenance),
agent/agent.go (EnableNodeMaintenance, DisableNodeMaintenance, EnableServiceMaintenance,
DisableServiceMaintenance, vetServiceUpdateWithAuthorizer, defaultNodeMaintReason,
defaultServiceMaintReason), agent/structs/structs.go (NodeMaint, ServiceMaintPrefix).
"""

from __future__ import annotations

from ..catalog import CheckSpec
from ..durations import go_quote
from ..model import CRITICAL
from ..wire import HttpError, Reply
from .agent import unknown_service
from .common import Call, agent_node

NODE_MAINT_CHECK_ID = "_node_maintenance"  # structs.NodeMaint
SERVICE_MAINT_PREFIX = "_service_maintenance:"  # structs.ServiceMaintPrefix
NODE_MAINT_NAME = "Node Maintenance Mode"
SERVICE_MAINT_NAME = "Service Maintenance Mode"
DEFAULT_NODE_REASON = (
    "Maintenance mode is enabled for this node, but no reason was provided. "
    "This is a default message."
)
DEFAULT_SERVICE_REASON = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)
# Go's strconv.ParseBool.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def service_maint_check_id(service_id: str) -> str:
    """agent.go serviceMaintCheckID."""
    return SERVICE_MAINT_PREFIX + service_id


def node_maintenance(call: Call) -> Reply:
    """AgentNodeMaintenance: `enable` first (400s), then node:write on this agent's node."""
    enable = _enable(call)
    _ = call.authz
    call.require("node", call.node, "write")
    with call.state.write() as txn:
        present = NODE_MAINT_CHECK_ID in agent_node(call).checks
        if enable and not present:  # EnableNodeMaintenance: already on keeps its reason
            spec = CheckSpec(NODE_MAINT_CHECK_ID, NODE_MAINT_NAME, CRITICAL,
                             notes=call.request.param("reason") or DEFAULT_NODE_REASON)
            call.state.catalog.register_check(txn, call.node, spec, call.token or "")
        elif not enable and present:  # DisableNodeMaintenance: RemoveCheck
            call.state.catalog.deregister_check(txn, call.node, NODE_MAINT_CHECK_ID)
    return Reply(200)


def service_maintenance(call: Call) -> Reply:
    """AgentServiceMaintenance: the ID, then `enable` (400s), then the service must exist
    (404, vetServiceUpdateWithAuthorizer) and the token needs service:write on its name."""
    service_id = call.suffix
    if not service_id:
        raise HttpError(400, "Missing service ID")
    enable = _enable(call)
    _ = call.authz
    check_id = service_maint_check_id(service_id)
    with call.state.write() as txn:
        node = agent_node(call)
        service = node.services.get(service_id)
        if service is None:
            raise unknown_service(service_id)
        call.require("service", service.name, "write")
        present = check_id in node.checks
        if enable and not present:
            spec = CheckSpec(check_id, SERVICE_MAINT_NAME, CRITICAL,
                             notes=call.request.param("reason") or DEFAULT_SERVICE_REASON,
                             service_id=service_id)
            call.state.catalog.register_check(txn, call.node, spec, call.token or "")
        elif not enable and present:
            call.state.catalog.deregister_check(txn, call.node, check_id)
    return Reply(200)


def _enable(call: Call) -> bool:
    """`enable` must be present and parse as Go's strconv.ParseBool."""
    if not call.request.has("enable"):
        raise HttpError(400, "Missing value for enable")
    raw = call.request.param("enable") or ""
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise HttpError(400, f"Invalid value for enable: {go_quote(raw)}")
