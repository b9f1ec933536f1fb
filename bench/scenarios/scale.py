"""Scale on this 2-core machine: many instances contending for one key, and many groups.

* Contention: N instances of one service spread over the stand-in's nodes, started
  `stagger` seconds apart. Start-up cost is reported on its own: seconds from the first start
  until every instance has joined and one leads, and each process's CPU seconds by then.
  Then the leader gets SIGTERM, several times (the stopped allocation is retired each time, so
  N-1, N-2, ... contend): convergence is the time until another passing primary is listed;
  the burst is how many requests the handover caused above the steady rate (measured once,
  before the first run, per instance), counted over whole renew periods from the signal to
  at least one SLEEP after convergence.
* Groups: G groups of two instances (2G processes), each group its own service and key; the
  total Consul load over a steady window, and the CPU of all instances together. One Nomad
  client per node runs every group's allocations.

Requests through the observer node (the benchmark's own health watch) are never counted, nor
are Nomad's own (its clients' syncs and check heartbeats, counted by the model).
"""

from __future__ import annotations

import math
import signal
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench import procstat
from bench.fleet import (
    OBSERVER_NODE,
    Fleet,
    Kind,
    shared_nomad,
    stand_in,
    start_staggered,
    stop_fleets,
    wait_all_steady,
)
from bench.results import Env, Results
from bench.scenarios.common import note_exits, other_than, takeover_timeout
from bench.scenarios.steady import MB, per_minute
from bench.watch import HealthWatch
from tests.harness import Sidecar, nomad_requests

RATE_WINDOW_PERIODS = 2  # renew periods of steady state to measure the rate a burst exceeds


@dataclass(frozen=True)
class Counts:
    server: int
    agent: int

    @property
    def total(self) -> int:
        return self.server + self.agent

    def minus(self, other: Counts) -> Counts:
        return Counts(self.server - other.server, self.agent - other.agent)


def instance_counts(consul: Any, nomad: int) -> Counts:
    """Requests answered so far on every node but the observer's, less the `nomad`
    (agent-local) requests Nomad's clients made so far."""
    nodes = consul.stats()["nodes"]
    counted = [entry for name, entry in nodes.items() if name != OBSERVER_NODE]
    return Counts(sum(e["server"] for e in counted), sum(e["agent"] for e in counted) - nomad)


def fleet_counts(fleet: Fleet) -> Counts:
    return instance_counts(fleet.consul, fleet.nomad_requests())


def scale_nodes(count: int) -> list[str]:
    return [f"n{i:02d}" for i in range(1, count + 1)]


def _startup_timeout(instances: int, env: Env) -> float:
    return instances * env.plan.stagger + 30.0 + instances * 0.5


def _record_startup(env: Env, results: Results, key: str, kind: Kind,
                    members: list[Sidecar], first: float, steady_at: float) -> None:
    results.figure(f"{key}_startup", kind, "s").add(steady_at - first)
    cpu = results.figure(f"{key}_startup_cpu", kind, "s")
    for member in members:
        cpu.add(procstat.sample(member.pid).cpu_seconds)
    env.progress(f"{key} {kind.value}: {len(members)} instances steady "
                 f"{steady_at - first:.1f}s after the first start")


def contention(env: Env, kind: Kind, runs: int, results: Results) -> None:
    plan, timings = env.plan, env.timings
    nodes = scale_nodes(plan.scale_nodes)
    count = plan.scale_contenders
    with stand_in(nodes) as consul:
        fleet = Fleet(consul, kind, env.workdir / f"scale-contend-{kind.name.lower()}", timings)
        try:
            with HealthWatch(consul.node_addr(OBSERVER_NODE), fleet.service) as watch:
                first = start_staggered(((fleet, nodes[i % len(nodes)]) for i in range(count)),
                                        plan.stagger)
                steady_at = fleet.wait_steady(_startup_timeout(count, env))
                _record_startup(env, results, "contention", kind, fleet.members, first,
                                steady_at)
                rate = _steady_rate(fleet, RATE_WINDOW_PERIODS * timings.sleep)
                per_instance = rate / len(fleet.members)
                for run in range(runs):
                    _handover_burst(env, fleet, watch, results, run, per_instance)
        finally:
            note_exits(results, "contention", stop_fleets([fleet]))


def _steady_rate(fleet: Fleet, seconds: float) -> float:
    """Requests per second of the fleet at rest."""
    before, opened = fleet_counts(fleet), time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    return fleet_counts(fleet).minus(before).total / (time.monotonic() - opened)


