"""Conformance of the agent's service and check endpoints (consul-semantics.md §4).

Tests marked `real_consul` also pass against a real agent (see conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conftest import ConsulTarget, WaitUntil

real_consul = pytest.mark.real_consul

AGENT_SERVICE_FIELDS = ["ID", "Service", "Tags", "Meta", "Port", "Address", "Weights",
                        "EnableTagOverride", "Datacenter"]
HEALTH_CHECK_FIELDS = ["Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID",
                       "ServiceName", "ServiceTags", "Type", "Interval", "Timeout",
                       "ExposedPort", "Definition", "CreateIndex", "ModifyIndex"]


def agent_services(consul: ConsulTarget, **params: str) -> dict[str, Any]:
    response = consul.get("/v1/agent/services", params=params)
    assert response.status_code == 200, response.text
    services: dict[str, Any] = response.json()
    return services


def agent_service(consul: ConsulTarget, service_id: str) -> dict[str, Any]:
    response = consul.get(f"/v1/agent/service/{service_id}")
    assert response.status_code == 200, response.text
    service: dict[str, Any] = response.json()
    return service


def agent_checks(consul: ConsulTarget) -> dict[str, Any]:
    response = consul.get("/v1/agent/checks")
    assert response.status_code == 200, response.text
    checks: dict[str, Any] = response.json()
    return checks


def catalog_check(consul: ConsulTarget, check_id: str) -> dict[str, Any]:
    """The check as the servers hold it (health endpoint of this node)."""
    response = consul.get(f"/v1/health/node/{consul.node}")
    assert response.status_code == 200, response.text
    [check] = [check for check in response.json() if check["CheckID"] == check_id]
    return dict(check)


# -- §4.1 GET /v1/agent/services ----------------------------------------------------


@real_consul
def test_services_are_keyed_by_id_with_consul_defaults(consul: ConsulTarget) -> None:
    """§4.1: Tags [] and Meta {} never null, Weights 1/1, field order of api.AgentService."""
    service_id = consul.unique("shape")
    consul.register_service({"Name": service_id})
    service = agent_services(consul)[service_id]
    expected = {"ID": service_id, "Service": service_id, "Tags": [], "Meta": {}, "Port": 0,
                "Address": "", "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False}
    assert {name: service[name] for name in expected} == expected
    assert service["Datacenter"]
    present = [name for name in service if name in AGENT_SERVICE_FIELDS]
    assert present == AGENT_SERVICE_FIELDS


@real_consul
def test_an_ip_address_adds_lan_and_wan_tagged_addresses(consul: ConsulTarget) -> None:
    """§4.1: with an IP Address the agent adds `lan_ipv4`/`wan_ipv4` itself."""
    service_id = consul.unique("tagged")
    consul.register_service({"Name": service_id, "Address": "10.1.2.3", "Port": 5432})
    tagged = agent_services(consul)[service_id]["TaggedAddresses"]
    assert tagged["lan_ipv4"] == {"Address": "10.1.2.3", "Port": 5432}
    assert tagged["wan_ipv4"] == {"Address": "10.1.2.3", "Port": 5432}


@real_consul
def test_services_take_a_filter(consul: ConsulTarget) -> None:
    """§4.1 `?filter=`: `ID matches`, `in Tags`, `Meta.<key>` on each AgentService."""
    alloc = consul.unique("_nomad-task-alloc")
    consul.register_service({"ID": f"{alloc}-db", "Name": "fdb", "Tags": ["primary"],
                             "Meta": {"env": "qa"}})
    consul.register_service({"ID": f"{alloc}-web", "Name": "fweb", "Tags": ["replica"]})
    consul.register_service({"ID": consul.unique("other"), "Name": "fdb", "Tags": ["primary"]})
    assert set(agent_services(consul, filter=f'ID matches "^{alloc}-.*"')) == {
        f"{alloc}-db", f"{alloc}-web"}
    in_alloc_and_primary = f'ID matches "^{alloc}-" and "primary" in Tags'
    assert set(agent_services(consul, filter=in_alloc_and_primary)) == {f"{alloc}-db"}
    assert set(agent_services(consul, filter='Meta.env == "qa" and Service == "fdb"')) == {
        f"{alloc}-db"}


@real_consul
def test_services_do_not_block_and_send_no_index(consul: ConsulTarget) -> None:
    """§3/§4.1: /v1/agent/services is not a blocking endpoint: no X-Consul-Index."""
    response = consul.get("/v1/agent/services?index=1&wait=5s", timeout=4)
    assert response.status_code == 200
    assert "X-Consul-Index" not in response.headers


# -- §4.2 GET /v1/agent/service/:id -------------------------------------------------


@real_consul
def test_service_by_id_is_the_same_object_plus_content_hash(consul: ConsulTarget) -> None:
    """§4.2: the AgentService of /v1/agent/services plus ContentHash (and its header)."""
    service_id = consul.unique("one")
    consul.register_service({"ID": service_id, "Name": "one", "Tags": ["a"]})
    response = consul.get(f"/v1/agent/service/{service_id}")
    single = response.json()
    assert single.pop("ContentHash") == response.headers["X-Consul-ContentHash"]
    listed = agent_services(consul)[service_id]
    assert {name: single[name] for name in AGENT_SERVICE_FIELDS} == {
        name: listed[name] for name in AGENT_SERVICE_FIELDS}


@real_consul
def test_unknown_service_id_is_a_404_naming_it(consul: ConsulTarget) -> None:
    """§4.2: 404 `unknown service ID: <id>`."""
    missing = consul.unique("nope")
    consul.assert_error(consul.get(f"/v1/agent/service/{missing}"), 404,
                        f"unknown service ID: {missing}")


# -- §4.3 PUT /v1/agent/service/register --------------------------------------------


@real_consul
def test_register_answers_200_with_an_empty_body(consul: ConsulTarget) -> None:
    """§4.3: the handler returns nil: 200, empty body."""
    service_id = consul.unique("empty")
    response = consul.put("/v1/agent/service/register", json={"Name": service_id})
    consul.register_service({"Name": service_id})  # for cleanup
    assert (response.status_code, response.content) == (200, b"")


@real_consul
def test_register_refuses_an_unknown_field(consul: ConsulTarget) -> None:
    """§0/§4.3 strict decoding: the /v1/agent/services output is not a registration body."""
    service_id = consul.unique("strict")
    consul.register_service({"Name": service_id})
    round_trip = agent_services(consul)[service_id]
    response = consul.put("/v1/agent/service/register", json=round_trip)
    consul.assert_error(response, 400, 'Request decode failed: json: unknown field "Service"')


@real_consul
def test_register_matches_field_names_case_insensitively(consul: ConsulTarget) -> None:
    """§0: Go's encoding/json matches `name`, `TAGS`, `port` to Name, Tags, Port."""
    service_id = consul.unique("case")
    consul.register_service({"id": service_id, "NAME": "case", "tags": ["x"], "pOrT": 7})
    service = agent_services(consul)[service_id]
    assert (service["Service"], service["Tags"], service["Port"]) == ("case", ["x"], 7)


