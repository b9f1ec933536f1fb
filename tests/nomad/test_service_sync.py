"""The service client's sync loop against the Consul stand-in over HTTP.

Each test names the Nomad function it follows (command/agent/consul/service_client.go).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from tests.consul_double import ConsulDouble
from tests.nomad_double import Check, Service, ServiceClient, different
from tests.nomad_double.compare import maybe_tweak_tagged_addresses, slice_set_eq
from tests.nomad_double.registrations import Workload

from .conftest import agent_get, agent_put

StartClient = Callable[..., ServiceClient]


def workload(eto: bool = True, tags: tuple[str, ...] = ("v1",), node_port: int = 5432,
             alloc_id: str | None = None) -> Workload:
    service = Service("db", "db", tags=tags, enable_tag_override=eto,
                      checks=(Check("alive", interval=10.0),))
    return Workload(alloc_id or str(uuid.uuid4()), "db", "db", "db", "default", (service,),
                    "127.0.0.1", {"db": node_port})


def registered(client: ServiceClient, work: Workload) -> str:
    client.register_workload(work)
    assert client.wait_idle(3.0)
    return work.service_id(work.services[0])


def agent_service(consul: ConsulDouble, service_id: str, node: str = "n1") -> dict[str, Any]:
    reply = agent_get(consul, node, f"/v1/agent/service/{service_id}")
    reply.raise_for_status()
    result: dict[str, Any] = reply.json()
    return result


def edit_like_a_sidecar(consul: ConsulDouble, service_id: str, tags: list[str],
                        meta: dict[str, str] | None = None) -> None:
    """Read the registration and send it back changed through the agent API (no
    replace-existing-checks), as a sidecar labelling Nomad's service does."""
    current = agent_service(consul, service_id)
    body = {"ID": current["ID"], "Name": current["Service"], "Tags": tags,
            "Port": current["Port"], "Address": current["Address"],
            "Meta": current["Meta"] if meta is None else meta,
            "EnableTagOverride": current["EnableTagOverride"]}
    agent_put(consul, "n1", "/v1/agent/service/register", body)


def agent_checks(consul: ConsulDouble, node: str = "n1") -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = agent_get(consul, node, "/v1/agent/checks").json()
    return result


# -- agentServiceUpdateRequired / maybeTweakTags ------------------------------------------


def test_maybeTweakTags_periodic_sync_adopts_agent_tags_into_stored_copy_under_eto(
        consul: ConsulDouble, service_client: StartClient) -> None:
    client = service_client(period=60.0)
    service_id = registered(client, workload(eto=True))
    edit_like_a_sidecar(consul, service_id, ["v1", "primary"])

    record = client.sync_now("periodic")

    assert record.ok and record.reregistered == ()
    assert agent_service(consul, service_id)["Tags"] == ["v1", "primary"]
    stored = client.stored_service(service_id)
    assert stored is not None and stored["Tags"] == ["v1", "primary"]  # adopted in place


def test_agentServiceUpdateRequired_without_eto_periodic_sync_reverts_tags(
        consul: ConsulDouble, service_client: StartClient) -> None:
    client = service_client(period=60.0)
    service_id = registered(client, workload(eto=False))
    edit_like_a_sidecar(consul, service_id, ["v1", "primary"])

    record = client.sync_now("periodic")

    assert record.reregistered == (service_id,)
    assert agent_service(consul, service_id)["Tags"] == ["v1"]
    assert client.stored_service(service_id)["Tags"] == ["v1"]  # type: ignore[index]


def test_agentServiceUpdateRequired_operations_sync_pushes_stored_tags_without_adopting(
        consul: ConsulDouble, service_client: StartClient) -> None:
    """An operations sync never adopts: it pushes the stored copy, which may hold tags a
    periodic sync adopted earlier (a demoted instance labelled primary again)."""
    client = service_client(period=60.0)
    service_id = registered(client, workload(eto=True))
    edit_like_a_sidecar(consul, service_id, ["v1", "primary"])
    client.sync_now("periodic")  # adopts ["v1", "primary"]
    edit_like_a_sidecar(consul, service_id, ["v1", "replica"])  # the sidecar demotes

    record = client.sync_now("operations")

    assert record.reregistered == (service_id,)
    assert agent_service(consul, service_id)["Tags"] == ["v1", "primary"]  # stale, pushed back
    assert client.stored_service(service_id)["Tags"] == ["v1", "primary"]  # type: ignore[index]


def test_agentServiceUpdateRequired_operations_sync_reverts_unadopted_tags(
        consul: ConsulDouble, service_client: StartClient) -> None:
    client = service_client(period=60.0)
    service_id = registered(client, workload(eto=True))
    edit_like_a_sidecar(consul, service_id, ["v1", "primary"])

    client.sync_now("operations")

    assert agent_service(consul, service_id)["Tags"] == ["v1"]


