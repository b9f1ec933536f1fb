"""Conformance of check re-registration (addendum §10) and of the check-sync token (§11).

§10: a check registered again under an ID the agent already holds keeps its status and
output (consul agent/agent.go addServiceInternal, addCheckLocked); its TTL timer starts
afresh (addCheck starts a new CheckTTL). §11: the agent syncs a check's status to the
catalog with the check's own token (agent/local/state.go syncCheck); once that token is
revoked the catalog keeps the last status it got. Tests marked `real_consul` also pass
against a real agent (see conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conformance.conftest import ConsulTarget, WaitUntil
from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem

real_consul = pytest.mark.real_consul


def agent_check(consul: ConsulTarget, check_id: str) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = consul.get("/v1/agent/checks").json()
    return checks[check_id]


def catalog_check(consul: ConsulTarget, service: str, check_id: str) -> dict[str, Any]:
    [check] = [c for c in consul.get(f"/v1/health/checks/{service}").json()
               if c["CheckID"] == check_id]
    return dict(check)


def status_and_output(check: dict[str, Any]) -> tuple[str, str]:
    return check["Status"], check["Output"]


# -- §10 re-registration ---------------------------------------------------------------


@real_consul
def test_check_register_again_keeps_status_and_output(consul: ConsulTarget) -> None:
    """§10.1: PUT /v1/agent/check/register of a known ID keeps the agent's status/output,
    whatever `Status` the new definition carries."""
    check_id = consul.register_ttl_check("again", status="passing")
    consul.put(f"/v1/agent/check/fail/{check_id}?note=broken")
    consul.register_check({"ID": check_id, "Name": check_id, "TTL": "10m", "Status": "passing",
                           "Notes": "second definition"})
    check = agent_check(consul, check_id)
    assert status_and_output(check) == ("critical", "broken")
    assert check["Notes"] == "second definition"  # the definition itself is replaced


@real_consul
@pytest.mark.parametrize("replace", [False, True], ids=["plain", "replace-existing-checks"])
def test_service_register_again_keeps_its_checks_status(
    consul: ConsulTarget, replace: bool
) -> None:
    """§10.1: re-registering a service keeps the status of each check it names again."""
    service = consul.unique("svc")
    check_id = f"{service}-ttl"
    definition = {"Name": service,
                  "Check": {"CheckID": check_id, "TTL": "10m", "Status": "passing"}}
    consul.register_service(definition)
    consul.put(f"/v1/agent/check/warn/{check_id}?note=slow")
    path = "/v1/agent/service/register" + ("?replace-existing-checks" if replace else "")
    assert consul.put(path, json=definition).status_code == 200
    assert status_and_output(agent_check(consul, check_id)) == ("warning", "slow")
    assert status_and_output(catalog_check(consul, service, check_id)) == ("warning", "slow")


@real_consul
def test_a_new_id_or_a_deregistered_one_starts_from_the_definition(consul: ConsulTarget) -> None:
    """§10.2: only an ID the agent holds keeps its status; otherwise the definition's
    `Status` applies, critical by default."""
    check_id = consul.register_ttl_check("fresh", status="passing")
    consul.put(f"/v1/agent/check/fail/{check_id}?note=broken")
    assert consul.put(f"/v1/agent/check/deregister/{check_id}").status_code == 200
    consul.register_check({"ID": check_id, "Name": check_id, "TTL": "10m", "Status": "warning"})
    assert status_and_output(agent_check(consul, check_id)) == ("warning", "")

    other = consul.unique("other")
    consul.register_check({"ID": other, "Name": other, "TTL": "10m"})
    assert status_and_output(agent_check(consul, other)) == ("critical", "")


@real_consul
def test_replace_existing_checks_drops_only_the_checks_not_named(consul: ConsulTarget) -> None:
    """§10.2/§4.3: the named check keeps its status, the others are removed."""
    service = consul.unique("svc")
    kept, dropped = f"{service}-kept", f"{service}-dropped"
    consul.register_service({"Name": service, "Checks": [
        {"CheckID": kept, "TTL": "10m", "Status": "passing"},
        {"CheckID": dropped, "TTL": "10m", "Status": "passing"},
    ]})
    consul.put(f"/v1/agent/check/fail/{kept}?note=broken")
    response = consul.put("/v1/agent/service/register?replace-existing-checks", json={
        "Name": service, "Check": {"CheckID": kept, "TTL": "10m", "Status": "passing"}})
    assert response.status_code == 200
    checks = consul.get("/v1/agent/checks").json()
    assert dropped not in checks
    assert status_and_output(checks[kept]) == ("critical", "broken")


def test_re_registration_restarts_the_ttl_timer(
    consul: ConsulTarget, double: ConsulDouble, wait_until: WaitUntil
) -> None:
    """§10.3: a new CheckTTL: the full TTL again from the re-registration, and no `last
    output` to quote when it expires (the kept output is the agent's, not the runner's)."""
    ttl = 1.0
    check_id = consul.unique("timer")
    definition = {"ID": check_id, "Name": check_id, "TTL": f"{ttl}s", "Status": "passing"}
    consul.register_check(definition)
    consul.put(f"/v1/agent/check/pass/{check_id}?note=alive")
    time.sleep(ttl / 2)  # let half the first TTL pass: the re-registration must restart it
    reregistered_at = time.monotonic()
    consul.register_check(definition)
    wait_until(lambda: agent_check(consul, check_id)["Status"] == "critical", timeout=5 * ttl,
               message="the TTL to expire")
    [expiry] = [event for event in double.events(kind="check_status")
                if event["id"] == check_id and event["new"] == "critical"]
    assert expiry["mono"] >= reregistered_at + ttl - 0.05
    assert agent_check(consul, check_id)["Output"] == "TTL expired"


# -- §11 the check-sync token ------------------------------------------------------------

ROOT = "root-secret"
APP = "app-secret"
APP_RULES = 'service_prefix "" { policy = "write" }\nnode_prefix "" { policy = "write" }'


@pytest.fixture
def acl_double() -> Iterator[tuple[ConsulDouble, ConsulTarget]]:
    # Default allow, so ConsulTarget's first /v1/agent/self needs no token; a revoked token
    # is `ACL not found` whatever the default policy.
    acl = AclSystem(default_policy="allow", management_tokens=[ROOT], tokens={APP: APP_RULES})
    with ConsulDouble(nodes=("n1",), session_ttl_min=1.0, acl=acl) as double:
        target = ConsulTarget(double.node_addr("n1"), double)
        target.http.headers["X-Consul-Token"] = ROOT
        try:
            yield double, target
        finally:
            target.http.close()


def register_app_service(consul: ConsulTarget) -> tuple[str, str]:
    """A service and its TTL check registered with the app's own token."""
    service = "app"
    check_id = "app-ttl"
    response = consul.put("/v1/agent/service/register", headers={"X-Consul-Token": APP}, json={
        "Name": service, "Check": {"CheckID": check_id, "TTL": "10m", "Status": "passing"}})
    assert response.status_code == 200, response.text
    return service, check_id


