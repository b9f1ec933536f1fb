"""Conformance of sessions (consul-semantics.md §1) and of what invalidation does to locks (§1.5).

Tests marked `real_consul` also pass against a real agent (see conftest.py).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.conformance.conftest import ConsulTarget, WaitUntil
from tests.consul_double import ConsulDouble

real_consul = pytest.mark.real_consul

SESSION_FIELDS = [
    "ID", "Name", "Node", "LockDelay", "Behavior", "TTL",
    "NodeChecks", "ServiceChecks", "CreateIndex", "ModifyIndex",
]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# -- §1.1 create ---------------------------------------------------------------


@real_consul
def test_create_answers_an_id_in_go_uuid_form(consul: ConsulTarget) -> None:
    """§1.1: the reply is {"ID": "<8-4-4-4-12 hex>"}."""
    response = consul.put("/v1/session/create", data=b"")
    assert response.status_code == 200
    assert list(response.json()) == ["ID"]
    assert UUID.match(response.json()["ID"])
    consul.put(f"/v1/session/destroy/{response.json()['ID']}")


@real_consul
def test_create_with_empty_body_applies_server_defaults(consul: ConsulTarget) -> None:
    """§1.1/§1.2: agent's node, serfHealth, 15s lock-delay in ns, release, no TTL."""
    session_id = consul.create_session()
    [session] = consul.session_info(session_id)
    assert list(session) == SESSION_FIELDS
    assert session["ID"] == session_id
    assert session["Name"] == ""
    assert session["Node"] == consul.node
    assert session["LockDelay"] == 15_000_000_000
    assert session["Behavior"] == "release"
    assert session["TTL"] == ""
    assert session["NodeChecks"] == ["serfHealth"]
    assert session["ServiceChecks"] is None
    assert session["CreateIndex"] == session["ModifyIndex"] > 0


@real_consul
@pytest.mark.parametrize(
    ("lock_delay", "nanoseconds"),
    [
        ("15s", 15_000_000_000),
        (15, 15_000_000_000),  # a number below 1000 is seconds
        (2000, 2000),  # a number from 1000 up is nanoseconds
        ("500ns", 500_000_000_000),  # a parsed string below 1000ns is seconds too
        ("1m", 60_000_000_000),
        (0, 0),
        ("0s", 0),
    ],
)
def test_lock_delay_takes_a_duration_string_or_a_number(
    consul: ConsulTarget, lock_delay: object, nanoseconds: int
) -> None:
    """§1.1: LockDelay is a Go duration or a number; below 1000 it counts as seconds."""
    session_id = consul.create_session(LockDelay=lock_delay)
    assert consul.session_info(session_id)[0]["LockDelay"] == nanoseconds


@real_consul
def test_lock_delay_over_sixty_seconds_is_stored_as_sent(consul: ConsulTarget) -> None:
    """§1.1: no upper bound at create time; the 60s cap applies only when used."""
    session_id = consul.create_session(LockDelay="90s")
    assert consul.session_info(session_id)[0]["LockDelay"] == 90_000_000_000


@real_consul
def test_unparsable_lock_delay_is_a_decode_error(consul: ConsulTarget) -> None:
    """§1.1: LockDelay goes through time.ParseDuration inside the JSON decoder → 400."""
    response = consul.put("/v1/session/create", json={"LockDelay": "soon"})
    consul.assert_error(response, 400, 'Request decode failed: time: invalid duration "soon"')


@real_consul
def test_ttl_string_is_echoed_as_sent(consul: ConsulTarget) -> None:
    """§1.2: TTL comes back as the string the client sent."""
    session_id = consul.create_session(TTL="30s", Name="echo")
    [session] = consul.session_info(session_id)
    assert session["TTL"] == "30s"
    assert session["Name"] == "echo"


