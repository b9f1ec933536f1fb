"""Conformance of alias checks (docs/consul-semantics-addendum.md §9).

An alias check (`AliasService`, optionally `AliasNode`) mirrors the health of another
service instance: consul agent/checks/alias.go (CheckAlias.processChecks, runLocal,
runQuery). Tests marked `real_consul` also pass against a real agent (see conftest.py);
on a real agent the alias runs in its own goroutine, so every status is waited for.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests

from tests.conformance.conftest import ConsulTarget, WaitUntil
from tests.consul_double import ConsulDouble

real_consul = pytest.mark.real_consul

ALL_PASSING = "All checks passing."
NO_CHECKS = "No checks found."


def agent_check(consul: ConsulTarget, check_id: str) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = consul.get("/v1/agent/checks").json()
    return checks[check_id]


def wait_for_check(
    consul: ConsulTarget, wait_until: WaitUntil, check_id: str, status: str, output: str
) -> dict[str, Any]:
    def matches() -> dict[str, Any] | None:
        check = consul.get("/v1/agent/checks").json().get(check_id)
        if check and (check["Status"], check["Output"]) == (status, output):
            return dict(check)
        return None

    found: dict[str, Any] = wait_until(matches, message=f"{check_id} {status}: {output!r}")
    return found


def register_target(consul: ConsulTarget, status: str = "passing") -> tuple[str, str]:
    """A service with one TTL check; returns (service ID, check ID)."""
    service_id = consul.unique("web")
    check_id = f"{service_id}-ttl"
    consul.register_service({
        "Name": service_id,
        "Check": {"CheckID": check_id, "Name": "web ttl", "TTL": "10m", "Status": status},
    })
    return service_id, check_id


def register_alias_service(consul: ConsulTarget, target: str, **alias: str) -> tuple[str, str]:
    """A sidecar-like service whose only check aliases `target`; returns (service, check)."""
    service_id = consul.unique("side")
    check_id = f"{service_id}-alias"
    consul.register_service({
        "Name": service_id,
        "Check": {"CheckID": check_id, "Name": "alias", "AliasService": target, **alias},
    })
    return service_id, check_id


@real_consul
def test_alias_follows_the_worst_status_of_the_aliased_service(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§9.1: passing, then critical, warning and passing again as the aliased check moves."""
    target, target_check = register_target(consul)
    _, alias = register_alias_service(consul, target)
    check = wait_for_check(consul, wait_until, alias, "passing", ALL_PASSING)
    assert check["Type"] == "alias"

    consul.put(f"/v1/agent/check/fail/{target_check}?note=down")
    wait_for_check(consul, wait_until, alias, "critical", 'Aliased check "web ttl" failing: down')
    consul.put(f"/v1/agent/check/warn/{target_check}?note=slow")
    wait_for_check(consul, wait_until, alias, "warning", 'Aliased check "web ttl" failing: slow')
    consul.put(f"/v1/agent/check/pass/{target_check}")
    wait_for_check(consul, wait_until, alias, "passing", ALL_PASSING)


