"""Conformance of the checks a session is bound to (docs/consul-semantics-addendum.md §13).

consul agent/consul/state/session.go (validateSessionChecksTxn): every ID of Checks,
NodeChecks and ServiceChecks must name a check of the session's node in the catalog, and
none may be critical; the lookup lowercases node and check ID, and in Consul CE the
ServiceChecks namespace plays no part. Once bound, a check turning critical (an alias
check too) invalidates the session (state/catalog.go ensureCheckTxn). Tests marked
`real_consul` also pass against a real agent (see conftest.py).
"""

from __future__ import annotations

import pytest

from tests.conformance.conftest import ConsulTarget, WaitUntil

real_consul = pytest.mark.real_consul


def register_service_check(consul: ConsulTarget, status: str) -> tuple[str, str]:
    service = consul.unique("svc")
    check_id = f"{service}-ttl"
    consul.register_service({
        "Name": service, "Check": {"CheckID": check_id, "TTL": "10m", "Status": status}})
    return service, check_id


@real_consul
@pytest.mark.parametrize("field", ["Checks", "NodeChecks"])
def test_a_missing_check_is_refused(consul: ConsulTarget, field: str) -> None:
    """§13.1: 500 `Missing check '<id>' registration` whichever list names it."""
    missing = consul.unique("missing")
    response = consul.put("/v1/session/create", json={field: [missing]})
    consul.assert_error(response, 500, f"Missing check '{missing}' registration")


@real_consul
@pytest.mark.parametrize("namespace", ["", "default", "team-a"])
def test_a_missing_service_check_is_refused_whatever_its_namespace(
    consul: ConsulTarget, namespace: str
) -> None:
    """§13.1: ServiceChecks entries are looked up by ID on the node; CE ignores Namespace."""
    missing = consul.unique("missing")
    body = {"ServiceChecks": [{"ID": missing, "Namespace": namespace}]}
    response = consul.put("/v1/session/create", json=body)
    consul.assert_error(response, 500, f"Missing check '{missing}' registration")


@real_consul
@pytest.mark.parametrize("namespace", ["", "default"])
def test_a_critical_service_check_is_refused(consul: ConsulTarget, namespace: str) -> None:
    """§13.1: 500 `Check '<id>' is in critical state`."""
    _, check_id = register_service_check(consul, "critical")
    body = {"ServiceChecks": [{"ID": check_id, "Namespace": namespace}]}
    response = consul.put("/v1/session/create", json=body)
    consul.assert_error(response, 500, f"Check '{check_id}' is in critical state")


@real_consul
def test_the_first_failing_check_in_check_ids_order_is_named(consul: ConsulTarget) -> None:
    """§13.1: CheckIDs() order is Checks, NodeChecks, then ServiceChecks; the first
    missing or critical one is reported."""
    _, critical = register_service_check(consul, "critical")
    missing = consul.unique("missing")
    body = {"NodeChecks": ["serfHealth", missing], "ServiceChecks": [{"ID": critical}]}
    response = consul.put("/v1/session/create", json=body)
    consul.assert_error(response, 500, f"Missing check '{missing}' registration")


@real_consul
def test_a_critical_alias_check_is_refused(consul: ConsulTarget, wait_until: WaitUntil) -> None:
    """§13.1 + §9: an alias of a failing service is critical, so it cannot be bound."""
    target, _ = register_service_check(consul, "critical")
    side = consul.unique("side")
    alias = f"{side}-alias"
    consul.register_service({"Name": side, "Check": {"CheckID": alias, "AliasService": target}})
    wait_until(lambda: consul.get("/v1/agent/checks").json()[alias]["Output"].startswith(
        "Aliased check"), message="the alias to evaluate")
    response = consul.put("/v1/session/create", json={"ServiceChecks": [{"ID": alias}]})
    consul.assert_error(response, 500, f"Check '{alias}' is in critical state")


@real_consul
def test_check_ids_are_matched_case_insensitively(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§13.2: the session keeps its own spelling, and the check still invalidates it."""
    _, check_id = register_service_check(consul, "passing")
    session_id = consul.create_session(ServiceChecks=[{"ID": check_id.upper()}])
    [session] = consul.session_info(session_id)
    assert session["ServiceChecks"] == [{"ID": check_id.upper(), "Namespace": ""}]
    consul.put(f"/v1/agent/check/fail/{check_id}")
    wait_until(lambda: consul.session_info(session_id) == [], message="the session to go")


@real_consul
def test_a_service_check_bound_with_a_namespace_invalidates_the_session(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§13.2: binding by ServiceChecks (namespace given) works like NodeChecks."""
    _, check_id = register_service_check(consul, "passing")
    session_id = consul.create_session(ServiceChecks=[{"ID": check_id, "Namespace": "default"}])
    consul.put(f"/v1/agent/check/warn/{check_id}")
    assert consul.session_info(session_id) != []  # warning is not critical
    consul.put(f"/v1/agent/check/fail/{check_id}")
    wait_until(lambda: consul.session_info(session_id) == [], message="the session to go")
