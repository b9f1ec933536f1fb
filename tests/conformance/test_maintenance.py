"""Conformance of maintenance mode (docs/consul-semantics-addendum.md §15).

consul agent/agent_endpoint.go (AgentNodeMaintenance, AgentServiceMaintenance) and
agent/agent.go (Enable/DisableNodeMaintenance, Enable/DisableServiceMaintenance): a fake
critical check, `_node_maintenance` on the node or `_service_maintenance:<id>` on the service,
which then counts like any check: `?passing`, alias checks, sessions bound to it. Tests marked
`real_consul` also pass against a real agent (see conftest.py); each turns maintenance off
again before it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conformance.conftest import REAL_CONSUL_ADDR, ConsulTarget, WaitUntil
from tests.conformance.test_alias_checks import (
    ALL_PASSING,
    register_alias_service,
    register_target,
    wait_for_check,
)
from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem

real_consul = pytest.mark.real_consul

NODE_MAINT = "_node_maintenance"
DEFAULT_NODE_REASON = ("Maintenance mode is enabled for this node, but no reason was "
                       "provided. This is a default message.")
DEFAULT_SERVICE_REASON = ("Maintenance mode is enabled for this service, but no reason was "
                          "provided. This is a default message.")


def service_maint(service_id: str) -> str:
    return f"_service_maintenance:{service_id}"


@pytest.fixture
def node_maintenance(consul: ConsulTarget) -> Iterator[ConsulTarget]:
    """The agent under test, with node maintenance turned off again afterwards."""
    try:
        yield consul
    finally:
        consul.put("/v1/agent/maintenance?enable=false")


def agent_checks(consul: ConsulTarget) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = consul.get("/v1/agent/checks").json()
    return checks


def put_ok(consul: ConsulTarget, path: str) -> None:
    response = consul.put(path)
    assert response.status_code == 200, response.text
    assert response.text == ""


# -- the node -----------------------------------------------------------------------------


@real_consul
def test_node_maintenance_is_a_critical_node_check_until_disabled(
    node_maintenance: ConsulTarget,
) -> None:
    """§15.1: `_node_maintenance`, named `Node Maintenance Mode`, the reason as Notes,
    critical, no service; `enable=false` removes it."""
    consul = node_maintenance
    put_ok(consul, "/v1/agent/maintenance?enable=true&reason=kernel+upgrade")
    check = agent_checks(consul)[NODE_MAINT]
    assert (check["Name"], check["Notes"], check["Status"], check["ServiceID"],
            check["Output"]) == ("Node Maintenance Mode", "kernel upgrade", "critical", "", "")
    node_checks = consul.get(f"/v1/health/node/{consul.node}").json()
    assert NODE_MAINT in {entry["CheckID"] for entry in node_checks}

    put_ok(consul, "/v1/agent/maintenance?enable=false")
    assert NODE_MAINT not in agent_checks(consul)


@real_consul
def test_enabling_twice_keeps_the_first_reason_and_a_default_fills_in(
    node_maintenance: ConsulTarget,
) -> None:
    """§15.1: EnableNodeMaintenance returns early when the check exists; an empty reason
    becomes defaultNodeMaintReason."""
    consul = node_maintenance
    put_ok(consul, "/v1/agent/maintenance?enable=true")
    put_ok(consul, "/v1/agent/maintenance?enable=true&reason=second")
    assert agent_checks(consul)[NODE_MAINT]["Notes"] == DEFAULT_NODE_REASON
    put_ok(consul, "/v1/agent/maintenance?enable=false")
    put_ok(consul, "/v1/agent/maintenance?enable=false")  # already off: nothing to do


@real_consul
@pytest.mark.parametrize("query, message", [
    ("", "Missing value for enable"),
    ("?reason=x", "Missing value for enable"),
    ("?enable=", 'Invalid value for enable: ""'),
    ("?enable=yes", 'Invalid value for enable: "yes"'),
])
def test_enable_must_be_given_as_a_go_boolean(
    node_maintenance: ConsulTarget, query: str, message: str
) -> None:
    """§15.3: strconv.ParseBool, 400 before anything else."""
    consul = node_maintenance
    consul.assert_error(consul.put(f"/v1/agent/maintenance{query}"), 400, message)
    service, _ = register_target(consul)
    consul.assert_error(consul.put(f"/v1/agent/service/maintenance/{service}{query}"), 400,
                        message)


@real_consul
@pytest.mark.parametrize("spelling", ["1", "t", "TRUE", "True"])
def test_every_go_spelling_of_true_enables(node_maintenance: ConsulTarget, spelling: str) -> None:
    consul = node_maintenance
    put_ok(consul, f"/v1/agent/maintenance?enable={spelling}")
    assert NODE_MAINT in agent_checks(consul)


# -- a service ----------------------------------------------------------------------------


@real_consul
def test_service_maintenance_is_a_critical_check_on_that_service(consul: ConsulTarget) -> None:
    """§15.2: `_service_maintenance:<id>` on the service, which leaves `?passing`."""
    service, _ = register_target(consul)
    put_ok(consul, f"/v1/agent/service/maintenance/{service}?enable=true")
    check = agent_checks(consul)[service_maint(service)]
    assert (check["Name"], check["Notes"], check["Status"], check["ServiceID"],
            check["ServiceName"]) == ("Service Maintenance Mode", DEFAULT_SERVICE_REASON,
                                      "critical", service, service)
    assert consul.get(f"/v1/health/service/{service}?passing").json() == []

    put_ok(consul, f"/v1/agent/service/maintenance/{service}?enable=false")
    assert service_maint(service) not in agent_checks(consul)
    assert len(consul.get(f"/v1/health/service/{service}?passing").json()) == 1


@real_consul
def test_service_maintenance_of_an_unknown_service_is_404(consul: ConsulTarget) -> None:
    """§15.3: vetServiceUpdateWithAuthorizer, the deregister endpoint's text; an empty ID
    is 400 first."""
    missing = consul.unique("nowhere")
    for enable in ("true", "false"):
        response = consul.put(f"/v1/agent/service/maintenance/{missing}?enable={enable}")
        consul.assert_error(response, 404, f'Unknown service ID "{missing}". Ensure that the '
                                           "service ID is passed, not the service name.")
    consul.assert_error(consul.put("/v1/agent/service/maintenance/?enable=true"), 400,
                        "Missing service ID")


# -- what maintenance does to alias checks and sessions -------------------------------------


@real_consul
def test_service_maintenance_turns_an_alias_critical_and_ends_its_sessions(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§15.4: the check is on the aliased service, so the alias is notified at once; a
    session bound to the alias is invalidated, and a new one is refused while it lasts."""
    target, _ = register_target(consul)
    _, alias = register_alias_service(consul, target)
    wait_for_check(consul, wait_until, alias, "passing", ALL_PASSING)
    session = consul.create_session(ServiceChecks=[{"ID": alias}], TTL="30s")

    put_ok(consul, f"/v1/agent/service/maintenance/{target}?enable=true&reason=upgrade")
    wait_for_check(consul, wait_until, alias, "critical",
                   'Aliased check "Service Maintenance Mode" failing: ')
    wait_until(lambda: consul.session_info(session) == [], message="the session to go")
    response = consul.put("/v1/session/create", json={"ServiceChecks": [{"ID": alias}]})
    consul.assert_error(response, 500, f"Check '{alias}' is in critical state")

    put_ok(consul, f"/v1/agent/service/maintenance/{target}?enable=false")
    wait_for_check(consul, wait_until, alias, "passing", ALL_PASSING)
    consul.create_session(ServiceChecks=[{"ID": alias}], TTL="30s")


