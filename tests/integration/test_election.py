"""End to end: real sidecar processes, the Consul stand-in over HTTP, real signals.

Each test is an operator story. The sidecars run as allocations of the Nomad model (its
clients sync the task services every 2 x SLEEP) unless a test says it is about Consul
alone. The `observer` fixture samples Consul's health view every 50 ms for the whole test
and fails it if two passing primaries ever show up at once.
"""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.harness import Group, HealthObserver, NomadGroup, NomadSidecar, Sidecar, wait_for
from tests.integration.conftest import (
    CONSUL_ONLY,
    SLEEP,
    TTL,
)

pytestmark = pytest.mark.slow


def tags(sidecar: Sidecar) -> list[str]:
    """The labels on the sidecar's instances, on whichever registration carries them."""
    return sorted(sidecar.labels())


def replicas_labelled(group: Group, leader: Sidecar) -> bool:
    return all(
        "replica" in tags(s) and "primary" not in tags(s)
        for s in group.sidecars
        if s is not leader and s.running()
    )


def test_three_sidecars_elect_one_primary_quickly(group: Group, observer: HealthObserver) -> None:
    started = time.monotonic()
    leader = group.wait_single_primary(timeout=2.0)
    assert time.monotonic() - started <= 2.0
    labelled = [s for s in leader.instances() if "primary" in s["Tags"]]
    assert labelled and all("replica" not in s["Tags"] for s in labelled)
    session = group.kv()["Session"]  # type: ignore[index]
    assert {s["Meta"].get("session") for s in labelled} == {session}
    # The rest of Nomad's definition of the task service is kept.
    assert leader.agent_service()["Meta"]["external-source"] == "nomad"
    wait_for(lambda: replicas_labelled(group, leader), 2.0, "replica labels on the others")
    assert [s.name for s in group.leaders_by_status()] == [leader.name]
    assert leader.endpoint("/primary") == 200
    assert all(s.endpoint("/primary") == 503 for s in group.sidecars if s is not leader)


@pytest.mark.parametrize("group", [{"lock_delay": "5s"}], indirect=True)
def test_sigterm_hands_over_within_a_second(group: Group, observer: HealthObserver) -> None:
    """With a 5 s lock-delay, a handover under 1 s proves the key was released before the
    session was destroyed (destroying a holding session would impose the delay)."""
    old = group.wait_single_primary(timeout=3.0)
    old_session = group.kv()["Session"]  # type: ignore[index]
    signalled = time.monotonic()
    old.send(signal.SIGTERM)
    new = group.wait_single_primary(timeout=1.0, exclude=old)
    assert time.monotonic() - signalled <= 1.0
    assert old.wait(timeout=5.0) == 0
    assert "primary" not in tags(old)
    assert group.kv()["Session"] != old_session  # type: ignore[index]
    sessions = requests.get(f"{group.any_agent()}/v1/session/list", timeout=2).json()
    assert old_session not in {s["ID"] for s in sessions}, "the old session was not destroyed"
    assert new.status()["state"] == "Leader"


def test_sigkill_fails_over_within_the_session_bound(
    group: Group, observer: HealthObserver
) -> None:
    old = group.wait_single_primary(timeout=3.0)
    killed = time.monotonic()
    old.send(signal.SIGKILL)
    group.wait_single_primary(timeout=2 * TTL + 0 + 1.0, exclude=old)
    assert time.monotonic() - killed <= 2 * TTL + 1.0


def test_node_lost_fails_over_at_once(group: Group, consul, observer: HealthObserver) -> None:  # type: ignore[no-untyped-def]
    old = group.wait_single_primary(timeout=3.0)
    lost = time.monotonic()
    consul.fail_node(old.node)
    group.wait_single_primary(timeout=0 + 1.0 + 0.5, exclude=old)
    assert time.monotonic() - lost <= 1.0 + 0.5


