"""The transition table: the single place that lists the machine's states and edges.

The runtime machine (`fsm.machine`) and the diagram script (`scripts/draw_diagrams.py`) are both
built from `STATES` and `TRANSITIONS`, so the pictures cannot drift from the code.

The table is written in the enums' string *values* ("Leader", "lock_acquired"), not the Enum
members: transitions names an Enum state by its member name ("LEADER"), and we want the machine,
its log lines and its diagrams to use the names operators see everywhere else.

Rules the table follows (tests check them):
- at most one transition per (state, event) pair, so an event's outcome never depends on order;
- `dest: None` is an internal transition: the state is unchanged and no entry/exit effects run;
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

_WITH_SESSION: Final[tuple[State, ...]] = (State.FOLLOWER, State.CANDIDATE, State.LEADER)


def _move(event: Event, sources: Iterable[State], dest: State, **options: str) -> dict[str, Any]:
    """An external transition: exit/entry effects run, even when dest equals the source."""
    return {
        "trigger": event.value,
        "source": [source.value for source in sources],
        "dest": dest.value,
        **options,
    }


def _stay(event: Event, source: State) -> dict[str, Any]:
    """An internal transition: the state and its entry/exit effects are left alone."""
    return {"trigger": event.value, "source": [source.value], "dest": None}


TRANSITIONS: Final[list[dict[str, Any]]] = [
    _move(Event.SESSION_CREATED, [State.NO_SESSION], State.CANDIDATE, unless=STOPPING_GUARD),
    _move(Event.SESSION_LOST, _WITH_SESSION, State.NO_SESSION),
    _move(Event.LEASE_EXPIRED, _WITH_SESSION, State.NO_SESSION),
    _move(Event.LOCK_ACQUIRED, [State.CANDIDATE], State.LEADER),
    _move(Event.LOCK_HELD_BY_US, [State.CANDIDATE], State.LEADER),
    # Holding the lock without knowing it (e.g. after a restart): re-acquire to confirm first.
    _move(Event.LOCK_HELD_BY_US, [State.FOLLOWER], State.CANDIDATE),
    _stay(Event.LOCK_HELD_BY_US, State.LEADER),
    _stay(Event.LOCK_DELAYED, State.CANDIDATE),
    _move(Event.LOCK_HELD_BY_OTHER, [State.CANDIDATE, State.LEADER], State.FOLLOWER),
    _stay(Event.LOCK_HELD_BY_OTHER, State.FOLLOWER),
    _move(Event.LOCK_FREE, [State.FOLLOWER, State.LEADER], State.CANDIDATE),
    _stay(Event.LOCK_FREE, State.CANDIDATE),
    _move(Event.KEY_MISSING, [State.FOLLOWER, State.LEADER], State.CANDIDATE),
    _stay(Event.KEY_MISSING, State.CANDIDATE),
    _move(Event.SHUTDOWN, list(State), State.NO_SESSION, before=BEGIN_STOPPING),
]

# Internal transitions after which the Candidate must try `?acquire` again: the key changed
# under it (freed or deleted) while it was waiting, so its last attempt is moot.
RETRY_ACQUIRE: Final[frozenset[tuple[State, Event]]] = frozenset(
    {(State.CANDIDATE, Event.LOCK_FREE), (State.CANDIDATE, Event.KEY_MISSING)}
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