@real_consul
def test_node_maintenance_reaches_a_local_alias_only_at_its_next_notification(
    node_maintenance: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§15.4 with §9.3: `_node_maintenance` counts in a local alias's verdict, but being
    node-level it notifies no alias; the next change of a check of the aliased service does."""
    consul = node_maintenance
    target, target_check = register_target(consul)
    _, alias = register_alias_service(consul, target)
    wait_for_check(consul, wait_until, alias, "passing", ALL_PASSING)

    put_ok(consul, "/v1/agent/maintenance?enable=true")
    if consul.double is not None:  # a real agent might refresh the alias meanwhile
        assert agent_checks(consul)[alias]["Status"] == "passing"
    consul.put(f"/v1/agent/check/warn/{target_check}?note=poke")  # notifies the alias
    wait_for_check(consul, wait_until, alias, "critical",
                   'Aliased check "Node Maintenance Mode" failing: ')


@real_consul
def test_a_session_on_serf_health_alone_survives_node_maintenance(
    node_maintenance: ConsulTarget,
) -> None:
    """§15.4: maintenance is a check of its own; only sessions bound to a check that goes
    critical (or to the maintenance check itself) are invalidated."""
    consul = node_maintenance
    session = consul.create_session(TTL="30s")
    put_ok(consul, "/v1/agent/maintenance?enable=true")
    assert len(consul.session_info(session)) == 1


# -- ACLs -------------------------------------------------------------------------------------

ROOT = "root-secret"
APP = "app-secret"
APP_RULES = 'service "web" { policy = "write" }\nnode_prefix "" { policy = "read" }\n'


@pytest.fixture
def secured() -> Iterator[ConsulDouble]:
    if REAL_CONSUL_ADDR:
        pytest.skip("needs the Consul double with its own ACL tokens")
    acl = AclSystem(default_policy="deny", tokens={APP: APP_RULES}, management_tokens=[ROOT])
    with ConsulDouble(nodes=("n1",), session_ttl_min=1.0, rpc_hold_timeout=0.1,
                      acl=acl) as double:
        yield double


def put_as(double: ConsulDouble, token: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.put(double.node_addr("n1") + path, headers={"X-Consul-Token": token},
                        timeout=10.0, **kwargs)


def test_node_maintenance_needs_node_write(secured: ConsulDouble) -> None:
    """§15.3: NodeWriteAllowed on the agent's own node."""
    response = put_as(secured, APP, "/v1/agent/maintenance?enable=true")
    assert response.status_code == 403
    assert "lacks permission 'node:write' on \"n1\"" in response.text
    assert put_as(secured, ROOT, "/v1/agent/maintenance?enable=true").status_code == 200


def test_service_maintenance_needs_service_write_on_its_name(secured: ConsulDouble) -> None:
    """§15.3: ServiceWriteAllowed on the existing service's name (web: allowed; db: not)."""
    for name in ("web", "db"):
        assert put_as(secured, ROOT, "/v1/agent/service/register",
                      json={"ID": f"{name}-1", "Name": name}).status_code == 200
    assert put_as(secured, APP, "/v1/agent/service/maintenance/web-1?enable=true"
                  ).status_code == 200
    denied = put_as(secured, APP, "/v1/agent/service/maintenance/db-1?enable=true")
    assert denied.status_code == 403
    assert "lacks permission 'service:write' on \"db\"" in denied.text
