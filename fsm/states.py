"""States and events of the leader-election machine.

Both are `StrEnum`s, so each member is also its string value (`State.LEADER == "Leader"`,
`f"{State.LEADER}" == "Leader"`). The values are the names operators see in logs, metrics,
`/status` and the diagrams, and the names the transition table is written in.

Events are facts observed by the adapters (past tense or observations), never commands: the
machine decides what a fact means in the current state. Every leadership decision is one of
them: an adapter reports what it saw and never acts on leadership by itself.
"""

import enum


class State(enum.StrEnum):
    """Where this sidecar stands. Only `LEADER` may carry the primary label."""

    NO_SESSION = "NoSession"  # no valid session: claims nothing, waits for a new session
    FOLLOWER = "Follower"  # has a session; another session holds the lock, or it may not lead now
    CANDIDATE = "Candidate"  # has a session; trying to acquire (or confirm) the lock
    LEADER = "Leader"  # holds the lock with its own session, within its local lease


class Event(enum.StrEnum):
    """What the adapters observed. Each value is the transitions trigger name."""

    # The session keeper.
    SESSION_CREATED = "session_created"  # a new session exists
    SESSION_LOST = "session_lost"  # renew answered 404, acquire said "invalid session", or gone
    LEASE_EXPIRED = "lease_expired"  # no renew confirmed before the local lease deadline
    LEASE_RENEWED = "lease_renewed"  # Consul confirmed a renew within the lease
    BOUND_CHECK_MISSING = "bound_check_missing"  # create refused: lease check missing/critical
    # The lock watcher and the acquirer.
    LOCK_ACQUIRED = "lock_acquired"  # ?acquire answered true
    LOCK_DELAYED = "lock_delayed"  # ?acquire answered false on a key with no holder: lock-delay
    LOCK_HELD_BY_US = "lock_held_by_us"  # observed: the key's Session is ours
    LOCK_HELD_BY_OTHER = "lock_held_by_other"  # observed: the key's Session is another session
    LOCK_FREE = "lock_free"  # observed: the key exists with no Session
    KEY_MISSING = "key_missing"  # observed: the key does not exist
    # The health checks.
    LEASE_CHECK_PASSED = "lease_check_passed"  # the check a new session binds to passes
    # The publisher.
    TARGETS_FOUND = "targets_found"  # the services to publish for are known (or changed)
    TARGET_GONE = "target_gone"  # a target service stayed deregistered past the grace period
    REPLICA_PUBLISHED = "replica_published"  # Consul shows the non-primary role on every target
    PRIMARY_PUBLISHED = "primary_published"  # Consul shows the primary role on every target
    PUBLISH_REFUSED = "publish_refused"  # Consul denied writing our role (ACL)
    OTHER_PRIMARY_SEEN = "other_primary_seen"  # another instance is still a passing primary
    OTHER_PRIMARY_WAIT_OVER = "other_primary_wait_over"  # ...and still is at the bound
    STALE_PRIMARY_SEEN = "stale_primary_seen"  # ...and Consul no longer has its session
    # Switchover and priorities (issue 12).
    SWITCHOVER_REQUESTED = "switchover_requested"  # an operator asked the leader to hand over
    LEAD_EXCLUDED = "lead_excluded"  # may not lead now: priority 0, hold-off, a hint for another
    HOLD_OFF_OVER = "hold_off_over"  # the hold-off (or the hint it waited out) is over
    HIGHER_PRIORITY_SEEN = "higher_priority_seen"  # healthy peers of higher priority may go first
    # The process.
    SHUTDOWN = "shutdown"  # SIGTERM/SIGINT, or Consul refused our configuration
    # The health gate (CONSUL_LEADER_HEALTH_GATE).
    APPLICATION_CRITICAL = "application_critical"  # a target (or its node) is critical
    APPLICATION_HEALTHY = "application_healthy"  # every target is healthy (again)