@real_consul
@pytest.mark.parametrize("ttl", ["0", "0s", "0m", "0h", ""])
def test_zero_ttl_means_no_ttl(consul: ConsulTarget, ttl: str) -> None:
    """§1.1: "", "0", "0s", "0m", "0h" are accepted and mean no TTL."""
    session_id = consul.create_session(TTL=ttl)
    assert consul.session_info(session_id)[0]["TTL"] == ttl


@real_consul
def test_ttl_below_session_ttl_min_is_refused_with_nanoseconds(consul: ConsulTarget) -> None:
    """§1.1: 500 `Invalid Session TTL '<ns>', must be between [<min>=24h0m0s]`."""
    response = consul.put("/v1/session/create", json={"TTL": "100ms"})
    consul.assert_error(
        response,
        500,
        f"Invalid Session TTL '100000000', must be between [{consul.session_ttl_min}=24h0m0s]",
    )


@real_consul
def test_ttl_above_a_day_is_refused(consul: ConsulTarget) -> None:
    """§1.1: the upper bound is SessionTTLMax = 24h."""
    response = consul.put("/v1/session/create", json={"TTL": "25h"})
    consul.assert_error(
        response,
        500,
        f"Invalid Session TTL '90000000000000', must be between "
        f"[{consul.session_ttl_min}=24h0m0s]",
    )


@real_consul
@pytest.mark.parametrize(
    ("ttl", "error"),
    [
        ("10", 'time: missing unit in duration "10"'),
        ("abc", 'time: invalid duration "abc"'),
        ("10y", 'time: unknown unit "y" in duration "10y"'),
    ],
)
def test_unparsable_ttl_is_refused_with_go_parse_error(
    consul: ConsulTarget, ttl: str, error: str
) -> None:
    """§1.1: 500 `Session TTL '<x>' invalid: <time.ParseDuration error>`."""
    response = consul.put("/v1/session/create", json={"TTL": ttl})
    consul.assert_error(response, 500, f"Session TTL '{ttl}' invalid: {error}")


@real_consul
def test_unknown_behavior_is_refused(consul: ConsulTarget) -> None:
    """§1.1: Behavior is release or delete; anything else → 500."""
    response = consul.put("/v1/session/create", json={"Behavior": "vanish"})
    consul.assert_error(response, 500, "Invalid Behavior setting 'vanish'")


@real_consul
def test_delete_behavior_is_stored(consul: ConsulTarget) -> None:
    """§1.1: Behavior "delete" is accepted and shown."""
    session_id = consul.create_session(Behavior="delete")
    assert consul.session_info(session_id)[0]["Behavior"] == "delete"


@real_consul
def test_bad_json_body_is_a_400(consul: ConsulTarget) -> None:
    """§1.1: a body that is not JSON → 400 `Request decode failed: ...`."""
    response = consul.put("/v1/session/create", data=b"{not json")
    assert response.status_code == 400
    assert response.text.startswith("Request decode failed: ")


@real_consul
def test_unknown_node_is_refused(consul: ConsulTarget) -> None:
    """§1.1: the session's node must be in the catalog."""
    response = consul.put("/v1/session/create", json={"Node": "no-such-node-anywhere"})
    consul.assert_error(response, 500, "Missing node registration")


@real_consul
def test_unknown_check_is_refused(consul: ConsulTarget) -> None:
    """§1.1: every listed check must exist on the session's node."""
    response = consul.put(
        "/v1/session/create", json={"NodeChecks": ["serfHealth", "no-such-check"]}
    )
    consul.assert_error(response, 500, "Missing check 'no-such-check' registration")


@real_consul
def test_critical_check_is_refused(consul: ConsulTarget) -> None:
    """§1.1: a listed check must not be critical at create time."""
    check_id = consul.register_ttl_check("down", status="critical")
    response = consul.put("/v1/session/create", json={"NodeChecks": [check_id]})
    consul.assert_error(response, 500, f"Check '{check_id}' is in critical state")


