"""The one test that runs the product: the real sidecar (SIDECAR_COMMAND) as the prestart
sidecar task of three allocations, on three modelled Nomad clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from tests.consul_double import ConsulDouble
from tests.harness import wait_for
from tests.nomad_double import NomadDouble, leader_job

SIDECAR_ENV = {
    "CONSUL_LEADER_SERVICE_NAME": "db",
    "CONSUL_LEADER_PRIMARY_LABEL": "primary",
    "CONSUL_LEADER_REPLICA_LABEL": "replica",
    "CONSUL_LEADER_TTL": "3s",
    "CONSUL_LEADER_SLEEP": "1",
    "CONSUL_LEADER_LOCKDELAY": "0s",
    "CONSUL_LEADER_LOG_LEVEL": "debug",
    "CONSUL_LEADER_LISTEN": "127.0.0.1:${NOMAD_PORT_leader}",
    "PYTHONUNBUFFERED": "1",
}


def status(port: int) -> dict[str, Any]:
    result: dict[str, Any] = requests.get(f"http://127.0.0.1:{port}/status", timeout=1).json()
    return result


def test_real_sidecar_as_prestart_sidecar_task_one_of_three_leads(
        consul: ConsulDouble, nomad_double: Callable[..., NomadDouble]) -> None:
    nomad = nomad_double(period=1.0)
    job = leader_job(count=3, sidecar_env=SIDECAR_ENV, check_interval=0.2,
                     extra_ports=("leader",))
    allocations = nomad.run_job(job)
    ports = [allocation.ports["leader"] for allocation in allocations]

    def leaders() -> list[int] | None:
        states = [status(port)["state"] for port in ports]
        found = [port for port, state in zip(ports, states, strict=True) if state == "Leader"]
        return found if len(found) == 1 and states.count("Follower") == 2 else None

    try:
        wait_for(leaders, 15.0, "one Leader and two Followers")
    except AssertionError:
        for allocation in allocations:
            print(allocation, allocation.task("leader").processes[-1].logs()[-3000:])
        raise
    assert all(allocation.task("leader").process is not None for allocation in allocations)