@real_consul
def test_alias_of_a_missing_service_is_critical(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§9.1: no check of the service and no such service: critical, `could not be found`."""
    missing = consul.unique("nowhere")
    _, alias = register_alias_service(consul, missing)
    wait_for_check(consul, wait_until, alias, "critical",
                   f"Service {missing} could not be found on node ")


@real_consul
def test_alias_follows_the_service_going_and_coming_back(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§9.2: removing the aliased service notifies the alias, and so does adding it again."""
    target, _ = register_target(consul)
    _, alias = register_alias_service(consul, target)
    wait_for_check(consul, wait_until, alias, "passing", ALL_PASSING)

    consul.put(f"/v1/agent/service/deregister/{target}")
    wait_for_check(consul, wait_until, alias, "critical",
                   f"Service {target} could not be found on node ")
    register_target(consul)
    wait_for_check(consul, wait_until, alias, "passing", ALL_PASSING)


@real_consul
def test_alias_of_a_service_without_checks_is_passing(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§9.1: the service exists and nothing fails: passing, `No checks found.`."""
    target = consul.unique("bare")
    consul.register_service({"Name": target})
    _, alias = register_alias_service(consul, target)
    wait_for_check(consul, wait_until, alias, "passing", NO_CHECKS)


@real_consul
def test_alias_status_reaches_health_passing_filter_and_blocking_queries(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§9.4: the alias is an ordinary check to the catalog: /v1/health/*, `?passing`, and a
    blocking query on the service wakes when it turns critical."""
    target, target_check = register_target(consul)
    side, alias = register_alias_service(consul, target)
    wait_until(lambda: consul.get(f"/v1/health/service/{side}?passing").json(),
               message="the alias service to pass")
    response = consul.get(f"/v1/health/service/{side}")
    index = response.headers["X-Consul-Index"]
    answers: list[requests.Response] = []
    reader = threading.Thread(target=lambda: answers.append(
        consul.get(f"/v1/health/service/{side}?index={index}&wait=30s")))
    reader.start()
    consul.put(f"/v1/agent/check/fail/{target_check}?note=down")
    reader.join(timeout=30)
    assert answers, "the blocking query did not return"
    [entry] = answers[0].json()
    [alias_view] = [check for check in entry["Checks"] if check["CheckID"] == alias]
    assert alias_view["Status"] == "critical"
    assert int(answers[0].headers["X-Consul-Index"]) > int(index)

    assert consul.get(f"/v1/health/service/{side}?passing").json() == []
    [health_check] = consul.get(f"/v1/health/checks/{side}").json()
    assert (health_check["CheckID"], health_check["Status"]) == (alias, "critical")
    assert health_check["Output"] == 'Aliased check "web ttl" failing: down'


@real_consul
def test_session_bound_to_an_alias_is_invalidated_when_it_turns_critical(
    consul: ConsulTarget, wait_until: WaitUntil
) -> None:
    """§9.4 + §1.5: a critical alias invalidates the sessions bound to it."""
    target, target_check = register_target(consul)
    _, alias = register_alias_service(consul, target)
    wait_for_check(consul, wait_until, alias, "passing", ALL_PASSING)
    session_id = consul.create_session(ServiceChecks=[{"ID": alias}])

    consul.put(f"/v1/agent/check/fail/{target_check}")
    wait_until(lambda: consul.session_info(session_id) == [], message="the session to go")


def test_node_level_checks_count_but_do_not_notify_the_alias(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    """§9.2/§9.3: a node-level check counts, yet its own change notifies no local alias
    (notifyIfAliased is keyed by the changed check's ServiceID, "" for a node check); the
    alias sees it at its next notification."""
    target, target_check = register_target(consul)
    _, alias = register_alias_service(consul, target)
    node_check = consul.register_ttl_check("disk")
    consul.put(f"/v1/agent/check/fail/{node_check}?note=full")
    assert agent_check(consul, alias)["Status"] == "passing"  # not notified

    consul.put(f"/v1/agent/check/warn/{target_check}?note=slow")  # notifies the alias
    check = agent_check(consul, alias)
    assert (check["Status"], check["Output"]) == (
        "critical", f'Aliased check "{node_check}" failing: full')


def test_the_refresh_timer_picks_up_node_level_changes(wait_until: WaitUntil) -> None:
    """§9.3: runLocal re-reads the agent's checks a refresh interval (60s in Consul) after
    its last evaluation, so a node-level change shows without any notification."""
    with ConsulDouble(nodes=("n1",), alias_refresh_interval=0.3) as double:
        consul = ConsulTarget(double.node_addr("n1"), double)
        try:
            target, _ = register_target(consul)
            _, alias = register_alias_service(consul, target)
            node_check = consul.register_ttl_check("disk")
            consul.put(f"/v1/agent/check/fail/{node_check}?note=full")
            wait_for_check(consul, wait_until, alias, "critical",
                           f'Aliased check "{node_check}" failing: full')
        finally:
            consul.http.close()


def test_a_node_level_alias_counts_itself(consul: ConsulTarget, double: ConsulDouble) -> None:
    """§9.3: registered without ServiceID, the alias is itself a node-level check of the
    agent, so its own critical start (the default status) keeps it critical even though
    the aliased service passes."""
    target, _ = register_target(consul)
    alias = consul.unique("node-alias")
    consul.register_check({"ID": alias, "Name": alias, "AliasService": target})
    check = agent_check(consul, alias)
    assert (check["Status"], check["Output"]) == ("critical", f'Aliased check "{alias}" failing: ')


def test_serf_health_is_not_among_a_local_alias_s_checks(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    """§9.3: serfHealth lives in the catalog, not in the agent's local state."""
    target, target_check = register_target(consul)
    _, alias = register_alias_service(consul, target)
    double.fail_node("n2")  # a node failure elsewhere changes nothing here
    consul.put(f"/v1/agent/check/warn/{target_check}?note=slow")
    consul.put(f"/v1/agent/check/pass/{target_check}")
    assert agent_check(consul, alias)["Output"] == ALL_PASSING


def test_an_alias_of_a_service_on_another_node_needs_alias_node(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    """§9.5: without AliasNode the alias looks only at this agent: a service of another
    node is `could not be found`; with AliasNode it follows the catalog of that node,
    serfHealth included."""
    other = ConsulTarget(double.node_addr("n2"), double)
    try:
        target, target_check = register_target(other)
        _, local_alias = register_alias_service(consul, target)
        assert agent_check(consul, local_alias)["Output"] == (
            f"Service {target} could not be found on node ")

        _, remote_alias = register_alias_service(consul, target, AliasNode="n2")
        assert agent_check(consul, remote_alias)["Status"] == "passing"
        other.put(f"/v1/agent/check/fail/{target_check}?note=down")
        assert agent_check(consul, remote_alias)["Output"] == (
            'Aliased check "web ttl" failing: down')
        other.put(f"/v1/agent/check/pass/{target_check}")
        assert agent_check(consul, remote_alias)["Status"] == "passing"

        double.fail_node("n2")
        check = agent_check(consul, remote_alias)
        assert (check["Status"], check["Output"]) == (
            "critical", 'Aliased check "Serf Health Status" failing: Agent not live or unreachable')
    finally:
        other.http.close()


def test_a_remote_alias_of_an_unknown_service_is_critical(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    """§9.5: with AliasNode the not-found message names the node."""
    missing = consul.unique("nowhere")
    _, alias = register_alias_service(consul, missing, AliasNode="n2")
    assert agent_check(consul, alias)["Output"] == (
        f"Service {missing} could not be found on node n2")