def _handover_burst(env: Env, fleet: Fleet, watch: HealthWatch, results: Results,
                    run: int, rate_per_instance: float) -> None:
    """One SIGTERM to the leader; `rate_per_instance` is the steady request rate of one
    instance (requests per second), measured before the first run."""
    kind, timings = fleet.kind, env.timings
    leader = fleet.await_primary(_startup_timeout(1, env))
    # The steady rate of the instances left once the leader is gone.
    rate = rate_per_instance * (len(fleet.members) - 1)
    before = fleet_counts(fleet)
    signalled = time.monotonic()
    leader.send(signal.SIGTERM)
    seen = watch.wait(other_than(leader), signalled, takeover_timeout(kind, timings))
    if seen is None:
        results.figure("contention_convergence", kind, "s").missed(f"run {run}: no new primary")
    else:
        results.figure("contention_convergence", kind, "s").add(seen.at - signalled)
        window = _whole_periods(seen.at - signalled, timings.sleep)
        time.sleep(max(0.0, signalled + window - time.monotonic()))  # the counting window
        counted = fleet_counts(fleet).minus(before)
        elapsed = time.monotonic() - signalled
        results.figure("contention_burst", kind, "requests").add(counted.total - rate * elapsed)
        results.figure("contention_burst_raw", kind, "requests").add(counted.total)
    fleet.retire(leader)
    fleet.wait_steady(_startup_timeout(1, env))
    results.tally("contention", kind, watch.overlaps(signalled, time.monotonic()))


def _whole_periods(convergence: float, period: float) -> float:
    """A counting window of whole renew periods that ends at least one period after
    convergence: periodic requests then fall into it the same number of times whatever
    their phase, so what is left above the steady rate is the handover's own."""
    return (math.floor(convergence / period) + 2) * period


def groups(env: Env, kind: Kind, results: Results) -> None:
    plan, timings = env.plan, env.timings
    nodes = scale_nodes(plan.scale_nodes)
    workdir = env.workdir / f"scale-groups-{kind.name.lower()}"
    # One Nomad client per node runs the allocations of every group, as on real nodes.
    with stand_in(nodes) as consul, shared_nomad(consul, workdir, timings) as nomad:
        fleets = [
            Fleet(consul, kind, workdir / f"g{g:02d}", timings, service=f"svc{g:02d}",
                  shared_nomad=nomad)
            for g in range(plan.scale_groups)
        ]
        try:
            placement = [(fleets[g], nodes[(2 * g + k) % len(nodes)])
                         for g in range(plan.scale_groups) for k in range(2)]
            first = start_staggered(placement, plan.stagger)
            steady_at = wait_all_steady(fleets, _startup_timeout(len(placement), env))
            members = [s for fleet in fleets for s in fleet.members]
            _record_startup(env, results, "groups", kind, members, first, steady_at)
            # Warm-up of one renew period: the window must not count start-up requests.
            time.sleep(timings.sleep)
            cpu_before = {s.pid: procstat.sample(s.pid).cpu_seconds for s in members}
            before, opened = instance_counts(consul, nomad_requests(nomad)), time.monotonic()
            time.sleep(plan.scale_window)  # the measurement window itself
            window = time.monotonic() - opened
            counted = instance_counts(consul, nomad_requests(nomad)).minus(before)
            samples = {s.pid: procstat.sample(s.pid) for s in members}
            _record_groups(results, kind, counted, window, len(members), samples, cpu_before)
            env.progress(f"groups {kind.value}: {len(members)} instances, {window:.0f}s window")
        finally:
            note_exits(results, "groups", stop_fleets(fleets))


def _record_groups(results: Results, kind: Kind, counted: Counts, window: float,
                   instances: int, samples: dict[int, procstat.ProcSample],
                   cpu_before: dict[int, float]) -> None:
    results.figure("groups_server", kind, "req/min").add(per_minute(counted.server, window))
    results.figure("groups_agent", kind, "req/min").add(per_minute(counted.agent, window))
    results.figure("groups_server_each", kind, "req/min").add(
        per_minute(counted.server, window) / instances)
    cpu = sum(sample.cpu_seconds - cpu_before[pid] for pid, sample in samples.items())
    results.figure("groups_cpu_percent", kind, "%").add(cpu / window * 100)
    results.figure("groups_rss", kind, "MB").add(
        statistics.median(sample.rss_bytes for sample in samples.values()) / MB)