# -- different ------------------------------------------------------------------------------


WANTED: dict[str, Any] = {
    "ID": "_nomad-task-a-db-db-db", "Name": "db", "Tags": ["v1", "x"], "Port": 5432,
    "Address": "127.0.0.1", "Meta": {"external-source": "nomad"}, "EnableTagOverride": True,
}
AGENT: dict[str, Any] = {
    "ID": "_nomad-task-a-db-db-db", "Service": "db", "Tags": ["x", "v1"], "Port": 5432,
    "Address": "127.0.0.1", "Meta": {"external-source": "nomad"}, "EnableTagOverride": True,
    "Weights": {"Passing": 1, "Warning": 1}, "Datacenter": "dc1",
}


@pytest.mark.parametrize(("change", "field"), [
    ({}, None),  # tag order does not matter
    ({"Tags": ["v1", "x", "primary"]}, "tags"),
    ({"Meta": {"external-source": "nomad", "session": "s"}}, "meta"),
    ({"Meta": {}}, "meta"),
    ({"Port": 5433}, "port"),
    ({"Address": "10.0.0.1"}, "address"),
    ({"Service": "other"}, "service name"),
    ({"Kind": "connect-proxy"}, "kind"),
    ({"EnableTagOverride": False}, "enable_tag_override"),
    ({"TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 1}}}, "tagged_addresses"),
    ({"Weights": {"Passing": 3, "Warning": 1}}, "weights"),
    ({"Datacenter": "dc2", "ContentHash": "x", "Proxy": {}}, None),  # not compared
])
def test_different_compares_exactly_nomads_fields(change: dict[str, Any], field: str | None
                                                 ) -> None:
    assert different(WANTED, {**AGENT, **change}) == field


def test_different_meta_nil_equals_empty_and_SliceSetEq_quirk() -> None:
    assert different({**WANTED, "Meta": None}, {**AGENT, "Meta": {}}) is None
    assert slice_set_eq(["a", "a"], ["a", "b"])  # helper.SliceSetEq, as in Nomad
    assert not slice_set_eq(["a"], ["a", "a"])


def test_maybeTweakTaggedAddresses_ignores_addresses_consul_injects() -> None:
    existing = {**AGENT, "TaggedAddresses": {
        "lan_ipv4": {"Address": "127.0.0.1", "Port": 5432},
        "wan_ipv4": {"Address": "127.0.0.1", "Port": 5432}}}
    maybe_tweak_tagged_addresses(WANTED, existing)
    assert different(WANTED, existing) is None


def test_different_meta_change_reregisters_even_under_eto(
        consul: ConsulDouble, service_client: StartClient) -> None:
    """A Meta change is a difference even under ETO: the periodic sync re-registers, with
    the adopted tags and Nomad's Meta."""
    client = service_client(period=60.0)
    service_id = registered(client, workload(eto=True))
    edit_like_a_sidecar(consul, service_id, ["primary", "v1"],
                        meta={"external-source": "nomad", "session": "abc"})

    record = client.sync_now("periodic")

    assert record.reregistered == (service_id,)
    service = agent_service(consul, service_id)
    assert service["Meta"] == {"external-source": "nomad"}
    assert service["Tags"] == ["primary", "v1"]


def test_different_tag_order_alone_does_not_reregister(
        consul: ConsulDouble, service_client: StartClient) -> None:
    client = service_client(period=60.0)
    service_id = registered(client, workload(eto=False, tags=("v1", "x")))
    edit_like_a_sidecar(consul, service_id, ["x", "v1"])

    assert client.sync_now("operations").reregistered == ()
    assert client.sync_now("periodic").reregistered == ()


# -- sync: replace-existing-checks, ownership, probation ------------------------------------


def test_sync_reregisters_with_replace_existing_checks_and_spares_foreign_ids(
        consul: ConsulDouble, service_client: StartClient) -> None:
    """sync: a re-registration drops every check on the service Nomad did not send; a
    service or check whose ID is not Nomad's is never touched (isNomadService,
    isNomadCheck), even after probation."""
    client = service_client(period=60.0, probation=0.0)
    service_id = registered(client, workload(eto=False))
    nomad_check = next(iter(client.stored_checks()))
    third_party_check = {"ID": "role", "Name": "role", "ServiceID": service_id, "TTL": "30s"}
    agent_put(consul, "n1", "/v1/agent/check/register", third_party_check)
    agent_put(consul, "n1", "/v1/agent/service/register", {
        "ID": "consul-leader-x", "Name": "db", "Port": 5432,
        "Check": {"CheckID": "consul-leader-x-role", "TTL": "30s"}})

    assert client.sync_now("periodic").reregistered == ()  # nothing differs: check stays
    assert "role" in agent_checks(consul)
    edit_like_a_sidecar(consul, service_id, ["v1", "primary"])
    record = client.sync_now("periodic")

    assert record.reregistered == (service_id,)
    checks = agent_checks(consul)
    assert "role" not in checks and nomad_check in checks
    assert "consul-leader-x-role" in checks
    assert "consul-leader-x" in agent_get(consul, "n1", "/v1/agent/services").json()


def test_sync_registers_a_missing_nomad_check_again(
        consul: ConsulDouble, service_client: StartClient) -> None:
    client = service_client(period=60.0)
    registered(client, workload())
    nomad_check = next(iter(client.stored_checks()))
    agent_put(consul, "n1", f"/v1/agent/check/deregister/{nomad_check}")

    record = client.sync_now("periodic")

    assert record.checks_registered == (nomad_check,)
    assert nomad_check in agent_checks(consul)


def test_deregisterProbationPeriod_unknown_nomad_services_removed_only_after_probation(
        consul: ConsulDouble, service_client: StartClient) -> None:
    stray_id = f"_nomad-task-{uuid.uuid4()}-db-db-db"
    stray_check = "_nomad-check-" + "a" * 64
    agent_put(consul, "n1", "/v1/agent/service/register", {
        "ID": stray_id, "Name": "db", "Port": 1, "Meta": {"external-source": "nomad"},
        "Check": {"CheckID": stray_check, "TTL": "30s"}})
    agent_put(consul, "n2", "/v1/agent/service/register", {"ID": stray_id, "Name": "db"})
    client = service_client(period=60.0, probation=0.8)

    assert client.sync_now("periodic").deregistered == ()  # in probation
    time.sleep(max(0.0, client.probation_expiry - time.monotonic()))  # probation's end
    record = client.sync_now("periodic")

    assert record.deregistered == (stray_id,)
    assert stray_id not in agent_get(consul, "n1", "/v1/agent/services").json()
    assert stray_id in agent_get(consul, "n2", "/v1/agent/services").json()  # another node


def test_deregisterProbationPeriod_does_not_delay_explicit_deregistration(
        consul: ConsulDouble, service_client: StartClient) -> None:
    """RemoveWorkload marks the IDs explicitly deregistered: removed even in probation."""
    client = service_client(period=60.0, probation=60.0)
    work = workload()
    service_id = registered(client, work)

    client.remove_workload(work)
    assert client.wait_idle(3.0)

    assert service_id not in agent_get(consul, "n1", "/v1/agent/services").json()
    assert client.counters().service_deregistrations == 1


# -- Run: the timer, retries ---------------------------------------------------------------


def test_Run_restarts_the_period_timer_after_every_sync(service_client: StartClient) -> None:
    period = 0.4
    client = service_client(period=period)
    first = client.wait_for_sync(0.0, 3.0, "periodic")  # the immediate sync of Run
    time.sleep(period / 2)  # half a period later an operation arrives

    forced = client.sync_now("operations")
    following = client.wait_for_sync(forced.started, 3.0)

    assert following.reason == "periodic"
    assert following.started >= forced.finished + period - 0.02  # not first.finished + period
    assert following.started - first.finished > period * 1.4


def test_Run_retries_failed_syncs_with_growing_backoff(
        consul: ConsulDouble, service_client: StartClient) -> None:
    client = service_client(period=60.0, retry_interval=0.1, max_retry_interval=0.25)
    client.wait_for_sync(0.0, 3.0)
    consul.inject_errors("n1", 4)
    start = time.monotonic()

    client.sync_now("periodic")  # fails: retries after 0.1, 0.2, 0.25 (capped), then ok
    deadline = time.monotonic() + 3.0
    while not (log := [r for r in client.sync_log() if r.started >= start])[-1].ok:
        assert time.monotonic() < deadline, log
        client.wait_for_sync(log[-1].started, 3.0)

    gaps = [later.started - earlier.finished for earlier, later in pairwise(log)]
    assert [r.ok for r in log] == [False, False, False, False, True]
    for gap, backoff in zip(gaps, [0.1, 0.2, 0.25, 0.25], strict=True):  # 1x, 2x, capped
        assert backoff - 0.01 <= gap < backoff + 0.1, gaps
    assert client.counters().failed_syncs == 4


def test_set_period_rearms_the_running_timer(service_client: StartClient) -> None:
    client = service_client(period=60.0)
    first = client.wait_for_sync(0.0, 3.0, "periodic")

    client.set_period(0.2)
    following = client.wait_for_sync(first.started, 2.0)

    assert following.reason == "periodic"
    assert 0.2 - 0.02 <= following.started - first.finished < 0.5
