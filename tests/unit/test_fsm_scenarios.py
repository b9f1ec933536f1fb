"""Operator stories told to the machine, and what it does when adapters misbehave."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consul_leader.fsm import Event, LeaderMachine, State, Transition
from tests.fsm_testing import EffectCall, RecordingEffects, Refusal, force_state
from tests.unit.test_fsm_spec import EXPECTED

NS, FO, CA, LE = State.NO_SESSION, State.FOLLOWER, State.CANDIDATE, State.LEADER

Step = tuple[str, State, State, Event] | tuple[str, State, Event]


def log_of(recorder: RecordingEffects) -> list[Step]:
    """The effect log in a compact, readable form."""
    steps: list[Step] = []
    for call in recorder.calls:
        p = call.payload
        if isinstance(p, Refusal):
            steps.append((call.name, p.state, p.event))
        else:
            steps.append((call.name, p.source, p.dest, p.event))
    return steps


def started(state: State = NS) -> tuple[LeaderMachine, RecordingEffects]:
    recorder = RecordingEffects()
    machine = LeaderMachine(recorder)
    force_state(machine, state)
    return machine, recorder


def test_second_instance_follows_then_takes_over_when_the_leader_releases() -> None:
    machine, recorder = started()
    e = Event
    for event in [
        e.SESSION_CREATED,  # our session exists
        e.LOCK_HELD_BY_OTHER,  # the first instance leads
        e.LOCK_HELD_BY_OTHER,  # blocking query returned, same holder
        e.LOCK_FREE,  # the leader released on SIGTERM
        e.LOCK_DELAYED,  # its session was destroyed too early: lock-delay
        e.LOCK_ACQUIRED,
        e.LOCK_HELD_BY_US,  # the watcher sees our own hold
        e.SHUTDOWN,  # we are stopped in turn
        e.SESSION_CREATED,  # a create answer that arrives too late
    ]:
        machine.handle(event, "story")

    assert log_of(recorder) == [
        ("enter_candidate", NS, CA, e.SESSION_CREATED),
        ("transitioned", NS, CA, e.SESSION_CREATED),
        ("enter_follower", CA, FO, e.LOCK_HELD_BY_OTHER),
        ("transitioned", CA, FO, e.LOCK_HELD_BY_OTHER),
        ("transitioned", FO, FO, e.LOCK_HELD_BY_OTHER),
        ("enter_candidate", FO, CA, e.LOCK_FREE),
        ("transitioned", FO, CA, e.LOCK_FREE),
        ("retry_acquire", CA, CA, e.LOCK_DELAYED),
        ("transitioned", CA, CA, e.LOCK_DELAYED),
        ("enter_leader", CA, LE, e.LOCK_ACQUIRED),
        ("transitioned", CA, LE, e.LOCK_ACQUIRED),
        ("vouch_primary", LE, LE, e.LOCK_HELD_BY_US),
        ("transitioned", LE, LE, e.LOCK_HELD_BY_US),
        ("exit_leader", LE, NS, e.SHUTDOWN),
        ("enter_no_session", LE, NS, e.SHUTDOWN),
        ("transitioned", LE, NS, e.SHUTDOWN),
        ("refused", NS, e.SESSION_CREATED),
    ]
    assert machine.state is NS


def test_operator_deletes_the_lock_key_under_the_leader() -> None:
    machine, recorder = started(LE)
    machine.handle(Event.KEY_MISSING, "kv delete")
    machine.handle(Event.KEY_MISSING, "still missing after our acquire raced a delete")
    machine.handle(Event.LOCK_ACQUIRED)

    assert log_of(recorder) == [
        ("exit_leader", LE, CA, Event.KEY_MISSING),
        ("enter_candidate", LE, CA, Event.KEY_MISSING),
        ("transitioned", LE, CA, Event.KEY_MISSING),
        ("retry_acquire", CA, CA, Event.KEY_MISSING),  # try to acquire again
        ("transitioned", CA, CA, Event.KEY_MISSING),
        ("enter_leader", CA, LE, Event.LOCK_ACQUIRED),
        ("transitioned", CA, LE, Event.LOCK_ACQUIRED),
    ]


def test_paused_leader_steps_down_at_its_lease_and_rejoins_as_follower() -> None:
    machine, recorder = started(LE)
    machine.handle(Event.LEASE_EXPIRED, "SIGSTOP for 40s")
    machine.handle(Event.LOCK_HELD_BY_OTHER, "stale watcher answer")  # no session: refused
    machine.handle(Event.SESSION_CREATED)
    machine.handle(Event.LOCK_HELD_BY_OTHER, "another instance leads now")

    assert log_of(recorder) == [
        ("exit_leader", LE, NS, Event.LEASE_EXPIRED),
        ("enter_no_session", LE, NS, Event.LEASE_EXPIRED),
        ("transitioned", LE, NS, Event.LEASE_EXPIRED),
        ("refused", NS, Event.LOCK_HELD_BY_OTHER),
        ("enter_candidate", NS, CA, Event.SESSION_CREATED),
        ("transitioned", NS, CA, Event.SESSION_CREATED),
        ("enter_follower", CA, FO, Event.LOCK_HELD_BY_OTHER),
        ("transitioned", CA, FO, Event.LOCK_HELD_BY_OTHER),
    ]
    assert machine.state is FO


def test_operator_destroys_the_session_of_a_follower() -> None:
    machine, recorder = started(FO)
    assert machine.handle(Event.SESSION_LOST, "renew answered 404") is True
    assert machine.handle(Event.LOCK_FREE, "watcher saw the release") is False
    assert machine.handle(Event.SESSION_CREATED) is True
    assert machine.state is CA
    assert recorder.names() == [
        "enter_no_session",
        "transitioned",
        "refused",
        "enter_candidate",
        "transitioned",
    ]


def test_restarted_sidecar_confirms_a_lock_its_session_already_holds() -> None:
    machine, recorder = started(FO)
    machine.handle(Event.LOCK_HELD_BY_US, "key holds our session")
    assert machine.state is CA  # not Leader until an acquire confirms it
    machine.handle(Event.LOCK_ACQUIRED)
    assert machine.state is LE
    assert recorder.names() == ["enter_candidate", "transitioned", "enter_leader", "transitioned"]


def test_sigterm_before_any_session_exits_cleanly_and_stays_stopped() -> None:
    machine, recorder = started()
    assert machine.handle(Event.SHUTDOWN, "SIGTERM") is True
    assert machine.handle(Event.SHUTDOWN, "SIGINT") is True
    assert machine.handle(Event.SESSION_CREATED) is False
    assert machine.stopping
    assert log_of(recorder) == [
        ("enter_no_session", NS, NS, Event.SHUTDOWN),
        ("transitioned", NS, NS, Event.SHUTDOWN),
        ("enter_no_session", NS, NS, Event.SHUTDOWN),
        ("transitioned", NS, NS, Event.SHUTDOWN),
        ("refused", NS, Event.SESSION_CREATED),
    ]


def test_a_fresh_sidecar_competes_only_once_its_role_is_published_and_its_check_passes() -> None:
    machine, recorder = started()
    for event in [
        Event.TARGETS_FOUND,  # Nomad registered the task's service
        Event.REPLICA_PUBLISHED,  # no primary label of ours is left anywhere
        Event.LEASE_CHECK_PASSED,  # the check the session binds to passes
        Event.BOUND_CHECK_MISSING,  # ...but Consul lost it again (reaped after an outage)
        Event.LEASE_CHECK_PASSED,  # registered and passed again
        Event.SESSION_CREATED,
    ]:
        machine.handle(event, "story")

    assert [name for name in recorder.names() if name != "transitioned"] == [
        "adopt_targets", "prepare_session", "create_session", "prepare_session",
        "create_session", "enter_candidate",
    ]
    assert machine.state is CA


def test_a_leader_that_cannot_publish_gives_up_and_does_not_compete_again() -> None:
    machine, recorder = started(LE)
    machine.handle(Event.PUBLISH_REFUSED, "403 writing the primary label")
    machine.handle(Event.PUBLISH_REFUSED, "403 writing the replica label")
    machine.handle(Event.LEASE_CHECK_PASSED, "a stale answer")

    assert log_of(recorder) == [
        ("exit_leader", LE, NS, Event.PUBLISH_REFUSED),
        ("enter_no_session", LE, NS, Event.PUBLISH_REFUSED),
        ("transitioned", LE, NS, Event.PUBLISH_REFUSED),
        ("transitioned", NS, NS, Event.PUBLISH_REFUSED),  # no session requested
        ("create_session", NS, NS, Event.LEASE_CHECK_PASSED),
        ("transitioned", NS, NS, Event.LEASE_CHECK_PASSED),
    ]


def test_a_new_leader_waits_a_bounded_time_for_an_old_primary() -> None:
    machine, recorder = started(CA)
    for event in [
        Event.LOCK_ACQUIRED,
        Event.OTHER_PRIMARY_SEEN,  # the old leader's label still passes
        Event.LEASE_RENEWED,
        Event.OTHER_PRIMARY_WAIT_OVER,  # it still does at the bound
        Event.PRIMARY_PUBLISHED,
    ]:
        machine.handle(event, "story")

    assert [name for name in recorder.names() if name != "transitioned"] == [
        "enter_leader", "await_other_primary", "vouch_lease", "publish_over_other_primary",
        "mark_published",
    ]
    assert machine.state is LE


def test_a_follower_whose_service_is_gone_stops_competing() -> None:
    machine, recorder = started(FO)
    machine.handle(Event.TARGET_GONE, "deregistered by Nomad")
    machine.handle(Event.REPLICA_PUBLISHED, "registered again")
    assert machine.state is NS
    assert recorder.names() == ["enter_no_session", "transitioned", "prepare_session",
                                "transitioned"]


# When adapters break their promise not to raise.


def test_failing_promotion_still_changes_state_and_reports_the_transition() -> None:
    recorder = RecordingEffects(failing={"enter_leader"})
    machine = LeaderMachine(recorder)
    force_state(machine, CA)

    with pytest.raises(RuntimeError, match="enter_leader failed"):
        machine.handle(Event.LOCK_ACQUIRED)

    assert machine.state is LE
    assert recorder.names() == ["enter_leader", "transitioned"]


def test_failing_demote_hook_does_not_keep_the_leader_labels() -> None:
    recorder = RecordingEffects(failing={"exit_leader"})
    machine = LeaderMachine(recorder)
    force_state(machine, LE)

    with pytest.raises(RuntimeError, match="exit_leader failed"):
        machine.handle(Event.LEASE_EXPIRED)

    assert machine.state is NS
    assert recorder.names() == ["exit_leader", "enter_no_session", "transitioned"]


def test_when_several_effects_fail_the_first_is_raised_and_names_the_others() -> None:
    recorder = RecordingEffects(failing={"exit_leader", "transitioned"})
    machine = LeaderMachine(recorder)
    force_state(machine, LE)

    with pytest.raises(RuntimeError, match="exit_leader failed") as raised:
        machine.handle(Event.LOCK_FREE)

    assert any("transitioned failed" in note for note in raised.value.__notes__)
    assert machine.state is CA


def test_failing_refusal_report_is_raised_not_swallowed() -> None:
    machine = LeaderMachine(RecordingEffects(failing={"refused"}))
    with pytest.raises(RuntimeError, match="refused failed"):
        machine.handle(Event.LOCK_ACQUIRED)
    assert machine.state is NS


def test_machine_keeps_working_after_an_effect_raised() -> None:
    recorder = RecordingEffects(failing={"enter_candidate"})
    machine = LeaderMachine(recorder)
    with pytest.raises(RuntimeError):
        machine.handle(Event.SESSION_CREATED)
    assert machine.handle(Event.LOCK_ACQUIRED) is True
    assert machine.state is LE


# Effects that fire events themselves (queued, never nested).


class AcquiresOnEntry(RecordingEffects):
    """An adapter that answers enter_candidate with the outcome of an immediate acquire."""

    def __init__(self, outcome: Event) -> None:
        super().__init__()
        self.machine: LeaderMachine | None = None
        self.outcome = outcome
        self.nested_results: list[bool] = []

    def enter_candidate(self, t: Transition) -> None:
        super().enter_candidate(t)
        assert self.machine is not None
        self.nested_results.append(self.machine.handle(self.outcome, "acquire answered"))


def test_event_fired_from_an_effect_runs_after_the_current_transition() -> None:
    effects = AcquiresOnEntry(Event.LOCK_ACQUIRED)
    machine = effects.machine = LeaderMachine(effects)

    assert machine.handle(Event.SESSION_CREATED) is True

    assert machine.state is LE
    assert effects.nested_results == [True]  # queued, not yet decided
    assert log_of(effects) == [
        ("enter_candidate", NS, CA, Event.SESSION_CREATED),
        ("transitioned", NS, CA, Event.SESSION_CREATED),
        ("enter_leader", CA, LE, Event.LOCK_ACQUIRED),
        ("transitioned", CA, LE, Event.LOCK_ACQUIRED),
    ]


def test_refusal_of_an_event_fired_from_an_effect_is_still_reported() -> None:
    effects = AcquiresOnEntry(Event.SESSION_CREATED)  # nonsense in Candidate
    machine = effects.machine = LeaderMachine(effects)

    assert machine.handle(Event.SESSION_CREATED) is True

    assert machine.state is CA
    assert effects.calls[-1] == EffectCall(
        "refused", Refusal(CA, Event.SESSION_CREATED, "acquire answered")
    )


# Any sequence of events, checked against the spec as an oracle.


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_any_event_sequence_follows_the_spec_and_never_raises(events: list[Event]) -> None:
    machine, recorder = started()
    for event in events:
        before, stopping = machine.state, machine.stopping
        recorder.clear()
        spec = EXPECTED[(before, event)]
        refused = spec.get("refused", False) or (stopping and event is Event.SESSION_CREATED)

        accepted = machine.handle(event, "fuzz")

        assert accepted is not refused
        if refused:
            assert machine.state is before
            assert recorder.names() == ["refused"]
        else:
            assert machine.state is State(spec["to"])
            assert recorder.names() == spec["effects"]
        assert machine.stopping is (stopping or event is Event.SHUTDOWN)
