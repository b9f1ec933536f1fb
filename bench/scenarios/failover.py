"""Leadership changes: handover after SIGTERM, failover after SIGKILL, and node loss.

Each run removes the current primary one way, measures when Consul's health view first lists
another passing primary, then brings the fleet back to three steady instances (the removed
allocation retired and a new one started on the same node, as Nomad would) before the next
run. Runs in which the watch saw two passing primaries at once are tallied.

Where the result depends on where in the renew (or poll) period the fault lands (every
SIGKILL; every baseline run), run i waits (i + 0.5) / runs of a SLEEP after the fleet is
steady before the fault, so the faults are spread evenly over the period instead of all
landing at the phase the previous run's recovery left behind.

Times come from one monotonic clock: the moment we signal (handover, crash), the journal's
`session_invalidated` of the old leader's session (crash), the journal's `node_failed` (node
loss), and the arrival of the health view's answer.
"""

from __future__ import annotations

import signal
import time

from bench.fleet import Fleet, Kind
from bench.results import Env, Figure, Results
from bench.scenarios.common import (
    STEADY_TIMEOUT,
    election,
    event_of,
    other_than,
    takeover_timeout,
)
from bench.settings import Timings
from bench.watch import HealthWatch, Seen
from tests.harness import Sidecar


def handover(env: Env, kind: Kind, runs: int, results: Results) -> None:
    """SIGTERM to the leader → another instance visible as passing primary."""
    figure = results.figure("handover", kind, "s")
    with election(env, results, kind, "handover") as (fleet, watch):
        for run in range(runs):
            if kind is Kind.BASELINE:
                _spread(run, runs, env.timings)
            leader = _leader(fleet)
            signalled = time.monotonic()
            leader.send(signal.SIGTERM)
            seen = _new_primary(watch, leader, signalled, kind, env.timings)
            _record(figure, run, seen, signalled)
            _next_run(fleet, watch, results, "handover", leader, signalled)
        env.progress(f"handover {kind.value}: {len(figure.samples)}/{runs} runs")


def crash(env: Env, kind: Kind, runs: int, results: Results) -> None:
    """SIGKILL to the leader → new passing primary, from the kill and from the invalidation."""
    end_to_end = results.figure("crash_end_to_end", kind, "s")
    after_invalidation = results.figure("crash_after_invalidation", kind, "s")
    causes: dict[str, int] = {}
    with election(env, results, kind, "crash") as (fleet, watch):
        for run in range(runs):
            _spread(run, runs, env.timings)
            leader = _leader(fleet)
            session = fleet.view().holder(fleet.group.kv_path)
            killed = time.monotonic()
            leader.send(signal.SIGKILL)
            seen = _new_primary(watch, leader, killed, kind, env.timings)
            _record(end_to_end, run, seen, killed)
            invalidated = event_of(fleet.consul, "session_invalidated", killed, id=session)
            if seen is not None and invalidated is not None:
                after_invalidation.add(seen.at - invalidated["mono"])
                causes[invalidated["cause"]] = causes.get(invalidated["cause"], 0) + 1
            else:
                after_invalidation.missed(f"run {run}: no invalidation or no new primary")
            _next_run(fleet, watch, results, "crash", leader, killed)
    note = "session invalidated by: " + ", ".join(f"{c} x{n}" for c, n in sorted(causes.items()))
    after_invalidation.notes.append(note)
    env.progress(f"crash {kind.value}: {len(end_to_end.samples)}/{runs} runs; {note}")


def node_loss(env: Env, kind: Kind, runs: int, results: Results,
              timings: Timings | None = None, key: str = "node_loss") -> None:
    """The leader's node fails (control API) → new passing primary."""
    timings = timings or env.timings
    figure = results.figure(key, kind, "s")
    with election(env, results, kind, key, timings) as (fleet, watch):
        for run in range(runs):
            if kind is Kind.BASELINE:
                _spread(run, runs, timings)
            leader = _leader(fleet)
            before = time.monotonic()
            fleet.consul.fail_node(leader.node)
            failed = event_of(fleet.consul, "node_failed", before, node=leader.node)
            failed_at = failed["mono"] if failed else before
            seen = _new_primary(watch, leader, failed_at, kind, timings)
            _record(figure, run, seen, failed_at)
            # Nomad kills a lost allocation; doing it before the node returns keeps its
            # stale local state (labels, a still-passing role check) out of the next run.
            leader.send(signal.SIGKILL)
            leader.wait(5)
            partition_over = time.monotonic()
            fleet.consul.recover_node(leader.node)
            _next_run(fleet, watch, results, key, leader, failed_at, until=partition_over)
    env.progress(f"{key} {kind.value} ({timings.describe()}): "
                 f"{len(figure.samples)}/{runs} runs")


# -- shared steps ---------------------------------------------------------------------------


def _spread(run: int, runs: int, timings: Timings) -> None:
    """Wait (run + 0.5) / runs of a SLEEP: the phase of the renew period to fault at."""
    time.sleep((run + 0.5) / runs * timings.sleep)


def _leader(fleet: Fleet) -> Sidecar:
    return fleet.await_primary(STEADY_TIMEOUT)


def _new_primary(watch: HealthWatch, old: Sidecar, since: float, kind: Kind,
                 timings: Timings) -> Seen | None:
    return watch.wait(other_than(old), since, takeover_timeout(kind, timings))


def _record(figure: Figure, run: int, seen: Seen | None, since: float) -> None:
    if seen is None:
        figure.missed(f"run {run}: no new passing primary in time")
    else:
        figure.add(seen.at - since)


def _next_run(fleet: Fleet, watch: HealthWatch, results: Results, scenario: str,
              old: Sidecar, started: float, until: float | None = None) -> None:
    """Bring back three steady instances, then tally whether this run showed two passing
    primaries at once between `started` and `until` (default: steady again).

    The old allocation stays registered until it is retired here, as it would until Nomad
    deregisters it: a stale primary the baseline leaves behind counts."""
    fleet.replace(old)
    steady_at = fleet.wait_steady(STEADY_TIMEOUT)
    results.tally(scenario, fleet.kind,
                  watch.overlaps(started, steady_at if until is None else until))
