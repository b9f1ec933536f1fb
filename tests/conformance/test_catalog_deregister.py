"""Conformance of `PUT /v1/catalog/deregister` (docs/consul-semantics-addendum.md §14).

The servers drop a service (with its checks), a check, or a node's registrations from the
catalog; the agent that registered them still holds them, and puts a service back when it
syncs it again (a re-registration, or a check status change synced with a token that may
write). Tests marked `real_consul` also pass against a real agent (see conftest.py); they
finish well before the agent's periodic full sync could undo the deregistration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conformance.conftest import REAL_CONSUL_ADDR, ConsulTarget, WaitUntil
from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem

real_consul = pytest.mark.real_consul
TIMEOUT = 10.0


def register_db(consul: ConsulTarget, status: str = "passing") -> tuple[str, str]:
    """An instance of a unique service with a TTL check; (service ID, check ID)."""
    service_id = consul.unique("db")
    check_id = f"{service_id}-ttl"
    consul.register_service({
        "ID": service_id, "Name": service_id,
        "Check": {"CheckID": check_id, "TTL": "10m", "Status": status},
    })
    return service_id, check_id


def deregister(consul: ConsulTarget, **body: str) -> requests.Response:
    return consul.put("/v1/catalog/deregister", json=body)


def health_ids(consul: ConsulTarget, name: str) -> set[str]:
    response = consul.get(f"/v1/health/service/{name}")
    assert response.status_code == 200, response.text
    return {entry["Service"]["ID"] for entry in response.json()}


def agent_service_ids(consul: ConsulTarget) -> set[str]:
    response = consul.get("/v1/agent/services")
    assert response.status_code == 200, response.text
    return set(response.json())


@real_consul
def test_a_deregistered_service_leaves_the_catalog_but_not_the_agent(
        consul: ConsulTarget) -> None:
    service_id, check_id = register_db(consul)
    assert health_ids(consul, service_id) == {service_id}

    response = deregister(consul, Node=consul.node, ServiceID=service_id)

    assert response.status_code == 200, response.text
    assert response.json() is True
    assert health_ids(consul, service_id) == set()
    assert consul.get(f"/v1/catalog/service/{service_id}").json() == []
    assert consul.get(f"/v1/health/checks/{service_id}").json() == []
    assert service_id in agent_service_ids(consul)
    assert check_id in consul.get("/v1/agent/checks").json()


@real_consul
def test_a_session_bound_to_a_deregistered_check_is_invalidated(consul: ConsulTarget) -> None:
    service_id, check_id = register_db(consul)
    session = consul.create_session(ServiceChecks=[{"ID": check_id}], TTL="60s")

    assert deregister(consul, Node=consul.node, ServiceID=service_id).status_code == 200

    assert consul.session_info(session) == []


@real_consul
def test_a_session_cannot_bind_to_a_check_only_the_agent_holds(consul: ConsulTarget) -> None:
    service_id, check_id = register_db(consul)
    assert deregister(consul, Node=consul.node, ServiceID=service_id).status_code == 200

    response = consul.put("/v1/session/create", json={"ServiceChecks": [{"ID": check_id}]})

    consul.assert_error(response, 500, f"Missing check '{check_id}' registration")


@real_consul
def test_registering_through_the_agent_again_puts_it_back(
        consul: ConsulTarget, wait_until: WaitUntil) -> None:
    service_id, _ = register_db(consul)
    assert deregister(consul, Node=consul.node, ServiceID=service_id).status_code == 200

    register_db(consul)

    wait_until(lambda: health_ids(consul, service_id) == {service_id},
               message="the re-registered service back in the catalog")


@real_consul
def test_a_synced_status_change_of_its_check_puts_it_back(
        consul: ConsulTarget, wait_until: WaitUntil) -> None:
    service_id, check_id = register_db(consul)
    assert deregister(consul, Node=consul.node, ServiceID=service_id).status_code == 200

    assert consul.put(f"/v1/agent/check/fail/{check_id}").status_code == 200

    wait_until(lambda: health_ids(consul, service_id) == {service_id},
               message="the service brought back by its check's sync")


@real_consul
def test_a_check_can_be_deregistered_alone(consul: ConsulTarget) -> None:
    service_id, check_id = register_db(consul)

    assert deregister(consul, Node=consul.node, CheckID=check_id).status_code == 200

    assert consul.get(f"/v1/health/checks/{service_id}").json() == []
    assert health_ids(consul, service_id) == {service_id}
    assert check_id in consul.get("/v1/agent/checks").json()


@real_consul
def test_a_node_is_required(consul: ConsulTarget) -> None:
    consul.assert_error(deregister(consul, ServiceID="anything"), 500, "Must provide node")


@real_consul
def test_an_unknown_service_is_no_error_when_the_node_may_be_written(
        consul: ConsulTarget) -> None:
    response = deregister(consul, Node=consul.node, ServiceID=consul.unique("nothing"))

    assert response.status_code == 200, response.text


def test_deregistering_a_node_drops_its_registrations_and_sessions(
        consul: ConsulTarget, double: ConsulDouble) -> None:
    service_id, _ = register_db(consul)
    session = consul.create_session(TTL="60s")

    assert deregister(consul, Node=consul.node).status_code == 200

    assert health_ids(consul, service_id) == set()
    assert consul.session_info(session) == []
    assert service_id in agent_service_ids(consul)


def test_the_state_names_what_only_the_agent_holds_and_a_return_is_a_new_row(
        consul: ConsulTarget, double: ConsulDouble) -> None:
    service_id, check_id = register_db(consul)
    before = consul.get(f"/v1/catalog/service/{service_id}").json()[0]["CreateIndex"]
    assert deregister(consul, Node=consul.node, ServiceID=service_id).status_code == 200
    assert double.snapshot()["nodes"][consul.node]["not_in_catalog"] == sorted(
        [service_id, check_id])

    register_db(consul)

    assert double.snapshot()["nodes"][consul.node]["not_in_catalog"] == []
    after = consul.get(f"/v1/catalog/service/{service_id}").json()[0]["CreateIndex"]
    assert after > before


# -- ACLs (vetDeregisterWithACL) ------------------------------------------------------------

ROOT = "root-secret"
DB_WRITER = "db-writer"
NODE_WRITER = "node-writer"
OTHER = "other-writer"
RULES = {
    DB_WRITER: 'service "db" { policy = "write" }\nnode_prefix "" { policy = "read" }\n',
    NODE_WRITER: 'node "n1" { policy = "write" }\n',
    OTHER: 'service "web" { policy = "write" }\n',
}


@pytest.fixture
def secured() -> Iterator[ConsulDouble]:
    if REAL_CONSUL_ADDR:
        pytest.skip("needs the Consul double with its own ACL tokens")
    acl = AclSystem(default_policy="deny", tokens=dict(RULES), management_tokens=[ROOT])
    with ConsulDouble(nodes=("n1", "n2"), session_ttl_min=1.0, rpc_hold_timeout=0.1,
                      acl=acl) as double:
        yield double


def as_token(double: ConsulDouble, token: str, method: str, path: str,
             **kwargs: Any) -> requests.Response:
    return requests.request(method, double.node_addr("n1") + path, timeout=TIMEOUT,
                            headers={"X-Consul-Token": token}, **kwargs)


def register_secured_db(double: ConsulDouble, token: str = ROOT) -> None:
    body = {"ID": "db-1", "Name": "db", "Check": {"CheckID": "db-1-ttl", "TTL": "10m",
                                                  "Status": "passing"}}
    response = as_token(double, token, "PUT", "/v1/agent/service/register", json=body)
    assert response.status_code == 200, response.text


def secured_health_ids(double: ConsulDouble) -> set[str]:
    response = as_token(double, ROOT, "GET", "/v1/health/service/db")
    return {entry["Service"]["ID"] for entry in response.json()}


@pytest.mark.parametrize("token", [DB_WRITER, NODE_WRITER, ROOT])
def test_service_or_node_write_may_deregister_a_service(secured: ConsulDouble,
                                                       token: str) -> None:
    register_secured_db(secured)

    response = as_token(secured, token, "PUT", "/v1/catalog/deregister",
                        json={"Node": "n1", "ServiceID": "db-1"})

    assert response.status_code == 200, response.text
    assert secured_health_ids(secured) == set()


def test_write_on_another_service_is_denied(secured: ConsulDouble) -> None:
    register_secured_db(secured)

    response = as_token(secured, OTHER, "PUT", "/v1/catalog/deregister",
                        json={"Node": "n1", "ServiceID": "db-1"})

    assert response.status_code == 403
    assert response.text.startswith("Permission denied")
    assert "lacks permission 'service:write' on \"db\"" in response.text
    assert secured_health_ids(secured) == {"db-1"}


def test_an_unknown_service_without_node_write_is_an_error(secured: ConsulDouble) -> None:
    response = as_token(secured, DB_WRITER, "PUT", "/v1/catalog/deregister",
                        json={"Node": "n1", "ServiceID": "db-9"})

    assert (response.status_code, response.text) == (500, "Unknown service ID 'db-9'")


def test_a_whole_node_needs_node_write(secured: ConsulDouble) -> None:
    response = as_token(secured, DB_WRITER, "PUT", "/v1/catalog/deregister",
                        json={"Node": "n1"})

    assert response.status_code == 403
    assert "lacks permission 'node:write' on \"n1\"" in response.text


def test_a_revoked_token_cannot_sync_it_back_but_a_new_registration_does(
        secured: ConsulDouble) -> None:
    secured.add_acl_token("doomed", RULES[DB_WRITER])
    register_secured_db(secured, token="doomed")
    as_token(secured, ROOT, "PUT", "/v1/catalog/deregister",
             json={"Node": "n1", "ServiceID": "db-1"})
    secured.revoke_acl_token("doomed")

    failed = as_token(secured, DB_WRITER, "PUT", "/v1/agent/check/fail/db-1-ttl")

    assert failed.status_code == 200, failed.text
    assert secured_health_ids(secured) == set()  # addendum §11: the sync is refused
    register_secured_db(secured, token=DB_WRITER)
    assert secured_health_ids(secured) == {"db-1"}