@real_consul
def test_register_accepts_snake_case_spellings(consul: ConsulTarget) -> None:
    """§0/§4.3: `enable_tag_override` and `tagged_addresses` are accepted."""
    service_id = consul.unique("snake")
    consul.register_service({
        "ID": service_id, "Name": "snake", "enable_tag_override": True,
        "tagged_addresses": {"lan": {"Address": "10.0.0.9", "Port": 1}},
    })
    service = agent_services(consul)[service_id]
    assert service["EnableTagOverride"] is True
    assert service["TaggedAddresses"]["lan"] == {"Address": "10.0.0.9", "Port": 1}


@real_consul
def test_reregister_replaces_the_definition_wholesale(consul: ConsulTarget) -> None:
    """§4.3/§7: fields left out of a re-register are gone (tags, meta, port...)."""
    service_id = consul.unique("whole")
    consul.register_service({"ID": service_id, "Name": "whole", "Tags": ["primary"],
                             "Meta": {"session": "s"}, "Port": 5432})
    consul.register_service({"ID": service_id, "Name": "whole"})
    service = agent_services(consul)[service_id]
    assert (service["Tags"], service["Meta"], service["Port"]) == ([], {}, 0)


@real_consul
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Tags": ["x"]}, "Missing service name"),
        ({"Name": "addr", "Address": "0.0.0.0"}, "Invalid service address"),
        ({"Name": "status", "Check": {"TTL": "10m", "Status": "up"}},
         "Status for checks must 'passing', 'warning', 'critical'"),
        ({"Name": "meta", "Meta": {"consul-x": "y"}},
         "Invalid Service Meta: Couldn't load metadata pair ('consul-x', 'y'): "
         "Key prefix 'consul-' is reserved for internal use"),
        ({"Name": "weights", "Weights": {"Passing": 0, "Warning": 1}},
         "Invalid Weights: Passing must be greater than 0"),
        ({"Name": "ttl", "Check": {"TTL": "10"}},
         'Request decode failed: time: missing unit in duration "10"'),
    ],
    ids=["no-name", "unspecified-address", "bad-check-status", "reserved-meta", "weights",
         "duration-without-unit"],
)
def test_register_validation_errors_are_400s(
    consul: ConsulTarget, body: dict[str, Any], message: str
) -> None:
    """§4.3: Consul's validation messages, 400 plain text."""
    consul.assert_error(consul.put("/v1/agent/service/register", json=body), 400, message)


