"""An election of three instances on three nodes, watched through the observer node."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from bench.fleet import OBSERVER_NODE, Fleet, Kind, stand_in, stop_fleets
from bench.results import Env, Results
from bench.settings import Timings
from bench.watch import HealthWatch
from tests.harness import Sidecar

NODES = ("n1", "n2", "n3")
STEADY_TIMEOUT = 30.0


@contextlib.contextmanager
def election(env: Env, results: Results, kind: Kind, name: str,
             timings: Timings | None = None) -> Iterator[tuple[Fleet, HealthWatch]]:
    """Three instances of `kind` on a fresh stand-in, steady, with a health watch. Instances
    that ended on their own are noted in `results` when the block ends."""
    with stand_in(NODES) as consul:
        fleet = Fleet(consul, kind, env.workdir / f"{name}-{kind.name.lower()}",
                      timings or env.timings)
        try:
            with HealthWatch(consul.node_addr(OBSERVER_NODE), fleet.service) as watch:
                for node in NODES:
                    fleet.add(node)
                fleet.wait_steady(STEADY_TIMEOUT)
                yield fleet, watch
        finally:
            note_exits(results, name, stop_fleets([fleet]))


def note_exits(results: Results, scenario: str, exits: list[str]) -> None:
    results.notes.extend(f"{scenario}: {exit}" for exit in exits)


def other_than(instance: Sidecar) -> Callable[[frozenset[str]], bool]:
    """Condition: a passing primary of another allocation than `instance`'s is listed."""
    return lambda primaries: any(not instance.owns({"ID": sid}) for sid in primaries)


def takeover_timeout(kind: Kind, timings: Timings) -> float:
    """How long to wait for a new primary before calling the run failed: generous, so a
    budget overrun is measured rather than cut off. The baseline waits for Consul's 2 x TTL
    session timer plus one poll."""
    slack = 2 * timings.ttl + timings.lock_delay + 3.0
    return slack + (timings.sleep if kind is Kind.BASELINE else 0.0)


def event_of(consul: Any, kind: str, since: float, **match: Any) -> dict[str, Any] | None:
    """The first journal event of `kind` after `since` whose fields equal `match`."""
    for event in consul.events(since_mono=since, kind=kind):
        if all(event.get(name) == value for name, value in match.items()):
            found: dict[str, Any] = event
            return found
    return None