@real_consul
@pytest.mark.parametrize(
    ("body", "node_checks", "has_checks"),
    [
        ({"Checks": []}, [], False),
        ({"Checks": None}, [], False),
        ({"NodeChecks": []}, [], False),
        ({"NodeChecks": ["serfHealth"]}, ["serfHealth"], False),
        ({"Checks": ["serfHealth"]}, ["serfHealth"], False),
    ],
)
def test_check_list_defaults_and_overrides(
    consul: ConsulTarget, body: dict[str, object], node_checks: list[str], has_checks: bool
) -> None:
    """§1.1 fixupEmptySessionChecks: an empty legacy Checks means no checks at all."""
    session_id = consul.create_session(**body)
    [session] = consul.session_info(session_id)
    assert session["NodeChecks"] == node_checks
    assert ("Checks" in session) is has_checks


@real_consul
def test_legacy_checks_keep_serf_health_in_node_checks(consul: ConsulTarget) -> None:
    """§1.1: `"Checks": ["x"]` keeps x in Checks and the default NodeChecks [serfHealth]."""
    check_id = consul.register_ttl_check("legacy")
    session_id = consul.create_session(Checks=[check_id])
    [session] = consul.session_info(session_id)
    assert session["Checks"] == [check_id]
    assert session["NodeChecks"] == ["serfHealth"]


@real_consul
def test_node_checks_replace_serf_health(consul: ConsulTarget) -> None:
    """§1.1: `"NodeChecks": ["x"]` watches only x; serfHealth is not added."""
    check_id = consul.register_ttl_check("only")
    session_id = consul.create_session(NodeChecks=[check_id])
    assert consul.session_info(session_id)[0]["NodeChecks"] == [check_id]


@real_consul
def test_service_checks_are_added_to_serf_health(consul: ConsulTarget) -> None:
    """§1.1: ServiceChecks alone keep the default NodeChecks [serfHealth]."""
    service_id = f"svc-{consul.prefix.split('/')[1]}"
    consul.register_service(
        {"Name": service_id, "Check": {"CheckID": f"{service_id}-ttl", "TTL": "10m",
                                       "Status": "passing"}}
    )
    session_id = consul.create_session(ServiceChecks=[{"ID": f"{service_id}-ttl"}])
    [session] = consul.session_info(session_id)
    assert session["NodeChecks"] == ["serfHealth"]
    assert [check["ID"] for check in session["ServiceChecks"]] == [f"{service_id}-ttl"]


def test_session_created_through_a_node_belongs_to_it(consul: ConsulTarget,
                                                      double: ConsulDouble) -> None:
    """§1.1: Node defaults to the agent the request reached."""
    response = consul.http.put(double.node_addr("n2") + "/v1/session/create")
    assert consul.session_info(response.json()["ID"])[0]["Node"] == "n2"


# -- §1.3 info, list, node -----------------------------------------------------


