"""The HTTP implementation of the Consul port: requests it builds, answers it reads."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from consul_leader.adapters.consul.errors import (
    CheckNotUsable,
    ConsulDenied,
    ConsulRejected,
    ConsulUnavailable,
    InvalidSession,
    MalformedAnswer,
    SettingRefused,
)
from consul_leader.adapters.consul.http import HttpConsul
from consul_leader.adapters.consul.port import SessionSpec
from consul_leader.fsm.observation import KeyObservation
from tests.adapter_testing import KEY, FakeTransport, RawAnswer, Sent, raw

SPEC = SessionSpec(name="db", ttl="3s", lock_delay="0s", service_checks=("lease",))


def consul(*answers: RawAnswer) -> tuple[HttpConsul, FakeTransport]:
    queue = list(answers)
    transport = FakeTransport(lambda sent: queue.pop(0))
    return HttpConsul(transport), transport


def entry(**fields: Any) -> dict[str, Any]:
    return {"LockIndex": 3, "Key": KEY, "Flags": 0, "Session": "s1", "CreateIndex": 1,
            "ModifyIndex": 7, "Value": base64.b64encode(b"hello").decode(), **fields}


# -- sessions ------------------------------------------------------------------------------


def test_a_session_is_created_bound_to_its_checks() -> None:
    port, transport = consul(raw(200, {"ID": "s1"}))
    assert port.session_create(SPEC, timeout=1.0) == "s1"
    body = transport.sent[0].json_body
    assert body == {"Name": "db", "TTL": "3s", "LockDelay": "0s", "Behavior": "release",
                    "NodeChecks": ["serfHealth"], "ServiceChecks": [{"ID": "lease"}]}


@pytest.mark.parametrize(("body", "problem"), [
    ("Missing check 'lease' registration", "missing"),
    ("rpc error making call: apply failed: Missing check 'lease' registration", "missing"),
    ("Check 'lease' is in critical state", "critical"),
])
def test_a_missing_or_critical_bound_check_is_named(body: str, problem: str) -> None:
    port, _ = consul(raw(500, body))
    with pytest.raises(CheckNotUsable) as refused:
        port.session_create(SPEC, timeout=1.0)
    assert (refused.value.check_id, refused.value.problem) == ("lease", problem)


def test_a_ttl_below_the_servers_minimum_is_a_setting_refused() -> None:
    port, _ = consul(raw(500, "rpc error making call: Invalid Session TTL '3000000000', must be "
                              "between [10s=24h0m0s]"))
    with pytest.raises(SettingRefused, match="CONSUL_LEADER_TTL"):
        port.session_create(SPEC, timeout=1.0)


@pytest.mark.parametrize(("answer", "error"), [
    (raw(500, "No cluster leader"), ConsulUnavailable),
    (raw(403, "Permission denied"), ConsulDenied),
    (raw(400, "Request decode failed"), ConsulRejected),
    (raw(200, {"ID": ""}), MalformedAnswer),
    (raw(200, ["s1"]), MalformedAnswer),
    (raw(200, b"not json"), MalformedAnswer),
])
def test_other_create_failures_keep_their_kind(answer: RawAnswer, error: type) -> None:
    port, _ = consul(answer)
    with pytest.raises(error):
        port.session_create(SPEC, timeout=1.0)


def test_a_renew_is_confirmed_only_by_our_session_in_a_one_element_list() -> None:
    port, _ = consul(raw(200, [{"ID": "s1", "TTL": "3s"}]), raw(404, "Session id 's1' not found"),
                     raw(200, [{"ID": "s2"}]), raw(200, {"ID": "s1"}))
    assert port.session_renew("s1", timeout=1.0) is True
    assert port.session_renew("s1", timeout=1.0) is False
    for _ in range(2):
        with pytest.raises(MalformedAnswer):
            port.session_renew("s1", timeout=1.0)


def test_session_info_says_whether_consul_still_knows_it() -> None:
    port, _ = consul(raw(200, [{"ID": "s1"}]), raw(200, []), raw(200, None))
    assert port.session_exists("s1", timeout=1.0)
    assert not port.session_exists("s1", timeout=1.0)
    assert not port.session_exists("s1", timeout=1.0)


def test_only_an_empty_answer_that_acls_did_not_cut_proves_a_session_gone() -> None:
    filtered = {"X-Consul-Results-Filtered-By-ACLs": "true"}
    port, _ = consul(raw(200, []), raw(200, [], filtered), raw(200, [{"ID": "s1"}]),
                     raw(200, {"ID": "s1"}))
    assert port.session_gone("s1", timeout=1.0)
    assert not port.session_gone("s1", timeout=1.0)  # hidden from us, maybe alive
    assert not port.session_gone("s1", timeout=1.0)
    with pytest.raises(MalformedAnswer):
        port.session_gone("s1", timeout=1.0)


def test_a_catalog_deregistration_names_the_node_and_the_service() -> None:
    port, transport = consul(raw(200, True))
    port.catalog_deregister("n2", "consul-leader-a2-db", timeout=1.0)
    assert [(s.method, s.path, s.json_body) for s in transport.sent] == [
        ("PUT", "/v1/catalog/deregister", {"Node": "n2", "ServiceID": "consul-leader-a2-db"})]


def test_a_health_entry_carries_its_meta() -> None:
    answer = [{"Node": {"Node": "n2"}, "Service": {"ID": "x", "Meta": {"session": "s9"}},
               "Checks": []}]
    port, _ = consul(raw(200, answer), raw(200, [{**answer[0], "Service": {
        "ID": "x", "Meta": {"session": 9}}}]))
    assert port.health_service("db", timeout=1.0).entries[0].meta == {"session": "s9"}
    with pytest.raises(MalformedAnswer):
        port.health_service("db", timeout=1.0)


# -- KV ------------------------------------------------------------------------------------


def test_a_held_key_is_read_with_its_index() -> None:
    port, _ = consul(raw(200, [entry()], {"X-Consul-Index": "7"}))
    read = port.kv_get(KEY, timeout=1.0)
    assert read.index == 7
    assert read.observation == KeyObservation(exists=True, session="s1", lock_index=3,
                                              modify_index=7, value=b"hello")


def test_a_free_key_and_a_missing_key() -> None:
    port, _ = consul(raw(200, [entry(Session="", Value=None)]), raw(404, None,
                                                                     {"X-Consul-Index": "9"}))
    assert port.kv_get(KEY, timeout=1.0).observation.session is None
    assert port.kv_get(KEY, timeout=1.0).observation == KeyObservation(exists=False,
                                                                       modify_index=9)


def test_a_blocking_read_asks_for_the_index_and_the_wait() -> None:
    port, transport = consul(raw(200, [entry()]), raw(200, [entry()]))
    port.kv_get(KEY, timeout=330.0, index=5, wait="300s")
    port.kv_get(KEY, timeout=1.0, consistent=True)
    assert [sent.params for sent in transport.sent] == [{"index": "5", "wait": "300s"},
                                                        {"consistent": ""}]


@pytest.mark.parametrize("body", [
    {}, [], ["x"], [1], "true", [entry(LockIndex="3")], [entry(LockIndex=True)],
    [entry(ModifyIndex=-1)], [entry(Session=5)], [entry(Value="not base64!")],
])
def test_a_kv_answer_of_the_wrong_shape_is_malformed(body: Any) -> None:
    port, _ = consul(raw(200, body))
    with pytest.raises(MalformedAnswer):
        port.kv_get(KEY, timeout=1.0)


def test_acquire_answers_true_or_false_and_names_an_invalid_session() -> None:
    port, transport = consul(raw(200, True), raw(200, False),
                             raw(500, 'rpc error making call: invalid session "s1"'),
                             raw(200, "yes"))
    assert port.kv_acquire(KEY, "s1", b"v", timeout=1.0) is True
    assert port.kv_acquire(KEY, "s1", b"v", timeout=1.0) is False
    with pytest.raises(InvalidSession):
        port.kv_acquire(KEY, "s1", b"v", timeout=1.0)
    with pytest.raises(MalformedAnswer):
        port.kv_acquire(KEY, "s1", b"v", timeout=1.0)
    assert transport.sent[0].params == {"acquire": "s1"} and transport.sent[0].data == b"v"


def test_release_sends_the_holders_value_so_consul_keeps_it() -> None:
    port, transport = consul(raw(200, True))
    assert port.kv_release(KEY, "s1", b'{"session": "s1"}', timeout=1.0)
    sent = transport.sent[0]
    assert (sent.method, sent.path, sent.params) == ("PUT", f"/v1/kv/{KEY}", {"release": "s1"})
    assert sent.data == b'{"session": "s1"}'


# -- agent -----------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    raw(404, 'Unknown check ID "c". Ensure that the check ID is passed, not the check name.'),
    raw(500, 'Unknown check "c"'),  # Consul before 1.11, ACLs on (agent/acl.go)
    raw(500, 'CheckID "c" does not have associated TTL'),  # before 1.11 (agent.go)
])
def test_a_pass_of_a_check_consul_does_not_know_says_so(answer: RawAnswer) -> None:
    port, _ = consul(answer)
    assert port.check_pass("c", "note", timeout=1.0) is False


def test_a_pass_that_fails_otherwise_raises() -> None:
    port, _ = consul(raw(500, "No cluster leader"))
    with pytest.raises(ConsulUnavailable):
        port.check_pass("c", "note", timeout=1.0)


@pytest.mark.parametrize("answer", [raw(404, 'ServiceID "x" does not exist'),
                                    raw(500, 'ServiceID "x" does not exist')])
def test_a_check_on_a_service_the_agent_does_not_know_is_not_registered(
        answer: RawAnswer) -> None:
    port, _ = consul(answer)
    assert port.check_register({"ID": "c", "ServiceID": "x"}, timeout=1.0) is False


def test_a_service_is_read_with_its_hash_and_checked() -> None:
    service = {"ID": "a", "Service": "db", "Tags": ["v1"], "Meta": {"k": "v"}, "Port": 1,
               "Address": "10.0.0.1", "ContentHash": "abc"}
    port, transport = consul(raw(200, service, {"X-Consul-ContentHash": "abc"}),
                             raw(404, "unknown"), raw(200, {**service, "Tags": "v1"}))
    read = port.agent_service("a", timeout=1.0, hash="xyz", wait="300s")
    assert read.content_hash == "abc" and read.service is not None
    assert read.service.tags == ("v1",) and read.service.definition == service
    assert transport.sent[0].params == {"hash": "xyz", "wait": "300s"}
    assert port.agent_service("a", timeout=1.0).service is None
    with pytest.raises(MalformedAnswer):
        port.agent_service("a", timeout=1.0)


def test_health_says_when_acls_left_instances_out() -> None:
    answer = [{"Node": {"Node": "n1"}, "Service": {"ID": "a", "Tags": ["primary"]},
               "Checks": [{"Status": "passing"}, {"Status": "critical"}]}]
    port, _ = consul(raw(200, answer, {"X-Consul-Results-Filtered-By-ACLs": "true"}))
    read = port.health_service("db", timeout=1.0)
    assert read.filtered
    assert read.entries[0].tagged("PRIMARY") and not read.entries[0].passing


def test_the_local_node_name_comes_from_agent_self() -> None:
    port, _ = consul(raw(200, {"Config": {"NodeName": "n1"}}), raw(200, {"Config": {}}))
    assert port.agent_node_name(timeout=1.0) == "n1"
    with pytest.raises(MalformedAnswer):
        port.agent_node_name(timeout=1.0)


def test_every_call_names_its_request() -> None:
    seen: list[Sent] = []

    def answer(sent: Sent) -> RawAnswer:
        seen.append(sent)
        return raw(200, True)

    port = HttpConsul(FakeTransport(answer))
    port.service_register({"ID": "x"}, timeout=1.0, replace_existing_checks=True)
    port.kv_put(KEY, b"v", timeout=1.0)
    assert seen[0].params == {"replace-existing-checks": "true"}
    assert (seen[1].method, seen[1].params) == ("PUT", None)
