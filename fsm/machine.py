"""The leader-election machine: a private `transitions.Machine` behind a small facade.

Guarantees:
- Every event is either accepted (the table has a transition for it in the current state,
  possibly an internal one) or refused. A refusal leaves the state unchanged, is reported once
  to `Effects.refused`, and is never raised.
- After every accepted transition the effects run in a fixed order, *after* the state changed:
  external: `exit_leader` (only when leaving Leader) -> `enter_<dest>` -> `transitioned`;
  internal: the pair's reaction (`fsm.table.REACTIONS`), if it has one -> `transitioned`.
- The facts observed with the event travel, unchanged, in the `Transition` given to each effect.
- Effects must not raise. If one does anyway, the state change stands, the remaining effects of
  that transition still run (a failed demote hook must not keep the primary label), and the
  first exception then propagates out of `handle()` so the failure is never hidden.
- After `shutdown` the machine is `stopping`: it stays usable, but refuses `session_created`.

Not guaranteed: thread safety. One controller thread calls `handle()`; adapters post their
observations to that thread. An effect that calls `handle()` itself does not nest: the event is
queued and processed right after the current transition (`queued=True`); if an effect raises,
the events still queued behind it are dropped (transitions clears its queue).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from transitions import EventData, Machine

from consul_leader.fsm.facts import NO_FACTS, Facts
from consul_leader.fsm.states import Event, State
from consul_leader.fsm.table import (
    INITIAL_STATE,
    INTERNAL_TRANSITIONS,
    REACTIONS,
    STATES,
    TRANSITIONS,
)

__all__ = ["STATES", "TRANSITIONS", "Effects", "LeaderMachine", "Transition"]


@dataclass(frozen=True)
class Transition:
    """One accepted transition, as reported to the effects."""

    source: State
    dest: State
    event: Event
    reason: str
    facts: Facts = NO_FACTS

    @property
    def internal(self) -> bool:
        """True when the state stayed the same because the table says "internal" for this pair.

        A reflexive external transition (shutdown while in NoSession) is not internal: its entry
        effects run again.
        """
        return self.source == self.dest and (self.source, self.event) in INTERNAL_TRANSITIONS


class Effects(Protocol):
    """The port through which the machine asks the outside world to act. Must not raise."""

    def transitioned(self, t: Transition) -> None:
        """After every accepted transition, internal ones included (log line, metrics)."""

    def refused(self, state: State, event: Event, reason: str) -> None:
        """An event the table does not accept in `state` (count it, log it)."""

    def enter_no_session(self, t: Transition) -> None:
        """Entered NoSession: claim nothing; on shutdown (`t.event`), clean up and exit."""

    def enter_candidate(self, t: Transition) -> None:
        """Entered Candidate, or was asked to try `?acquire` again while in it."""

    def enter_follower(self, t: Transition) -> None:
        """Entered Follower: replica labels, wait for the holder to go."""

    def enter_leader(self, t: Transition) -> None:
        """Entered Leader: primary label, leader file, promote hook."""

    def exit_leader(self, t: Transition) -> None:
        """Leaving Leader; called before the `enter_*` of the next state (demote)."""

    # Reactions of internal transitions (fsm.table.REACTIONS names them).

    def retry_acquire(self, t: Transition) -> None:
        """A Candidate tries `?acquire` again, after `t.facts.retry_in` when it is set."""

    def vouch_replica(self, t: Transition) -> None:
        """Renewed while not leading: pass the lease check, and the role checks once Consul
        shows the replica role."""

    def vouch_lease(self, t: Transition) -> None:
        """Renewed while leading: pass the lease check and ask for the lock to be confirmed."""

    def vouch_primary(self, t: Transition) -> None:
        """The leader's lock is confirmed: pass the role checks (and keep the key's value)."""

    def prepare_session(self, t: Transition) -> None:
        """Without a session, safe to compete: make the lease check pass (or create at once)."""

    def create_session(self, t: Transition) -> None:
        """The lease check passes: create the session bound to it."""

    def adopt_targets(self, t: Transition) -> None:
        """The target services (`t.facts.targets`) are known: checks follow them."""

    def mark_published(self, t: Transition) -> None:
        """Consul shows the role of the state on every target."""

    def await_other_primary(self, t: Transition) -> None:
        """Another instance still looks primary: wait for it to go, for a bounded time."""

    def publish_over_other_primary(self, t: Transition) -> None:
        """The bounded wait is over and it still looks primary: publish ours anyway."""

    def evict_stale_primaries(self, t: Transition) -> None:
        """Other primaries whose sessions are gone (`t.facts.stale_primaries`): unlist them."""

    def await_healthy(self, t: Transition) -> None:
        """Without a session, the application is critical: create none until it is healthy."""


@dataclass
class _Outcome:
    """Filled in when transitions processes one `handle()` call's event."""

    accepted: bool | None = None  # None: still queued behind the running transition


