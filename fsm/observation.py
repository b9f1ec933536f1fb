"""Turn what the lock watcher read from the KV store into an event. Pure.

Consul omits `Session` from a KV entry that is not locked, and writes `Session=""` when the
holder releases it or is invalidated (behavior "release"); both mean "no holder". A key that is
absent (404, deleted, or removed by a session with behavior "delete") is `KEY_MISSING`.
"""

from dataclasses import dataclass

from consul_leader.fsm.states import Event


@dataclass(frozen=True)
class KeyObservation:
    """One read of the lock key. `lock_index` of a held key is the fencing token."""

    exists: bool
    session: str | None = None
    lock_index: int = 0
    modify_index: int = 0
    value: bytes | None = None
    flags: int = 0


def classify(observation: KeyObservation, our_session: str | None) -> Event:
    """KEY_MISSING, LOCK_FREE, LOCK_HELD_BY_US or LOCK_HELD_BY_OTHER.

    Without a session of our own (`our_session` None or empty), any holder is another one.
    """
    if not observation.exists:
        return Event.KEY_MISSING
    if not observation.session:
        return Event.LOCK_FREE
    if our_session and observation.session == our_session:
        return Event.LOCK_HELD_BY_US
    return Event.LOCK_HELD_BY_OTHER
