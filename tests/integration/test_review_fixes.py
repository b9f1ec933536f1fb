"""End to end, the fixes issue 11 asked for after the review of the code.

Real sidecar processes against the Consul stand-in. Each test names its fix.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.consul_double import ConsulDouble
from tests.harness import Group, Sidecar, register_like_nomad, wait_for
from tests.integration.conftest import SLEEP, TTL

pytestmark = pytest.mark.slow

ROLE_CHECK_TTL = TTL - min(0.25, (TTL - SLEEP) / 4)
OTHER_PRIMARY_WAIT = ROLE_CHECK_TTL + TTL / 10  # fsm.timing.Timings.other_primary_wait


@pytest.fixture
def lone(consul: ConsulDouble, tmp_path: Path) -> Iterator[Group]:
    """A group whose sidecars each test adds itself."""
    group = Group(consul, tmp_path, ttl=f"{TTL:g}s", sleep=f"{SLEEP:g}")
    try:
        yield group
    finally:
        group.stop_all()


def kv_entry(consul: ConsulDouble, kv_path: str) -> dict[str, object] | None:
    reply = requests.get(f"{consul.node_addr('n1')}/v1/kv/{kv_path}", timeout=2)
    if reply.status_code == 404:
        return None
    entry: dict[str, object] = reply.json()[0]
    return entry


def metric(sidecar: Sidecar, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{sidecar.status_port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_a_new_leader_outwaits_a_stale_primary_for_a_bounded_time(lone: Group) -> None:
    """The wait for another passing primary ends at the old role check's TTL plus a margin;
    then it publishes, counts it, and logs an error naming the other instance. The leader
    file and the promote hook follow the lock: they are there before the label is."""
    # An instance that looks primary and passing for ever (no checks), left by someone else.
    register_like_nomad(lone.consul.node_addr("n2"), "rogue-db-1", lone.service, 6000,
                        tags=["primary"])
    started = time.monotonic()
    hooked = lone.workdir / "promoted"
    leader = lone.add("n1", env={"CONSUL_LEADER_ON_PROMOTE": f"touch {hooked}"})
    leader_file = lone.workdir / "alloc-0" / leader.alloc_id

    wait_for(lambda: leader.status()["state"] == "Leader", 3.0, "the lock taken")
    wait_for(hooked.exists, 2.0, "the promote hook run at once")
    assert leader_file.exists() and not leader.status()["published"]
    assert leader.endpoint("/primary") == 503

    wait_for(lambda: leader.status()["published"], OTHER_PRIMARY_WAIT + 2.0,
             "the primary label published past the bound")
    assert time.monotonic() - started >= OTHER_PRIMARY_WAIT
    assert metric(leader, "consul_leader_published_over_other_primary_total") == 1.0
    errors = [line for line in leader.logs().splitlines() if " level=error " in line]
    assert any("rogue-db-1" in line for line in errors), errors
    assert leader.endpoint("/primary") == 200


def test_release_keeps_the_holders_value(lone: Group) -> None:
    """`?release` sends the holder's value, so the key keeps it (Consul writes the body)."""
    leader = lone.add("n1")
    wait_for(lambda: leader.status()["published"], 5.0, "a leader")
    held = kv_entry(lone.consul, lone.kv_path)
    assert held is not None and held.get("Session")
    value = json.loads(base64.b64decode(str(held["Value"])))
    assert value["session"] == held["Session"] and value["alloc_id"] == leader.alloc_id

    leader.send(signal.SIGTERM)
    assert leader.wait(timeout=5.0) == 0

    released = kv_entry(lone.consul, lone.kv_path)
    assert released is not None and not released.get("Session")
    assert released["Value"] == held["Value"]


def test_a_lease_check_reaped_with_its_session_is_registered_again(lone: Group) -> None:
    """Consul lost the lease check (its service reaped after a long outage) and with it the
    session: the sidecar registers and passes the check again, then leads on a new session;
    no stale "registered" flag keeps it failing."""
    leader = lone.add("n1")
    wait_for(lambda: leader.status()["published"], 5.0, "a leader")
    old_session = leader.status()["session"]
    agent = lone.consul.node_addr("n1")
    requests.put(f"{agent}/v1/agent/service/deregister/consul-leader-{leader.alloc_id}",
                 timeout=2).raise_for_status()
    requests.put(f"{agent}/v1/session/destroy/{old_session}", timeout=2).raise_for_status()

    def leading_again() -> bool:
        status = leader.status()
        return bool(status["published"]) and status["session"] not in (None, old_session)

    wait_for(leading_again, TTL + 2.0, "leading again on a new session")
    services = requests.get(f"{agent}/v1/agent/services", timeout=2).json()
    assert f"consul-leader-{leader.alloc_id}" in services


def test_a_session_node_other_than_the_local_agents_is_a_configuration_error(
        lone: Group) -> None:
    """The checks a session binds to live on the local agent's node: a session on another
    node could never bind to them. Exit 2, one line naming CONSUL_LEADER_NODE."""
    sidecar = lone.add("n1", env={"CONSUL_LEADER_NODE": "n2"})
    assert sidecar.wait(timeout=10.0) == 2
    lines = [line for line in sidecar.logs().splitlines()
             if line.startswith("consul-leader: configuration error")]
    assert len(lines) == 1 and "CONSUL_LEADER_NODE" in lines[0] and "'n1'" in lines[0], lines
    assert "Traceback" not in sidecar.logs()
    sessions = requests.get(f"{lone.consul.node_addr('n1')}/v1/session/list", timeout=2).json()
    assert sessions == []


def test_the_local_node_named_explicitly_elects_as_usual(lone: Group) -> None:
    sidecar = lone.add("n1", env={"CONSUL_LEADER_NODE": "n1"})
    wait_for(lambda: sidecar.status()["published"], 5.0, "a leader")