class _Model:
    """The object transitions drives. Private: only the facade touches it."""

    # Bound by transitions.Machine at construction; declared so type checkers see them.
    state: str
    trigger: Callable[..., bool]
    may_trigger: Callable[..., bool]

    def __init__(self) -> None:
        self.stopping = False  # the table's guard on session_created (fsm.table.STOPPING_GUARD)

    def begin_stopping(self, _event: EventData) -> None:
        """The table's `before` callback of shutdown (fsm.table.BEGIN_STOPPING)."""
        self.stopping = True


class LeaderMachine:
    """Public facade of the machine. Initial state NoSession, reported by no effect."""

    def __init__(self, effects: Effects) -> None:
        # No enter_no_session here: the adapters set their initial metrics and labels themselves.
        self._effects = effects
        self._model = _Model()
        self._unraised: BaseException | None = None
        self._machine = Machine(
            model=self._model,
            states=STATES,
            transitions=TRANSITIONS,
            initial=INITIAL_STATE.value,
            auto_transitions=False,  # no to_<state>() back doors
            queued=True,  # an event fired from an effect waits for the running transition
            send_event=True,
            ignore_invalid_triggers=True,  # refusals are reported in _settle, never raised
            after_state_change=self._apply_effects,
            finalize_event=self._settle,
        )

    @property
    def state(self) -> State:
        return State(self._model.state)

    @property
    def stopping(self) -> bool:
        """True once shutdown was accepted; session_created is refused from then on."""
        return self._model.stopping

    def handle(self, event: Event, reason: str = "", facts: Facts = NO_FACTS) -> bool:
        """Fire `event`, observed with `facts`. True if accepted (internal included), False if
        refused.

        Raises only what an effect raised (after the state changed). Called from inside an
        effect, the event is queued and this returns True; its outcome reaches the effects.
        """
        outcome = _Outcome()
        self._model.trigger(event.value, reason=reason, facts=facts, outcome=outcome)
        self._raise_unraised()
        return True if outcome.accepted is None else outcome.accepted

    def may(self, event: Event) -> bool:
        """Whether `handle(event)` would be accepted now. No side effects."""
        return self._model.may_trigger(event.value)

    def allowed_events(self, state: State) -> frozenset[Event]:
        """Events the table accepts in `state`, before guards (see `may` for the current state)."""
        return frozenset(Event(name) for name in self._machine.get_triggers(state.value))

    def _apply_effects(self, event_data: EventData) -> None:
        transition = _describe(event_data)
        _run_all(self._effects_for(transition), transition)

    def _effects_for(self, t: Transition) -> list[Callable[[Transition], None]]:
        effects = self._effects
        calls: list[Callable[[Transition], None]]
        if t.internal:
            reaction = REACTIONS.get((t.source, t.event))
            calls = [getattr(effects, reaction)] if reaction else []
        else:
            calls = [effects.exit_leader] if t.source is State.LEADER else []
            calls.append(_entry_effect(effects, t.dest))
        calls.append(effects.transitioned)
        return calls

    def _settle(self, event_data: EventData) -> None:
        """Runs once per processed event, accepted or not (transitions' finalize_event)."""
        outcome: _Outcome = event_data.kwargs["outcome"]
        # An error means an effect raised after the state changed: accepted, and it propagates.
        outcome.accepted = bool(event_data.result) or event_data.error is not None
        if not outcome.accepted:
            self._report_refusal(event_data)

    def _report_refusal(self, event_data: EventData) -> None:
        state, event = State(event_data.state.name), Event(event_data.event.name)
        try:
            self._effects.refused(state, event, event_data.kwargs["reason"])
        except BaseException as err:
            # transitions would only log an error raised in finalize_event: keep it for handle().
            self._unraised = self._unraised or err

    def _raise_unraised(self) -> None:
        err, self._unraised = self._unraised, None
        if err is not None:
            raise err


def _describe(event_data: EventData) -> Transition:
    rule = event_data.transition
    assert rule is not None  # after_state_change always runs inside a transition
    dest = rule.source if rule.dest is None else rule.dest
    return Transition(
        source=State(rule.source),
        dest=State(dest),
        event=Event(event_data.event.name),
        reason=event_data.kwargs["reason"],
        facts=event_data.kwargs["facts"],
    )


def _entry_effect(effects: Effects, state: State) -> Callable[[Transition], None]:
    match state:
        case State.NO_SESSION:
            return effects.enter_no_session
        case State.CANDIDATE:
            return effects.enter_candidate
        case State.FOLLOWER:
            return effects.enter_follower
        case State.LEADER:
            return effects.enter_leader


def _run_all(calls: list[Callable[[Transition], None]], t: Transition) -> None:
    """Call every effect even if one fails, then raise the first failure."""
    errors: list[Exception] = []
    for call in calls:
        try:
            call(t)
        except Exception as err:
            errors.append(err)
    if errors:
        first = errors[0]
        for later in errors[1:]:
            first.add_note(f"a later effect of the same transition also failed: {later!r}")
        raise first
