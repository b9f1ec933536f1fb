"""The transition table: the single place that lists the machine's states, edges and reactions.

The runtime machine (`fsm.machine`) and the diagram script (`scripts/draw_diagrams.py`) are both
built from `STATES`, `TRANSITIONS` and `REACTIONS`, so the pictures cannot drift from the code.

The table is written in the enums' string *values* ("Leader", "lock_acquired"), not the Enum
members: transitions names an Enum state by its member name ("LEADER"), and we want the machine,
its log lines and its diagrams to use the names operators see everywhere else.

Rules the table follows (tests check them):
- at most one transition per (state, event) pair, so an event's outcome never depends on order;
- `dest: None` is an internal transition: the state is unchanged and no entry/exit effects run;
  it may name one *reaction* (`REACTIONS`), the effect that carries out what the event means
  in that state (ask for another `?acquire`, vouch for the role, create a session...);
- any pair not listed is refused by the machine (state unchanged, reported, never raised).
"""

from collections.abc import Iterable, Sequence
from typing import Any, Final

from consul_leader.fsm.states import Event, State

STATES: Final[list[str]] = [state.value for state in State]
INITIAL_STATE: Final[State] = State.NO_SESSION

# Name of the guard on the model (fsm.machine) that refuses new sessions once shutdown began.
STOPPING_GUARD: Final[str] = "stopping"
# Name of the model callback that raises that flag; it runs before the shutdown state change.
BEGIN_STOPPING: Final[str] = "begin_stopping"

NS, FO, CA, LE = State.NO_SESSION, State.FOLLOWER, State.CANDIDATE, State.LEADER
_WITH_SESSION: Final[tuple[State, ...]] = (FO, CA, LE)
_NOT_LEADING: Final[tuple[State, ...]] = (FO, CA)

# The reactions: effects (methods of fsm.machine.Effects) that internal transitions run.
RETRY_ACQUIRE: Final = "retry_acquire"  # try ?acquire again (now, or after a lock-delay)
VOUCH_REPLICA: Final = "vouch_replica"  # pass the lease and (replica) role checks
VOUCH_LEASE: Final = "vouch_lease"  # a leader: pass the lease check, confirm the lock
VOUCH_PRIMARY: Final = "vouch_primary"  # a leader whose lock is confirmed: pass role checks
PREPARE_SESSION: Final = "prepare_session"  # make the lease check pass, then create
CREATE_SESSION: Final = "create_session"  # the lease check passes: create the session
ADOPT_TARGETS: Final = "adopt_targets"  # the checks follow the targets
MARK_PUBLISHED: Final = "mark_published"  # Consul shows our role (/primary, role checks)
AWAIT_OTHER_PRIMARY: Final = "await_other_primary"  # start the bounded wait
PUBLISH_OVER_OTHER_PRIMARY: Final = "publish_over_other_primary"  # the bound passed
EVICT_STALE_PRIMARIES: Final = "evict_stale_primaries"  # their sessions are gone
AWAIT_HEALTHY: Final = "await_healthy"  # no session until the application is healthy

_ROWS: list[tuple[dict[str, Any], dict[tuple[State, Event], str]]] = []


def _move(event: Event, sources: Iterable[State], dest: State, **options: str) -> None:
    """An external transition: exit/entry effects run, even when dest equals the source."""
    sources = list(sources)
    row = {"trigger": event.value, "source": [s.value for s in sources], "dest": dest.value,
           **options}
    _ROWS.append((row, {}))


def _stay(event: Event, sources: Iterable[State], reaction: str | None = None) -> None:
    """An internal transition: the state and its entry/exit effects are left alone; the
    `reaction`, if any, runs instead."""
    sources = list(sources)
    row = {"trigger": event.value, "source": [s.value for s in sources], "dest": None}
    _ROWS.append((row, {(s, event): reaction for s in sources} if reaction else {}))


