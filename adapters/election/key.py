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


# -- the switchover hint (issue 12) -------------------------------------------------------------

HINT_SUFFIX = ".switchover"


def hint_key(kv_path: str) -> str:
    """The hint's key: beside the lock key, inside the same ACL prefix."""
    return kv_path + HINT_SUFFIX


@dataclass(frozen=True)
class Hint:
    """What a leader that hands over leaves for the candidates, written before it releases.

    It applies only while nobody has acquired the lock since (the key's LockIndex is still
    `lock_index`: an acquire raises it, a release keeps it) and for `hold_off` seconds from when
    each reader first saw it, on the reader's own clock: no two clocks are ever compared.
    """

    source: str  # the instance that handed over (it holds off)
    target: str | None  # the only instance that may take the lock, if named
    hold_off: float
    lock_index: int

    def encode(self) -> bytes:
        return json.dumps({"from": self.source, "to": self.target, "hold_off": self.hold_off,
                           "lock_index": self.lock_index}, sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> Hint | None:
        """None for anything that is not a hint (a reader never fails on it)."""
        try:
            raw = json.loads(value or b"")
            hint = cls(str(raw["from"]), None if raw["to"] is None else str(raw["to"]),
                       float(raw["hold_off"]), int(raw["lock_index"]))
        except (ValueError, TypeError, KeyError):
            return None
        return hint if hint.hold_off >= 0 else None