def test_deleted_key_is_taken_again(group: Group, observer: HealthObserver) -> None:
    group.wait_single_primary(timeout=3.0)
    requests.delete(f"{group.any_agent()}/v1/kv/{group.kv_path}", timeout=2).raise_for_status()
    wait_for(
        lambda: group.kv() is not None and group.kv().get("Session"),
        1.0,  # type: ignore[union-attr]
        "the key held again",
    )
    group.wait_single_primary(timeout=1.0)


@pytest.mark.parametrize("group", [{"lock_delay": "1s"}], indirect=True)
def test_session_destroyed_by_someone_else(group: Group, observer: HealthObserver) -> None:
    old = group.wait_single_primary(timeout=3.0)
    session = group.kv()["Session"]  # type: ignore[index]
    destroyed = time.monotonic()
    url = f"{group.any_agent()}/v1/session/destroy/{session}"
    requests.put(url, timeout=2).raise_for_status()

    def primary_on_a_new_session() -> Sidecar | None:
        holder = (group.kv() or {}).get("Session")
        primary = group.the_primary()
        if holder in (None, session) or primary is None:
            return None
        return primary if primary.status()["session"] == holder else None

    # Destroying a holding session imposes its 1 s lock-delay on the key (§1.5).
    wait_for(primary_on_a_new_session, 1.0 + 1.0 + 0.5, "a primary on a new session")
    assert time.monotonic() - destroyed <= 1.0 + 1.0 + 0.5
    assert old.running()


def test_overwritten_key_value_is_written_back(group: Group, observer: HealthObserver) -> None:
    leader = group.wait_single_primary(timeout=3.0)
    session = group.kv()["Session"]  # type: ignore[index]
    requests.put(
        f"{group.any_agent()}/v1/kv/{group.kv_path}", data=b"garbage", timeout=2
    ).raise_for_status()
    wait_for(lambda: b"garbage" not in _value(group), 1.0, "the leader's value written back")
    assert group.kv()["Session"] == session  # type: ignore[index]
    assert group.the_primary() is leader, group.describe()


def _value(group: Group) -> bytes:
    import base64

    entry = group.kv()
    return base64.b64decode(entry["Value"]) if entry and entry.get("Value") else b""


def test_nomad_syncs_find_nothing_to_put_back(group: NomadGroup,
                                              observer: HealthObserver) -> None:
    """The role lives on the sidecar's own registration: Nomad's copy of its service and the
    agent's agree, so neither an operations nor a periodic sync re-registers anything, and
    the primary stays where it is (before, each sync wrote over the labels and Meta)."""
    leader = group.wait_single_primary(timeout=3.0)
    for reason in ("operations", "periodic"):
        (record,) = group.sync_now(reason, [leader.node])
        assert leader.service_id not in record.reregistered
        assert group.the_primary() is leader
    assert "primary" in tags(leader)


def test_short_server_outage_changes_nothing(
    group: Group,
    consul,  # type: ignore[no-untyped-def]
    observer: HealthObserver,
) -> None:
    leader = group.wait_single_primary(timeout=3.0)
    before = leader.status()["session"]
    time.sleep(0.1)
    consul.servers_down()
    time.sleep(0.8 * (TTL - SLEEP))  # the outage itself is what is being tested
    consul.servers_up()
    wait_for(
        lambda: leader.status()["last_renew_age"] < SLEEP + 0.5, TTL, "a renew after the outage"
    )
    assert leader.status()["state"] == "Leader"
    assert leader.status()["session"] == before
    assert group.the_primary() is leader, group.describe()


def test_long_server_outage_steps_down_then_recovers(
    group: Group,
    consul,  # type: ignore[no-untyped-def]
    observer: HealthObserver,
) -> None:
    leader = group.wait_single_primary(timeout=3.0)
    consul.servers_down()
    try:
        wait_for(
            lambda: leader.status()["state"] != "Leader",
            TTL + 0.5,
            "the leader to step down at its deadline",
        )
        wait_for(lambda: "primary" not in tags(leader), 0.5, "the primary label removed")
        assert leader.endpoint("/primary") == 503
        assert not group.leaders_by_status()
    finally:
        consul.servers_up()
    group.wait_single_primary(timeout=2 * TTL + 2.0)
    wait_for(lambda: len(group.leaders_by_status()) == 1, 2.0, "exactly one Leader by /status")


