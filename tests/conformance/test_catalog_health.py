"""Conformance of the catalog and health reads (consul-semantics.md §5).

Tests marked `real_consul` also pass against a real agent (see conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.conformance.conftest import ConsulTarget, WaitUntil
from tests.consul_double import ConsulDouble

real_consul = pytest.mark.real_consul

# §5, in the order ServiceNode marshals them (Namespace/Partition are Enterprise only).
SERVICE_NODE_FIELDS = ["ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta",
                       "ServiceKind", "ServiceID", "ServiceName", "ServiceTags",
                       "ServiceAddress", "ServiceWeights", "ServiceMeta", "ServicePort",
                       "ServiceSocketPath", "ServiceEnableTagOverride", "ServiceProxy",
                       "ServiceConnect", "CreateIndex", "ModifyIndex"]
HEALTH_NODE_FIELDS = ["ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta",
                      "CreateIndex", "ModifyIndex"]


def get_json(consul: ConsulTarget, path: str, **params: Any) -> Any:
    response = consul.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def register_instances(consul: ConsulTarget, name: str,
                       tags_by_instance: dict[str, list[str]]) -> dict[str, str]:
    """Instances of `name` with the given tags and a passing TTL check each; suffix → ID."""
    ids = {}
    for suffix, tags in tags_by_instance.items():
        service_id = f"{name}-{suffix}"
        consul.register_service({
            "ID": service_id, "Name": name, "Tags": tags,
            "Check": {"CheckID": f"{service_id}-ttl", "TTL": "10m", "Status": "passing"},
        })
        ids[suffix] = service_id
    return ids


def ids_of_catalog(entries: list[dict[str, Any]]) -> set[str]:
    return {entry["ServiceID"] for entry in entries}


def ids_of_health(entries: list[dict[str, Any]]) -> set[str]:
    return {entry["Service"]["ID"] for entry in entries}


# -- GET /v1/catalog/service/:name ----------------------------------------------------


@real_consul
def test_catalog_service_lists_flat_service_nodes(consul: ConsulTarget) -> None:
    """§5: ServiceNode fields, flat, in order; node and service data side by side."""
    name = consul.unique("cat")
    consul.register_service({"ID": name, "Name": name, "Tags": ["primary"], "Port": 5432,
                             "Meta": {"session": "s1"}})
    [entry] = get_json(consul, f"/v1/catalog/service/{name}")
    present = [field for field in entry if field in SERVICE_NODE_FIELDS]
    assert present == SERVICE_NODE_FIELDS
    assert (entry["Node"], entry["ServiceID"], entry["ServiceName"]) == (consul.node, name, name)
    assert (entry["ServiceTags"], entry["ServicePort"]) == (["primary"], 5432)
    assert entry["ServiceMeta"] == {"session": "s1"}
    assert entry["ServiceWeights"] == {"Passing": 1, "Warning": 1}


@real_consul
def test_catalog_service_of_an_unknown_name_is_an_empty_list(consul: ConsulTarget) -> None:
    """§5: unknown service → 200 `[]` with query metadata."""
    response = consul.get(f"/v1/catalog/service/{consul.unique('none')}")
    assert (response.status_code, response.json()) == (200, [])
    assert int(response.headers["X-Consul-Index"]) >= 1


@real_consul
def test_catalog_tag_filter_is_and_and_case_insensitive(consul: ConsulTarget) -> None:
    """§5 `?tag=` repeatable: every tag must be present, compared case-insensitively."""
    name = consul.unique("tags")
    ids = register_instances(consul, name, {
        "both": ["Primary", "v2"], "one": ["primary"], "none": ["replica"]})
    path = f"/v1/catalog/service/{name}"
    assert ids_of_catalog(get_json(consul, path, tag="PRIMARY")) == {ids["both"], ids["one"]}
    assert ids_of_catalog(get_json(consul, path, tag=["primary", "V2"])) == {ids["both"]}
    assert ids_of_catalog(get_json(consul, path, tag="absent")) == set()


@real_consul
def test_catalog_service_takes_a_filter(consul: ConsulTarget) -> None:
    """§5: `?filter=` over ServiceNode fields (`"x" in ServiceTags`, the tag's successor)."""
    name = consul.unique("cfilter")
    ids = register_instances(consul, name, {"p": ["primary"], "r": ["replica"]})
    entries = get_json(consul, f"/v1/catalog/service/{name}", filter='"primary" in ServiceTags')
    assert ids_of_catalog(entries) == {ids["p"]}


# -- GET /v1/health/service/:name -----------------------------------------------------


@real_consul
def test_health_entry_has_node_service_and_checks_with_serf_health(
    consul: ConsulTarget,
) -> None:
    """§5: {Node, Service, Checks}; Checks hold the node's serfHealth and the service's."""
    name = consul.unique("health")
    ids = register_instances(consul, name, {"a": ["primary"]})
    [entry] = get_json(consul, f"/v1/health/service/{name}")
    assert list(entry) == ["Node", "Service", "Checks"]
    assert [field for field in entry["Node"] if field in HEALTH_NODE_FIELDS] == (
        HEALTH_NODE_FIELDS)
    assert entry["Node"]["Node"] == consul.node
    assert (entry["Service"]["ID"], entry["Service"]["Service"]) == (ids["a"], name)
    assert entry["Service"]["Tags"] == ["primary"]
    checks = {check["CheckID"]: check for check in entry["Checks"]}
    assert checks["serfHealth"]["Status"] == "passing"
    assert checks["serfHealth"]["ServiceID"] == ""
    assert checks[f"{ids['a']}-ttl"]["ServiceID"] == ids["a"]
    assert checks[f"{ids['a']}-ttl"]["ServiceTags"] == ["primary"]


@real_consul
def test_health_of_an_unknown_service_is_an_empty_list(consul: ConsulTarget) -> None:
    """§5: `[]` when nothing matches."""
    assert get_json(consul, f"/v1/health/service/{consul.unique('none')}") == []


@real_consul
def test_health_tag_filter_is_and_and_case_insensitive(consul: ConsulTarget) -> None:
    """§5: `?tag=` on health works like on the catalog: AND, case-insensitive."""
    name = consul.unique("htags")
    ids = register_instances(consul, name, {"both": ["primary", "Zone-A"], "one": ["PRIMARY"]})
    path = f"/v1/health/service/{name}"
    assert ids_of_health(get_json(consul, path, tag="Primary")) == {ids["both"], ids["one"]}
    assert ids_of_health(get_json(consul, path, tag=["primary", "zone-a"])) == {ids["both"]}


@real_consul
def test_passing_drops_entries_with_any_check_not_passing(consul: ConsulTarget) -> None:
    """§5 `?passing`: an entry goes if any check is warning or critical (filterNonPassing)."""
    name = consul.unique("passing")
    ids = register_instances(consul, name, {"ok": [], "warn": [], "crit": []})
    consul.put(f"/v1/agent/check/warn/{ids['warn']}-ttl")
    consul.put(f"/v1/agent/check/fail/{ids['crit']}-ttl")
    path = f"/v1/health/service/{name}"
    assert ids_of_health(get_json(consul, path, passing="")) == {ids["ok"]}
    assert ids_of_health(get_json(consul, path, passing="true")) == {ids["ok"]}
    assert ids_of_health(get_json(consul, path, passing="false")) == set(ids.values())
    assert ids_of_health(get_json(consul, path)) == set(ids.values())


@real_consul
def test_passing_with_an_invalid_value_is_a_400(consul: ConsulTarget) -> None:
    """§5: `?passing=<not a ParseBool value>` → 400 `Invalid value for ?passing`."""
    response = consul.get(f"/v1/health/service/{consul.unique('x')}?passing=maybe")
    consul.assert_error(response, 400, "Invalid value for ?passing")


@real_consul
def test_health_takes_a_filter(consul: ConsulTarget) -> None:
    """§5: `?filter=` over the entry (`Service.Tags`, `Checks.Status`, `Node.Node`)."""
    name = consul.unique("hfilter")
    ids = register_instances(consul, name, {"p": ["primary"], "r": ["replica"]})
    path = f"/v1/health/service/{name}"
    tagged = get_json(consul, path, filter='"primary" in Service.Tags')
    assert ids_of_health(tagged) == {ids["p"]}
    on_node = get_json(consul, path, filter=f'Node.Node == "{consul.node}"')
    assert ids_of_health(on_node) == set(ids.values())


@real_consul
def test_tag_and_passing_together_find_the_primary(consul: ConsulTarget) -> None:
    """§5: the operator query `?tag=primary&passing` of the sidecar's README."""
    name = consul.unique("primary")
    ids = register_instances(consul, name, {"leader": ["primary"], "sick": ["primary"],
                                            "replica": ["replica"]})
    consul.put(f"/v1/agent/check/fail/{ids['sick']}-ttl")
    entries = get_json(consul, f"/v1/health/service/{name}", tag="primary", passing="")
    assert ids_of_health(entries) == {ids["leader"]}


def test_node_failure_makes_its_instances_fail_passing(
    consul: ConsulTarget, double: ConsulDouble, wait_until: WaitUntil
) -> None:
    """§5/§1.6: a failed node's serfHealth is critical, so `?passing` drops its entries."""
    name = consul.unique("nodefail")
    register_instances(consul, name, {"n1": ["primary"]})
    other = requests.put(double.node_addr("n2") + "/v1/agent/service/register",
                         json={"ID": f"{name}-n2", "Name": name,
                               "Check": {"TTL": "10m", "Status": "passing"}}, timeout=10)
    assert other.status_code == 200, other.text
    path = f"/v1/health/service/{name}"
    assert {entry["Node"]["Node"] for entry in get_json(consul, path, passing="")} == {
        "n1", "n2"}
    double.fail_node("n2")
    assert {entry["Node"]["Node"] for entry in get_json(consul, path, passing="")} == {"n1"}
    [failed] = [entry for entry in get_json(consul, path) if entry["Node"]["Node"] == "n2"]
    serf = next(check for check in failed["Checks"] if check["CheckID"] == "serfHealth")
    assert (serf["Status"], serf["Output"]) == ("critical", "Agent not live or unreachable")