@real_consul
def test_service_checks_get_default_ids_names_and_start_critical(consul: ConsulTarget) -> None:
    """§4.3: ID `service:<id>` (`:<n>` when several), Name `Service '<name>' check`."""
    single, several = consul.unique("single"), consul.unique("several")
    consul.register_service({"ID": single, "Name": "single", "Check": {"TTL": "10m"}})
    consul.register_service({"ID": several, "Name": "several",
                             "Checks": [{"TTL": "10m"}, {"TTL": "10m", "Status": "passing"}]})
    checks = agent_checks(consul)
    assert checks[f"service:{single}"]["Name"] == "Service 'single' check"
    assert checks[f"service:{single}"]["Status"] == "critical"
    assert checks[f"service:{several}:1"]["Status"] == "critical"
    assert checks[f"service:{several}:2"]["Status"] == "passing"
    assert checks[f"service:{several}:2"]["ServiceName"] == "several"


@real_consul
def test_reregister_keeps_an_existing_checks_status_and_output(consul: ConsulTarget) -> None:
    """§4.3: a check ID that already existed keeps its Status and Output, whatever is sent."""
    service_id = consul.unique("keep")
    check_type = {"CheckID": f"{service_id}-ttl", "TTL": "10m"}
    definition = {"ID": service_id, "Name": "keep", "Check": check_type}
    consul.register_service(definition)
    consul.put(f"/v1/agent/check/pass/{service_id}-ttl?note=fine")
    consul.register_service({**definition, "Tags": ["primary"],
                             "Check": {**check_type, "Status": "critical"}})
    check = agent_checks(consul)[f"{service_id}-ttl"]
    assert (check["Status"], check["Output"]) == ("passing", "fine")
    assert check["ServiceTags"] == ["primary"]


@real_consul
def test_checks_left_out_are_kept_unless_replace_existing_checks(consul: ConsulTarget) -> None:
    """§4.3: a re-register keeps other checks; `?replace-existing-checks` removes them."""
    service_id = consul.unique("replace")
    a, b = f"{service_id}-a", f"{service_id}-b"
    consul.register_service({"ID": service_id, "Name": "replace", "Checks": [
        {"CheckID": a, "TTL": "10m"}, {"CheckID": b, "TTL": "10m"}]})
    only_a = {"ID": service_id, "Name": "replace", "Checks": [{"CheckID": a, "TTL": "10m"}]}
    consul.register_service(only_a)
    assert {a, b} <= set(agent_checks(consul))
    response = consul.put("/v1/agent/service/register?replace-existing-checks", json=only_a)
    assert response.status_code == 200, response.text
    remaining = set(agent_checks(consul))
    assert a in remaining
    assert b not in remaining


@real_consul
@pytest.mark.parametrize(("value", "replaces"),
                         [("true", True), ("false", False), ("1", False), ("yes", False)])
def test_replace_existing_checks_is_on_only_when_empty_or_true(
    consul: ConsulTarget, value: str, replaces: bool
) -> None:
    """§4.3: `?replace-existing-checks=<v>` counts only for "" and "true" (not ParseBool)."""
    service_id = consul.unique("rvalue")
    a, b = f"{service_id}-a", f"{service_id}-b"
    consul.register_service({"ID": service_id, "Name": "rvalue", "Checks": [
        {"CheckID": a, "TTL": "10m"}, {"CheckID": b, "TTL": "10m"}]})
    only_a = {"ID": service_id, "Name": "rvalue", "Checks": [{"CheckID": a, "TTL": "10m"}]}
    response = consul.put(f"/v1/agent/service/register?replace-existing-checks={value}",
                          json=only_a)
    assert response.status_code == 200, response.text
    assert (b not in agent_checks(consul)) is replaces


# -- §4.4 PUT /v1/agent/service/deregister/:id --------------------------------------


@real_consul
def test_deregister_of_an_unknown_service_is_a_404(consul: ConsulTarget) -> None:
    """§4.4/§8.8: 404 `Unknown service ID "<id>". Ensure that ...` (docs say no-op)."""
    missing = consul.unique("ghost")
    consul.assert_error(
        consul.put(f"/v1/agent/service/deregister/{missing}"), 404,
        f'Unknown service ID "{missing}". Ensure that the service ID is passed, '
        "not the service name.",
    )