@real_consul
def test_info_of_unknown_session_is_an_empty_array(consul: ConsulTarget) -> None:
    """§1.3: 200 `[]`, never 404."""
    response = consul.get("/v1/session/info/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 200
    assert response.json() == []
    assert int(response.headers["X-Consul-Index"]) >= 1


@real_consul
def test_info_carries_query_metadata(consul: ConsulTarget) -> None:
    """§1.3/§2.2: a read endpoint sets X-Consul-Index, KnownLeader and LastContact."""
    session_id = consul.create_session()
    response = consul.get(f"/v1/session/info/{session_id}")
    assert int(response.headers["X-Consul-Index"]) >= response.json()[0]["CreateIndex"]
    assert response.headers["X-Consul-KnownLeader"] == "true"
    assert response.headers["X-Consul-LastContact"] == "0"
    assert response.headers["Content-Type"] == "application/json"


@real_consul
def test_list_and_node_include_the_session(consul: ConsulTarget) -> None:
    """§1.3: list has every session, node those of one node; both are arrays."""
    session_id = consul.create_session()
    listed = consul.get("/v1/session/list").json()
    on_node = consul.get(f"/v1/session/node/{consul.node}").json()
    assert session_id in [session["ID"] for session in listed]
    assert session_id in [session["ID"] for session in on_node]
    assert all(session["Node"] == consul.node for session in on_node)


@real_consul
def test_empty_node_name_is_a_400(consul: ConsulTarget) -> None:
    """§1.3: `/v1/session/node/` without a node → 400 `Missing node name`."""
    consul.assert_error(consul.get("/v1/session/node/"), 400, "Missing node name")


# -- §1.3 renew and destroy ----------------------------------------------------


@real_consul
def test_renew_answers_the_session_unchanged_in_an_array(consul: ConsulTarget) -> None:
    """§1.3: 200 with a one-element array; the TTL string is returned as sent."""
    session_id = consul.create_session(TTL="15s")
    response = consul.put(f"/v1/session/renew/{session_id}")
    assert response.status_code == 200
    [session] = response.json()
    assert session == consul.session_info(session_id)[0]
    assert session["TTL"] == "15s"
    assert "X-Consul-Index" not in response.headers


@real_consul
def test_renew_of_a_session_without_ttl_is_allowed(consul: ConsulTarget) -> None:
    """§1.3: nothing to reset, still 200."""
    session_id = consul.create_session()
    assert consul.put(f"/v1/session/renew/{session_id}").status_code == 200


@real_consul
def test_renew_of_unknown_session_is_a_404_with_its_id(consul: ConsulTarget) -> None:
    """§1.3: 404 `Session id '<id>' not found` in plain text."""
    unknown = "11111111-2222-3333-4444-555555555555"
    response = consul.put(f"/v1/session/renew/{unknown}")
    consul.assert_error(response, 404, f"Session id '{unknown}' not found")


@real_consul
@pytest.mark.parametrize("action", ["renew", "destroy"])
def test_renew_and_destroy_need_an_id(consul: ConsulTarget, action: str) -> None:
    """§1.3: an empty ID → 400 `Missing session`."""
    consul.assert_error(consul.put(f"/v1/session/{action}/"), 400, "Missing session")


@real_consul
def test_destroy_answers_true_and_removes_the_session(consul: ConsulTarget) -> None:
    """§1.3: 200 `true`; info is `[]` afterwards."""
    session_id = consul.create_session()
    response = consul.put(f"/v1/session/destroy/{session_id}")
    assert response.status_code == 200
    assert response.json() is True
    assert consul.session_info(session_id) == []


@real_consul
def test_destroy_is_idempotent(consul: ConsulTarget) -> None:
    """§1.3: destroying an unknown or already destroyed session still answers `true`."""
    session_id = consul.create_session()
    consul.put(f"/v1/session/destroy/{session_id}")
    assert consul.put(f"/v1/session/destroy/{session_id}").json() is True


@real_consul
def test_session_endpoints_refuse_other_methods(consul: ConsulTarget) -> None:
    """§0: create is PUT only → 405 with an Allow header."""
    response = consul.get("/v1/session/create")
    assert response.status_code == 405
    assert response.headers["Allow"] == "OPTIONS,PUT"


# -- §1.4 TTL ------------------------------------------------------------------


def test_ttl_session_lives_two_ttls_then_is_invalidated(
    consul: ConsulTarget, double: ConsulDouble, wait_until: WaitUntil
) -> None:
    """§1.4: never invalidated before 2xTTL after create, and invalidated then."""
    created_before = time.monotonic()
    session_id = consul.create_session(TTL="1s")
    wait_until(lambda: consul.session_info(session_id) == [], timeout=5,
               message="the TTL session to expire")
    assert time.monotonic() - created_before >= 2.0


def test_renew_restarts_the_full_two_ttl_timer(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    """§1.4: renewing every TTL/2 keeps a session alive well past its first 2xTTL."""
    session_id = consul.create_session(TTL="1s")
    keep_alive_until = time.monotonic() + 3.0
    while time.monotonic() < keep_alive_until:
        response = consul.put(f"/v1/session/renew/{session_id}")
        assert response.status_code == 200, "renewed sessions must not expire"
        time.sleep(0.5)  # the client's renew period, not a wait for a condition
    assert consul.session_info(session_id) != []


def test_ttl_expiry_releases_the_lock_with_lock_delay(
    consul: ConsulTarget, double: ConsulDouble, wait_until: WaitUntil
) -> None:
    """§1.4/§1.5: expiry is a destroy: the key is released and lock-delay applies."""
    key = consul.key("expiring")
    session_id = consul.create_session(TTL="1s", LockDelay="5s")
    assert consul.put(f"/v1/kv/{key}?acquire={session_id}").json() is True
    wait_until(lambda: consul.session_info(session_id) == [], timeout=5,
               message="the TTL session to expire")
    entry = consul.kv_entry(key)
    assert entry is not None and "Session" not in entry
    assert double.state.lock_delay_remaining(key) > 0


# -- §1.5 invalidation ---------------------------------------------------------


@real_consul
def test_destroy_releases_held_keys_keeping_value_and_lock_index(consul: ConsulTarget) -> None:
    """§1.5 release: Session cleared, LockIndex/Value/Flags kept, ModifyIndex moves."""
    key = consul.key("released-on-destroy")
    session_id = consul.create_session(LockDelay="0s")
    consul.put(f"/v1/kv/{key}?acquire={session_id}&flags=7", data=b"held")
    before = consul.kv_entry(key)
    consul.put(f"/v1/session/destroy/{session_id}")
    after = consul.kv_entry(key)
    assert before is not None and after is not None
    assert "Session" not in after
    assert (after["LockIndex"], after["Value"], after["Flags"]) == (
        before["LockIndex"], before["Value"], before["Flags"])
    assert after["ModifyIndex"] > before["ModifyIndex"]


@real_consul
def test_delete_behavior_deletes_held_keys(consul: ConsulTarget) -> None:
    """§1.5 delete: every key the session holds is deleted."""
    key = consul.key("deleted-on-destroy")
    session_id = consul.create_session(Behavior="delete", LockDelay="0s")
    consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"x")
    consul.put(f"/v1/session/destroy/{session_id}")
    assert consul.kv_entry(key) is None


@real_consul
def test_destroy_while_holding_imposes_lock_delay(consul: ConsulTarget) -> None:
    """§1.5: after an invalidation, an acquire by anyone answers false until the delay ends."""
    key = consul.key("delayed")
    holder = consul.create_session(LockDelay="15s")
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    consul.put(f"/v1/session/destroy/{holder}")
    contender = consul.create_session()
    response = consul.put(f"/v1/kv/{key}?acquire={contender}")
    assert response.status_code == 200
    assert response.json() is False
    assert "Session" not in (consul.kv_entry(key) or {})


@real_consul
def test_release_then_destroy_imposes_no_lock_delay(consul: ConsulTarget) -> None:
    """§1.5: an explicit ?release sets no lock-delay, so the next acquire succeeds."""
    key = consul.key("clean-handoff")
    holder = consul.create_session(LockDelay="15s")
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    assert consul.put(f"/v1/kv/{key}?release={holder}").json() is True
    consul.put(f"/v1/session/destroy/{holder}")
    contender = consul.create_session()
    assert consul.put(f"/v1/kv/{key}?acquire={contender}").json() is True


@real_consul
def test_zero_lock_delay_allows_immediate_reacquire(consul: ConsulTarget) -> None:
    """§1.5: `min(LockDelay, 60s) > 0` is needed for a delay; 0 disables it."""
    key = consul.key("no-delay")
    holder = consul.create_session(LockDelay=0)
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    consul.put(f"/v1/session/destroy/{holder}")
    contender = consul.create_session()
    assert consul.put(f"/v1/kv/{key}?acquire={contender}").json() is True


def test_lock_delay_ends_and_acquire_then_succeeds(
    consul: ConsulTarget, double: ConsulDouble, wait_until: WaitUntil
) -> None:
    """§1.5/§2.3: the delay is temporary: after it, acquire answers true again."""
    key = consul.key("delay-ends")
    holder = consul.create_session(LockDelay="1s")
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    destroyed_at = time.monotonic()
    consul.put(f"/v1/session/destroy/{holder}")
    contender = consul.create_session()
    wait_until(
        lambda: consul.put(f"/v1/kv/{key}?acquire={contender}").json() is True,
        timeout=5, interval=0.05, message="the lock-delay to end",
    )
    assert time.monotonic() - destroyed_at >= 1.0


def test_lock_delay_is_capped_at_sixty_seconds_when_applied(
    consul: ConsulTarget, double: ConsulDouble
) -> None:
    """§1.5: a 90s LockDelay is stored as is but enforced for at most 60s."""
    key = consul.key("capped")
    holder = consul.create_session(LockDelay="90s")
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    consul.put(f"/v1/session/destroy/{holder}")
    assert 0 < double.state.lock_delay_remaining(key) <= 60.0


@real_consul
def test_critical_check_invalidates_bound_session(consul: ConsulTarget) -> None:
    """§1.5: a linked check going critical deletes the session and frees its key."""
    check_id = consul.register_ttl_check("guard")
    key = consul.key("guarded")
    session_id = consul.create_session(NodeChecks=["serfHealth", check_id], LockDelay="0s")
    consul.put(f"/v1/kv/{key}?acquire={session_id}")
    assert consul.put(f"/v1/agent/check/fail/{check_id}").status_code == 200
    assert consul.session_info(session_id) == []
    assert "Session" not in (consul.kv_entry(key) or {})


@real_consul
def test_warning_check_does_not_invalidate(consul: ConsulTarget) -> None:
    """§1.5: only critical invalidates; warning leaves the session alone."""
    check_id = consul.register_ttl_check("wobbly")
    session_id = consul.create_session(NodeChecks=[check_id])
    consul.put(f"/v1/agent/check/warn/{check_id}")
    assert consul.session_info(session_id) != []


@real_consul
def test_deregistered_check_invalidates_bound_session(consul: ConsulTarget) -> None:
    """§1.5: removing a linked check deletes the session."""
    check_id = consul.register_ttl_check("removed")
    session_id = consul.create_session(NodeChecks=[check_id])
    assert consul.put(f"/v1/agent/check/deregister/{check_id}").status_code == 200
    assert consul.session_info(session_id) == []


@real_consul
def test_deregistered_service_invalidates_sessions_on_its_checks(consul: ConsulTarget) -> None:
    """§1.5/§4.4: deregistering a service removes its checks, which invalidates sessions."""
    service_id = f"svc-{consul.prefix.split('/')[1]}"
    consul.register_service(
        {"Name": service_id, "Check": {"CheckID": f"{service_id}-ttl", "TTL": "10m",
                                       "Status": "passing"}}
    )
    session_id = consul.create_session(ServiceChecks=[{"ID": f"{service_id}-ttl"}])
    consul.put(f"/v1/agent/service/deregister/{service_id}")
    assert consul.session_info(session_id) == []


def test_expired_ttl_check_invalidates_bound_session(
    consul: ConsulTarget, double: ConsulDouble, wait_until: WaitUntil
) -> None:
    """§4.6/§1.5: a TTL check not passed in time goes critical and takes its session."""
    body = {"ID": "short", "Name": "short", "TTL": "300ms", "Status": "passing"}
    assert consul.put("/v1/agent/check/register", json=body).status_code == 200
    session_id = consul.create_session(NodeChecks=["short"])
    wait_until(lambda: consul.session_info(session_id) == [], timeout=5,
               message="the check TTL to expire")
    check = consul.get("/v1/agent/checks").json()["short"]
    assert (check["Status"], check["Output"]) == ("critical", "TTL expired")
