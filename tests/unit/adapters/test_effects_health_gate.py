"""The effects hub with the health gate on: no session while the application is not healthy."""

from __future__ import annotations

from consul_leader.adapters.effects import Drivers, HubSettings, RoleEffects
from consul_leader.fsm import Event, State
from tests.adapter_testing import TIMINGS, FakeClock
from tests.unit.adapters.test_effects import Call, Recorder, args_of, calls, t

NS, FO, CA, LE = State.NO_SESSION, State.FOLLOWER, State.CANDIDATE, State.LEADER


def gated_hub() -> tuple[RoleEffects, list[Call]]:
    log: list[Call] = []
    names = ("keeper", "acquirer", "watcher", "publisher", "leader_file", "hooks", "metrics",
             "gate")
    drivers = {name: Recorder(name, log) for name in names}
    drivers["checks"] = Recorder("checks", log, enabled=True)
    settings = HubSettings(key="/consul-leader/db/lock", timings=TIMINGS)
    return RoleEffects(settings, Drivers(**drivers), clock=FakeClock(),
                       wall_clock=lambda: 1.7e9), log


def test_no_session_is_prepared_before_the_gate_says_healthy() -> None:
    h, log = gated_hub()
    assert h.application_health == "waiting"
    h.prepare_session(t(NS, NS, Event.REPLICA_PUBLISHED))
    assert calls(log, "checks", "keeper") == []

    h.prepare_session(t(NS, NS, Event.APPLICATION_HEALTHY))
    assert calls(log, "checks") == [("checks", "prepare_lease_check")]
    assert h.application_health == "healthy"
    assert args_of(log, "metrics", "health_gate") == [(("healthy",), {})]


def test_healthy_before_the_replica_role_is_shown_waits_for_it() -> None:
    h, log = gated_hub()
    h.prepare_session(t(NS, NS, Event.APPLICATION_HEALTHY))
    assert calls(log, "checks", "keeper") == []
    h.prepare_session(t(NS, NS, Event.REPLICA_PUBLISHED))
    assert calls(log, "checks") == [("checks", "prepare_lease_check")]


def test_a_critical_application_holds_the_session_back_and_asks_the_gate_again() -> None:
    h, log = gated_hub()
    h.prepare_session(t(NS, NS, Event.APPLICATION_HEALTHY))
    log.clear()
    h.await_healthy(t(NS, NS, Event.APPLICATION_CRITICAL, check_id="consul-leader:alias:x"))
    assert calls(log, "keeper", "gate") == [("keeper", "cancel_create"), ("gate", "recheck")]
    assert h.application_health == "critical"

    h.create_session(t(NS, NS, Event.LEASE_CHECK_PASSED, checks=("lease",)))
    h.prepare_session(t(NS, NS, Event.BOUND_CHECK_MISSING))
    assert calls(log, "keeper", "checks") == [("keeper", "cancel_create")]  # nothing more


def test_a_leader_whose_application_goes_critical_gives_its_session_up() -> None:
    h, log = gated_hub()
    h.exit_leader(t(LE, NS, Event.APPLICATION_CRITICAL, session="s1"))
    h.enter_no_session(t(LE, NS, Event.APPLICATION_CRITICAL, session="s1"))
    assert ("keeper", "give_up") in calls(log)
    assert ("hooks", "submit") in calls(log)  # the demote hook
    assert h.application_health == "critical"
    h.prepare_session(t(NS, NS, Event.REPLICA_PUBLISHED))
    assert calls(log, "checks") == []


def test_the_gate_follows_the_targets() -> None:
    h, log = gated_hub()
    h.adopt_targets(t(NS, NS, Event.TARGETS_FOUND, targets=("a", "b")))
    assert args_of(log, "gate", "set_targets") == [((("a", "b"),), {})]