@real_consul
def test_deregister_removes_the_service_and_its_checks(consul: ConsulTarget) -> None:
    """§4.4: 200 empty body; the service and its checks leave agent and catalog."""
    service_id = consul.unique("gone")
    consul.register_service({"ID": service_id, "Name": service_id, "Check": {"TTL": "10m"}})
    response = consul.put(f"/v1/agent/service/deregister/{service_id}")
    assert (response.status_code, response.content) == (200, b"")
    assert service_id not in agent_services(consul)
    assert f"service:{service_id}" not in agent_checks(consul)
    assert consul.get(f"/v1/catalog/service/{service_id}").json() == []


@real_consul
def test_deregister_invalidates_sessions_bound_to_its_checks(consul: ConsulTarget) -> None:
    """§4.4/§1.5: removing the service's check deletes the sessions that listed it."""
    service_id = consul.unique("bound")
    consul.register_service({"ID": service_id, "Name": service_id,
                             "Check": {"TTL": "10m", "Status": "passing"}})
    session_id = consul.create_session(
        ServiceChecks=[{"ID": f"service:{service_id}"}], TTL="30s")
    key = consul.key("bound-lock")
    assert consul.put(f"/v1/kv/{key}?acquire={session_id}", data=b"x").json() is True
    consul.put(f"/v1/agent/service/deregister/{service_id}")
    assert consul.session_info(session_id) == []
    assert "Session" not in (consul.kv_entry(key) or {})


# -- §4.5 GET /v1/agent/self --------------------------------------------------------


@real_consul
def test_self_names_the_node_and_datacenter(consul: ConsulTarget) -> None:
    """§4.5: `.Config.NodeName` and `.Config.Datacenter` (what clients read)."""
    config = consul.get("/v1/agent/self").json()["Config"]
    assert config["NodeName"] == consul.node
    assert config["Datacenter"]
    members = consul.get(f"/v1/catalog/nodes?filter=Node == \"{consul.node}\"").json()
    assert [member["Datacenter"] for member in members] == [config["Datacenter"]]


# -- §4.6 checks ----------------------------------------------------------------------


@real_consul
def test_checks_are_keyed_by_check_id_with_health_check_fields(consul: ConsulTarget) -> None:
    """§4.6: HealthCheck fields in order; ServiceTags [] for a node check; no serfHealth."""
    check_id = consul.register_ttl_check("fields")
    checks = agent_checks(consul)
    check = checks[check_id]
    assert [field for field in check if field in HEALTH_CHECK_FIELDS] == HEALTH_CHECK_FIELDS
    if consul.double is not None:
        assert list(check) == HEALTH_CHECK_FIELDS
    assert (check["Node"], check["Name"], check["Status"], check["Type"]) == (
        consul.node, check_id, "passing", "ttl")
    assert check["ServiceTags"] == []
    assert "serfHealth" not in checks


@real_consul
@pytest.mark.parametrize(
    ("verb", "status"), [("pass", "passing"), ("warn", "warning"), ("fail", "critical")]
)
def test_ttl_check_pass_warn_fail_set_status_and_note(
    consul: ConsulTarget, verb: str, status: str
) -> None:
    """§4.6: PUT check/<verb>/:id?note= → 200 empty; Status and Output = note."""
    check_id = consul.register_ttl_check(f"verb-{verb}", status="warning")
    response = consul.put(f"/v1/agent/check/{verb}/{check_id}", params={"note": "why"})
    assert (response.status_code, response.content) == (200, b"")
    check = agent_checks(consul)[check_id]
    assert (check["Status"], check["Output"]) == (status, "why")


@real_consul
def test_ttl_check_update_takes_status_and_output(consul: ConsulTarget) -> None:
    """§4.6: PUT check/update/:id with {"Status", "Output"}."""
    check_id = consul.register_ttl_check("update")
    response = consul.put(f"/v1/agent/check/update/{check_id}",
                          json={"Status": "warning", "Output": "slow"})
    assert response.status_code == 200, response.text
    check = agent_checks(consul)[check_id]
    assert (check["Status"], check["Output"]) == ("warning", "slow")


@real_consul
def test_ttl_check_update_refuses_an_unknown_status(consul: ConsulTarget) -> None:
    """§4.6: 400 `Invalid check status: '<x>'`."""
    check_id = consul.register_ttl_check("badstatus")
    response = consul.put(f"/v1/agent/check/update/{check_id}", json={"Status": "up"})
    consul.assert_error(response, 400, "Invalid check status: 'up'")


