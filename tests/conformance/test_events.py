"""The double's event journal (tests/consul_double/events.py): what it records, with which
cause, and how `ConsulDouble.events()` and the control API's `GET /events` select events.
These tests run only against the double.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.conformance.conftest import ConsulTarget, WaitUntil
from tests.consul_double import ConsulDouble

TIMEOUT = 10.0


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["kind"] for event in events]


def without_clocks(event: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in event.items() if name not in ("seq", "mono", "time")}


def acquire(consul: ConsulTarget, key: str, session_id: str) -> None:
    response = consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"x")
    assert response.json() is True, response.text


def test_a_lock_lifecycle_is_journalled_in_order(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    start = time.monotonic()
    key = consul.key("leader")
    session_id = consul.create_session(LockDelay="0s")
    acquire(consul, key, session_id)
    acquired_index = consul.get(f"/v1/kv/{key}").json()[0]["ModifyIndex"]
    assert consul.put(f"/v1/kv/{key}?release={session_id}").json() is True
    consul.put(f"/v1/session/destroy/{session_id}")

    journal = [without_clocks(event) for event in double.events(since_mono=start)]

    assert journal == [
        {"kind": "session_created", "id": session_id, "node": "n1"},
        {"kind": "kv_lock_acquired", "key": key, "session": session_id, "lock_index": 1,
         "modify_index": acquired_index},
        {"kind": "kv_lock_released", "key": key, "session": session_id, "lock_index": 1,
         "cause": "release"},
        {"kind": "session_invalidated", "id": session_id, "node": "n1", "cause": "destroy"},
    ]


def test_reacquiring_a_held_lock_is_not_a_new_acquisition(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    key = consul.key("leader")
    session_id = consul.create_session()
    acquire(consul, key, session_id)
    acquire(consul, key, session_id)

    assert len(double.events(kind="kv_lock_acquired")) == 1


def test_each_event_carries_both_clocks_and_a_growing_sequence(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    before_mono, before_wall = time.monotonic(), time.time()
    for _ in range(3):
        consul.create_session()
    after_mono, after_wall = time.monotonic(), time.time()

    journal = double.events(since_mono=before_mono)

    assert len(journal) == 3
    assert all(before_mono <= event["mono"] <= after_mono for event in journal)
    assert all(before_wall <= event["time"] <= after_wall for event in journal)
    assert [event["seq"] for event in journal] == sorted({event["seq"] for event in journal})
    assert [event["mono"] for event in journal] == sorted({event["mono"] for event in journal})


def test_since_returns_only_later_events_so_polling_never_repeats_one(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    first = consul.create_session()
    mark = double.events(kind="session_created")[-1]["mono"]
    second = consul.create_session()

    later = double.events(since_mono=mark, kind="session_created")

    assert [event["id"] for event in later] == [second]
    assert first != second


def test_check_going_critical_invalidates_with_cause_check_and_releases_its_lock(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    check_id = consul.register_ttl_check("guard")
    session_id = consul.create_session(NodeChecks=["serfHealth", check_id], LockDelay="0s")
    key = consul.key("leader")
    acquire(consul, key, session_id)
    start = time.monotonic()

    consul.put(f"/v1/agent/check/fail/{check_id}")

    journal = [without_clocks(event) for event in double.events(since_mono=start)]
    assert journal == [
        {"kind": "check_status", "node": "n1", "id": check_id, "old": "passing",
         "new": "critical"},
        {"kind": "session_invalidated", "id": session_id, "node": "n1", "cause": "check"},
        {"kind": "kv_lock_released", "key": key, "session": session_id, "lock_index": 1,
         "cause": "invalidation"},
    ]


def test_deregistering_a_bound_check_invalidates_with_cause_deregister(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    check_id = consul.register_ttl_check("guard")
    session_id = consul.create_session(NodeChecks=[check_id])

    consul.put(f"/v1/agent/check/deregister/{check_id}")

    invalidated = double.events(kind="session_invalidated")
    assert [(event["id"], event["cause"]) for event in invalidated] == [
        (session_id, "deregister")
    ]


def test_session_ttl_expiry_invalidates_with_cause_ttl(
    consul: ConsulTarget, double: ConsulDouble, wait_until: WaitUntil
) -> None:
    session_id = consul.create_session(TTL="1s")

    invalidated = wait_until(lambda: double.events(kind="session_invalidated"),
                             message="the session to expire")

    assert [(event["id"], event["cause"]) for event in invalidated] == [(session_id, "ttl")]


def test_node_failure_and_recovery_are_journalled_with_serf_health(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    session_id = create_session_on(double, "n2")
    start = time.monotonic()

    double.fail_node("n2")
    double.recover_node("n2")

    journal = [without_clocks(event) for event in double.events(since_mono=start)]
    assert journal == [
        {"kind": "node_failed", "node": "n2"},
        {"kind": "check_status", "node": "n2", "id": "serfHealth", "old": "passing",
         "new": "critical"},
        {"kind": "session_invalidated", "id": session_id, "node": "n2", "cause": "node"},
        {"kind": "node_recovered", "node": "n2"},
        {"kind": "check_status", "node": "n2", "id": "serfHealth", "old": "critical",
         "new": "passing"},
    ]


def test_service_changes_are_journalled_with_tags_and_a_no_op_reregister_is_not(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    definition = {"ID": "db-1", "Name": "db", "Tags": ["replica"]}
    consul.register_service(definition)
    consul.register_service(definition)
    consul.register_service({**definition, "Tags": ["primary"]})
    consul.put("/v1/agent/service/deregister/db-1")

    journal = [without_clocks(event) for event in double.events()
               if event["kind"].startswith("service_")]

    assert journal == [
        {"kind": "service_registered", "node": "n1", "id": "db-1", "name": "db",
         "tags": ["replica"]},
        {"kind": "service_registered", "node": "n1", "id": "db-1", "name": "db",
         "tags": ["primary"]},
        {"kind": "service_deregistered", "node": "n1", "id": "db-1", "name": "db",
         "tags": ["primary"]},
    ]


def test_server_faults_are_journalled(
    double: ConsulDouble, wait_until: WaitUntil
) -> None:
    double.servers_down()
    double.servers_up()
    double.servers_failover(window=0.05)

    wait_until(lambda: double.events(kind="leader_elected"), message="the new leader")
    server_events = [without_clocks(event) for event in double.events()
                     if event["kind"].startswith(("servers_", "leader_"))]
    assert server_events == [
        {"kind": "servers_down"},
        {"kind": "servers_up"},
        {"kind": "servers_failover", "window": 0.05},
        {"kind": "leader_elected"},
    ]


def test_the_journal_keeps_only_the_newest_events_up_to_its_capacity() -> None:
    with ConsulDouble(nodes=("n1",), journal_capacity=2) as small:
        for _ in range(3):
            small.servers_up()
        assert [event["seq"] for event in small.events()] == [2, 3]


def test_unknown_kind_is_refused(double: ConsulDouble) -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        double.events(kind="no_such_kind")


def test_control_api_serves_the_journal_with_kind_and_since(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    first = consul.create_session()
    mark = double.events()[-1]["mono"]
    second = consul.create_session()
    acquire(consul, consul.key("leader"), second)

    response = requests.get(
        double.control_addr + "/events",
        params={"kind": "session_created", "since": repr(mark)},
        timeout=TIMEOUT,
    )

    assert response.status_code == 200, response.text
    assert [event["id"] for event in response.json()] == [second]
    everything = requests.get(double.control_addr + "/events", timeout=TIMEOUT).json()
    assert {first, second} <= {event.get("id") for event in everything}
    assert "kv_lock_acquired" in kinds(everything)


def test_control_api_refuses_an_unknown_kind_or_a_bad_since(double: ConsulDouble) -> None:
    for params in ({"kind": "nope"}, {"since": "yesterday"}):
        response = requests.get(double.control_addr + "/events", params=params, timeout=TIMEOUT)
        assert response.status_code == 400, (params, response.text)


def test_control_api_reports_blocked_queries(
    consul: ConsulTarget, double: ConsulDouble, wait_until: WaitUntil
) -> None:
    def blocked() -> int:
        answer = requests.get(double.control_addr + "/blocked", timeout=TIMEOUT).json()
        return int(answer["blocked"])

    assert blocked() == 0
    key = consul.key("watched")
    assert consul.put(f"/v1/kv/{key}", data=b"1").json() is True
    index = consul.get(f"/v1/kv/{key}").headers["X-Consul-Index"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(
            requests.get, f"{consul.addr}/v1/kv/{key}?index={index}&wait=5s", timeout=TIMEOUT
        )
        wait_until(lambda: blocked() == 1, message="the query to block")
        consul.put(f"/v1/kv/{key}", data=b"2")
        assert pending.result().status_code == 200
    assert blocked() == 0


def create_session_on(double: ConsulDouble, node: str) -> str:
    response = requests.put(double.node_addr(node) + "/v1/session/create", json={},
                            timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    session_id: str = response.json()["ID"]
    return session_id
