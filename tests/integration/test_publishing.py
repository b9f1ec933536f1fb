"""What clients of the service see, end to end: the instance each sidecar owns carries its
role (the default), or, in the seed-compatible mode, the target service itself does.

Real sidecars against the Consul stand-in, three allocations like Nomad's (service "db",
no checks of their own unless a test adds one).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.consul_double import ConsulDouble
from tests.harness import Group, HealthObserver, running_group, wait_for
from tests.integration.conftest import SLEEP, TTL

pytestmark = pytest.mark.slow

ROLE_CHECK_TTL = TTL - min(0.25, (TTL - SLEEP) / 4)


def health(group: Group, name: str, **params: str) -> list[dict[str, Any]]:
    reply = requests.get(f"{group.any_agent()}/v1/health/service/{name}", params=params,
                         timeout=2)
    reply.raise_for_status()
    entries: list[dict[str, Any]] = reply.json()
    return entries


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return sorted(entry["Service"]["ID"] for entry in entries)


def agent_checks(group: Group, node: str) -> dict[str, Any]:
    checks: dict[str, Any] = requests.get(
        f"{group.consul.node_addr(node)}/v1/agent/checks", timeout=2).json()
    return checks


@pytest.fixture
def renamed(consul: ConsulDouble, tmp_path: Path) -> Iterator[Group]:
    """Nomad registers the tasks as db-task; the sidecars publish them as db."""
    with running_group(consul, tmp_path, service="db-task", ttl=f"{TTL:g}s",
                       sleep=f"{SLEEP:g}",
                       extra_env={"CONSUL_LEADER_PUBLISHED_NAME": "db"}) as group:
        yield group


@pytest.fixture
def seed_mode(consul: ConsulDouble, tmp_path: Path) -> Iterator[Group]:
    with running_group(consul, tmp_path, ttl=f"{TTL:g}s", sleep=f"{SLEEP:g}",
                       extra_env={"CONSUL_LEADER_PUBLISH": "labels"}) as group:
        yield group


def test_the_primary_query_lists_exactly_the_leaders_own_instance(
        group: Group, observer: HealthObserver) -> None:
    leader = group.wait_single_primary(timeout=3.0)
    wait_for(lambda: len(health(group, "db", tag="replica", passing="1")) == 2, 3.0,
             "both replicas published")

    primary = health(group, "db", tag="primary", passing="1")
    assert ids(primary) == [leader.published_id]
    mine = primary[0]["Service"]
    nomad = leader.agent_service()
    assert mine["ID"].startswith("consul-leader-") and mine["Service"] == "db"
    assert (mine["Address"], mine["Port"]) == (nomad["Address"], nomad["Port"])
    assert mine["Tags"] == ["v1", "primary"]  # the target's own tags, and the role
    assert mine["Meta"]["session"] == leader.status()["session"]
    assert mine["Meta"]["alloc"] == leader.alloc_id and mine["Meta"]["target"] == nomad["ID"]
    assert int(mine["Meta"]["fencing_token"]) == leader.status()["fencing_token"]
    checks = {c["CheckID"]: c for c in primary[0]["Checks"] if c["ServiceID"] == mine["ID"]}
    assert set(checks) == {f"consul-leader:alias:{nomad['ID']}",
                           f"consul-leader:role:{nomad['ID']}"}
    # Replicas are found by their label, or as every passing instance but the primary.
    replicas = ids(health(group, "db", tag="replica", passing="1"))
    assert replicas == sorted(s.published_id for s in group.sidecars if s is not leader)


def test_a_plain_name_lookup_lists_the_tasks_and_the_published_instances(
        group: Group, observer: HealthObserver) -> None:
    """With the Nomad service and the published instances sharing a name, `db` has two
    entries per allocation: name the Nomad service otherwise (next test) to avoid it."""
    group.wait_single_primary(timeout=3.0)
    wait_for(lambda: len(health(group, "db", passing="1")) == 6, 3.0, "six passing entries")
    everything = ids(health(group, "db", passing="1"))
    assert everything == sorted([s.service_id for s in group.sidecars]
                                + [s.published_id for s in group.sidecars])


def test_named_apart_each_allocation_has_one_entry_under_the_published_name(
        renamed: Group) -> None:
    group = renamed
    wait_for(lambda: len(health(group, "db", tag="primary", passing="1")) == 1, 5.0,
             "one passing primary under db")
    wait_for(lambda: len(health(group, "db", passing="1")) == 3, 3.0, "three entries")
    assert ids(health(group, "db", passing="1")) == sorted(s.published_id
                                                           for s in group.sidecars)
    leader = next(s for s in group.sidecars if s.status()["state"] == "Leader")
    assert ids(health(group, "db", tag="primary", passing="1")) == [leader.published_id]
    # The tasks' own registrations keep only what Nomad gave them.
    assert all(entry["Service"]["Tags"] == ["v1"] for entry in health(group, "db-task"))


def test_a_killed_sidecars_instance_leaves_passing_at_the_role_checks_ttl(
        group: Group, observer: HealthObserver) -> None:
    leader = group.wait_single_primary(timeout=3.0)
    killed = time.monotonic()
    leader.send(signal.SIGKILL)
    wait_for(lambda: leader.published_id not in ids(health(group, "db", passing="1")),
             ROLE_CHECK_TTL + 1.0, "the dead sidecar's instance out of ?passing")
    assert time.monotonic() - killed <= ROLE_CHECK_TTL + 0.5
    group.wait_single_primary(timeout=2 * TTL + 1.0, exclude=leader)
    role = agent_checks(group, leader.node)[f"consul-leader:role:{leader.service_id}"]
    assert role["Status"] == "critical"


def test_nomad_replacing_its_checks_leaves_ours_alone(group: Group,
                                                      observer: HealthObserver) -> None:
    from tests.harness import register_like_nomad

    leader = group.wait_single_primary(timeout=3.0)
    for _ in range(3):  # each one with replace-existing-checks, like Nomad's sync
        register_like_nomad(leader.agent, leader.service_id, group.service, 5432)
        assert group.the_primary() is leader
    checks = agent_checks(group, leader.node)
    assert checks[f"consul-leader:role:{leader.service_id}"]["Status"] == "passing"


def test_seed_mode_labels_the_task_service_and_writes_nothing_else_there(
        seed_mode: Group) -> None:
    group = seed_mode
    with HealthObserver(group, period=0.05) as watching:
        leader = group.wait_single_primary(timeout=5.0)
        assert leader.published_id == leader.service_id
        nomad = leader.agent_service()
        assert "primary" in nomad["Tags"] and nomad["Meta"] == {"external-source": "nomad"}
        ours = [c for c in agent_checks(group, leader.node).values()
                if c["ServiceID"] == leader.service_id and c["CheckID"].startswith("consul-")]
        assert ours == [], "no check of ours on Nomad's registration"
        services = requests.get(f"{leader.agent}/v1/agent/services", timeout=2).json()
        assert not [sid for sid in services if sid.startswith("consul-leader-")
                    and sid != f"consul-leader-{leader.alloc_id}"], "no instance of ours"
    watching.assert_safe()