# Session and lease.
_move(Event.SESSION_CREATED, [NS], CA, unless=STOPPING_GUARD)
_move(Event.SESSION_LOST, _WITH_SESSION, NS)
_move(Event.LEASE_EXPIRED, _WITH_SESSION, NS)
_stay(Event.LEASE_RENEWED, _NOT_LEADING, VOUCH_REPLICA)
_stay(Event.LEASE_RENEWED, [LE], VOUCH_LEASE)
_stay(Event.BOUND_CHECK_MISSING, [NS], PREPARE_SESSION)  # register and pass it again
_stay(Event.LEASE_CHECK_PASSED, [NS], CREATE_SESSION)
# The lock.
_move(Event.LOCK_ACQUIRED, [CA], LE)
_move(Event.LOCK_HELD_BY_US, [CA], LE)
# Holding the lock without knowing it (e.g. after a restart): re-acquire to confirm first.
_move(Event.LOCK_HELD_BY_US, [FO], CA)
_stay(Event.LOCK_HELD_BY_US, [LE], VOUCH_PRIMARY)
_stay(Event.LOCK_DELAYED, [CA], RETRY_ACQUIRE)
_move(Event.LOCK_HELD_BY_OTHER, [CA, LE], FO)
_stay(Event.LOCK_HELD_BY_OTHER, [FO])
_move(Event.LOCK_FREE, [FO, LE], CA)
_stay(Event.LOCK_FREE, [CA], RETRY_ACQUIRE)  # the key changed under the candidate: its last
_move(Event.KEY_MISSING, [FO, LE], CA)  # attempt is moot
_stay(Event.KEY_MISSING, [CA], RETRY_ACQUIRE)
# Publishing. Nobody competes for a role it cannot publish.
_stay(Event.TARGETS_FOUND, list(State), ADOPT_TARGETS)
_move(Event.TARGET_GONE, _WITH_SESSION, NS)
_stay(Event.TARGET_GONE, [NS])
_move(Event.PUBLISH_REFUSED, _WITH_SESSION, NS)
_stay(Event.PUBLISH_REFUSED, [NS])
_stay(Event.REPLICA_PUBLISHED, [NS], PREPARE_SESSION)  # no stale primary label: compete
_stay(Event.REPLICA_PUBLISHED, _NOT_LEADING, MARK_PUBLISHED)
_stay(Event.PRIMARY_PUBLISHED, [LE], MARK_PUBLISHED)
_stay(Event.OTHER_PRIMARY_SEEN, [LE], AWAIT_OTHER_PRIMARY)
_stay(Event.OTHER_PRIMARY_WAIT_OVER, [LE], PUBLISH_OVER_OTHER_PRIMARY)
# Its session is gone, yet Consul lists it (a revoked token cannot sync its checks): it leads
# nothing, so no need to wait for the bound; once it is unlisted ours goes on as usual.
_stay(Event.STALE_PRIMARY_SEEN, [LE], EVICT_STALE_PRIMARIES)
# Switchover and priorities (issue 12). The leader hands over only when asked: it publishes
# replica, then gives the key back and holds off (enter_follower); a candidate that may not lead
# now (priority 0, its hold-off, a fresh hint naming another instance) follows until the hold-off
# is over; one that sees healthy peers of higher priority tries again after a bounded delay.
_move(Event.SWITCHOVER_REQUESTED, [LE], FO)
_move(Event.LEAD_EXCLUDED, [CA], FO)
_stay(Event.LEAD_EXCLUDED, [NS, FO, LE])  # moot: not campaigning any more
_move(Event.HOLD_OFF_OVER, [FO], CA)
_stay(Event.HOLD_OFF_OVER, [CA], RETRY_ACQUIRE)
_stay(Event.HOLD_OFF_OVER, [NS, LE])
_stay(Event.HIGHER_PRIORITY_SEEN, [CA], RETRY_ACQUIRE)
_stay(Event.HIGHER_PRIORITY_SEEN, [NS, FO, LE])  # the delay is moot once not a candidate
# The process.
_move(Event.SHUTDOWN, list(State), NS, before=BEGIN_STOPPING)
# The health gate (opt-in). An instance whose application is critical (a check of a target,
# or its node or service in maintenance) leaves the election: a leader releases the key at
# once rather than waiting for Consul to invalidate its session. Without a session it stays
# out until the application is healthy again, and then competes like any newcomer (the key
# is held: it becomes a follower). Session create refused on the alias check is critical too.
_move(Event.APPLICATION_CRITICAL, _WITH_SESSION, NS)
_stay(Event.APPLICATION_CRITICAL, [NS], AWAIT_HEALTHY)
_stay(Event.APPLICATION_HEALTHY, [NS], PREPARE_SESSION)
_stay(Event.APPLICATION_HEALTHY, _WITH_SESSION)

TRANSITIONS: Final[list[dict[str, Any]]] = [row for row, _ in _ROWS]
# (state, event) of an internal transition -> the Effects method it runs.
REACTIONS: Final[dict[tuple[State, Event], str]] = {
    pair: reaction for _, reactions in _ROWS for pair, reaction in reactions.items()
}
REACTION_NAMES: Final[tuple[str, ...]] = (
    RETRY_ACQUIRE, VOUCH_REPLICA, VOUCH_LEASE, VOUCH_PRIMARY, PREPARE_SESSION, CREATE_SESSION,
    ADOPT_TARGETS, MARK_PUBLISHED, AWAIT_OTHER_PRIMARY, PUBLISH_OVER_OTHER_PRIMARY,
    EVICT_STALE_PRIMARIES,
    AWAIT_HEALTHY,
)


def edges(table: Sequence[dict[str, Any]] = TRANSITIONS) -> frozenset[tuple[State, State, Event]]:
    """Every (source, dest, event) of the table, with internal transitions as self-loops."""
    found: set[tuple[State, State, Event]] = set()
    for row in table:
        for source in row["source"]:
            dest = source if row["dest"] is None else row["dest"]
            found.add((State(source), State(dest), Event(row["trigger"])))
    return frozenset(found)


def internal_pairs(table: Sequence[dict[str, Any]] = TRANSITIONS) -> frozenset[tuple[State, Event]]:
    """The (state, event) pairs handled by an internal transition."""
    return frozenset(
        (State(source), Event(row["trigger"]))
        for row in table
        if row["dest"] is None
        for source in row["source"]
    )


INTERNAL_TRANSITIONS: Final[frozenset[tuple[State, Event]]] = internal_pairs()