@real_consul
def test_status_change_reaches_the_catalog_but_output_alone_does_not(
    consul: ConsulTarget,
) -> None:
    """§4.6: status changes sync at once; output-only changes wait for the 5m sync."""
    check_id = consul.register_ttl_check("sync", status="critical")
    consul.put(f"/v1/agent/check/pass/{check_id}?note=first")
    consul.put(f"/v1/agent/check/pass/{check_id}?note=second")
    assert agent_checks(consul)[check_id]["Output"] == "second"
    synced = catalog_check(consul, check_id)
    assert (synced["Status"], synced["Output"]) == ("passing", "first")


def test_ttl_check_expires_critical_with_ttl_expired(
    consul: ConsulTarget, double: Any, wait_until: WaitUntil
) -> None:
    """§4.6: exactly TTL after the last update (no multiplier): critical, `TTL expired`."""
    check_id = consul.unique("expire")
    consul.register_check({"ID": check_id, "Name": check_id, "TTL": "200ms",
                           "Status": "passing"})
    expired = wait_until(lambda: agent_checks(consul)[check_id]["Status"] == "critical",
                         message="the TTL check to expire")
    assert expired
    assert agent_checks(consul)[check_id]["Output"] == "TTL expired"
    assert catalog_check(consul, check_id)["Status"] == "critical"


def test_ttl_expiry_keeps_the_last_output(
    consul: ConsulTarget, double: Any, wait_until: WaitUntil
) -> None:
    """§4.6: with earlier output, `TTL expired (last output before timeout follows): <o>`."""
    check_id = consul.unique("expire-out")
    consul.register_check({"ID": check_id, "Name": check_id, "TTL": "200ms"})
    consul.put(f"/v1/agent/check/pass/{check_id}?note=all good")
    wait_until(lambda: agent_checks(consul)[check_id]["Status"] == "critical",
               message="the TTL check to expire")
    assert agent_checks(consul)[check_id]["Output"] == (
        "TTL expired (last output before timeout follows): all good")


@real_consul
@pytest.mark.parametrize("verb", ["pass", "warn", "fail", "update", "deregister"])
def test_unknown_check_id_is_a_404(consul: ConsulTarget, verb: str) -> None:
    """§4.6/§8.8: 404 `Unknown check ID "<id>". Ensure that the check ID is passed, ...`."""
    missing = consul.unique("nocheck")
    body = {"Status": "passing"} if verb == "update" else None
    consul.assert_error(
        consul.put(f"/v1/agent/check/{verb}/{missing}", json=body), 404,
        f'Unknown check ID "{missing}". Ensure that the check ID is passed, '
        "not the check name.",
    )


@real_consul
def test_ttl_update_of_a_check_without_ttl_is_a_500(consul: ConsulTarget) -> None:
    """§4.6: an existing non-TTL check → 500 `CheckID "<id>" does not have associated TTL`."""
    check_id = consul.unique("tcp")
    consul.register_check({"ID": check_id, "Name": check_id, "TCP": "127.0.0.1:1",
                           "Interval": "10m"})
    consul.assert_error(consul.put(f"/v1/agent/check/pass/{check_id}"), 500,
                        f'CheckID "{check_id}" does not have associated TTL')


@real_consul
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"TTL": "10m"}, 400, "Missing check name"),
        ({"Name": "s", "TTL": "10m", "Status": "up"}, 400, "Bad check status"),
        ({"Name": "s"}, 400, "Invalid check: TTL must be > 0 for TTL checks"),
        ({"Name": "s", "TTL": "10m", "ServiceID": "no-such-service-x"}, 404,
         'ServiceID "no-such-service-x" does not exist'),
        ({"Name": "s", "TTL": "10m", "Unknown": 1}, 400,
         'Request decode failed: json: unknown field "Unknown"'),
    ],
    ids=["no-name", "bad-status", "no-ttl", "unknown-service", "unknown-field"],
)
def test_check_register_errors(
    consul: ConsulTarget, body: dict[str, Any], status: int, message: str
) -> None:
    """§4.6: check/register refusals with Consul's codes and texts."""
    consul.assert_error(consul.put("/v1/agent/check/register", json=body), status, message)


@real_consul
def test_check_register_defaults_id_to_name_and_starts_critical(consul: ConsulTarget) -> None:
    """§4.6: ID defaults to Name; the initial status defaults to critical."""
    name = consul.unique("byname")
    consul.register_check({"Name": name, "TTL": "10m"})
    check = agent_checks(consul)[name]
    assert (check["CheckID"], check["Status"]) == (name, "critical")
