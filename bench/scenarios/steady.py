"""Steady state: Consul load per instance (leader and follower), each process's footprint,
and how much of the time clients find no passing primary.

Both kinds run side by side for the same window, each on its own stand-in with one instance
per node, so a node's request counts are one instance's requests (the stand-in classifies
each as agent-local or server-bound) once the node's Nomad client's own requests (its syncs
and check heartbeats, all agent-local, counted by the model) are taken off. The window opens
one renew period after the fleets are steady (so start-up requests are not counted) and
nothing else talks to those nodes during it. CPU is utime+stime over the window, RSS is VmRSS
at its end (/proc). "No passing primary" is the share of the window during which the health
view (a blocking query through the observer node) listed no passing primary: with Nomad in
the loop, what its periodic syncs cost the service's clients.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from bench import procstat
from bench.fleet import OBSERVER_NODE, Fleet, Kind, stand_in, stop_fleets
from bench.results import Env, Results
from bench.scenarios.common import NODES, STEADY_TIMEOUT, note_exits
from bench.watch import HealthWatch
from tests.harness import Sidecar, wait_for

MB = 1024 * 1024


@dataclass(frozen=True)
class NodeLoad:
    server: int
    agent: int
    endpoints: dict[str, int]


def node_load(stats: dict[str, Any], node: str, nomad: int = 0) -> NodeLoad:
    """The node's requests, less `nomad` agent-local requests its Nomad client made."""
    entry = stats["nodes"][node]
    endpoints = {name: data["count"] for name, data in entry["endpoints"].items()}
    return NodeLoad(entry["server"], entry["agent"] - nomad, endpoints)


def per_minute(count: float, seconds: float) -> float:
    return count * 60.0 / seconds


def load_and_footprint(env: Env, results: Results) -> None:
    with contextlib.ExitStack() as stack:
        fleets = [
            Fleet(stack.enter_context(stand_in(NODES)), kind,
                  env.workdir / f"steady-{kind.name.lower()}", env.timings)
            for kind in Kind
        ]
        watches = {
            fleet.kind: stack.enter_context(
                HealthWatch(fleet.consul.node_addr(OBSERVER_NODE), fleet.service))
            for fleet in fleets
        }
        try:
            for fleet in fleets:
                for node in NODES:
                    fleet.add(node)
            for fleet in fleets:
                fleet.wait_steady(STEADY_TIMEOUT)
            _measure(env, results, fleets, watches)
        finally:
            note_exits(results, "steady", stop_fleets(fleets))


def _measure(env: Env, results: Results, fleets: list[Fleet],
             watches: dict[Kind, HealthWatch]) -> None:
    # Warm-up of one renew period: the window must not count start-up requests.
    time.sleep(env.timings.sleep)
    # The leader by Consul's health view (which Nomad's syncs may blank for a moment).
    leaders = {fleet.kind: wait_for(fleet.primary, STEADY_TIMEOUT, f"a {fleet.kind.value} "
                                    "primary") for fleet in fleets}
    holders = {fleet.kind: fleet.view().holder(fleet.group.kv_path) for fleet in fleets}
    before = {s.pid: procstat.sample(s.pid) for fleet in fleets for s in fleet.members}
    for fleet in fleets:
        fleet.consul.reset_stats()
    nomad_before = {(fleet.kind, node): fleet.nomad_requests(node)
                    for fleet in fleets for node in NODES}
    opened = time.monotonic()
    time.sleep(env.plan.steady_window)  # the measurement window itself
    closed = time.monotonic()
    window = closed - opened
    for fleet in fleets:
        nomad = {node: fleet.nomad_requests(node) - nomad_before[fleet.kind, node]
                 for node in NODES}
        if fleet.view().holder(fleet.group.kv_path) != holders[fleet.kind]:
            results.notes.append(f"steady state ({fleet.kind.value}): the leader changed "
                                 "during the window")
        _record(env, results, fleet, leaders[fleet.kind], before, window, nomad)
        without = watches[fleet.kind].seconds_without_primary(opened, closed)
        results.figure("steady_no_primary", fleet.kind, "%").add(without / window * 100)


def _record(env: Env, results: Results, fleet: Fleet, leader: Sidecar | None,
            before: dict[int, procstat.ProcSample], window: float,
            nomad: dict[str, int]) -> None:
    kind = fleet.kind
    stats = fleet.consul.stats()
    for member in fleet.members:
        role = "leader" if member is leader else "follower"
        load = node_load(stats, member.node, nomad[member.node])
        results.figure(f"load_{role}_server", kind, "req/min").add(
            per_minute(load.server, window))
        results.figure(f"load_{role}_agent", kind, "req/min").add(per_minute(load.agent, window))
        endpoints = results.details.setdefault("endpoints_per_minute", {})
        endpoints[f"{kind.value} {role} ({member.node})"] = {
            name: round(per_minute(count, window), 2)
            for name, count in sorted(load.endpoints.items())
        }
        after = procstat.sample(member.pid)
        cpu = after.cpu_seconds - before[member.pid].cpu_seconds
        results.figure("rss", kind, "MB").add(after.rss_bytes / MB)
        results.figure("cpu_per_hour", kind, "s/h").add(cpu / window * 3600)
        results.figure("cpu_percent", kind, "%").add(cpu / window * 100)
    env.progress(f"steady state {kind.value}: {window:.0f}s window")
