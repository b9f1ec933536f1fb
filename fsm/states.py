"""States and events of the leader-election machine.

Both are `StrEnum`s, so each member is also its string value (`State.LEADER == "Leader"`,
`f"{State.LEADER}" == "Leader"`). The values are the names operators see in logs, metrics,
`/status` and the diagrams, and the names the transition table is written in.

Events are facts observed by the adapters (past tense or observations), never commands: the
machine decides what a fact means in the current state.
"""

import enum


class State(enum.StrEnum):
    """Where this sidecar stands. Only `LEADER` may carry the primary label."""

    NO_SESSION = "NoSession"  # no valid session: claims nothing, waits for a new session
    FOLLOWER = "Follower"  # has a session; another session holds the lock
    CANDIDATE = "Candidate"  # has a session; trying to acquire (or confirm) the lock
    LEADER = "Leader"  # holds the lock with its own session, within its local lease


class Event(enum.StrEnum):
    """What the adapters observed. Each value is the transitions trigger name."""

    SESSION_CREATED = "session_created"  # a new session exists
    SESSION_LOST = "session_lost"  # renew answered 404, acquire said "invalid session", or gone
    LEASE_EXPIRED = "lease_expired"  # no renew confirmed before the local lease deadline
    LOCK_ACQUIRED = "lock_acquired"  # ?acquire answered true
    LOCK_DELAYED = "lock_delayed"  # ?acquire answered false on a key with no holder: lock-delay
    LOCK_HELD_BY_US = "lock_held_by_us"  # observed: the key's Session is ours
    LOCK_HELD_BY_OTHER = "lock_held_by_other"  # observed: the key's Session is another session
    LOCK_FREE = "lock_free"  # observed: the key exists with no Session
    KEY_MISSING = "key_missing"  # observed: the key does not exist
    SHUTDOWN = "shutdown"  # SIGTERM/SIGINT
