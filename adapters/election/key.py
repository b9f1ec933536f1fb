"""The lock key's pure helpers, shared by the election's adapters: what we write into it (the
acquirer writes it, the session keeper hands the key back with it), what we read back as the
fencing token, and what an observation of it means for the session the machine acts on."""

from __future__ import annotations

import json
from dataclasses import dataclass

from consul_leader.fsm.facts import Facts
from consul_leader.fsm.observation import KeyObservation, classify
from consul_leader.fsm.states import Event


@dataclass(frozen=True)
class LockHolder:
    """Who we are, as the key's value tells people and tools while we hold it."""

    host: str
    service: str
    alloc_id: str | None = None

    def value(self, session: str) -> bytes:
        return json.dumps({"session": session, "host": self.host, "service": self.service,
                           "alloc_id": self.alloc_id}, sort_keys=True).encode()


def fencing_token(observation: KeyObservation) -> int:
    """The key's ModifyIndex as seen while we hold it: a Raft index, so it only grows from one
    holder to the next, even across a delete or a plain PUT of the key. LockIndex does not:
    a plain PUT resets it and a delete discards it (consul-semantics §2.3, §2.4)."""
    return observation.modify_index


def next_index(previous: int, reported: int | None) -> int:
    """Consul's advice for blocking loops: reset when the index goes backwards or is bogus."""
    if reported is None or reported < 1 or reported < previous:
        return 0
    return reported


def observed(observation: KeyObservation, session: str) -> tuple[Event, str, Facts]:
    """What to post about `observation`, for the machine acting on `session`."""
    event = classify(observation, session)
    token = fencing_token(observation) if event is Event.LOCK_HELD_BY_US else None
    return event, describe(observation), Facts(session=session, observation=observation,
                                                fencing_token=token)


def describe(observation: KeyObservation) -> str:
    if not observation.exists:
        return "lock key missing"
    if observation.session is None:
        return "lock key has no holder"
    return f"lock key held by {observation.session}"