def test_after_revocation_status_changes_stay_on_the_agent(
    acl_double: tuple[ConsulDouble, ConsulTarget]
) -> None:
    """§11.1: the agent shows the new status, the catalog the last synced one; a session
    bound to the check survives, and a new one can still bind to it."""
    double, consul = acl_double
    service, check_id = register_app_service(consul)
    session_id = consul.create_session(ServiceChecks=[{"ID": check_id}])
    double.revoke_acl_token(APP)

    consul.put(f"/v1/agent/check/fail/{check_id}?note=down")
    assert status_and_output(agent_check(consul, check_id)) == ("critical", "down")
    assert status_and_output(catalog_check(consul, service, check_id)) == ("passing", "")
    assert [e["Service"]["ID"] for e in consul.get(f"/v1/health/service/{service}?passing").json()]
    assert consul.get("/v1/health/state/critical").json() == []
    assert consul.session_info(session_id) != []
    consul.create_session(ServiceChecks=[{"ID": check_id}])  # the servers see it passing


def test_re_registering_with_a_valid_token_syncs_the_kept_status(
    acl_double: tuple[ConsulDouble, ConsulTarget]
) -> None:
    """§11.2: a re-registration carries a new token; the agent's kept critical status then
    reaches the catalog, which invalidates the bound session (§1.5)."""
    double, consul = acl_double
    service, check_id = register_app_service(consul)
    session_id = consul.create_session(ServiceChecks=[{"ID": check_id}])
    double.revoke_acl_token(APP)
    consul.put(f"/v1/agent/check/fail/{check_id}?note=down")
    assert consul.session_info(session_id) != []

    consul.register_check({"ID": check_id, "Name": check_id, "ServiceID": service, "TTL": "10m"})
    assert status_and_output(catalog_check(consul, service, check_id)) == ("critical", "down")
    assert consul.session_info(session_id) == []


def test_a_check_whose_token_is_valid_keeps_syncing(
    acl_double: tuple[ConsulDouble, ConsulTarget]
) -> None:
    """§11.1: revoking some other token changes nothing."""
    double, consul = acl_double
    double.add_acl_token("unrelated", 'key_prefix "" { policy = "read" }')
    service, check_id = register_app_service(consul)
    double.revoke_acl_token("unrelated")
    consul.put(f"/v1/agent/check/fail/{check_id}?note=down")
    assert status_and_output(catalog_check(consul, service, check_id)) == ("critical", "down")


def test_a_remote_alias_with_a_revoked_token_fails_on_the_agent(
    acl_double: tuple[ConsulDouble, ConsulTarget]
) -> None:
    """§11.3 + §9.5: the AliasNode query runs with the check's token; revoked, the next
    query fails (`ACL not found`) and the alias turns critical on the agent, which it
    cannot sync: the catalog keeps it passing."""
    double, consul = acl_double
    service, _ = register_app_service(consul)
    response = consul.put("/v1/agent/check/register", headers={"X-Consul-Token": APP}, json={
        "ID": "app-alias", "Name": "app alias", "ServiceID": service, "AliasNode": "n1"})
    assert response.status_code == 200, response.text
    assert status_and_output(agent_check(consul, "app-alias")) == (
        "passing", "All checks passing.")
    double.revoke_acl_token(APP)
    consul.register_ttl_check("disk")  # a catalog change of n1 ends the blocking query
    alias = agent_check(consul, "app-alias")
    assert status_and_output(alias) == (
        "critical", "Failure checking aliased node or service: ACL not found")
    assert catalog_check(consul, service, "app-alias")["Status"] == "passing"
