"""The harness finds a sidecar's instances in Consul by its allocation ID, wherever the
role is published: Nomad's task service today, a registration the sidecar owns tomorrow."""

from __future__ import annotations

from pathlib import Path

from tests.harness import Group, Sidecar, seconds

ALLOC = "3f2b86d1-54b0-4a5e-9d37-000000000001"
OTHER = "9890908e-1e80-4c1d-a0f2-000000000002"


def sidecar(alloc_id: str, service_id: str = "") -> Sidecar:
    return Sidecar("s0", "n1", "http://127.0.0.1:1", alloc_id, service_id, 1, {},
                   Path("/dev/null"))


def test_instances_are_found_by_allocation_in_id_or_meta() -> None:
    mine = sidecar(ALLOC, f"_nomad-task-{ALLOC}-db-db-db")
    assert mine.owns({"ID": f"_nomad-task-{ALLOC}-db-db-db"})
    assert mine.owns({"ID": f"consul-leader-{ALLOC}-db"})  # the sidecar's own registration
    assert mine.owns({"ID": "db-primary", "Meta": {"alloc": ALLOC}})
    assert not mine.owns({"ID": f"_nomad-task-{OTHER}-db-db-db", "Meta": {"session": ALLOC[:8]}})


def test_without_an_allocation_only_the_given_service_id() -> None:
    plain = sidecar("", "web-1")
    assert plain.owns({"ID": "web-1"})
    assert not plain.owns({"ID": "web-2"})
    assert not sidecar("").owns({"ID": "anything"})


def test_owner_maps_an_instance_to_its_sidecar() -> None:
    group = Group(consul=None, workdir=Path("/nonexistent"))
    group.sidecars.extend([sidecar(ALLOC), sidecar(OTHER)])
    assert group.owner({"ID": f"consul-leader-{OTHER}-db"}) is group.sidecars[1]
    assert group.owner({"ID": "unrelated"}) is None


def test_durations_of_the_group_settings() -> None:
    assert (seconds("3s"), seconds("1"), seconds("500ms")) == (3.0, 1.0, 0.5)
