"""The real sidecar under the Nomad model, publishing through the instance it owns (the
default): what Nomad's syncs do to Nomad's registrations no longer touches the role.

Three allocations of the standard job (sidecar as a prestart sidecar task, service "db" with
enable_tag_override and its own script check), TTL 3 s, SLEEP 1, Nomad's periodic sync every
2 x SLEEP. An observer samples `health/service/db?tag=primary&passing` every 50 ms.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests

from tests.consul_double import ConsulDouble
from tests.harness import wait_for
from tests.nomad_double import Allocation, NomadDouble, leader_job

TTL, SLEEP = 3.0, 1.0
ROLE_CHECK_TTL = TTL - min(0.25, (TTL - SLEEP) / 4)
SIDECAR_ENV = {
    "CONSUL_LEADER_SERVICE_NAME": "db",
    "CONSUL_LEADER_REPLICA_LABEL": "replica",
    "CONSUL_LEADER_TTL": f"{TTL:g}s",
    "CONSUL_LEADER_SLEEP": f"{SLEEP:g}",
    "CONSUL_LEADER_LOCKDELAY": "0s",
    "CONSUL_LEADER_LOG_LEVEL": "debug",
    "CONSUL_LEADER_LISTEN": "127.0.0.1:${NOMAD_PORT_leader}",
    "PYTHONUNBUFFERED": "1",
}
PERIOD = 0.05


def published_id(allocation: Allocation) -> str:
    return f"consul-leader-{allocation.id}-{allocation.service_ids()[0]}"


class Primaries:
    """Samples what a client of the service sees, from the start of the block to its end."""

    def __init__(self, consul: ConsulDouble) -> None:
        self._url = f"{consul.node_addr('n1')}/v1/health/service/db"
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> list[str]:
        reply = requests.get(self._url, params={"tag": "primary", "passing": "1"}, timeout=1)
        reply.raise_for_status()
        return sorted(entry["Service"]["ID"] for entry in reply.json())

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(requests.RequestException):
                self.samples.append((time.monotonic(), self.now()))
            self._stop.wait(PERIOD)

    @contextmanager
    def watching(self) -> Iterator[Primaries]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(2)

    def overlaps(self) -> list[tuple[float, list[str]]]:
        return [sample for sample in self.samples if len(sample[1]) > 1]

    def share_with_one_primary(self, since: float) -> float:
        kept = [ids for at, ids in self.samples if at >= since]
        return sum(1 for ids in kept if len(ids) == 1) / max(1, len(kept))


def status(allocation: Allocation) -> dict[str, Any]:
    port = allocation.ports["leader"]
    result: dict[str, Any] = requests.get(f"http://127.0.0.1:{port}/status", timeout=1).json()
    return result


def started(nomad_double: Callable[..., NomadDouble]) -> tuple[NomadDouble, list[Allocation]]:
    nomad = nomad_double(period=2 * SLEEP)
    job = leader_job(count=3, sidecar_env=SIDECAR_ENV, check_interval=0.2,
                     extra_ports=("leader",))
    return nomad, nomad.run_job(job)


def the_leader(primaries: Primaries, allocations: list[Allocation]) -> Allocation | None:
    ids = primaries.now()
    return next((a for a in allocations if [published_id(a)] == ids), None)


def test_steady_state_under_periodic_and_operation_syncs(
        consul: ConsulDouble, nomad_double: Callable[..., NomadDouble]) -> None:
    nomad, allocations = started(nomad_double)
    primaries = Primaries(consul)
    wait_for(lambda: the_leader(primaries, allocations), 15.0, "one passing primary")
    before = {client.name: client.service_client.counters() for client in nomad.clients}
    with primaries.watching():
        settled = time.monotonic()
        for _ in range(3):
            time.sleep(2 * SLEEP)  # periodic syncs run meanwhile: what is being measured
            for client in nomad.clients:
                client.service_client.sync_now("operations")
    assert primaries.overlaps() == []
    assert primaries.share_with_one_primary(settled) >= 0.999
    for client in nomad.clients:
        counters = client.service_client.counters()
        assert counters.total_syncs > before[client.name].total_syncs
        # Nothing of ours is in Nomad's registrations, so it never has to put them back.
        assert counters.service_reregistrations == before[client.name].service_reregistrations
    for allocation in allocations:
        nomad_view = requests.get(f"{consul.node_addr(allocation.node)}/v1/agent/service/"
                                  f"{allocation.service_ids()[0]}", timeout=2).json()
        assert "primary" not in nomad_view["Tags"] and "session" not in nomad_view["Meta"]


def test_a_killed_leader_is_out_of_passing_at_its_role_ttl_and_replaced(
        consul: ConsulDouble, nomad_double: Callable[..., NomadDouble]) -> None:
    """The leader's sidecar SIGKILLed right after a periodic sync adopted tags, then an
    operation sync: its instance drops out of ?passing within the role check's TTL, and
    another allocation is the one passing primary within the session bound."""
    nomad, allocations = started(nomad_double)
    primaries = Primaries(consul)
    leader = wait_for(lambda: the_leader(primaries, allocations), 15.0, "one passing primary")
    client = next(c for c in nomad.clients if c.name == leader.node)
    with primaries.watching():
        client.service_client.sync_now("periodic")
        process = leader.task("leader").process
        assert process is not None
        killed = time.monotonic()
        process.send_signal(signal.SIGKILL)
        client.service_client.sync_now("operations")
        wait_for(lambda: published_id(leader) not in primaries.now(), ROLE_CHECK_TTL + 1.0,
                 "the dead leader out of ?passing")
        gone_after = time.monotonic() - killed
        new = wait_for(lambda: the_leader(primaries, allocations), 2 * TTL + 1.0,
                       "another passing primary")
    assert new is not leader
    assert gone_after <= ROLE_CHECK_TTL + 0.5
    assert primaries.overlaps() == []


def test_the_application_going_critical_takes_its_instance_out_of_passing(
        consul: ConsulDouble, nomad_double: Callable[..., NomadDouble]) -> None:
    """The alias check follows the target: an unhealthy application is not offered, whatever
    its role (leadership itself stays; moving it is the next issue's health-aware election)."""
    _nomad, allocations = started(nomad_double)
    primaries = Primaries(consul)
    leader = wait_for(lambda: the_leader(primaries, allocations), 15.0, "one passing primary")
    leader.set_health("unhealthy")
    wait_for(lambda: primaries.now() == [], 3.0, "no passing primary while it is unhealthy")
    assert status(leader)["state"] == "Leader"
    leader.set_health("healthy")
    wait_for(lambda: primaries.now() == [published_id(leader)], 3.0, "the primary back")