def test_paused_leader_never_overlaps(group: Group, observer: HealthObserver) -> None:
    old = group.wait_single_primary(timeout=3.0)
    old.send(signal.SIGSTOP)
    try:
        group.wait_single_primary(timeout=2 * TTL + 1.0, exclude=old)
        time.sleep(0.5 * TTL)  # keep it paused past the takeover: this is the fault itself
    finally:
        old.send(signal.SIGCONT)
    wait_for(lambda: old.status()["state"] != "Leader", 2.0, "the resumed leader stepping down")
    wait_for(lambda: "primary" not in tags(old), 2.0, "its primary label removed")
    assert len(group.leaders_by_status()) == 1
    assert observer.overlaps() == []


def test_sigint_stops_a_follower_cleanly(group: Group, observer: HealthObserver) -> None:
    leader = group.wait_single_primary(timeout=3.0)
    follower = next(s for s in group.sidecars if s is not leader)
    wait_for(lambda: follower.status()["state"] == "Follower", 3.0, "a follower")
    session = follower.status()["session"]
    follower.send(signal.SIGINT)
    assert follower.wait(timeout=5.0) == 0
    sessions = requests.get(f"{group.any_agent()}/v1/session/list", timeout=2).json()
    assert session not in {s["ID"] for s in sessions}
    assert group.the_primary() is leader, group.describe()
    assert "Traceback" not in follower.logs()


def _deregister(sidecar: Sidecar) -> None:
    url = f"{sidecar.agent}/v1/agent/service/deregister/{sidecar.service_id}"
    requests.put(url, timeout=2).raise_for_status()


@pytest.mark.parametrize("group", [{"restart_delay": 2 * TTL}], indirect=True)
def test_leader_whose_service_is_gone_hands_over(group: NomadGroup,
                                                 observer: HealthObserver) -> None:
    """The leader's main task dies: Nomad deregisters its service at once and runs the task
    again after the restart delay (2 x TTL here, so the handover happens in between)."""
    old = group.wait_single_primary(timeout=3.0)
    assert isinstance(old, NomadSidecar) and old.allocation is not None
    main = old.allocation.task("db")
    main_process = main.process
    assert main_process is not None
    main_process.send_signal(signal.SIGKILL)
    # One renew interval of grace for a re-registration, then the usual takeover.
    new = group.wait_single_primary(timeout=SLEEP + TTL + 1.0, exclude=old)
    wait_for(lambda: old.status()["state"] == "NoSession", 2.0, "the old leader without a session")
    assert old.running()
    # Nomad runs the main task again and registers its service: the old leader competes
    # again, as a follower of the new one.
    wait_for(lambda: main.process is not None and main.process is not main_process,
             2 * TTL * 1.25 + 1.0, "Nomad restarting the main task")
    wait_for(lambda: old.status()["state"] == "Follower", 3.0, "the old leader following")
    assert group.the_primary() is new, group.describe()


# About the sidecar and the agent alone: a deregistration and a registration back to back on
# the agent. Nomad never does that to a running task's service (it re-registers in place),
# so there is nothing for the model to do here.
@pytest.mark.parametrize("group", [CONSUL_ONLY], indirect=True)
def test_quick_reregistration_keeps_the_leader(group: Group, observer: HealthObserver) -> None:
    from tests.harness import register_like_nomad

    leader = group.wait_single_primary(timeout=3.0)
    session = leader.status()["session"]
    _deregister(leader)
    register_like_nomad(leader.agent, leader.service_id, group.service, 5432)
    wait_for(lambda: "primary" in tags(leader), 2.0, "the primary label back")
    assert leader.status()["session"] == session
    assert group.the_primary() is leader, group.describe()
