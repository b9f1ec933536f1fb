"""Every state x every event of the machine, against the hand-written spec in fsm_spec.json."""

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consul_leader.fsm import Effects, Event, Facts, LeaderMachine, State, Transition
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.table import INTERNAL_TRANSITIONS, REACTION_NAMES, REACTIONS, TRANSITIONS
from tests.fsm_testing import EffectCall, RecordingEffects, Refusal, force_state

SPEC_PATH = Path(__file__).with_name("fsm_spec.json")
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text())
EXPECTED = {(State(p["state"]), Event(p["event"])): p for p in SPEC["pairs"]}
EVERY_PAIR = list(itertools.product(State, Event))
REASON = "because the test said so"


def machine_in(state: State, effects: RecordingEffects) -> LeaderMachine:
    machine = LeaderMachine(effects)
    force_state(machine, state)
    return machine


def test_spec_names_exactly_the_machine_states_and_events() -> None:
    assert SPEC["states"] == [state.value for state in State]
    assert SPEC["events"] == [event.value for event in Event]


def test_spec_covers_every_pair_once() -> None:
    counts = Counter((p["state"], p["event"]) for p in SPEC["pairs"])
    assert [pair for pair, n in counts.items() if n > 1] == []
    missing = {(s.value, e.value) for s, e in EVERY_PAIR} - set(counts)
    assert missing == set(), "add every new state/event pair to fsm_spec.json"


@pytest.mark.parametrize(("state", "event"), EVERY_PAIR, ids=lambda x: str(x))
def test_pair_follows_spec(state: State, event: Event) -> None:
    spec = EXPECTED[(state, event)]
    if spec.get("refused"):
        check_refused(state, event)
    else:
        check_accepted(state, event, State(spec["to"]), spec["internal"], spec["effects"])


def check_accepted(
    state: State, event: Event, to: State, internal: bool, effects: list[str]
) -> None:
    recorder = RecordingEffects(allowed=effects)
    machine = machine_in(state, recorder)
    assert machine.may(event)
    assert event in machine.allowed_events(state)

    assert machine.handle(event, REASON) is True

    assert machine.state is to
    assert recorder.names() == effects
    expected = Transition(source=state, dest=to, event=event, reason=REASON)
    assert {call.payload for call in recorder.calls} == {expected}
    assert expected.internal is internal


def check_refused(state: State, event: Event) -> None:
    recorder = RecordingEffects(allowed={"refused"})
    machine = machine_in(state, recorder)
    assert not machine.may(event)
    assert event not in machine.allowed_events(state)

    assert machine.handle(event, REASON) is False

    assert machine.state is state
    assert recorder.calls == [EffectCall("refused", Refusal(state, event, REASON))]


def test_new_machine_starts_in_no_session_silently() -> None:
    recorder = RecordingEffects(allowed=())
    machine = LeaderMachine(recorder)
    assert machine.state is State.NO_SESSION
    assert not machine.stopping
    assert machine.may(Event.SESSION_CREATED)


def test_after_shutdown_a_new_session_is_refused() -> None:
    recorder = RecordingEffects()
    machine = machine_in(State.LEADER, recorder)
    machine.handle(Event.SHUTDOWN, "SIGTERM")
    assert machine.stopping
    recorder.clear()

    assert not machine.may(Event.SESSION_CREATED)
    assert machine.handle(Event.SESSION_CREATED, "late create answer") is False

    assert machine.state is State.NO_SESSION
    expected = Refusal(State.NO_SESSION, Event.SESSION_CREATED, "late create answer")
    assert recorder.calls == [EffectCall("refused", expected)]


def test_stopping_is_already_set_when_no_session_is_entered() -> None:
    # enter_no_session on shutdown must be able to tell "leave" from "start over".
    seen: list[bool] = []

    class Watching(RecordingEffects):
        def enter_no_session(self, t: Transition) -> None:
            seen.append(machine.stopping)

    machine = machine_in(State.FOLLOWER, Watching())
    machine.handle(Event.SHUTDOWN)
    assert seen == [True]


def test_allowed_events_lists_guarded_events_while_may_applies_the_guard() -> None:
    machine = LeaderMachine(RecordingEffects())
    machine.handle(Event.SHUTDOWN)
    assert Event.SESSION_CREATED in machine.allowed_events(State.NO_SESSION)
    assert not machine.may(Event.SESSION_CREATED)


def test_table_has_at_most_one_rule_per_pair() -> None:
    pairs = Counter((source, row["trigger"]) for row in TRANSITIONS for source in row["source"])
    assert [pair for pair, n in pairs.items() if n > 1] == []


def test_reactions_belong_to_internal_transitions_and_are_effects() -> None:
    assert set(REACTIONS) <= INTERNAL_TRANSITIONS
    assert set(REACTIONS.values()) == set(REACTION_NAMES)
    for name in REACTION_NAMES:
        assert callable(getattr(Effects, name, None)), f"Effects has no {name}"
        assert callable(getattr(RecordingEffects, name, None)), f"RecordingEffects lacks {name}"


def test_only_a_candidate_retries_acquire() -> None:
    retrying = {pair for pair, reaction in REACTIONS.items() if reaction == "retry_acquire"}
    assert {state for state, _ in retrying} == {State.CANDIDATE}


def test_facts_travel_unchanged_with_the_transition() -> None:
    facts = Facts(session="s1", fencing_token=42,
                  observation=KeyObservation(exists=True, session="s1", modify_index=42))
    recorder = RecordingEffects()
    machine = machine_in(State.CANDIDATE, recorder)

    machine.handle(Event.LOCK_ACQUIRED, "acquire answered true", facts)

    assert {call.payload.facts for call in recorder.calls
            if isinstance(call.payload, Transition)} == {facts}


def test_reflexive_shutdown_is_not_internal() -> None:
    t = Transition(State.NO_SESSION, State.NO_SESSION, Event.SHUTDOWN, "")
    assert not t.internal
