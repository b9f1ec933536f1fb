"""Test support for code that drives a `LeaderMachine`: a recording `Effects` fake and a way to
put a machine straight into a state. Not used at runtime.
"""

from collections.abc import Collection
from dataclasses import dataclass

from consul_leader.fsm.machine import LeaderMachine, Transition
from consul_leader.fsm.states import Event, State


@dataclass(frozen=True)
class Refusal:
    """The arguments of one `Effects.refused` call."""

    state: State
    event: Event
    reason: str


@dataclass(frozen=True)
class EffectCall:
    """One recorded effect call: its name and what it was given."""

    name: str
    payload: Transition | Refusal


class UnexpectedEffect(AssertionError):
    """An effect the test did not allow was called."""


class RecordingEffects:
    """An `Effects` that records every call in order.

    `allowed`, when given, is the set of effect names the test expects: any other call raises
    `UnexpectedEffect` at once. `failing` names effects that raise `RuntimeError` after being
    recorded (to test what the machine does when an adapter breaks its promise not to raise).
    """

    def __init__(
        self, allowed: Collection[str] | None = None, failing: Collection[str] = ()
    ) -> None:
        self.calls: list[EffectCall] = []
        self._allowed = None if allowed is None else frozenset(allowed)
        self._failing = frozenset(failing)

    def names(self) -> list[str]:
        return [call.name for call in self.calls]

    def transitions(self) -> list[Transition]:
        """The payloads of the `transitioned` calls, in order."""
        return [
            call.payload
            for call in self.calls
            if call.name == "transitioned" and isinstance(call.payload, Transition)
        ]

    def clear(self) -> None:
        self.calls.clear()

    def transitioned(self, t: Transition) -> None:
        self._record("transitioned", t)

    def refused(self, state: State, event: Event, reason: str) -> None:
        self._record("refused", Refusal(state, event, reason))

    def enter_no_session(self, t: Transition) -> None:
        self._record("enter_no_session", t)

    def enter_candidate(self, t: Transition) -> None:
        self._record("enter_candidate", t)

    def enter_follower(self, t: Transition) -> None:
        self._record("enter_follower", t)

    def enter_leader(self, t: Transition) -> None:
        self._record("enter_leader", t)

    def exit_leader(self, t: Transition) -> None:
        self._record("exit_leader", t)

    def retry_acquire(self, t: Transition) -> None:
        self._record("retry_acquire", t)

    def vouch_replica(self, t: Transition) -> None:
        self._record("vouch_replica", t)

    def vouch_lease(self, t: Transition) -> None:
        self._record("vouch_lease", t)

    def vouch_primary(self, t: Transition) -> None:
        self._record("vouch_primary", t)

    def prepare_session(self, t: Transition) -> None:
        self._record("prepare_session", t)

    def create_session(self, t: Transition) -> None:
        self._record("create_session", t)

    def adopt_targets(self, t: Transition) -> None:
        self._record("adopt_targets", t)

    def mark_published(self, t: Transition) -> None:
        self._record("mark_published", t)

    def await_other_primary(self, t: Transition) -> None:
        self._record("await_other_primary", t)

    def publish_over_other_primary(self, t: Transition) -> None:
        self._record("publish_over_other_primary", t)

    def evict_stale_primaries(self, t: Transition) -> None:
        self._record("evict_stale_primaries", t)

    def await_healthy(self, t: Transition) -> None:
        self._record("await_healthy", t)

    def _record(self, name: str, payload: Transition | Refusal) -> None:
        if self._allowed is not None and name not in self._allowed:
            raise UnexpectedEffect(f"unexpected effect {name}({payload})")
        self.calls.append(EffectCall(name, payload))
        if name in self._failing:
            raise RuntimeError(f"{name} failed (test)")


def force_state(machine: LeaderMachine, state: State) -> None:
    """Put `machine` straight into `state`, running no effect. Test arrangement only."""
    machine._machine.set_state(state.value)
