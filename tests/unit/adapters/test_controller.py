"""The controller: the only caller of the machine, and the owner of the current session."""

from __future__ import annotations

import pytest

from consul_leader.adapters.controller import Controller, Posted
from consul_leader.fsm import Event, Facts, LeaderMachine, State, Transition
from tests.adapter_testing import TIMINGS, FakeClock
from tests.fsm_testing import RecordingEffects


def controller(effects: RecordingEffects | None = None) -> tuple[Controller, RecordingEffects,
                                                                  FakeClock, FakeClock]:
    clock, wall = FakeClock(), FakeClock(now=1.7e9)
    recorder = effects or RecordingEffects()
    c = Controller(heartbeat_period=TIMINGS.heartbeat_period, wedged_after=TIMINGS.wedged_after,
                   clock=clock, wall_clock=wall)
    c.attach(LeaderMachine(recorder))
    return c, recorder, clock, wall


def test_a_created_session_becomes_current_before_the_candidate_is_entered() -> None:
    c, recorder, _, _ = controller()
    c.post(Event.SESSION_CREATED, "created", Facts(session="s1", valid_until=5.0))
    c.post(Event.LOCK_FREE, "watch")  # names no session: it is about the current one
    assert c.run_pending() == 2
    assert c.session == "s1" and c.state is State.CANDIDATE
    sessions = {call.payload.facts.session for call in recorder.calls
                if isinstance(call.payload, Transition)}
    assert sessions == {"s1"}


def test_events_about_another_session_are_dropped_as_stale() -> None:
    c, recorder, _, _ = controller()
    c.handle(Posted(Event.SESSION_CREATED, "", Facts(session="s2")))
    recorder.clear()
    c.handle(Posted(Event.LOCK_HELD_BY_US, "late watch answer", Facts(session="s1")))
    assert recorder.calls == [] and c.state is State.CANDIDATE


def test_reaching_no_session_forgets_the_session() -> None:
    c, recorder, _, _ = controller()
    c.handle(Posted(Event.SESSION_CREATED, "", Facts(session="s1")))
    c.handle(Posted(Event.LEASE_EXPIRED, "", Facts(session="s1")))
    assert c.session is None and c.state is State.NO_SESSION
    gone = [call for call in recorder.calls if call.name == "enter_no_session"]
    assert gone[0].payload.facts.session == "s1"  # the effects know which one to give up
    recorder.clear()
    c.handle(Posted(Event.LEASE_RENEWED, "late renew", Facts(session="s1")))
    assert recorder.calls == []


def test_a_refused_session_is_not_adopted() -> None:
    c, _, _, _ = controller()
    c.handle(Posted(Event.SHUTDOWN, "SIGTERM", Facts()))
    c.handle(Posted(Event.SESSION_CREATED, "late create answer", Facts(session="s9")))
    assert c.session is None and c.state is State.NO_SESSION


def test_state_and_since_change_together() -> None:
    c, _, _, wall = controller()
    assert c.shown() == (State.NO_SESSION, 1.7e9)
    wall.advance(5)
    c.handle(Posted(Event.SESSION_CREATED, "", Facts(session="s1")))
    assert c.shown() == (State.CANDIDATE, 1.7e9 + 5)
    wall.advance(5)
    c.handle(Posted(Event.LOCK_FREE, "", Facts()))  # internal: no new since
    assert c.shown() == (State.CANDIDATE, 1.7e9 + 5)


def test_an_effect_that_raises_does_not_stop_the_controller(
        caplog: pytest.LogCaptureFixture) -> None:
    c, _, _, _ = controller(RecordingEffects(failing={"enter_candidate"}))
    c.handle(Posted(Event.SESSION_CREATED, "", Facts(session="s1")))
    c.handle(Posted(Event.LOCK_ACQUIRED, "", Facts()))
    assert c.state is State.LEADER
    assert "effect failed" in caplog.text


def test_the_loop_counts_as_wedged_when_its_heartbeat_is_old() -> None:
    c, _, clock, _ = controller()
    assert c.loop_alive()
    clock.advance(TIMINGS.wedged_after)
    assert not c.loop_alive()


def test_without_a_machine_it_says_so() -> None:
    c = Controller(heartbeat_period=1.0, wedged_after=10.0)
    with pytest.raises(RuntimeError, match="no machine"):
        _ = c.state
